"""Rendered JSON for the Suger emulator's large listings: entitlements and usage record groups.

A page of 1000 entitlements (23 dimensions each) or groups (20 records each) took 50-70 ms to render
and encode, and listings are re-read every window. Both caches here return exactly the bytes
``json_bytes(render(item))`` would (what ``JSONResponse`` sends):

* an entitlement is cached whole, under the exact values of everything that can change after it is
  created (status, update time, current term, dimension rates): a hit cannot be stale;
* a group's fields other than ``MUTABLE_GROUP_FIELDS`` never change once stored, so each of them is
  encoded once, and a listing encodes only the status fields afresh.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from metronome_suger.sandbox.suger_json import JsonDict, json_bytes, render

MUTABLE_GROUP_FIELDS = frozenset({"status", "lastUpdateTime", "reportedTime", "usageRecordReportID"})
GROUP_CACHE_SIZE = 500_000  # groups whose fixed fields are kept encoded (~1.3 KB each, 20 records)


def _member(key: str, value: Any) -> bytes:
    return json_bytes(key) + b":" + json_bytes(render(value))


class GroupJson:
    """Groups' JSON from their encoded fixed fields; the caller holds the state's lock."""

    def __init__(self, size: int = GROUP_CACHE_SIZE) -> None:
        self.size = size
        self._fixed: dict[str, dict[str, bytes]] = {}
        self._mutable: dict[tuple[str, Any], bytes] = {}  # statuses and instants repeat a lot

    def encode(self, group_id: str, group: JsonDict) -> bytes:
        fixed = self._fixed.get(group_id)
        if fixed is None:
            if len(self._fixed) >= self.size:
                del self._fixed[next(iter(self._fixed))]
            fixed = self._fixed[group_id] = {
                k: _member(k, v) for k, v in group.items() if k not in MUTABLE_GROUP_FIELDS}
        parts = []
        for key, value in group.items():
            part = fixed.get(key)
            if part is None:
                part = self._mutable_member(key, value)
            parts.append(part)
        return b"{" + b",".join(parts) + b"}"

    def _mutable_member(self, key: str, value: Any) -> bytes:
        if key == "usageRecordReportID" and value is not None:  # unique per report: not memoized
            return _member(key, value)
        try:
            memo = self._mutable.get((key, value))
        except TypeError:  # unhashable: never memoized
            return _member(key, value)
        if memo is None:
            if len(self._mutable) >= 4096:
                self._mutable.clear()
            memo = self._mutable[(key, value)] = _member(key, value)
        return memo


class EntitlementJson:
    """Entitlements' JSON under exact keys; the caller holds the state's lock."""

    def __init__(self) -> None:
        self._cached: dict[str, tuple[tuple[Any, ...], bytes]] = {}

    def encode(self, entitlement_id: str, key: tuple[Any, ...],
               current: Callable[[], JsonDict]) -> bytes:
        """The JSON of ``current()`` (the entitlement as of now), reused while ``key`` is equal."""
        cached = self._cached.get(entitlement_id)
        if cached is None or cached[0] != key:
            cached = self._cached[entitlement_id] = (key, json_bytes(render(current())))
        return cached[1]


def json_list(parts: list[bytes]) -> bytes:
    """A JSON array of encoded items, as the encoder writes it (no spaces)."""
    return b"[" + b",".join(parts) + b"]"
