"""Typed client for Suger's metering, buyer and entitlement API (``Authorization: Key <key>``).

Why hand-written: the generated ``suger_sdk_python`` parses quantities as float and has a broken
default host; we need exact Decimal quantities, 409-as-success reporting, and the same
retry/redaction policy as the Metronome client.

Retry safety: a usage-record-group POST is retried only on 429, 5xx and transport errors, never on
a 400 or a 409. That is safe because every group carries its own ``id``: if an earlier attempt did
land, the retry gets 409 and is reported as ``duplicate``, never stored as a second group.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx
from pydantic import SecretStr, TypeAdapter

from metronome_suger.clients.errors import BadRequestError, ConflictError
from metronome_suger.clients.http import (
    DEFAULT_TIMEOUT,
    DEFAULT_USER_AGENT,
    JsonApiClient,
    auth_header,
    check_paging,
    path_segment,
)
from metronome_suger.clients.paging import Page, PageShapeError, paginate
from metronome_suger.clients.retry import RetryPolicy
from metronome_suger.clients.suger_models import (
    Buyer,
    Entitlement,
    MeteringDimension,
    NewUsageRecordGroup,
    ReportResult,
    UsageMeteringConfigInfo,
    UsageRecordAggregated,
    UsageRecordGroup,
    UsageRecordReport,
)

__all__ = ["DEFAULT_SUGER_URL", "SugerClient"]

DEFAULT_SUGER_URL = "https://api.suger.cloud"
MAX_PAGE_LIMIT = 1000

_BUYERS = TypeAdapter(list[Buyer])
_BUYER = TypeAdapter(Buyer)
_ENTITLEMENTS = TypeAdapter(list[Entitlement])
_GROUPS = TypeAdapter(list[UsageRecordGroup])
_GROUP = TypeAdapter(UsageRecordGroup)
_CONFIG = TypeAdapter(UsageMeteringConfigInfo)
_DIMENSIONS = TypeAdapter(list[MeteringDimension])
_REPORTS = TypeAdapter(list[UsageRecordReport])
_AGGREGATED = TypeAdapter(list[UsageRecordAggregated])
logger = logging.getLogger(__name__)
OUR_SOURCE = "API"  # metaInfo.source of the groups this client reports (UsageRecordGroupSource)


@dataclass(frozen=True)
class _OffsetPages:
    """Suger asks for a page by ``limit`` and ``offset``; the subclasses read its two payload shapes."""

    limit: int
    start: int = 0
    noun: str = "offset"

    def params(self, position: int) -> dict[str, Any]:
        return {"limit": self.limit, "offset": position}


@dataclass(frozen=True)
class _ArrayPages(_OffsetPages):
    """Suger's plain-array lists: ``limit``/``offset`` until a short page; Go's ``null`` is an
    empty page. A full page identical (by item ids) to the previous one means the server ignored
    the offset."""

    items_at: str = ""

    def read(self, payload: Any, position: int) -> Page[int]:
        items = [] if payload is None else payload
        if not isinstance(items, list):
            raise PageShapeError("expected a JSON array")
        fingerprint = tuple(_item_ids(items)) if items else None
        nxt = position + len(items) if len(items) >= self.limit else None
        return Page(items, nxt, fingerprint)


@dataclass(frozen=True)
class _GroupPages(_OffsetPages):
    """``GET .../usageRecordGroup``: ``{"usageRecordGroups": [...] | null, "nextOffset": n}``.
    An empty page ends the list; so does a ``nextOffset`` that does not advance (Suger sends 0 for
    "nothing left"); without a usable ``nextOffset`` a short page does."""

    items_at: str = "usageRecordGroups"

    def read(self, payload: Any, position: int) -> Page[int]:
        if not isinstance(payload, Mapping):
            raise PageShapeError("expected a JSON object with 'usageRecordGroups'")
        items = payload.get("usageRecordGroups")
        if items is None:
            items = []
        if not isinstance(items, list):
            raise PageShapeError("'usageRecordGroups' must be an array")
        next_offset = payload.get("nextOffset")
        nxt: int | None
        if not items:
            nxt = None
        elif isinstance(next_offset, int) and not isinstance(next_offset, bool):
            nxt = next_offset if next_offset > position else None
        elif len(items) < self.limit:
            nxt = None
        else:
            nxt = position + len(items)
        return Page(items, nxt)


@dataclass(frozen=True)
class _ReportPages(_OffsetPages):
    """``GET .../usageRecordReport``: ``{"usageRecordReports": [...] | null, "nextOffset": n}``
    (``ListUsageRecordReportsResponse``). An empty page or ``nextOffset`` 0 ("nothing left") ends the
    list; a ``nextOffset`` that does not advance repeats an offset: logged, and the list stops there
    (what was read is kept). Without ``nextOffset`` a short page ends it."""

    items_at: str = "usageRecordReports"

    def read(self, payload: Any, position: int) -> Page[int]:
        if not isinstance(payload, Mapping):
            raise PageShapeError("expected a JSON object with 'usageRecordReports'")
        items = payload.get("usageRecordReports")
        items = [] if items is None else items
        if not isinstance(items, list):
            raise PageShapeError("'usageRecordReports' must be an array")
        next_offset = payload.get("nextOffset")
        if not items or next_offset == 0:
            return Page(items, None)
        if isinstance(next_offset, int) and not isinstance(next_offset, bool):
            if next_offset <= position:
                logger.warning("Suger usageRecordReport: the page at offset %d gave nextOffset %d, an offset "
                               "already read; stopping the listing there", position, next_offset)
                return Page(items, None)
            return Page(items, next_offset)
        return Page(items, position + len(items) if len(items) >= self.limit else None)


def _problem_text(exc: BadRequestError) -> str:
    """The full validation text: a plain-text body verbatim, else the parsed JSON message."""
    body = (exc.body or "").strip()
    if body and body[0] not in '{["':
        return body
    return exc.message


def _item_ids(items: Sequence[Any]) -> list[Any]:
    return [item.get("id") if isinstance(item, Mapping) else None for item in items]


class SugerClient(JsonApiClient):
    """Suger API client for one organization; see the module docstring for the retry-safety
    argument."""

    def __init__(
        self,
        base_url: str,
        org_id: str,
        api_key: str | SecretStr,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        page_limit: int = 1000,
        max_workers: int = 8,
        user_agent: str = DEFAULT_USER_AGENT,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not org_id or not org_id.strip():
            raise ValueError("Suger org_id is empty")
        check_paging(page_limit, MAX_PAGE_LIMIT, max_workers)
        super().__init__(
            base_url,
            auth_header("Key", api_key, "Suger API key"),
            service="suger",
            timeout=timeout,
            retry=retry,
            user_agent=user_agent,
            sleep=sleep,
            clock=clock,
            transport=transport,
        )
        self.org_id = org_id.strip()
        self.page_limit = page_limit
        self.max_workers = max_workers

    def __repr__(self) -> str:
        return f"SugerClient(base_url={self.base_url!r}, org_id={self.org_id!r})"

    def _org(self, suffix: str) -> str:
        return f"/org/{path_segment(self.org_id)}{suffix}"

    # -- buyers ------------------------------------------------------------------------------------

    def list_buyers(self) -> list[Buyer]:
        """Every buyer of the org (Suger cannot filter by Metronome id; index client-side)."""
        return list(self.iter_pages("GET", self._org("/buyer"), _ArrayPages(self.page_limit), _BUYERS))

    def get_buyer(self, buyer_id: str) -> Buyer:
        path = self._org(f"/buyer/{path_segment(buyer_id)}")
        return self.parse_model(_BUYER, self.request("GET", path), "GET", path)

    def link_metronome_customer(self, buyer_id: str, metronome_customer_id: str) -> Buyer:
        """Suger's "Connect Metronome Customer": set ``info.metronomeCustomerId`` (idempotent
        PATCH)."""
        if not metronome_customer_id:
            raise ValueError("metronome_customer_id must be non-empty")
        path = self._org(f"/buyer/{path_segment(buyer_id)}")
        data = self.request("PATCH", path, json={"metronomeCustomerId": metronome_customer_id})
        return self.parse_model(_BUYER, data, "PATCH", path)

    # -- entitlements ------------------------------------------------------------------------------

    def list_entitlements(
        self, *, buyer_id: str | None = None, partner: str | None = None
    ) -> list[Entitlement]:
        """Entitlements, optionally of one buyer and/or marketplace (``AWS``/``AZURE``/``GCP``)."""
        params = {"buyerId": buyer_id or None, "partner": partner or None}
        path = self._org("/entitlement")
        return list(
            self.iter_pages("GET", path, _ArrayPages(self.page_limit), _ENTITLEMENTS, params=params)
        )

    # -- products ----------------------------------------------------------------------------------

    def list_product_dimensions(self, product_id: str) -> list[MeteringDimension]:
        """Every metering dimension of a product (``GET /org/{orgId}/product/{productId}/dimension``,
        a plain array). An entitlement lists at most 50 and sets ``info.dimensionsOversized``; the
        rest are only here."""
        if not product_id:
            raise ValueError("product_id must be non-empty")
        path = self._org(f"/product/{path_segment(product_id)}/dimension")
        data = self.request("GET", path)
        return self.parse_model(_DIMENSIONS, data if data is not None else [], "GET", path)

    # -- usage record groups -----------------------------------------------------------------------

    def report_usage_record_group(self, group: NewUsageRecordGroup) -> ReportResult:
        """Report one group. 409 (id already known) is success: ``duplicate``. Any other non-2xx
        raises the typed :class:`ApiError` (a 400's ``message`` is Suger's reason, worth recording).
        """
        if group.organizationID != self.org_id:
            raise ValueError(
                f"group organizationID {group.organizationID!r} "
                f"is not this client's org {self.org_id!r}"
            )
        path = self._org(f"/entitlement/{path_segment(group.entitlementID)}/usageRecordGroup")
        try:
            data = self.request("POST", path, json=group.to_body())
        except ConflictError as exc:
            return ReportResult(outcome="duplicate", group=None, message=exc.message)
        if data is None:  # Suger answers the stored group; without it, whether it stored anything is unknown
            raise self.malformed("POST", path, "a 2xx answer with an empty body instead of the stored group: "
                                 "not counted as sent (a re-send is answered 409 if it had landed)")
        return ReportResult(outcome="created", group=self.parse_model(_GROUP, data, "POST", path), message=None)

    def validate_usage_record_groups(self, groups: Sequence[NewUsageRecordGroup]) -> str | None:
        """Dry-run validation: None when Suger accepts every group (any 200: the spec's 200 is a
        string, "Empty string if validation is successful", whatever it says), else the 400's
        problem description."""
        if not groups:
            return None
        path = self._org("/batchValidateUsageRecordGroups")
        try:
            self.request("POST", path, json=[g.to_batch_item() for g in groups])
        except BadRequestError as exc:
            return _problem_text(exc)
        return None

    def list_usage_record_groups(
        self,
        *,
        entitlement_id: str | None = None,
        status: str | None = None,
        start_date: date | None = None,
        end_date: date | None = None,
        source: str | None = OUR_SOURCE,
    ) -> list[UsageRecordGroup]:
        """Stored groups (Suger's default window is the last 30 days), paging on
        ``offset``/``nextOffset``.

        ``source`` defaults to ``API``, the groups this client reports: Suger's own integrations
        (its Metronome integration reports as ``METRONOME``) store groups for the same entitlements,
        and a status poll must never take theirs for ours. ``None`` lists every source."""
        path = self._org("/usageRecordGroup")
        params = {
            "entitlementId": entitlement_id or None,
            "status": status or None,
            "source": source or None,
            "startDate": start_date,
            "endDate": end_date,
        }
        return list(
            self.iter_pages("GET", path, _GroupPages(self.page_limit), _GROUPS, params=params)
        )

    def retry_usage_record_group(self, group_id: str) -> UsageRecordGroup:
        """Put a ``REPORT_FAILED`` group back to ``CREATED`` for Suger's next hourly report."""
        path = self._org(f"/usageRecordGroup/{path_segment(group_id)}/retry")
        return self.parse_model(_GROUP, self.request("POST", path), "POST", path)

    # -- usage record reports ----------------------------------------------------------------------

    def list_usage_record_reports(
        self,
        *,
        partner: str | None = None,
        buyer_id: str | None = None,
        entitlement_id: str | None = None,
        start_date: date,
        end_date: date,
    ) -> list[UsageRecordReport]:
        """What Suger's hourly job sent to the marketplaces, created between the two UTC days
        (inclusive), optionally of one marketplace, buyer and/or entitlement; pages of ``page_limit``
        (default and maximum 1000) on ``offset``/``nextOffset``.

        A server that repeats itself never makes this loop or double count: a ``nextOffset`` that does
        not advance, or a page that brings no report not already read, stops the listing with a
        warning; a report met twice is kept once (first seen)."""
        if start_date > end_date:
            raise ValueError(f"start_date {start_date} is after end_date {end_date}")
        method, path = "GET", self._org("/usageRecordReport")
        base = {"partner": partner or None, "buyerId": buyer_id or None,
                "entitlementId": entitlement_id or None, "startDate": start_date, "endDate": end_date}
        shape = _ReportPages(self.page_limit)
        found: dict[str, UsageRecordReport] = {}
        pages = paginate(shape, lambda position: self.request(method, path, params={**base, **position}),
                         lambda what: self.malformed(method, path, what))
        for number, items in enumerate(pages, start=1):
            reports = self.parse_model(_REPORTS, items, method, path, loc_prefix=shape.items_at)
            fresh = [r for r in reports if r.id not in found]
            if reports and not fresh and number > 1:
                logger.warning("Suger usageRecordReport: page %d repeated reports already read (the offset "
                               "was ignored); stopping the listing there", number)
                break
            found.update((r.id, r) for r in fresh)
        return list(found.values())

    def aggregate_usage_record_reports(
        self, *, partner: str, granularity: str = "DAY", start_date: date, end_date: date
    ) -> list[UsageRecordAggregated]:
        """Suger's sums of the reported quantities by period and dimension
        (``GET .../usageRecordReport/aggregate``, a plain array; every parameter is required)."""
        if not partner or not granularity:
            raise ValueError("partner and granularity must be non-empty")
        path = self._org("/usageRecordReport/aggregate")
        params = {"partner": partner, "granularity": granularity, "startDate": start_date, "endDate": end_date}
        data = self.request("GET", path, params=params)
        return self.parse_model(_AGGREGATED, data if data is not None else [], "GET", path)

    # -- metering config ---------------------------------------------------------------------------

    def get_usage_metering_config(self) -> UsageMeteringConfigInfo:
        """The org's own dimension mapping per partner (if enabled, Suger converts records a second
        time)."""
        path = self._org("/usageMeteringConfigInfo")
        data = self.request("GET", path)
        return self.parse_model(_CONFIG, data if data is not None else {}, "GET", path)
