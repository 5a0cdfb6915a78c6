"""In-memory Suger organization: buyers, entitlements, products, usage record groups.

The state is what the Suger emulator (``suger_app``) serves, and what tests mutate directly to stage
scenarios (renewals, cancellations, rejections; the hourly forwarder, its marketplace rules and its
fault hooks are ``suger_forwarder``'s). It is thread-safe because uvicorn serves the app from its own
thread while tests poke at the state from theirs. Quantities and rates are kept as ``Decimal``; only
the JSON rendering turns them into numbers.
"""

from __future__ import annotations

import copy
import random
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from metronome_suger.sandbox.suger_forwarder import Forwarder
from metronome_suger.sandbox.suger_group_state import GROUP_SOURCES, GROUP_STATUSES, GroupsMixin
from metronome_suger.sandbox.suger_json import (
    PARTNERS,
    JsonDict,
    SugerError,
    metering_config_entries,
    render,
    utc,
)
from metronome_suger.sandbox.suger_listing_json import EntitlementJson, GroupJson, json_list

ENTITLEMENT_STATUSES = ("ACTIVE", "CANCELLED", "DELETED", "PENDING_CANCEL", "PENDING_START",
                        "SUSPENDED")
REPORTABLE_STATUSES = ("ACTIVE", "PENDING_CANCEL")
MAX_ENTITLEMENT_DIMENSIONS = 50  # EntitlementInfo.dimensions: "The max size of dimensions is 50"
ALL_ZERO_MESSAGE = "all the quantity of usage records are zero"
_BUYER_INFO_FIELDS = ("metronomeCustomerId", "orbCustomerId", "lagoCustomerId", "stripeCustomerId",
                      "customerId", "chargebeeCustomerID", "quickbooksCustomerId", "companyInfo",
                      "paymentConfig")
_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
__all__ = ["ALL_ZERO_MESSAGE", "GROUP_SOURCES", "GROUP_STATUSES", "REPORTABLE_STATUSES", "SugerError",
           "SugerState"]


def _partner(value: str) -> str:
    if value not in PARTNERS:
        raise ValueError(f"partner must be one of {PARTNERS}, got {value!r}")
    return value


class SugerState(GroupsMixin):
    """One Suger organization held in memory; every method is safe to call from any thread."""

    def __init__(self, org_id: str, clock: Callable[[], datetime] | Any) -> None:
        self.org_id = org_id
        now = getattr(clock, "now", None)
        self._now: Callable[[], datetime] = now if callable(now) else clock
        self._lock = threading.RLock()
        self._rng = random.Random(f"suger:{org_id}")  # deterministic ids for reproducible demos
        self._buyers: dict[str, JsonDict] = {}
        self._entitlements: dict[str, JsonDict] = {}
        self._terms: dict[str, list[JsonDict]] = {}
        self._all_dimensions: dict[str, list[JsonDict]] = {}  # entitlement → every dimension
        self._products: dict[str, dict[str, JsonDict]] = {}  # product → dimension key → dimension
        self._product_failures: dict[str, list[tuple[int, str]]] = defaultdict(list)
        self._groups: dict[str, JsonDict] = {}
        self._queued_at: dict[str, datetime] = {}  # when a group (re)entered CREATED
        # At most the earliest _queued_at of a CREATED group (None: no group was queued since the
        # last full tick): a tick before the hour after it has nothing to forward.
        self._min_queued: datetime | None = None
        self._by_buyer: dict[str, list[str]] = defaultdict(list)  # buyer → entitlement ids
        # The last group listing's candidates (fields a group never changes): its pages reuse it.
        self._group_query: tuple[tuple[Any, ...], list[str]] | None = None
        self._ent_json = EntitlementJson()  # listings' JSON (see suger_listing_json)
        self._group_json = GroupJson()
        self._rejections: dict[str, list[tuple[int, str]]] = defaultdict(list)
        self.forwarder = Forwarder(org_id, self.new_uuid, self.now, self._lock)
        self._config: JsonDict = {"partnerUsageMeteringConfigs": []}
        self._serial = 0
        self.validation_ok_body = ""  # batchValidate's 200 string; the SDK types it only as str

    # -- time and ids ---------------------------------------------------------------------------
    def now(self) -> datetime:
        return utc(self._now())

    def _short_id(self) -> str:
        return "".join(self._rng.choice(_ID_ALPHABET) for _ in range(9))

    def new_uuid(self) -> str:
        with self._lock:
            return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    # -- buyers -----------------------------------------------------------------------------------
    def add_buyer(self, name: str, *, partner: str, metronome_customer_id: str | None = None,
                  id: str | None = None) -> JsonDict:
        with self._lock:
            buyer_id = id or self._short_id()
            if buyer_id in self._buyers:
                raise ValueError(f"buyer {buyer_id} already exists")
            now = self.now()
            info = {"metronomeCustomerId": metronome_customer_id} if metronome_customer_id else {}
            self._buyers[buyer_id] = {
                "id": buyer_id, "externalID": f"{partner.lower()}-{self._short_id().lower()}",
                "name": name, "partner": _partner(partner), "organizationID": self.org_id,
                "creationTime": now, "lastUpdateTime": now, "info": info,
            }
            return self.get_buyer(buyer_id)

    def get_buyer(self, buyer_id: str) -> JsonDict:
        with self._lock:
            if buyer_id not in self._buyers:
                raise SugerError(404, f"buyer {buyer_id} not found")
            return render(self._buyers[buyer_id])

    def buyers(self, *, partner: str | None = None) -> list[JsonDict]:
        with self._lock:
            return [render(self._buyers[b]) for b in self.buyer_ids(partner=partner)]

    def buyer_ids(self, *, partner: str | None = None) -> list[str]:
        """The ids ``buyers`` would render, in creation order, without rendering any."""
        with self._lock:
            return [i for i, b in self._buyers.items() if partner in (None, b["partner"])]

    def update_buyer(self, buyer_id: str, params: JsonDict) -> JsonDict:
        """UpdateBuyerParams: absent or null fields stay; a string sets, an empty string clears."""
        with self._lock:
            self.get_buyer(buyer_id)
            buyer = self._buyers[buyer_id]
            for field in ("name", "description", *_BUYER_INFO_FIELDS):
                value = params.get(field)
                if value is None:
                    continue
                structured = field in ("companyInfo", "paymentConfig")
                if not isinstance(value, dict if structured else str):
                    kind = "an object" if structured else "a string"
                    raise SugerError(400, f"{field} must be {kind}")
                target = buyer if field in ("name", "description") else buyer["info"]
                if value == "":
                    if field != "name":  # a buyer always keeps a name
                        target.pop(field, None)
                else:
                    target[field] = copy.deepcopy(value)
            buyer["lastUpdateTime"] = self.now()
            return render(buyer)

    # -- entitlements -----------------------------------------------------------------------------
    def add_entitlement(self, buyer_id: str, *, partner: str, dimensions: list[JsonDict],
                        status: str = "ACTIVE", start_time: datetime | None = None,
                        end_time: datetime | None = None, id: str | None = None,
                        product_id: str | None = None, name: str | None = None) -> JsonDict:
        """Add an entitlement with a Signup term; start defaults to 90 days before today.

        As Suger does (``suger_sdk_python/models/entitlement_info.py``: "The max size of dimensions is
        50. The oversized dimensions won't be saved in the EntitlementInfo"), ``info.dimensions``
        keeps the first 50 and ``info.dimensionsOversized`` is set; the product keeps them all."""
        with self._lock:
            buyer = self._buyers.get(buyer_id)
            if buyer is None:
                raise ValueError(f"unknown buyer {buyer_id}")
            if buyer["partner"] != _partner(partner):
                raise ValueError(f"buyer {buyer_id} is a {buyer['partner']} buyer, not {partner}")
            if status not in ENTITLEMENT_STATUSES:
                raise ValueError(f"status must be one of {ENTITLEMENT_STATUSES}")
            ent_id = id or self._short_id()
            if ent_id in self._entitlements:
                raise ValueError(f"entitlement {ent_id} already exists")
            now = self.now()
            start = utc(start_time) if start_time else now.replace(
                hour=0, minute=0, second=0, microsecond=0) - timedelta(days=90)
            product = product_id or f"product-{partner.lower()}"
            self._entitlements[ent_id] = {
                "id": ent_id, "name": name or f"{buyer['name']} {partner} subscription",
                "organizationID": self.org_id, "buyerID": buyer_id, "productID": product,
                "offerID": f"offer-{self._short_id()}", "partner": partner, "status": status,
                "startTime": start, "creationTime": now, "lastUpdateTime": now,
                "info": {"dimensions": [], "currency": "USD"}, "metaInfo": {},
            }
            self._put_dimensions(ent_id, dimensions)
            self._by_buyer[buyer_id].append(ent_id)
            self._terms[ent_id] = [self._term(ent_id, "Signup", start, end_time and utc(end_time))]
            return self.get_entitlement(ent_id)

    def _term(self, ent_id: str, kind: str, start: datetime, end: datetime | None) -> JsonDict:
        ent = self._entitlements[ent_id]
        now = self.now()
        return {"id": self._short_id(), "entitlementID": ent_id, "organizationID": self.org_id,
                "buyerID": ent["buyerID"], "partner": ent["partner"], "productID": ent["productID"],
                "offerID": ent["offerID"], "startTime": start, "endTime": end,
                "creationTime": now, "lastUpdateTime": now, "info": {"type": kind}}

    def _current_term(self, ent_id: str, now: datetime | None = None) -> JsonDict:
        terms = self._terms[ent_id]
        now = now or self.now()
        started = [t for t in terms if t["startTime"] <= now]
        return started[-1] if started else terms[0]

    def _entitlement(self, ent_id: str) -> JsonDict:
        if ent_id not in self._entitlements:
            raise SugerError(404, f"entitlement {ent_id} not found")
        return self._entitlements[ent_id]

    def _entitlement_now(self, entitlement_id: str) -> JsonDict:
        """The stored entitlement (datetimes, Decimals) with its current term id and end time."""
        ent = dict(self._entitlement(entitlement_id))
        term = self._current_term(entitlement_id)
        ent["entitlementTermID"], ent["endTime"] = term["id"], term["endTime"]
        return ent

    def _marketplace_entitlement(self, entitlement_id: str) -> JsonDict:
        """``_entitlement_now`` with every dimension in ``info.dimensions``, not only the 50 the API
        shows: what the forwarder's marketplace knows (Suger validates against all of them too)."""
        ent = self._entitlement_now(entitlement_id)
        ent["info"] = {**ent["info"], "dimensions": self._all_dimensions[entitlement_id]}
        return ent

    def get_entitlement(self, entitlement_id: str) -> JsonDict:
        """The entitlement as of the clock: its current term and that term's end time."""
        with self._lock:
            return render(self._entitlement_now(entitlement_id))

    def entitlements(self, **filters: str | None) -> list[JsonDict]:
        """Filter by buyerID / partner / productID / offerID (API field names); None means any."""
        with self._lock:
            return [self.get_entitlement(e) for e in self.entitlement_ids(**filters)]

    def entitlement_ids(self, **filters: str | None) -> list[str]:
        """The ids ``entitlements`` would render, in creation order, without rendering any."""
        with self._lock:
            buyer = filters.get("buyerID")
            ids = self._by_buyer.get(buyer, []) if buyer is not None else self._entitlements
            rest = [(k, v) for k, v in filters.items() if v is not None and k != "buyerID"]
            return [i for i in ids if all(self._entitlements[i].get(k) == v for k, v in rest)]

    def require_entitlement(self, entitlement_id: str) -> None:
        """404 (SugerError) for an unknown entitlement, without rendering a known one."""
        with self._lock:
            self._entitlement(entitlement_id)

    def entitlements_json(self, entitlement_ids: Iterable[str]) -> bytes:
        """``json_bytes([self.get_entitlement(i) for i in entitlement_ids])``, reusing each one's
        JSON while nothing it shows has changed."""
        with self._lock:
            parts, now = [], self.now()
            for ent_id in entitlement_ids:
                ent, term = self._entitlement(ent_id), self._current_term(ent_id, now)
                key = (ent["status"], ent["lastUpdateTime"], term["id"], term["endTime"],
                       tuple((d["key"], d["rate"]) for d in ent["info"]["dimensions"]))
                parts.append(self._ent_json.encode(ent_id, key, partial(self._entitlement_now, ent_id)))
            return json_list(parts)

    def entitlement_terms(self, entitlement_id: str) -> list[JsonDict]:
        with self._lock:
            self._entitlement(entitlement_id)
            return render(self._terms[entitlement_id])

    def renew_entitlement(self, entitlement_id: str, *, at: datetime) -> JsonDict:
        """Start an AutoRenew term at ``at``, as long as the previous one; current from ``at``."""
        with self._lock:
            self._entitlement(entitlement_id)
            at = utc(at)
            previous = self._terms[entitlement_id][-1]
            old_end = previous["endTime"]
            length = old_end - previous["startTime"] if old_end else None
            if old_end is None or old_end > at:
                previous["endTime"] = at
            term = self._term(entitlement_id, "AutoRenew", at, at + length if length else None)
            self._terms[entitlement_id].append(term)
            self._entitlements[entitlement_id]["lastUpdateTime"] = self.now()
            return render(term)

    def cancel_entitlement(self, entitlement_id: str, at: datetime) -> JsonDict:
        """Cancelled at ``at``: status CANCELLED, the term running at ``at`` ends then (the
        entitlement's ``endTime``, "nullable" in ``suger_sdk_python/models/workload_entitlement.py``
        and ``workload_entitlement_term.py``), terms that would have started later are dropped."""
        with self._lock:
            ent = self._entitlement(entitlement_id)
            at = utc(at)
            terms = self._terms[entitlement_id]
            kept = [t for t in terms if t["startTime"] < at] or terms[:1]
            kept[-1]["endTime"], kept[-1]["lastUpdateTime"] = at, self.now()
            self._terms[entitlement_id] = kept
            ent["status"], ent["lastUpdateTime"] = "CANCELLED", self.now()
            return self.get_entitlement(entitlement_id)

    def set_dimension_rates(self, entitlement_id: str, rates: dict[str, Decimal]) -> None:
        """A price change: the named dimensions' ``rate`` (unit price) becomes the new one from now on."""
        with self._lock:
            for dim in self._all_dimensions[self._entitlement(entitlement_id)["id"]]:  # also info.dimensions
                dim["rate"] = Decimal(str(rates.get(dim["key"], dim["rate"])))
            self._entitlements[entitlement_id]["lastUpdateTime"] = self.now()

    def set_dimensions(self, entitlement_id: str, dimensions: list[JsonDict]) -> None:
        """Test hook: the entitlement's dimensions become ``dimensions`` (an offer change), e.g. after
        Suger accepted groups naming one that is gone; the forwarder's marketplace refuses those."""
        with self._lock:
            self._entitlement(entitlement_id)
            self._put_dimensions(entitlement_id, dimensions)
            self._entitlements[entitlement_id]["lastUpdateTime"] = self.now()

    def _put_dimensions(self, ent_id: str, dimensions: list[JsonDict]) -> None:
        """Store the dimensions: all of them for validation and the marketplace, the first 50 in
        ``info.dimensions`` (the same dicts), every new key on the product."""
        ent = self._entitlements[ent_id]
        dims = [{"key": d["key"], "name": d.get("name") or d["key"],
                 "rate": Decimal(str(d.get("rate", 0)))} for d in dimensions]
        info = ent["info"]
        info["dimensions"] = dims[:MAX_ENTITLEMENT_DIMENSIONS]
        info.pop("dimensionsOversized", None)
        if len(dims) > MAX_ENTITLEMENT_DIMENSIONS:
            info["dimensionsOversized"] = True
        self._all_dimensions[ent_id] = dims
        for dim in dims:
            self._products.setdefault(ent["productID"], {}).setdefault(dim["key"], dict(dim))

    def set_entitlement_status(self, entitlement_id: str, status: str) -> None:
        if status not in ENTITLEMENT_STATUSES:
            raise ValueError(f"status must be one of {ENTITLEMENT_STATUSES}")
        with self._lock:
            ent = self._entitlement(entitlement_id)
            ent["status"], ent["lastUpdateTime"] = status, self.now()

    # -- products ---------------------------------------------------------------------------------
    def product_dimensions(self, product_id: str) -> list[JsonDict]:
        """Every MeteringDimension of a product (its entitlements', first key wins); 404 if unknown
        (``suger_sdk_python/api/product_api.py`` list_product_metering_dimensions declares 404)."""
        with self._lock:
            if self._product_failures.get(product_id):
                status, message = self._product_failures[product_id].pop(0)
                raise SugerError(status, message)
            if product_id not in self._products:
                raise SugerError(404, f"product {product_id} not found")
            return render(list(self._products[product_id].values()))

    def fail_product_dimensions(self, product_id: str, *, status: int = 500,
                                message: str = "internal error listing the product's dimensions",
                                times: int = 1) -> None:
        """Test hook: the next ``times`` listings of the product's dimensions answer ``status``."""
        with self._lock:
            self._product_failures[product_id].extend([(status, message)] * times)

    # -- metering config --------------------------------------------------------------------------
    def metering_config(self) -> JsonDict:
        with self._lock:
            return render(self._config)

    def set_metering_config(self, config: JsonDict) -> None:
        """Replace the whole UsageMeteringConfigInfo (the emulator's PATCH semantics too)."""
        entries = metering_config_entries(config)
        with self._lock:
            self._config = {"partnerUsageMeteringConfigs": copy.deepcopy(entries)}

    # -- usage record groups: validation (the groups themselves: suger_group_state) -------------
    def entitlement_snapshot(self, entitlement_id: str) -> JsonDict:
        """A private copy of the entitlement for request validation: Decimal rates, its current
        ``endTime``, and every dimension (Suger validates against all, not the 50 it shows)."""
        with self._lock:
            ent = self._entitlement_now(entitlement_id)  # a shallow copy already
            ent["info"] = {**copy.deepcopy({k: v for k, v in ent["info"].items()
                                            if k != "dimensions"}),
                           "dimensions": [dict(d) for d in self._all_dimensions[entitlement_id]]}
            ent["metaInfo"] = copy.deepcopy(ent["metaInfo"])
            return ent
