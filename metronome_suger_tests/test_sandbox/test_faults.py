"""Fault injection and the request log, over real HTTP on both emulators."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from metronome_suger.sandbox.constants import METRONOME_TOKEN, ORG_ID, SUGER_API_KEY
from metronome_suger.sandbox.faults import Faults, mask_secret
from metronome_suger.sandbox.server import Sandbox


def test_429_with_retry_after_fires_times_then_disappears(
    shared_sandbox: Sandbox, shared_api: httpx.Client
) -> None:
    shared_sandbox.metronome_faults.inject("429", times=2, retry_after=2)
    first, second, third = (shared_api.get("/v1/customers") for _ in range(3))
    assert (first.status_code, second.status_code, third.status_code) == (429, 429, 200)
    assert first.headers["retry-after"] == "2"
    assert set(first.json()) == {"message"}
    assert [e.status for e in shared_sandbox.metronome_log.entries()] == [429, 429, 200]
    assert shared_sandbox.metronome_faults.pending() == 0


def test_429_without_retry_after_has_no_header(
    shared_sandbox: Sandbox, shared_api: httpx.Client
) -> None:
    shared_sandbox.metronome_faults.inject("429")
    response = shared_api.get("/v1/billable-metrics")
    assert response.status_code == 429 and "retry-after" not in response.headers


@pytest.mark.parametrize("status,expected", [(None, 500), (502, 502), (503, 503)])
def test_5xx(
    shared_sandbox: Sandbox, shared_api: httpx.Client, status: int | None, expected: int
) -> None:
    shared_sandbox.metronome_faults.inject("5xx", status=status)
    response = shared_api.get("/v1/customers")
    assert response.status_code == expected and "message" in response.json()
    assert shared_api.get("/v1/customers").status_code == 200


def test_faults_match_method_and_path_prefix(
    shared_sandbox: Sandbox, shared_api: httpx.Client
) -> None:
    shared_sandbox.metronome_faults.inject("5xx", method="POST", path_prefix="/v1/usage")
    assert shared_api.get("/v1/customers").status_code == 200
    assert shared_api.get("/v1/billable-metrics").status_code == 200
    body = {
        "starting_on": "2026-11-25T00:00:00Z",
        "ending_before": "2026-11-26T00:00:00Z",
        "window_size": "HOUR",
    }
    assert shared_api.post("/v1/usage", json=body).status_code == 500
    assert shared_api.post("/v1/usage", json=body).status_code == 200


def test_latency_delays_then_answers_normally(
    shared_sandbox: Sandbox, shared_api: httpx.Client
) -> None:
    shared_sandbox.metronome_faults.inject("latency", delay_seconds=0.3)
    started = time.monotonic()
    response = shared_api.get("/v1/customers")
    assert response.status_code == 200 and len(response.json()["data"]) == 6
    assert time.monotonic() - started >= 0.3
    [entry] = shared_sandbox.metronome_log.entries()
    assert (entry.status, entry.fault) == (200, "latency")


def test_latency_beyond_client_timeout_is_a_timeout(shared_sandbox: Sandbox) -> None:
    shared_sandbox.metronome_faults.inject("latency", delay_seconds=0.5)
    with httpx.Client(
        base_url=shared_sandbox.metronome_url,
        timeout=0.2,
        headers={"Authorization": f"Bearer {METRONOME_TOKEN}"},
    ) as client:
        with pytest.raises(httpx.TimeoutException):
            client.get("/v1/customers")


def test_drop_is_a_transport_error_not_a_status(
    shared_sandbox: Sandbox, shared_api: httpx.Client
) -> None:
    shared_sandbox.metronome_faults.inject("drop")
    with pytest.raises(httpx.TransportError):
        shared_api.get("/v1/customers")
    assert shared_api.get("/v1/customers").status_code == 200
    assert [(e.status, e.fault) for e in shared_sandbox.metronome_log.entries()] == [
        (None, "drop"),
        (200, None),
    ]


def test_malformed_is_200_json_that_does_not_parse(
    shared_sandbox: Sandbox, shared_api: httpx.Client
) -> None:
    shared_sandbox.metronome_faults.inject("malformed")
    response = shared_api.get("/v1/customers")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_request_log_masks_auth_and_records_bodies(
    shared_sandbox: Sandbox, shared_api: httpx.Client
) -> None:
    body = [
        {
            "transaction_id": "log-1",
            "customer_id": "x",
            "event_type": "e",
            "timestamp": "2026-11-25T00:00:00Z",
        }
    ]
    shared_api.post("/v1/ingest", json=body)
    httpx.get(f"{shared_sandbox.metronome_url}/v1/customers?limit=1")  # no token: 401
    ingest, anonymous = shared_sandbox.metronome_log.entries()
    assert (
        ingest.headers["authorization"] == "Bearer ***"
        and ingest.body == body
        and ingest.status == 200
    )
    assert (anonymous.method, anonymous.path, anonymous.query, anonymous.status) == (
        "GET",
        "/v1/customers",
        "limit=1",
        401,
    )
    assert METRONOME_TOKEN not in repr(shared_sandbox.metronome_log.entries())
    assert [e.path for e in shared_sandbox.metronome_log.find(method="post")] == ["/v1/ingest"]
    assert shared_sandbox.metronome_log.find(path_prefix="/v1/billable") == []


def test_suger_side_faults_and_masked_log(shared_sandbox: Sandbox) -> None:
    shared_sandbox.suger_faults.inject("5xx", status=503, path_prefix=f"/org/{ORG_ID}/buyer")
    headers = {"Authorization": f"Key {SUGER_API_KEY}"}
    url = f"{shared_sandbox.suger_url}/org/{ORG_ID}/buyer"
    assert httpx.get(url, headers=headers).status_code == 503
    assert httpx.get(url, headers=headers).status_code == 200
    entries = shared_sandbox.suger_log.entries()
    assert [e.status for e in entries] == [503, 200]
    assert all(e.headers["authorization"] == "Key ***" for e in entries)
    assert SUGER_API_KEY not in repr(entries)
    assert shared_sandbox.metronome_log.entries() == []


def test_fault_arguments_are_validated() -> None:
    faults = Faults()
    with pytest.raises(ValueError):
        faults.inject("teapot")
    with pytest.raises(ValueError):
        faults.inject("429", times=0)
    with pytest.raises(ValueError):
        faults.inject("5xx", status=404)
    with pytest.raises(ValueError):
        faults.inject("latency")
    faults.inject("429", times=3)
    faults.clear()
    assert faults.pending() == 0 and faults.take("GET", "/v1/customers") is None


@pytest.mark.parametrize(
    "raw,masked",
    [("Bearer abc123", "Bearer ***"), ("Key s3cret", "Key ***"), ("justatoken", "***")],
)
def test_mask_secret_keeps_scheme_only(raw: str, masked: str) -> None:
    assert mask_secret(raw) == masked
