"""The retry policy shared by both clients: what is retried, how long to wait, when to stop.

Why a policy object: tests pass fast values, production passes patient ones, and the rules
(Retry-After honoured but capped, exponential back-off with jitter, attempt cap *and* total-time
cap) live in one place.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timezone

from metronome_suger.clients.errors import ApiError

__all__ = ["RetryPolicy", "is_retryable", "parse_retry_after"]


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry transient failures (transport errors, 408, 429, 5xx).

    Waits: ``Retry-After`` / ``retry-after-ms`` when the server sends one (capped at ``max_wait``),
    else ``min(max_wait, initial_wait * 2**(attempt-1) + uniform(0, jitter))``. Gives up after
    ``max_attempts`` tries or when the next wait would take the call past ``max_total_seconds``,
    whichever comes first.
    """

    max_attempts: int = 5
    initial_wait: float = 0.5
    max_wait: float = 8.0
    max_total_seconds: float = 60.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be >= 1")
        for name in ("initial_wait", "max_wait", "max_total_seconds", "jitter"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"RetryPolicy.{name} must be a finite number >= 0, got {value!r}")

    @classmethod
    def no_retry(cls) -> RetryPolicy:
        """One attempt only (useful for interactive commands and tests)."""
        return cls(max_attempts=1)

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Exponential back-off with additive jitter for the wait after failed attempt ``attempt``
        (1-based)."""
        base = self.initial_wait * (2 ** max(attempt - 1, 0))
        extra = float((rng or random).uniform(0, self.jitter)) if self.jitter else 0.0
        return float(min(self.max_wait, base + extra))


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (delta-seconds or HTTP-date); None
    if absent/bad."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms) / 1000.0
            if math.isfinite(value):
                return max(value, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
        return max(value, 0.0) if math.isfinite(value) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = time.time() if now is None else now
    return max(when.timestamp() - current, 0.0)


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.retryable
