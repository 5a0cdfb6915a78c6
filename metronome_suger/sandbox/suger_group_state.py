"""Usage record groups of `SugerState` (a mixin, to keep each module small): ids, storage, the
listing, status changes, and the hourly forwarder's catch-up.

Relies on the host class for the lock, the clock, ids and entitlements.
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from metronome_suger.sandbox.suger_forwarder import Forwarder
from metronome_suger.sandbox.suger_json import JsonDict, SugerError, hour_floor, render, utc
from metronome_suger.sandbox.suger_listing_json import GroupJson, json_list

GROUP_SOURCES = ("", "API", "INTERNAL", "LAGO", "METRONOME", "ORB", "STRIPE")  # UsageRecordGroupSource
GROUP_STATUSES = ("CREATED", "INVALID", "REPORT_PENDING", "REPORTED", "REPORT_FAILED", "DELETED")


class GroupsMixin:
    """The organization's usage record groups (see the module docstring)."""

    org_id: str
    forwarder: Forwarder
    _lock: threading.RLock
    _entitlements: dict[str, JsonDict]
    _groups: dict[str, JsonDict]
    _queued_at: dict[str, datetime]
    _min_queued: datetime | None
    _rejections: dict[str, list[tuple[int, str]]]
    _serial: int
    _group_query: tuple[tuple[Any, ...], list[str]] | None
    _group_json: GroupJson

    @abstractmethod
    def now(self) -> datetime: ...

    @abstractmethod
    def new_uuid(self) -> str: ...

    @abstractmethod
    def _entitlement(self, ent_id: str) -> JsonDict: ...

    @abstractmethod
    def _marketplace_entitlement(self, entitlement_id: str) -> JsonDict: ...

    def check_rejection(self, entitlement_ids: Iterable[str]) -> None:
        """Raise (and consume) the first configured ``reject_next`` among these entitlements."""
        with self._lock:
            for ent_id in entitlement_ids:
                if self._rejections.get(ent_id):
                    status, message = self._rejections[ent_id].pop(0)
                    raise SugerError(status, message)

    def check_new_id(self, group_id: Any) -> str | None:
        """Validate a client group id; a repeated id is Suger's 409 whatever the body says."""
        if group_id in (None, ""):
            return None
        if not isinstance(group_id, str) or len(group_id) > 36:
            raise SugerError(400, "id must be a string of at most 36 characters")
        with self._lock:
            if group_id in self._groups:
                raise SugerError(409, f"usage record group {group_id} already exists")
        return group_id

    def store_group(self, prepared: JsonDict, group_id: str | None = None) -> JsonDict:
        with self._lock:
            return render(self._groups[self._store(prepared, group_id)])

    def store_group_json(self, prepared: JsonDict, group_id: str | None = None) -> bytes:
        """``store_group`` answering its JSON (what ``JSONResponse`` would send): the group's
        fixed fields are encoded once, here, and every later listing of it reuses them."""
        with self._lock:
            stored = self._store(prepared, group_id)
            return self._group_json.encode(stored, self._groups[stored])

    def _store(self, prepared: JsonDict, group_id: str | None) -> str:
        with self._lock:
            group_id = self.check_new_id(group_id) or self.new_uuid()
            now = self.now()
            self._serial += 1
            self._groups[group_id] = {
                "id": group_id, "organizationID": self.org_id, **prepared, "status": "CREATED",
                "creationTime": now, "lastUpdateTime": now, "reportedTime": None,
                "serialID": self._serial, "usageRecordReportID": None,
            }
            self._queue(group_id, now)
            self.forwarder.on_stored(self._groups[group_id])
            return group_id

    def add_foreign_group(self, entitlement_id: str, records: dict[str, Any], *,
                          source: str = "METRONOME", timestamp: datetime | None = None) -> JsonDict:
        """Test hook: a group reported by one of Suger's own integrations (``metaInfo.source``, the
        SDK's UsageRecordGroupSource), e.g. its Metronome integration with Auto Report Usage on."""
        if source not in GROUP_SOURCES:
            raise ValueError(f"source must be one of {GROUP_SOURCES}")
        with self._lock:
            ent = self._entitlement(entitlement_id)
            quantities = {k: Decimal(str(v)) for k, v in records.items()}
            return self.store_group({
                "entitlementID": entitlement_id, "buyerID": ent["buyerID"], "partner": ent["partner"],
                "records": quantities, "metaInfo": {"originRecords": dict(quantities),
                                                    "timestamp": utc(timestamp or self.now()),
                                                    "source": source}})

    # -- usage record groups: read and manage -----------------------------------------------------
    def groups(self) -> list[JsonDict]:
        """All stored groups in API shape, DELETED included, in serialID order."""
        with self._lock:
            return [render(g) for g in self._groups.values()]

    def find_groups(self, *, start: date, end: date, status: str | None = None,
                    source: str | None = None, **selectors: str) -> list[str]:
        """Ids of the groups created on UTC days ``start``..``end`` matching the filters (selectors:
        partner / productID / entitlementID / buyerID), in serialID order, none rendered. Pages of
        one listing reuse its candidates: the fields filtered on, status aside, never change."""
        with self._lock:
            key = (start, end, source, tuple(sorted(selectors.items())), len(self._groups))
            if self._group_query is not None and self._group_query[0] == key:
                candidates = self._group_query[1]
            else:
                candidates = [
                    gid for gid, g in self._groups.items()
                    if start <= g["creationTime"].date() <= end
                    and source in (None, g["metaInfo"]["source"])
                    and all((self._entitlements[g["entitlementID"]]["productID"] if k == "productID"
                             else g[k]) == v for k, v in selectors.items())
                ]
                self._group_query = (key, candidates)
            if status is None:
                return list(candidates)
            return [gid for gid in candidates if self._groups[gid]["status"] == status]

    def groups_json(self, group_ids: Iterable[str]) -> bytes:
        """``json_bytes([self.group(i) for i in group_ids])``, without re-encoding fixed fields."""
        with self._lock:
            return json_list([self._group_json.encode(i, self._groups[i]) for i in group_ids])

    def group(self, group_id: str) -> JsonDict:
        with self._lock:
            return render(self._group(group_id))

    def _group(self, group_id: str) -> JsonDict:
        if group_id not in self._groups:
            raise SugerError(404, f"usage record group {group_id} not found")
        return self._groups[group_id]

    def set_group_status(self, group_id: str, status: str, *, unknown: bool = False) -> None:
        """Test hook: force a status; ``unknown=True`` allows one Suger may add later (a client must
        keep it verbatim and never take it for success)."""
        if status not in GROUP_STATUSES and not unknown:
            raise ValueError(f"status must be one of {GROUP_STATUSES}")
        with self._lock:
            group = self._group(group_id)
            group["status"], group["lastUpdateTime"] = status, self.now()
            self._queue(group_id, self.now())

    def retry_group(self, group_id: str) -> JsonDict:
        """REPORT_FAILED → CREATED, queued for the next hourly run (not the one that failed)."""
        with self._lock:
            group = self._group(group_id)
            if group["status"] != "REPORT_FAILED":
                raise SugerError(400, f"only REPORT_FAILED groups can be retried; "
                                      f"{group_id} is {group['status']}")
            now = self.now()
            group.update(status="CREATED", lastUpdateTime=now, usageRecordReportID=None)
            self._queue(group_id, now)
            return render(group)

    def delete_group(self, group_id: str) -> JsonDict:
        with self._lock:
            group = self._group(group_id)
            if group["status"] not in ("CREATED", "INVALID"):
                raise SugerError(400, f"only CREATED or INVALID groups can be deleted; "
                                      f"{group_id} is {group['status']}")
            group.update(status="DELETED", lastUpdateTime=self.now())
            return render(group)

    # -- fault injection and the hourly forwarder (suger_forwarder.py) ------------------------------
    def reject_next(self, entitlement_id: str, message: str, *, status: int = 400,
                    times: int = 1) -> None:
        """The next ``times`` report POSTs (single or batch) for this entitlement get ``status``."""
        with self._lock:
            self._rejections[entitlement_id].extend([(status, message)] * times)

    def fail_next_report(self, entitlement_id: str, *, times: int = 1) -> None:
        """The next ``times`` forwarder reports (one per entitlement per run) end REPORT_FAILED;
        the other hooks and the reports are on :attr:`forwarder`."""
        self.forwarder.fail_next_report(entitlement_id, times=times)

    def usage_record_reports(self) -> list[JsonDict]:
        """What the forwarder reported to the marketplaces (MeteringUsageRecordReport shape)."""
        return self.forwarder.reports()

    def run_forwarder(self, now: datetime | None = None) -> list[str]:
        """Forward every CREATED group queued up to ``now`` (default: the clock); return ids."""
        with self._lock:
            at = utc(now) if now else self.now()
            due = [g for g in self._created() if self._queued_at[g["id"]] <= at]
            return self.forwarder.forward([(at, g) for g in due], self._marketplace_entitlement)

    def tick(self) -> list[str]:
        """Suger's hourly job, caught up: groups queued before the last full hour are forwarded,
        each by the first hourly run after it was queued. The app calls this on every request, so
        it returns at once while the hour after the earliest queued group has not begun."""
        with self._lock:
            cutoff = hour_floor(self.now())
            if self._min_queued is None or cutoff <= self._min_queued:
                return []
            due = [g for g in self._created() if self._queued_at[g["id"]] < cutoff]
            runs = [(hour_floor(self._queued_at[g["id"]]) + timedelta(hours=1), g) for g in due]
            changed = self.forwarder.forward(runs, self._marketplace_entitlement)
            waiting = [self._queued_at[g["id"]] for g in self._created()]
            self._min_queued = min(waiting) if waiting else None
            return changed

    def _queue(self, group_id: str, at: datetime) -> None:
        """The group (re)enters the forwarder's queue at ``at``."""
        self._queued_at[group_id] = at
        if self._min_queued is None or at < self._min_queued:
            self._min_queued = at

    def _created(self) -> list[JsonDict]:
        return [g for g in self._groups.values() if g["status"] == "CREATED"]
