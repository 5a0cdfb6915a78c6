"""Late-usage observations on the PostgreSQL ledger: concurrent runs of one UTC day observe the same earlier
windows (as a backfill's runs do), and the later writer must not fail its run."""

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import SecretStr

from metronome_suger.storage.db import Database, connect
from metronome_suger.storage.late_usage import WindowChange, record_observations
from metronome_suger_tests.conftest import PostgresLedger

DAY = datetime(2026, 11, 30, tzinfo=timezone.utc)
STARTS = [DAY + timedelta(hours=h) for h in range(3)]


@pytest.fixture
def ledger(postgres_ledger: PostgresLedger) -> Iterator[Database]:
    yield Database(postgres_ledger.url, SecretStr(postgres_ledger.password))


def _blocked(postgres_ledger: PostgresLedger) -> bool:
    waiting = postgres_ledger.server.execute("SELECT count(*) FROM pg_locks WHERE NOT granted", postgres_ledger.name)
    return waiting.strip() != "0"


def test_a_run_blocked_by_another_runs_observations_retries_and_its_own_stand(
    ledger: Database, postgres_ledger: PostgresLedger,
) -> None:
    """Run A replaces the observations of three windows and has not committed; run B's replacement waits on
    A's row locks, then meets a serialization conflict when A commits (REPEATABLE READ). B retries with a fresh
    snapshot: no error, and B's observations (the later ones) are what the table holds."""
    first, later = DAY + timedelta(hours=5), DAY + timedelta(hours=6)
    with connect(ledger) as setup:
        record_observations(setup, STARTS, [], first)
    errors: list[BaseException] = []
    with connect(ledger) as run_a, connect(ledger) as run_b:
        run_a.begin()
        run_a.execute("DELETE FROM late_usage_observed WHERE window_start >= ?", [DAY])

        def run_b_records() -> None:
            try:
                record_observations(run_b, STARTS, [WindowChange(STARTS[1], 2, 0, "d-1")], later)
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                errors.append(exc)

        thread = threading.Thread(target=run_b_records)
        thread.start()
        deadline = datetime.now(timezone.utc) + timedelta(seconds=60)
        while not _blocked(postgres_ledger):  # B waits on A's row locks (a condition, not a sleep)
            assert thread.is_alive() and datetime.now(timezone.utc) < deadline, errors
        run_a.execute("INSERT INTO late_usage_observed VALUES (?, 0, 0, NULL, ?)", [STARTS[0], first])
        run_a.commit()
        thread.join(timeout=120)
        assert not thread.is_alive()
    assert not errors, errors
    with connect(ledger, read_only=True) as conn:
        assert conn.execute("SELECT window_start, rose, fell, digest, observed_at FROM late_usage_observed "
                            "ORDER BY 1").fetchall() == [
            (STARTS[0], 0, 0, None, later), (STARTS[1], 2, 0, "d-1", later), (STARTS[2], 0, 0, None, later)]
