"""Window claims free up soon after their holder dies: at once when the holder was a process of this machine that
is gone (``kill -9``), after the short lease when it was another machine's; a live holder keeps them, renewed by
its heartbeat while the step runs."""

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from metronome_suger.storage.claims import HOST, LEASE, ClaimTimeoutError, claimed, holder_name
from metronome_suger.storage.db import Connect, connect

KEY = "quantity:2026-11-25-13:00"


@pytest.fixture
def db(tmp_path: Path) -> Connect:
    path = tmp_path / "ledger.duckdb"
    with connect(path):
        pass
    return lambda read_only=False, **_: connect(path, read_only=read_only)  # type: ignore[return-value]


def _held_by(db: Connect, holder: str, lease_until: datetime) -> None:
    with db() as conn:
        conn.execute("INSERT INTO window_claims VALUES (?, ?, ?)", [KEY, holder, lease_until])


def _holder(db: Connect) -> tuple[str | None, datetime]:
    with db() as conn:
        return conn.execute("SELECT holder, lease_until FROM window_claims WHERE claim_key = ?", [KEY]).fetchall()[0]


@pytest.fixture
def live_process() -> Iterator[int]:
    """A process of this machine that runs until the test ends."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    yield proc.pid
    proc.kill()
    proc.wait()


def test_a_claim_of_a_killed_process_of_this_machine_is_taken_over_at_once(db: Connect) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead = f"run-a (process {proc.pid} on {HOST})"
    _held_by(db, dead, datetime.now(timezone.utc) + timedelta(hours=1))
    with claimed(db, [KEY], "run-b", wait=0):
        assert _holder(db)[0] == holder_name("run-b")
    assert _holder(db)[0] is None


def test_a_live_holder_keeps_its_claim(db: Connect, live_process: int) -> None:
    _held_by(db, f"run-a (process {live_process} on {HOST})", datetime.now(timezone.utc) + timedelta(hours=1))
    with pytest.raises(ClaimTimeoutError, match=f"run-a \\(process {live_process} on "), claimed(db, [KEY], "run-b",
                                                                                                  wait=0):
        pass


@pytest.mark.parametrize(("lease_left", "taken"), [(timedelta(minutes=1), False), (-timedelta(seconds=1), True)])
def test_another_machines_claim_is_taken_over_only_when_its_lease_ran_out(
    db: Connect, lease_left: timedelta, taken: bool
) -> None:
    _held_by(db, "run-a (process 1 on some-other-pod)", datetime.now(timezone.utc) + lease_left)
    if taken:
        with claimed(db, [KEY], "run-b", wait=0):
            assert _holder(db)[0] == holder_name("run-b")
    else:
        with pytest.raises(ClaimTimeoutError, match="some-other-pod"), claimed(db, [KEY], "run-b", wait=0):
            pass


def test_the_heartbeat_renews_a_held_claim(db: Connect) -> None:
    lease = timedelta(seconds=0.6)
    with claimed(db, [KEY], "run-b", wait=0, lease=lease):
        first = _holder(db)[1]
        deadline = time.monotonic() + 30
        while _holder(db)[1] == first:  # a beat every 0.2 s moves the lease end forward
            assert time.monotonic() < deadline, "the lease was never renewed"
        assert _holder(db)[0] == holder_name("run-b")
    assert LEASE <= timedelta(minutes=5)  # a crashed pod's windows are free within minutes, not half an hour
