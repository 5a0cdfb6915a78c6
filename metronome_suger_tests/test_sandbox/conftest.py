"""Fixtures for the sandbox tests: real servers on 127.0.0.1, a frozen clock, httpx clients."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from metronome_suger.sandbox.constants import METRONOME_TOKEN, SUGER_API_KEY
from metronome_suger.sandbox.server import Sandbox

# A Wednesday afternoon, mid-month: previous month FINALIZED, current month DRAFT.
NOW = datetime(2026, 11, 25, 13, 30, tzinfo=timezone.utc)
SEED = 7


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """The bundled scenario (6 customers), clock frozen at NOW."""
    with Sandbox(seed=SEED, customers=6, now=NOW) as running:
        yield running


@pytest.fixture(scope="module")
def _module_sandbox() -> Iterator[Sandbox]:
    with Sandbox(seed=SEED, customers=6, now=NOW) as running:
        yield running


@pytest.fixture
def shared_sandbox(_module_sandbox: Sandbox) -> Iterator[Sandbox]:
    """The bundled scenario shared by a module's tests, for tests that do not change data.

    Faults, pagination toggles, request logs and the clock are reset around each test."""
    _reset(_module_sandbox)
    yield _module_sandbox
    _reset(_module_sandbox)


def _reset(sandbox: Sandbox) -> None:
    for faults in (sandbox.metronome_faults, sandbox.suger_faults):
        faults.clear()
        faults.empty_pages, faults.empty_second_page = False, True
    sandbox.metronome_log.clear()
    sandbox.suger_log.clear()
    sandbox.clock.set(NOW)


@pytest.fixture
def empty_sandbox() -> Iterator[Sandbox]:
    """No customers, no metrics: for hand-built cases with exact numbers."""
    with Sandbox(seed=SEED, customers=0, now=NOW) as running:
        yield running


def metronome_client(sandbox: Sandbox, token: str = METRONOME_TOKEN) -> httpx.Client:
    return httpx.Client(
        base_url=sandbox.metronome_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


@pytest.fixture
def api(sandbox: Sandbox) -> Iterator[httpx.Client]:
    with metronome_client(sandbox) as client:
        yield client


@pytest.fixture
def shared_api(shared_sandbox: Sandbox) -> Iterator[httpx.Client]:
    with metronome_client(shared_sandbox) as client:
        yield client


@pytest.fixture
def empty_api(empty_sandbox: Sandbox) -> Iterator[httpx.Client]:
    with metronome_client(empty_sandbox) as client:
        yield client


@pytest.fixture
def suger_api(sandbox: Sandbox) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=sandbox.suger_url, headers={"Authorization": f"Key {SUGER_API_KEY}"}, timeout=10
    ) as client:
        yield client


def collect_pages(
    client: httpx.Client,
    method: str,
    path: str,
    *,
    params: dict[str, Any] | None = None,
    json: Any = None,
    max_pages: int = 200,
) -> list[list[dict[str, Any]]]:
    """Follow `next_page` (always in the query string) to the end; returns every page's data."""
    pages: list[list[dict[str, Any]]] = []
    query = dict(params or {})
    for _ in range(max_pages):
        response = client.request(method, path, params=query, json=json)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"data", "next_page"}
        pages.append(body["data"])
        if body["next_page"] is None:
            return pages
        assert isinstance(body["next_page"], str) and body["next_page"]
        query["next_page"] = body["next_page"]
    raise AssertionError("pagination did not terminate")


def flatten(pages: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [item for page in pages for item in page]
