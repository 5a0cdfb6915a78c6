"""Each fault kind, both clients: what is retried, how long it waits, when it stops."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from metronome_suger.clients.errors import (
    ApiError,
    MalformedResponseError,
    RateLimitError,
    ServerError,
    TransportError,
)
from metronome_suger.clients.http import JsonApiClient
from metronome_suger.clients.retry import RetryPolicy

from .conftest import RecordingSleep, make_metronome, make_suger

POLICY = RetryPolicy(
    max_attempts=4, initial_wait=0.01, max_wait=8.0, max_total_seconds=30.0, jitter=0.0
)


@dataclass
class Target:
    """One read call of one service, with the sandbox handles that belong to it."""

    name: str
    make: Callable[..., JsonApiClient]
    call: Callable[[Any], Any]
    path: Callable[[Any], str]
    faults: str
    log: str

    def client(self, sb: Any, sleeper: RecordingSleep, **kwargs: Any) -> JsonApiClient:
        kwargs.setdefault("retry", POLICY)
        return self.make(sb, sleeper, **kwargs)

    def inject(self, sb: Any, kind: str, **kwargs: Any) -> None:
        getattr(sb, self.faults).inject(kind, path_prefix=self.path(sb), **kwargs)

    def calls(self, sb: Any) -> list[Any]:
        return [e for e in getattr(sb, self.log).entries() if e.path == self.path(sb)]

    def clear_log(self, sb: Any) -> None:
        getattr(sb, self.log).clear()


TARGETS = [
    Target(
        "metronome",
        make_metronome,
        lambda c: c.list_billable_metrics(),
        lambda sb: "/v1/billable-metrics",
        "metronome_faults",
        "metronome_log",
    ),
    Target(
        "suger",
        make_suger,
        lambda c: c.list_buyers(),
        lambda sb: f"/org/{sb.org_id}/buyer",
        "suger_faults",
        "suger_log",
    ),
]


@pytest.fixture(params=TARGETS, ids=lambda t: t.name)
def target(request: pytest.FixtureRequest) -> Target:
    return request.param  # type: ignore[no-any-return]


def _run(target: Target, sb: Any, sleeper: RecordingSleep, **kwargs: Any) -> Any:
    target.clear_log(sb)
    with target.client(sb, sleeper, **kwargs) as client:
        return target.call(client)


def _fail(
    target: Target, sb: Any, sleeper: RecordingSleep, error: type[ApiError], **kwargs: Any
) -> ApiError:
    target.clear_log(sb)
    with target.client(sb, sleeper, **kwargs) as client, pytest.raises(error) as info:
        target.call(client)
    return info.value


# -- 429 -------------------------------------------------------------------------------------------


def test_retry_after_is_honoured_as_the_wait(
    target: Target, sandbox: Any, sleeper: RecordingSleep
) -> None:
    expected = _run(target, sandbox, RecordingSleep())
    target.inject(sandbox, "429", retry_after=2)
    assert _run(target, sandbox, sleeper) == expected
    assert sleeper.waits == [2.0]
    assert [e.status for e in target.calls(sandbox)] == [429, 200]


def test_retry_after_is_capped_at_max_wait(
    target: Target, sandbox: Any, sleeper: RecordingSleep
) -> None:
    target.inject(sandbox, "429", retry_after=100)
    _run(target, sandbox, sleeper)
    assert sleeper.waits == [8.0]


def test_429_without_retry_after_backs_off_exponentially(
    target: Target, sandbox: Any, sleeper: RecordingSleep
) -> None:
    target.inject(sandbox, "429", times=3)
    _run(target, sandbox, sleeper)
    assert sleeper.waits == [0.01, 0.02, 0.04]


def test_persistent_429_raises_rate_limit_error_at_the_attempt_cap(
    target: Target, sandbox: Any, sleeper: RecordingSleep
) -> None:
    target.inject(sandbox, "429", times=50, retry_after=1)
    exc = _fail(target, sandbox, sleeper, RateLimitError)
    assert exc.status == 429 and exc.attempts == 4 and exc.retry_after == 1.0
    assert sleeper.waits == [1.0, 1.0, 1.0]
    assert len(target.calls(sandbox)) == 4


# -- 5xx -------------------------------------------------------------------------------------------


def test_transient_5xx_is_retried(target: Target, sandbox: Any, sleeper: RecordingSleep) -> None:
    target.inject(sandbox, "5xx", times=2, status=502)
    _run(target, sandbox, sleeper)
    assert sleeper.waits == [0.01, 0.02]
    assert [e.status for e in target.calls(sandbox)] == [502, 502, 200]


def test_persistent_5xx_stops_at_max_attempts_with_a_typed_error(
    target: Target, sandbox: Any, sleeper: RecordingSleep
) -> None:
    target.inject(sandbox, "5xx", times=50)
    exc = _fail(target, sandbox, sleeper, ServerError)
    path = target.path(sandbox)
    assert (exc.method, exc.path, exc.status, exc.attempts) == ("GET", path, 500, 4)
    assert f"GET {path} -> 500: Injected server error. (gave up after 4 attempts)" in str(exc)
    assert len(target.calls(sandbox)) == 4
    assert sleeper.waits == [0.01, 0.02, 0.04]


def test_total_time_cap_stops_before_max_attempts(
    target: Target, sandbox: Any, sleeper: RecordingSleep
) -> None:
    policy = RetryPolicy(
        max_attempts=10, initial_wait=0.4, max_wait=8.0, max_total_seconds=1.0, jitter=0.0
    )
    target.inject(sandbox, "5xx", times=50, status=503)
    exc = _fail(target, sandbox, sleeper, ServerError, retry=policy)
    # waited 0.4; the next wait (0.8) would end at 1.2 s > 1.0 s: give up after 2 attempts.
    assert sleeper.waits == [0.4] and exc.attempts == 2 and exc.status == 503


def test_a_retry_after_beyond_the_total_cap_is_not_waited_for(
    target: Target, sandbox: Any, sleeper: RecordingSleep
) -> None:
    policy = RetryPolicy(
        max_attempts=5, initial_wait=0.01, max_wait=10.0, max_total_seconds=3.0, jitter=0.0
    )
    target.inject(sandbox, "429", retry_after=5)
    exc = _fail(target, sandbox, sleeper, RateLimitError, retry=policy)
    assert sleeper.waits == [] and exc.attempts == 1 and exc.retry_after == 5.0


# -- transport -------------------------------------------------------------------------------------


def test_a_slow_answer_times_out_and_is_retried(
    target: Target, sandbox: Any, sleeper: RecordingSleep
) -> None:
    target.inject(sandbox, "latency", delay_seconds=1.0)
    _run(target, sandbox, sleeper, timeout=0.25)
    assert sleeper.waits == [0.01]
    assert len(target.calls(sandbox)) == 2


def test_persistent_timeouts_raise_a_transport_error(
    target: Target, sandbox: Any, sleeper: RecordingSleep
) -> None:
    policy = RetryPolicy(max_attempts=2, initial_wait=0.01, jitter=0.0)
    target.inject(sandbox, "latency", times=5, delay_seconds=1.0)
    exc = _fail(target, sandbox, sleeper, TransportError, retry=policy, timeout=0.2)
    assert exc.status is None and exc.attempts == 2 and "ReadTimeout" in exc.message
    assert str(exc).startswith(
        f"{target.name.capitalize()} GET {target.path(sandbox)} -> no response: ReadTimeout"
    )


def test_a_dropped_connection_is_retried(
    target: Target, sandbox: Any, sleeper: RecordingSleep
) -> None:
    target.inject(sandbox, "drop")
    _run(target, sandbox, sleeper)
    assert sleeper.waits == [0.01]
    assert [e.status for e in target.calls(sandbox)] == [None, 200]


def test_persistent_drops_raise_a_transport_error_at_the_cap(
    target: Target, sandbox: Any, sleeper: RecordingSleep
) -> None:
    target.inject(sandbox, "drop", times=50)
    exc = _fail(target, sandbox, sleeper, TransportError)
    assert exc.status is None and exc.attempts == 4 and exc.method == "GET"
    assert "RemoteProtocolError" in exc.message
    assert len(target.calls(sandbox)) == 4


def test_malformed_json_is_not_retried(
    target: Target, sandbox: Any, sleeper: RecordingSleep
) -> None:
    target.inject(sandbox, "malformed")
    exc = _fail(target, sandbox, sleeper, MalformedResponseError)
    assert (
        exc.path == target.path(sandbox) and exc.method == "GET" and "not valid JSON" in exc.message
    )
    assert sleeper.waits == [] and len(target.calls(sandbox)) == 1


# -- logging ---------------------------------------------------------------------------------------


def test_retries_are_logged_without_headers(
    target: Target, sandbox: Any, sleeper: RecordingSleep, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    target.inject(sandbox, "5xx", times=1, status=503)
    target.inject(sandbox, "drop", times=1)
    _run(target, sandbox, sleeper)
    retry_lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "metronome_suger.clients" and "retrying" in r.getMessage()
    ]
    path = target.path(sandbox)
    assert (
        retry_lines[0]
        == f"{target.name.capitalize()} GET {path} -> 503 (attempt 1/4); retrying in 0.01s"
    )
    assert retry_lines[1].startswith(
        f"{target.name.capitalize()} GET {path} -> transport error (RemoteProtocolError"
    )
    assert "attempt 2/4" in retry_lines[1]
    assert "authorization" not in caplog.text.lower()
