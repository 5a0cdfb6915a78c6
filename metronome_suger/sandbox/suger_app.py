"""The Suger API emulator: api.suger.cloud's metering, buyer and entitlement routes on a SugerState.

Route names, query parameters and JSON shapes follow the official OpenAPI spec (as generated into
``suger_sdk_python``) so that the real SDK, and our own client, can talk to it unchanged.

Error bodies: the SDK declares every 400, 404 and 500 of these routes as ``"str"`` (e.g.
``suger_sdk_python/api/metering_api.py`` report_usage_record_group ``_response_types_map``,
``product_api.py`` list_product_metering_dimensions, ``entitlement_api.py``, ``buyer_api.py``), i.e. the
body is a JSON *string* (``"the message"``), not an object. Every error a handler raises is answered
that way, including 409 (the duplicate the report docstring names but the map does not type) and the
statuses a route's map leaves out. Choices where the spec is silent:

* auth: ``Authorization: Key <api key>`` only; anything else is 401 ``{"message": ...}``, and a path
  org id other than the state's is **403** (a key belongs to one org), ``{"message": ...}``: the spec
  declares neither status, and the object shape keeps our client's other error path exercised;
* unknown routes and methods answer ``{"message": ...}`` too (they are not in the spec);
* ``batchValidateUsageRecordGroups`` answers 200 with the JSON string ``""`` ("Empty string if
  validation is successful", suger-sdk-python ``docs/MeteringApi.md``; its map types 200 as ``"str"``)
  and 400 with the problem as a JSON string;
* list ``limit`` outside 1..1000 or a non-integer ``limit``/``offset`` is 400;
* without ``status`` every group is listed, DELETED ones too ("default no filter by status if not
  provided", ``metering_api.py`` list_usage_record_groups); a deleted group's id stays taken (409);
* ``usageRecordReport`` (``metering_api.py`` list_usage_record_reports, answer
  ``ListUsageRecordReportsResponse`` ``{"usageRecordReports", "nextOffset"}``): ``limit`` above 1000 is 400
  like every list here (the SDK only says "max value is 1000"); ``partner``, ``buyerId`` and
  ``entitlementId`` combine (unlike the group list, the SDK does not ask for one or none); the dates
  (default: the 30 days up to today) select by the report's ``creationTime`` (UTC day);
* ``usageRecordReport/aggregate`` (``metering_api.py`` aggregate_usage_record_reports, answer
  ``List[UsageRecordAggregated]`` ``{"date", "dimensionKey", "quantity"}``): all four parameters are
  required (the SDK makes them so); the spec names no ``granularity`` values: ``DAY`` (``date`` is
  ``YYYY-MM-DD``) and ``MONTH`` (``YYYY-MM``), any other is 400; it sums ``info.reportedRecords`` of the
  billed reports (``SUCCESS``/``INVOICED``, ``usage_record_report_status.py``) by the day of their
  ``creationTime``;
* a group for a CANCELLED entitlement is accepted when its ``timestamp`` is before the entitlement's
  ``endTime`` (the marketplaces take usage generated before a cancellation), refused otherwise.

Faults injected by ``faults.FaultMiddleware`` (429, 5xx, drops) model the infrastructure in front of
Suger, not its handlers, and keep their generic ``{"message"}`` body.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from metronome_suger.sandbox.suger_ingest import prepare_group
from metronome_suger.sandbox.suger_json import PARTNERS, SugerError, json_bytes, render
from metronome_suger.sandbox.suger_state import GROUP_SOURCES, GROUP_STATUSES, SugerState

BILLED_REPORT_STATUSES = ("SUCCESS", "INVOICED")  # usage_record_report_status.py
GRANULARITIES = {"DAY": 10, "MONTH": 7}  # → the length of the ``date`` prefix of the creation time
Handler = Callable[[Request], Awaitable[Any]]
_GROUP_SELECTORS = {"partner": "partner", "productId": "productID",
                    "entitlementId": "entitlementID", "buyerId": "buyerID"}


def _error(status: int, message: str) -> JSONResponse:
    """A handler's error: the JSON string the spec declares (see the module docstring)."""
    return JSONResponse(message, status_code=status)


def _gateway_error(status: int, message: str) -> JSONResponse:
    """Auth, org and routing errors, which the spec does not type: ``{"message": ...}``."""
    return JSONResponse({"message": message}, status_code=status)


def _json_response(body: bytes) -> Response:
    """A JSON body encoded already (what ``JSONResponse`` would send, headers included)."""
    return Response(body, media_type="application/json")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def _json_body(request: Request) -> Any:
    """Parse the body with Decimal floats (no float rounding of quantities); bad JSON is 400."""
    raw = await request.body()
    try:
        return json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError):
        raise SugerError(400, "request body is not valid JSON") from None


def _int_param(request: Request, name: str, default: int, low: int, high: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SugerError(400, f"{name} must be an integer, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        raise SugerError(400, f"{name} must be between {low} and {high}" if high else
                         f"{name} must be at least {low}")
    return value


def _date_param(request: Request, name: str) -> date | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise SugerError(400, f"{name} must be a date in YYYY-MM-DD format, got {raw!r}") from None


def _enum_param(request: Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query_params.get(name) or None
    if value is not None and value not in allowed:
        raise SugerError(400, f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _page(request: Request, items: list[Any]) -> tuple[list[Any], int]:
    """Slice by ``limit``/``offset``; also return the next offset (0 when nothing is left)."""
    limit = _int_param(request, "limit", 1000, 1, 1000)
    offset = _int_param(request, "offset", 0, 0)
    page = items[offset:offset + limit]
    end = offset + len(page)
    return page, end if end < len(items) else 0


def create_suger_app(state: SugerState, *, api_key: str) -> Starlette:
    """Build the emulator app; every handled request first catches up Suger's hourly forwarder."""

    def guarded(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "key" or not hmac.compare_digest(token.encode(), api_key.encode()):
                return _gateway_error(401, "unauthorized: send the header 'Authorization: Key <api key>'")
            org_id = request.path_params["orgId"]
            if org_id != state.org_id:
                return _gateway_error(403, f"the API key has no access to organization {org_id}")
            state.tick()
            try:
                result = await handler(request)
            except SugerError as exc:
                return _error(exc.status, exc.message)
            return result if isinstance(result, Response) else JSONResponse(result)
        return endpoint

    # -- buyers -----------------------------------------------------------------------------------
    async def list_buyers(request: Request) -> Any:
        partner = _enum_param(request, "partner", PARTNERS)
        page = _page(request, state.buyer_ids(partner=partner))[0]  # render only the page
        return [state.get_buyer(buyer_id) for buyer_id in page]

    async def get_buyer(request: Request) -> Any:
        return state.get_buyer(request.path_params["buyerId"])

    async def update_buyer(request: Request) -> Any:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise SugerError(400, "UpdateBuyerParams must be a JSON object")
        return state.update_buyer(request.path_params["buyerId"], body)

    # -- entitlements -----------------------------------------------------------------------------
    async def list_entitlements(request: Request) -> Any:
        q = request.query_params
        found = state.entitlement_ids(
            buyerID=q.get("buyerId") or None, partner=_enum_param(request, "partner", PARTNERS),
            productID=q.get("productId") or None, offerID=q.get("offerId") or None)
        return _json_response(state.entitlements_json(_page(request, found)[0]))

    async def get_entitlement(request: Request) -> Any:
        return state.get_entitlement(request.path_params["entitlementId"])

    async def list_terms(request: Request) -> Any:
        return state.entitlement_terms(request.path_params["entitlementId"])

    async def get_term(request: Request) -> Any:
        term_id = request.path_params["termId"]
        for term in state.entitlement_terms(request.path_params["entitlementId"]):
            if term["id"] == term_id:
                return term
        raise SugerError(404, f"entitlement term {term_id} not found")

    async def product_dimensions(request: Request) -> Any:
        """A product's MeteringDimensions, all of them (an entitlement shows at most 50)."""
        return state.product_dimensions(request.path_params["productId"])

    # -- reporting --------------------------------------------------------------------------------
    async def report_group(request: Request) -> Any:
        ent_id = request.path_params["entitlementId"]
        body = await _json_body(request)
        state.require_entitlement(ent_id)  # 404 before anything else
        state.check_rejection([ent_id])
        if not isinstance(body, dict):
            raise SugerError(400, "CreateUsageRecordGroupParams must be a JSON object")
        group_id = state.check_new_id(body.get("id"))  # a repeat is 409 whatever the rest says
        if body.get("organizationID") != state.org_id:
            raise SugerError(400, f"organizationID {body.get('organizationID')!r} does not match "
                                  f"the path organization {state.org_id}")
        prepared = prepare_group(state, body, path_entitlement=ent_id)
        return _json_response(state.store_group_json(prepared, group_id))

    def prepare_batch(body: Any) -> list[dict[str, Any]]:
        if not isinstance(body, list):
            raise SugerError(400, "the body must be a JSON array of NewUsageRecordGroup")
        # Messages are the single-report ones verbatim (clients match the all-zero text).
        return [prepare_group(state, item) for item in body]

    async def batch_create(request: Request) -> Any:
        body = await _json_body(request)
        if isinstance(body, list):
            named = [i.get("entitlementID") for i in body if isinstance(i, dict)]
            state.check_rejection(dict.fromkeys(e for e in named if isinstance(e, str)))
        return [state.store_group(group) for group in prepare_batch(body)]

    async def batch_validate(request: Request) -> Any:
        prepare_batch(await _json_body(request))
        return JSONResponse(state.validation_ok_body)  # "Empty string if validation is successful"

    # -- record groups ----------------------------------------------------------------------------
    async def list_groups(request: Request) -> Any:
        q = request.query_params
        selectors = {field: q[name] for name, field in _GROUP_SELECTORS.items() if q.get(name)}
        if len(selectors) > 1:
            raise SugerError(400, "provide only one (or none) of partner, productId, "
                                  "entitlementId, buyerId")
        if "partner" in selectors:
            _enum_param(request, "partner", PARTNERS)
        end = _date_param(request, "endDate") or state.now().date()
        start = _date_param(request, "startDate") or end - timedelta(days=30)
        if start > end:
            raise SugerError(400, "startDate must not be after endDate")
        status = _enum_param(request, "status", GROUP_STATUSES)
        source = _enum_param(request, "source", GROUP_SOURCES)  # UsageRecordGroupSource
        found = state.find_groups(start=start, end=end, status=status, source=source, **selectors)
        page, next_offset = _page(request, found)  # render only the page
        return _json_response(b'{"usageRecordGroups":' + state.groups_json(page)
                              + b',"nextOffset":' + json_bytes(next_offset) + b"}")

    # -- usage record reports -----------------------------------------------------------------------
    def date_window(request: Request, *, required: bool) -> tuple[str, str]:
        start, end = _date_param(request, "startDate"), _date_param(request, "endDate")
        if required and (start is None or end is None):
            raise SugerError(400, "startDate and endDate are required (YYYY-MM-DD)")
        end = end or state.now().date()
        start = start or end - timedelta(days=30)  # "default is 30 days before the endDate"
        if start > end:
            raise SugerError(400, "startDate must not be after endDate")
        return start.isoformat(), end.isoformat()

    async def list_reports(request: Request) -> Any:
        q = request.query_params
        partner = _enum_param(request, "partner", PARTNERS)
        start, end = date_window(request, required=False)
        wanted = {"partner": partner, "buyerID": q.get("buyerId") or None,
                  "entitlementID": q.get("entitlementId") or None}
        found = [r for r in state.usage_record_reports()
                 if start <= r["creationTime"][:10] <= end
                 and all(v is None or r.get(k) == v for k, v in wanted.items())]
        page, next_offset = _page(request, found)
        return {"usageRecordReports": page, "nextOffset": next_offset}

    async def aggregate_reports(request: Request) -> Any:
        partner = _enum_param(request, "partner", PARTNERS)
        granularity = (request.query_params.get("granularity") or "").upper()
        if partner is None or granularity not in GRANULARITIES:
            raise SugerError(400, f"partner and granularity ({', '.join(GRANULARITIES)}) are required")
        start, end = date_window(request, required=True)
        sums: dict[tuple[str, str], Decimal] = {}
        for report in state.usage_record_reports():
            info = report["info"]
            if report["partner"] != partner or info.get("status") not in BILLED_REPORT_STATUSES:
                continue
            if not start <= report["creationTime"][:10] <= end:
                continue
            period = report["creationTime"][:GRANULARITIES[granularity]]
            for key, qty in (info.get("reportedRecords") or {}).items():
                sums[(period, key)] = sums.get((period, key), Decimal(0)) + Decimal(str(qty))
        return [{"date": period, "dimensionKey": key, "quantity": render(qty)}
                for (period, key), qty in sorted(sums.items())]

    def located_group(request: Request) -> str:
        """The path's group id, checked against the optional ``creationDate`` hint."""
        group_id = request.path_params["usageRecordGroupId"]
        group = state.group(group_id)
        created = _date_param(request, "creationDate")
        if created is not None and group["creationTime"][:10] != created.isoformat():
            raise SugerError(404, f"usage record group {group_id} not found on {created}")
        return group_id

    async def retry_group(request: Request) -> Any:
        return state.retry_group(located_group(request))

    async def delete_group(request: Request) -> Any:
        return state.delete_group(located_group(request))

    # -- metering config --------------------------------------------------------------------------
    async def get_config(request: Request) -> Any:
        return state.metering_config()

    async def update_config(request: Request) -> Any:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise SugerError(400, "UsageMeteringConfigInfo must be a JSON object")
        state.set_metering_config(body)
        return state.metering_config()

    table: list[tuple[str, str, Callable[[Request], Awaitable[Response]]]] = [
        ("GET", "buyer", guarded(list_buyers)),
        ("GET", "buyer/{buyerId}", guarded(get_buyer)),
        ("PATCH", "buyer/{buyerId}", guarded(update_buyer)),
        ("GET", "entitlement", guarded(list_entitlements)),
        ("GET", "entitlement/{entitlementId}", guarded(get_entitlement)),
        ("GET", "entitlement/{entitlementId}/entitlementTerm", guarded(list_terms)),
        ("GET", "entitlement/{entitlementId}/entitlementTerm/{termId}", guarded(get_term)),
        ("POST", "entitlement/{entitlementId}/usageRecordGroup", guarded(report_group)),
        ("POST", "batchCreateUsageRecordGroups", guarded(batch_create)),
        ("POST", "batchValidateUsageRecordGroups", guarded(batch_validate)),
        ("GET", "usageRecordGroup", guarded(list_groups)),
        ("GET", "usageRecordReport", guarded(list_reports)),
        ("GET", "usageRecordReport/aggregate", guarded(aggregate_reports)),
        ("DELETE", "usageRecordGroup/{usageRecordGroupId}", guarded(delete_group)),
        ("POST", "usageRecordGroup/{usageRecordGroupId}/retry", guarded(retry_group)),
        ("GET", "usageMeteringConfigInfo", guarded(get_config)),
        ("PATCH", "usageMeteringConfigInfo", guarded(update_config)),
        ("GET", "product/{productId}/dimension", guarded(product_dimensions)),
    ]
    # Same path, other method: Starlette keeps looking, so GET and PATCH routes can coexist.
    routes = [Route(f"/org/{{orgId}}/{path}", endpoint, methods=[method])
              for method, path, endpoint in table]

    async def http_error(request: Request, exc: Exception) -> Response:
        """Unknown routes and methods: not in the spec, ``{"message"}`` like the auth errors."""
        assert isinstance(exc, HTTPException)
        return _gateway_error(exc.status_code, str(exc.detail))

    async def server_error(request: Request, exc: Exception) -> Response:
        return _error(500, f"internal error: {type(exc).__name__}")

    return Starlette(routes=routes,
                     exception_handlers={HTTPException: http_error, 500: server_error})
