"""Fixtures for the client tests: a real sandbox on 127.0.0.1 and clients wired to it.

Retries use a fast policy and a recording ``sleep`` that never sleeps, with a fake clock that
advances by the requested waits, so the tests can assert the exact waits (Retry-After, back-off,
total cap) without depending on wall-clock time.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from metronome_suger.clients.metronome import MetronomeClient
from metronome_suger.clients.retry import RetryPolicy
from metronome_suger.clients.suger import SugerClient

NOW = datetime(2026, 11, 25, 14, tzinfo=timezone.utc)

FAST_RETRY = RetryPolicy(
    max_attempts=4, initial_wait=0.01, max_wait=0.05, max_total_seconds=30.0, jitter=0.0
)


class RecordingSleep:
    """A ``sleep`` that records the requested waits and advances a fake monotonic clock instead."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.now = 0.0

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


@pytest.fixture
def sandbox() -> Iterator[Any]:
    from metronome_suger.sandbox.server import Sandbox

    with Sandbox(customers=4, seed=1, now=NOW) as sb:
        yield sb


@pytest.fixture
def sleeper() -> RecordingSleep:
    return RecordingSleep()


def metronome_token(sb: Any) -> str:
    return str(sb.env()["METRONOME_API_TOKEN"])


def suger_key(sb: Any) -> str:
    return str(sb.env()["SUGER_API_KEY"])


def make_metronome(sb: Any, sleeper: RecordingSleep, **kwargs: Any) -> MetronomeClient:
    options: dict[str, Any] = {
        "retry": FAST_RETRY,
        "timeout": 5.0,
        "sleep": sleeper,
        "clock": sleeper.clock,
    }
    options.update(kwargs)
    token = options.pop("token", metronome_token(sb))
    return MetronomeClient(sb.metronome_url, token, **options)


def make_suger(sb: Any, sleeper: RecordingSleep, **kwargs: Any) -> SugerClient:
    options: dict[str, Any] = {
        "retry": FAST_RETRY,
        "timeout": 5.0,
        "sleep": sleeper,
        "clock": sleeper.clock,
    }
    options.update(kwargs)
    key = options.pop("api_key", suger_key(sb))
    org_id = options.pop("org_id", sb.org_id)
    return SugerClient(sb.suger_url, org_id, key, **options)


@pytest.fixture
def metronome(sandbox: Any, sleeper: RecordingSleep) -> Iterator[MetronomeClient]:
    with make_metronome(sandbox, sleeper) as client:
        yield client


@pytest.fixture
def suger(sandbox: Any, sleeper: RecordingSleep) -> Iterator[SugerClient]:
    with make_suger(sandbox, sleeper) as client:
        yield client
