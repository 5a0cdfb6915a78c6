"""A controllable clock, so tests can move time instead of sleeping.

Both emulators read `now()` to decide what is visible (closed usage hours, issued invoices,
renewals).
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone


def _require_aware(dt: datetime) -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"datetime must be timezone-aware, got naive {dt!r}")
    return dt.astimezone(timezone.utc)


class SandboxClock:
    """UTC clock: frozen at a given instant, or following real time (plus any `advance`)."""

    def __init__(self, frozen_at: datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._frozen: datetime | None = _require_aware(frozen_at) if frozen_at else None
        self._offset = timedelta(0)

    @property
    def frozen(self) -> bool:
        with self._lock:
            return self._frozen is not None

    def now(self) -> datetime:
        with self._lock:
            if self._frozen is not None:
                return self._frozen
            return datetime.now(timezone.utc) + self._offset

    def set(self, dt: datetime) -> None:
        """Freeze the clock at `dt`."""
        with self._lock:
            self._frozen = _require_aware(dt)

    def advance(self, td: timedelta) -> None:
        """Move the clock forward (or back with a negative delta), frozen or not."""
        with self._lock:
            if self._frozen is not None:
                self._frozen = self._frozen + td
            else:
                self._offset += td
