"""The Suger API emulator: api.suger.cloud's metering, buyer and entitlement routes on a SugerState.

Route names, query parameters and JSON shapes follow the official OpenAPI spec (as generated into
``suger_sdk_python``) so that the real SDK, and our own client, can talk to it unchanged. Choices
where the spec is silent:

* auth: ``Authorization: Key <api key>`` only; anything else is 401 ``{"message": ...}``;
* a path org id other than the state's is **403** (a key belongs to one org), ``{"message": ...}``;
* every other error is ``{"message": ...}`` JSON, except ``batchValidateUsageRecordGroups``, which
  answers 200 with an empty ``text/plain`` body, or 400 with the problem as a ``text/plain`` body;
* list ``limit`` outside 1..1000 or a non-integer ``limit``/``offset`` is 400;
* DELETED groups are listed only when ``status=DELETED`` is asked for; their ids stay taken (409).
"""

from __future__ import annotations

import hmac
import json
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from metronome_suger.sandbox.suger_state import (
    ALL_ZERO_MESSAGE,
    GROUP_STATUSES,
    PARTNERS,
    REPORTABLE_STATUSES,
    JsonDict,
    SugerError,
    SugerState,
    utc,
)

Handler = Callable[[Request], Awaitable[Any]]
_GROUP_SELECTORS = {"partner": "partner", "productId": "productID",
                    "entitlementId": "entitlementID", "buyerId": "buyerID"}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status)


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


# -- validating usage record groups -------------------------------------------------------------
def parse_time(value: Any, field: str) -> datetime:
    """RFC 3339 with an offset, as Go's time.Time decoding demands; anything else is 400."""
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None or value[10:11] not in ("T", "t"):
        raise SugerError(400, f"{field} is not an RFC 3339 timestamp with offset: {value!r}")
    return utc(parsed)


def _origin_records(records: Any) -> dict[str, Decimal]:
    if not isinstance(records, dict):
        raise SugerError(400, "records is required and must be an object of numbers")
    origin: dict[str, Decimal] = {}
    for key, qty in records.items():
        if isinstance(qty, bool) or not isinstance(qty, (int, float, Decimal)):
            raise SugerError(400, f"quantity of record {key} must be a number")
        if qty < 0:
            raise SugerError(400, f"quantity of record {key} must not be negative: {qty}")
        origin[key] = Decimal(str(qty))
    if not any(origin.values()):
        raise SugerError(400, ALL_ZERO_MESSAGE)
    return origin


def _convert(records: dict[str, Decimal], ent: JsonDict, config: JsonDict) -> dict[str, Decimal]:
    """Suger's own dimension mapping, applied on ingest when enabled for the partner."""
    cfg = next((c for c in config["partnerUsageMeteringConfigs"]
                if c.get("partner") == ent["partner"] and c.get("enableDimensionMapping")), None)
    if cfg is None:
        return dict(records)
    mapping = cfg.get("dimensionMappingV2") or {}
    rates = {d["key"]: d["rate"] for d in ent["info"]["dimensions"]}
    out: dict[str, Decimal] = defaultdict(Decimal)
    for key, qty in records.items():
        for value in mapping.get(key) or [{"dimensionKey": key}]:
            dest = value["dimensionKey"]
            if value.get("mappingMode") == "AMOUNT":
                if not rates.get(dest):
                    raise SugerError(400, f"dimension {dest} has no rate for AMOUNT mapping")
                out[dest] += qty / rates[dest]
            else:  # Go zero value: a missing or 0 multiplier means 1
                out[dest] += qty * Decimal(str(value.get("convertionMultiplier") or 1))
    return dict(out)


def prepare_group(state: SugerState, item: Any, *, path_entitlement: str | None = None) -> JsonDict:
    """Validate one CreateUsageRecordGroupParams / NewUsageRecordGroup into the group to store.

    ``path_entitlement`` is the single-report route's entitlement (the body must agree); batch items
    name theirs in the body only, so an unknown one there is 400 rather than 404.
    """
    if not isinstance(item, dict):
        raise SugerError(400, "usage record group must be a JSON object")
    ent_id = item.get("entitlementID")
    if not isinstance(ent_id, str) or not ent_id:
        raise SugerError(400, "entitlementID is required")
    if path_entitlement is not None and ent_id != path_entitlement:
        raise SugerError(400, f"entitlementID {ent_id} does not match the path {path_entitlement}")
    try:
        ent = state.entitlement_snapshot(ent_id)
    except SugerError as exc:
        raise exc if path_entitlement else SugerError(400, exc.message) from None
    if item.get("billableRecords"):
        raise SugerError(400, "billableRecords (metering API v2) is not supported by the emulator")
    origin = _origin_records(item.get("records"))
    raw_ts = item.get("timestamp")
    timestamp = state.now() if raw_ts in (None, "") else parse_time(raw_ts, "timestamp")
    if ent["status"] not in REPORTABLE_STATUSES:
        allowed = " or ".join(REPORTABLE_STATUSES)
        raise SugerError(400, f"entitlement {ent_id} is {ent['status']}: usage can only be "
                              f"reported for {allowed} entitlements")
    converted = _convert(origin, ent, state.metering_config())
    dims = ent["info"]["dimensions"]
    known = {d["key"] for d in dims} | {d["name"] for d in dims}
    for key in converted:
        if key not in known:
            raise SugerError(400, f"record key {key!r} is not a metering dimension key or name "
                                  f"of entitlement {ent_id}")
    return {"entitlementID": ent_id, "buyerID": ent["buyerID"], "partner": ent["partner"],
            "records": converted,
            "metaInfo": {"originRecords": origin, "timestamp": timestamp, "source": "API"}}


def create_suger_app(state: SugerState, *, api_key: str) -> Starlette:
    """Build the emulator app; every handled request first catches up Suger's hourly forwarder."""

    def guarded(handler: Handler, *,
                plain_errors: bool = False) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "key" or not hmac.compare_digest(token.encode(), api_key.encode()):
                return _error(401, "unauthorized: send the header 'Authorization: Key <api key>'")
            org_id = request.path_params["orgId"]
            if org_id != state.org_id:
                return _error(403, f"the API key has no access to organization {org_id}")
            state.tick()
            try:
                result = await handler(request)
            except SugerError as exc:
                if plain_errors:
                    return PlainTextResponse(exc.message, status_code=exc.status)
                return _error(exc.status, exc.message)
            return result if isinstance(result, Response) else JSONResponse(result)
        return endpoint

    # -- buyers -----------------------------------------------------------------------------------
    async def list_buyers(request: Request) -> Any:
        partner = _enum_param(request, "partner", PARTNERS)
        return _page(request, state.buyers(partner=partner))[0]

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
        found = state.entitlements(
            buyerID=q.get("buyerId") or None, partner=_enum_param(request, "partner", PARTNERS),
            productID=q.get("productId") or None, offerID=q.get("offerId") or None)
        return _page(request, found)[0]

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
        """A product's MeteringDimensions, gathered from its entitlements (first key wins)."""
        product_id = request.path_params["productId"]
        ents = state.entitlements(productID=product_id)
        if not ents:
            raise SugerError(404, f"product {product_id} not found")
        found: dict[str, Any] = {}
        for ent in ents:
            for dim in ent["info"]["dimensions"]:
                found.setdefault(dim["key"], dim)
        return list(found.values())

    # -- reporting --------------------------------------------------------------------------------
    async def report_group(request: Request) -> Any:
        ent_id = request.path_params["entitlementId"]
        body = await _json_body(request)
        state.get_entitlement(ent_id)  # 404 before anything else
        state.check_rejection([ent_id])
        if not isinstance(body, dict):
            raise SugerError(400, "CreateUsageRecordGroupParams must be a JSON object")
        group_id = state.check_new_id(body.get("id"))  # a repeat is 409 whatever the rest says
        if body.get("organizationID") != state.org_id:
            raise SugerError(400, f"organizationID {body.get('organizationID')!r} does not match "
                                  f"the path organization {state.org_id}")
        return state.store_group(prepare_group(state, body, path_entitlement=ent_id), group_id)

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
        return PlainTextResponse("", status_code=200)

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
        source = q.get("source") or None
        products = {e["id"]: e["productID"] for e in state.entitlements()}
        found = []
        for group in state.groups():  # DELETED groups only when asked for
            fields = {**group, "productID": products[group["entitlementID"]],
                      "source": group["metaInfo"]["source"]}
            if not start.isoformat() <= group["creationTime"][:10] <= end.isoformat():
                continue
            if status != group["status"] and (status is not None or group["status"] == "DELETED"):
                continue
            if source in (None, fields["source"]) and all(
                    fields[k] == v for k, v in selectors.items()):
                found.append(group)
        page, next_offset = _page(request, found)
        return {"usageRecordGroups": page, "nextOffset": next_offset}

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
        ("POST", "batchValidateUsageRecordGroups", guarded(batch_validate, plain_errors=True)),
        ("GET", "usageRecordGroup", guarded(list_groups)),
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
        """Unknown routes and methods answer in the same ``{"message"}`` shape as the API."""
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail))

    async def server_error(request: Request, exc: Exception) -> Response:
        return _error(500, f"internal error: {type(exc).__name__}")

    return Starlette(routes=routes,
                     exception_handlers={HTTPException: http_error, 500: server_error})
