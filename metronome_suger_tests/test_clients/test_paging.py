"""The shared page loop's guards (staged with fake servers: the emulators never misbehave this way)
and the rule that every public client name has exactly one import path."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import httpx
import pytest

import metronome_suger.clients
from metronome_suger.clients.errors import MalformedResponseError
from metronome_suger.clients.paging import Page, paginate
from metronome_suger.clients.suger import SugerClient


@dataclass(frozen=True)
class _Endless:
    """A shape whose server hands out a fresh position forever."""

    start: int = 0
    noun: str = "offset"
    items_at: str = ""

    def params(self, position: int) -> dict[str, Any]:
        return {"offset": position}

    def read(self, payload: Any, position: int) -> Page[int]:
        return Page([position], position + 1)


def test_page_cap_stops_a_server_that_never_ends() -> None:
    fetched: list[dict[str, Any]] = []

    def fetch(params: dict[str, Any]) -> Any:
        fetched.append(params)
        return None

    pages = paginate(_Endless(), fetch, RuntimeError, max_pages=3)
    with pytest.raises(RuntimeError, match="more than 3 pages; stopping"):
        for _ in pages:
            pass
    assert fetched == [{"offset": 0}, {"offset": 1}, {"offset": 2}]


def _suger(handler: Any) -> tuple[SugerClient, list[httpx.URL]]:
    calls: list[httpx.URL] = []

    def record(request: httpx.Request) -> httpx.Response:
        calls.append(request.url)
        return httpx.Response(200, content=json.dumps(handler(request)).encode())

    transport = httpx.MockTransport(record)
    client = SugerClient("http://suger.invalid", "org-1", "key-123456", page_limit=2, transport=transport)
    return client, calls


def test_offset_page_served_again_is_refused() -> None:
    client, calls = _suger(lambda request: [{"id": "b1"}, {"id": "b2"}])  # ignores the offset
    with client, pytest.raises(MalformedResponseError) as info:
        client.list_buyers()
    assert "offset 2 returned the previous page again" in str(info.value)
    assert [c.params["offset"] for c in calls] == ["0", "2"]


def test_offset_pages_treat_go_null_as_an_empty_last_page() -> None:
    pages = {"0": [{"id": "b1", "name": "One"}, {"id": "b2", "name": "Two"}], "2": None}
    client, calls = _suger(lambda request: pages[request.url.params["offset"]])
    with client:
        assert [b.id for b in client.list_buyers()] == ["b1", "b2"]
    assert len(calls) == 2


def test_group_pages_follow_next_offset_until_it_stops_advancing() -> None:
    group = {"id": "g", "entitlementID": "e", "records": {"cpu": 1}}
    pages = {
        "0": {"usageRecordGroups": [group, group], "nextOffset": 2},
        "2": {"usageRecordGroups": [group, group], "nextOffset": 0},
    }
    client, calls = _suger(lambda request: pages[request.url.params["offset"]])
    with client:
        assert len(client.list_usage_record_groups()) == 4
    assert [c.params["offset"] for c in calls] == ["0", "2"]


def test_every_public_client_name_has_one_import_path() -> None:
    package = metronome_suger.clients
    exported = [
        n for n, v in vars(package).items() if not n.startswith("_") and not isinstance(v, ModuleType)
    ]
    assert exported == []
    owner: dict[str, str] = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            if inspect.isclass(value) or inspect.isfunction(value):
                assert value.__module__ == module.__name__, f"{module.__name__} re-exports {name}"
            assert name not in owner, f"{name} is public in {owner.get(name)} and {module.__name__}"
            owner[name] = module.__name__
