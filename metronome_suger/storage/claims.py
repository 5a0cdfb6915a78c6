"""Window claims: exactly-once that holds across processes sharing only the database.

A run's step claims each window it writes (and, in the amount modes, the shared invoice high water) before
it reads and writes them, and releases the claims when it ends. A claim is one row of ``window_claims``
taken by a conditional UPDATE, which both backends apply atomically: on PostgreSQL the loser of a race
updates no row or gets a serialization conflict, and waits. A claim has a lease, so a crashed run's
successor takes the window over once the lease has run out. On the DuckDB file the pool and the file lock
already serialize writers; the claims cost a few statements there and keep one code path.
"""

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import duckdb

from metronome_suger.storage.db import Connect, fetch_one, is_lock_error

LEASE = timedelta(minutes=30)  # longer than any step; a crashed holder's windows free up after it


class ClaimTimeoutError(RuntimeError):
    """Another run kept a window for longer than this step would wait."""


def _now() -> datetime:
    return datetime.now(timezone.utc)  # real time on purpose: leases are shared between machines


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
        try:
            changed = fetch_one(conn, "UPDATE window_claims SET holder = ?, lease_until = ? WHERE claim_key = ? "
                                      "AND (holder IS NULL OR holder = ? OR lease_until < ?)",
                                [holder, now + lease, key, holder, now])[0]
        except duckdb.Error as exc:
            if not is_lock_error(exc):
                raise
            changed = 0
        if changed:
            return True, holder, now + lease
        current = conn.execute("SELECT holder, lease_until FROM window_claims WHERE claim_key = ?", [key]).fetchall()
    return False, *(current[0] if current else (None, None))


@contextmanager
def claimed(
    connect: Connect, keys: Sequence[str], holder: str, *, wait: float = 120.0, lease: timedelta = LEASE,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[None]:
    """Hold every key (taken in sorted order, so two runs never wait on each other) for the block."""
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
        yield
    finally:
        if held:
            try:
                with connect() as conn:
                    conn.execute("UPDATE window_claims SET holder = NULL WHERE holder = ? "
                                 "AND list_contains(?, claim_key)", [holder, held])
            except Exception:  # noqa: BLE001 - never mask the block's own error; the lease frees them anyway
                pass
