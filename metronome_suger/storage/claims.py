"""Window claims: exactly-once that holds across processes sharing only the database.

A run's step claims each window it writes (and, in the amount modes, the shared invoice high water) before
it reads and writes them, and releases the claims when it ends. A claim is one row of ``window_claims``
taken by a conditional UPDATE, which both backends apply atomically: on PostgreSQL the loser of a race
updates no row or gets a serialization conflict, and waits. On the DuckDB file the pool and the file lock
already serialize writers; the claims cost a few statements there and keep one code path.

A crashed holder (``kill -9``, OOM, a lost pod) must not block its windows for long: a claim names the holder's
run, machine and process, and a heartbeat renews its short lease while the step runs. A claim whose process is
gone from this machine is taken over at once; one held from another machine, once its lease has run out.
"""

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import duckdb

from metronome_suger.storage.db import Connect, fetch_one, is_lock_error

LEASE = timedelta(minutes=2)  # renewed every third of it while held; another machine's crashed holder frees after it
HOST = socket.gethostname()


class ClaimTimeoutError(RuntimeError):
    """Another run kept a window for longer than this step would wait."""


def _now() -> datetime:
    return datetime.now(timezone.utc)  # real time on purpose: leases are shared between machines


def holder_name(run_id: str) -> str:
    """Who holds a claim: the run, and the process on this machine doing the work."""
    return f"{run_id} (process {os.getpid()} on {HOST})"


def _process_gone(holder: str | None) -> bool:
    """Whether ``holder`` names a process of this machine that no longer runs (killed, or left a zombie)."""
    if not holder or not holder.endswith(f" on {HOST})") or " (process " not in holder:
        return False
    pid_text = holder.rsplit(" (process ", 1)[1].split(" ", 1)[0]
    if not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)  # signal 0: does the process exist (any OS)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    try:  # a killed child its parent has not reaped yet still exists, as a zombie (Linux /proc)
        with open(f"/proc/{pid_text}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return False  # no /proc: it exists, so it is alive


def _try(connect: Connect, key: str, holder: str, lease: timedelta) -> tuple[bool, str | None, datetime | None]:
    """One attempt: (claimed, current holder, its lease end)."""
    now = _now()
    with connect() as conn:
        try:
            conn.execute("INSERT INTO window_claims SELECT ?, NULL, ? WHERE NOT EXISTS "
                         "(SELECT 1 FROM window_claims WHERE claim_key = ?)", [key, now, key])
        except duckdb.Error as exc:  # another process inserted the row first: fine, it exists now
            if not ("duplicate key" in str(exc).lower() or "constraint" in str(exc).lower()
                    or is_lock_error(exc)):
                raise
        current = conn.execute("SELECT holder FROM window_claims WHERE claim_key = ?", [key]).fetchall()
        gone = current[0][0] if current and _process_gone(current[0][0]) else holder
        try:
            changed = fetch_one(conn, "UPDATE window_claims SET holder = ?, lease_until = ? WHERE claim_key = ? "
                                      "AND (holder IS NULL OR holder = ? OR holder = ? OR lease_until < ?)",
                                [holder, now + lease, key, holder, gone, now])[0]
        except duckdb.Error as exc:
            if not is_lock_error(exc):
                raise
            changed = 0
        if changed:
            return True, holder, now + lease
        current = conn.execute("SELECT holder, lease_until FROM window_claims WHERE claim_key = ?", [key]).fetchall()
    return False, *(current[0] if current else (None, None))


def _renew(connect: Connect, holder: str, keys: list[str], lease: timedelta) -> None:
    with connect() as conn:
        conn.execute("UPDATE window_claims SET lease_until = ? WHERE holder = ? AND list_contains(?, claim_key)",
                     [_now() + lease, holder, keys])


@contextmanager
def _heartbeat(connect: Connect, holder: str, keys: list[str], lease: timedelta) -> Iterator[None]:
    """Renew the held claims every third of the lease until the block ends (a missed beat is retried next time)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(lease.total_seconds() / 3):
            try:
                _renew(connect, holder, keys, lease)
            except Exception:  # noqa: BLE001 - busy or briefly unreachable: two more beats before the lease ends
                pass

    threading.Thread(target=beat, name="claims-heartbeat", daemon=True).start()
    try:
        yield
    finally:
        stop.set()  # not joined: a beat after the release renews nothing (it matches only claims still held)


@contextmanager
def claimed(
    connect: Connect, keys: Sequence[str], run_id: str, *, wait: float = 120.0, lease: timedelta = LEASE,
    heartbeat: bool = True, sleep: Callable[[float], None] = time.sleep,
) -> Iterator[None]:
    """Hold every key (taken in sorted order, so two runs never wait on each other) for the block. A DuckDB file
    needs no ``heartbeat``: every process sharing it is on this machine, so a dead holder is seen at once (and a
    second, read-write connection from a heartbeat thread would clash with the step's read-only ones)."""
    holder = holder_name(run_id)
    held: list[str] = []
    try:
        for key in sorted(set(keys)):
            deadline = time.monotonic() + wait
            delay = 0.05
            while True:
                ok, who, until = _try(connect, key, holder, lease)
                if ok:
                    held.append(key)
                    break
                if time.monotonic() >= deadline:
                    raise ClaimTimeoutError(
                        f"{key} is being processed by run {who} (its claim lasts until {until}); waited {wait:g} s: "
                        "run it again once that run has finished")
                sleep(delay)
                delay = min(delay * 2, 2.0)
        if heartbeat:
            with _heartbeat(connect, holder, held, lease):
                yield
        else:
            yield
    finally:
        if held:
            try:
                with connect() as conn:
                    conn.execute("UPDATE window_claims SET holder = NULL WHERE holder = ? "
                                 "AND list_contains(?, claim_key)", [holder, held])
            except Exception:  # noqa: BLE001 - never mask the block's own error; the lease frees them anyway
                pass
