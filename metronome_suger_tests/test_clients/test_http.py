"""The shared machinery that needs no server: JSON numbers, timestamps, Retry-After, errors,
concurrency."""

from __future__ import annotations

import json
import pickle
import socket
import threading
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr, TypeAdapter

from metronome_suger.clients.errors import (
    ApiError,
    MalformedResponseError,
    NotFoundError,
    TransportError,
)
from metronome_suger.clients.http import iter_bounded, map_bounded
from metronome_suger.clients.jsonio import decode_json, encode_json
from metronome_suger.clients.metronome import MetronomeClient
from metronome_suger.clients.metronome_models import Customer
from metronome_suger.clients.retry import RetryPolicy, parse_retry_after
from metronome_suger.clients.suger import SugerClient
from metronome_suger.clients.types import format_rfc3339, parse_rfc3339

from .conftest import RecordingSleep

UTC = timezone.utc


# -- JSON numbers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("2"), "2"),
        (Decimal("2.000"), "2"),
        (Decimal("1E+3"), "1000"),
        (Decimal("-7"), "-7"),
        (Decimal("1.5"), "1.5"),
        (Decimal("0.1"), "0.1"),
        (Decimal("12345.67"), "12345.67"),
        (Decimal("123456789012345678901234567890"), "123456789012345678901234567890"),
    ],
)
def test_decimal_is_serialised_exactly(value: Decimal, text: str) -> None:
    assert encode_json({"q": value}) == f'{{"q":{text}}}'.encode()
    assert decode_json(encode_json({"q": value}))["q"] == value


def test_decimal_too_precise_for_a_json_float_is_refused_with_its_value() -> None:
    with pytest.raises(ValueError, match=r"0\.12345678901234567890"):
        encode_json({"q": Decimal("0.12345678901234567890")})


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), float("nan")])
def test_non_finite_numbers_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        encode_json({"q": value})


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_every_decimal_round_trips_exactly_or_is_refused(value: Decimal) -> None:
    try:
        body = encode_json([value])
    except ValueError:
        assert Decimal(repr(float(value))) != value
        return
    assert json.loads(body, parse_float=Decimal, parse_int=Decimal)[0] == value


def test_decode_never_goes_through_float() -> None:
    decoded = decode_json(b'{"a": 0.1, "b": 12345678901234567890.123456789, "c": 3}')
    assert decoded == {"a": Decimal("0.1"), "b": Decimal("12345678901234567890.123456789"), "c": 3}
    assert isinstance(decoded["a"], Decimal)


def test_datetimes_in_bodies_are_rfc3339_utc_and_naive_ones_are_refused() -> None:
    aware = datetime(2026, 11, 25, 15, tzinfo=timezone(timedelta(hours=1)))
    assert (
        encode_json({"t": aware, "d": date(2026, 11, 25)})
        == b'{"t":"2026-11-25T14:00:00Z","d":"2026-11-25"}'
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        encode_json({"t": datetime(2026, 11, 25, 14)})


# -- timestamps ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-25T14:00:00Z",
        "2026-11-25T14:00:00+00:00",
        "2026-11-25T14:00:00.000Z",
        "2026-11-25T14:00:00.000000000Z",
        "2026-11-25t14:00:00z",
        "2026-11-25 14:00:00Z",
        "2026-11-25T15:00:00+01:00",
        "2026-11-25T09:00:00-05:00",
        "2026-11-25T14:00:00",
    ],
)
def test_rfc3339_spellings_parse_to_the_same_utc_instant(text: str) -> None:
    parsed = parse_rfc3339(text)
    assert parsed == datetime(2026, 11, 25, 14, tzinfo=UTC)
    assert parsed.utcoffset() == timedelta(0)


def test_fractional_seconds_keep_microseconds() -> None:
    assert parse_rfc3339("2026-11-25T14:00:00.123456789Z").microsecond == 123456


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01T00:00:00Z", "1700000000"])
def test_garbage_timestamps_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(text)


def test_format_rfc3339() -> None:
    assert format_rfc3339(datetime(2026, 11, 25, 14, tzinfo=UTC)) == "2026-11-25T14:00:00Z"
    assert format_rfc3339(datetime(2026, 11, 25, 14, 0, 0, 500, tzinfo=UTC), seconds_only=True) == (
        "2026-11-25T14:00:00Z"
    )


# -- Retry-After ----------------------------------------------------------------------------------


def test_retry_after_forms() -> None:
    now = time.time()
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "-3"}) == 0.0
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    http_date = format_datetime(datetime.fromtimestamp(now + 30, tz=UTC), usegmt=True)
    assert parse_retry_after({"retry-after": http_date}, now=now) == pytest.approx(30, abs=1)
    past = format_datetime(datetime.fromtimestamp(now - 30, tz=UTC), usegmt=True)
    assert parse_retry_after({"retry-after": past}, now=now) == 0.0


def test_backoff_is_exponential_capped_and_jittered() -> None:
    policy = RetryPolicy(initial_wait=0.5, max_wait=8.0, jitter=0.0)
    assert [policy.backoff(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    jittered = RetryPolicy(initial_wait=0.5, max_wait=8.0, jitter=0.5)
    waits = [jittered.backoff(1) for _ in range(50)]
    assert all(0.5 <= w <= 1.0 for w in waits) and len(set(waits)) > 1


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0}, {"initial_wait": -1}, {"max_total_seconds": float("inf")}]
)
def test_retry_policy_validates(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


# -- errors ----------------------------------------------------------------------------------------


def test_error_text_and_pickling() -> None:
    exc = NotFoundError(
        service="metronome",
        method="GET",
        path="/v1/customers",
        status=404,
        message="customer not found",
    )
    assert str(exc) == "Metronome GET /v1/customers -> 404: customer not found"
    assert "NotFoundError" in repr(exc) and "404" in repr(exc)
    clone = pickle.loads(pickle.dumps(exc))
    assert type(clone) is NotFoundError and str(clone) == str(exc) and clone.status == 404
    exc.attempts = 3
    assert str(exc).endswith("(gave up after 3 attempts)")


def test_model_mismatch_is_a_malformed_response_naming_the_field() -> None:
    with MetronomeClient("http://127.0.0.1:9", "tok-123456") as client:
        with pytest.raises(MalformedResponseError) as info:
            client.parse_model(
                TypeAdapter(list[Customer]),
                [{"name": "x"}],
                "GET",
                "/v1/customers",
                loc_prefix="data",
            )
    text = str(info.value)
    assert text.startswith("Metronome GET /v1/customers -> 200:")
    assert "data.0.id" in text and "Field required" in text


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_is_a_transport_error_after_retries_and_never_shows_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = "metronome-token-do-not-leak-0123"
    sleeper = RecordingSleep()
    caplog.set_level("DEBUG")
    client = MetronomeClient(
        f"http://user:pw-secret@127.0.0.1:{_closed_port()}",
        SecretStr(token),
        retry=RetryPolicy(max_attempts=3, initial_wait=0.01, jitter=0),
        sleep=sleeper,
        clock=sleeper.clock,
    )
    with client, pytest.raises(TransportError) as info:
        client.list_customers()
    exc = info.value
    assert (
        exc.status is None
        and exc.method == "GET"
        and exc.path == "/v1/customers"
        and exc.attempts == 3
    )
    assert sleeper.waits == [0.01, 0.02]
    assert str(exc).startswith("Metronome GET /v1/customers -> no response: ConnectError")
    for text in (str(exc), repr(exc), repr(client), caplog.text):
        assert token not in text and "pw-secret" not in text
    assert "retrying" in caplog.text


def test_client_constructor_refuses_empty_credentials_and_bad_urls() -> None:
    with pytest.raises(ValueError, match="token is empty"):
        MetronomeClient("http://127.0.0.1:9", " ")
    with pytest.raises(ValueError, match="API key is empty"):
        SugerClient("http://127.0.0.1:9", "org", SecretStr(""))
    with pytest.raises(ValueError, match="org_id"):
        SugerClient("http://127.0.0.1:9", "", "key-123456")
    with pytest.raises(ValueError, match="base_url"):
        MetronomeClient("ftp://example.com", "tok-123456")
    with pytest.raises(ValueError, match="timeout"):
        MetronomeClient("http://127.0.0.1:9", "tok-123456", timeout=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="page_limit"):
        MetronomeClient("http://127.0.0.1:9", "tok-123456", page_limit=101)


def test_api_error_is_an_exception_base() -> None:
    assert issubclass(TransportError, ApiError) and issubclass(MalformedResponseError, ApiError)


# -- concurrency -----------------------------------------------------------------------------------


def test_map_bounded_keeps_input_order_and_bounds_threads() -> None:
    lock = threading.Lock()
    active = 0
    peak = 0
    gate = threading.Barrier(3, timeout=5)

    def work(n: int) -> int:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        if n < 3:
            gate.wait()  # the first three must really run at the same time
        time.sleep(0.001 * (10 - n % 10))
        with lock:
            active -= 1
        return n * n

    assert map_bounded(work, range(30), max_workers=3) == [n * n for n in range(30)]
    assert peak == 3


def test_map_bounded_propagates_the_first_failure_and_cancels_pending_work() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def work(n: int) -> int:
        with lock:
            started.append(n)
        if n == 1:
            raise RuntimeError("boom 1")
        time.sleep(0.01)
        return n

    with pytest.raises(RuntimeError, match="boom 1"):
        map_bounded(work, range(200), max_workers=2)
    assert len(started) < 200


def test_iter_bounded_streams_answers_returns_failures_and_bounds_concurrency() -> None:
    lock = threading.Lock()
    active = 0
    peak = 0
    first_three = threading.Barrier(3, timeout=5)  # trips only if three calls run at once
    answered = threading.Event()  # set once the caller holds an answer

    def work(n: int) -> int:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        try:
            if n < 3:
                first_three.wait()
            if n == 0 and not answered.wait(timeout=5):
                raise AssertionError("no answer reached the caller while item 0 was running")
            if n == 4:
                raise ValueError("boom 4")
            return n * n
        finally:
            with lock:
                active -= 1

    outcomes: list[tuple[int, int | BaseException]] = []
    for item, outcome in iter_bounded(work, range(12), max_workers=3):
        outcomes.append((item, outcome))
        answered.set()

    assert outcomes[0][0] != 0  # answers arrive as they complete, not in input order
    assert sorted(item for item, _ in outcomes) == list(range(12))
    by_item = dict(outcomes)
    failure = by_item.pop(4)
    assert isinstance(failure, ValueError) and str(failure) == "boom 4"
    assert by_item == {n: n * n for n in range(12) if n != 4}
    assert peak == 3


def test_iter_bounded_edge_cases() -> None:
    assert list(iter_bounded(lambda x: x, [], max_workers=2)) == []
    assert list(iter_bounded(lambda x: x + 1, [1], max_workers=1)) == [(1, 2)]
    with pytest.raises(ValueError):
        iter_bounded(lambda x: x, [1], max_workers=0)  # refused at the call, before iterating


def test_map_bounded_edge_cases() -> None:
    assert map_bounded(lambda x: x, [], max_workers=4) == []
    assert map_bounded(lambda x: x + 1, [1], max_workers=4) == [2]
    assert map_bounded(lambda x: x + 1, [1, 2], max_workers=1) == [2, 3]
    with pytest.raises(ValueError):
        map_bounded(lambda x: x, [1], max_workers=0)


def test_iter_bounded_calls_on_idle_while_a_slow_call_is_out() -> None:
    """The caller can save what it holds while no call completes (a long backoff): the slow call here finishes
    only once the idle callback ran, in the caller's thread."""
    idle_ran = threading.Event()
    threads: list[threading.Thread] = []

    def on_idle() -> None:
        threads.append(threading.current_thread())
        idle_ran.set()

    def slow(n: int) -> int:
        if not idle_ran.wait(timeout=10):
            raise AssertionError("the idle callback never ran")
        return n

    assert list(iter_bounded(slow, [7], max_workers=1, on_idle=(0.01, on_idle))) == [(7, 7)]
    assert threads and set(threads) == {threading.current_thread()}
