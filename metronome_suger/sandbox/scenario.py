"""A deterministic, seeded sandbox world: Metronome customers, metrics, usage and invoices, and the
Suger buyers and entitlements they link to.

Every awkward case the plugin must handle exists at least once (null and zero hours, an unlinked
customer, one customer on two marketplaces, an inactive entitlement, a renewal, a credit, a VOID
and re-issue, a non-USD invoice, a SCHEDULED invoice), so the demo and the tests meet them without
setup.
Roles sit at fixed positions; the full set needs `customers >= 6`.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

from metronome_suger.sandbox.metronome_state import MetronomeState, UsageGenerator
from metronome_suger.sandbox.suger_state import SugerState
from metronome_suger.sandbox.wire import DAY, HOUR, add_months, floor_day, floor_hour, mix64, month_start

# name, aggregation type, aggregation key, unit price in cents, archived
METRICS: tuple[tuple[str, str, str | None, Decimal, bool], ...] = (
    ("cpu_hours", "SUM", "cpu_hours", Decimal("12"), False),
    ("api_calls", "COUNT", None, Decimal("0.05"), False),
    ("peak_storage_gb", "MAX", "storage_gb", Decimal("0.5"), False),
    ("legacy_jobs", "SUM", "jobs", Decimal("100"), True),
)
# Same keys on every marketplace; rates in USD per unit, consistent with the Metronome prices.
DIMENSIONS: tuple[dict[str, Any], ...] = (
    {"key": "cpu_hour", "name": "CPU hours", "rate": Decimal("0.12")},
    {"key": "api_request", "name": "API requests", "rate": Decimal("0.0005")},
    {"key": "storage_gb", "name": "Storage GB-hours", "rate": Decimal("0.005")},
    {"key": "usage_fee", "name": "Usage fee", "rate": Decimal("0.01")},
)
NAMES = (
    "Acme Analytics",
    "Globex Cloud",
    "Initech Data",
    "Umbrella AI",
    "Hooli Search",
    "Stark Compute",
    "Wayne Robotics",
    "Tyrell Genomics",
    "Soylent Foods",
    "Cyberdyne Systems",
    "Wonka Labs",
    "Vandelay Imports",
)
# role -> position of the customer that plays it
ROLE_POSITIONS = {
    "aws": 0,
    "credit": 0,
    "null_usage": 0,
    "multi_marketplace": 1,
    "void": 2,
    "renewal": 3,
    "scheduled": 3,
    "non_usd": 4,
    "inactive_entitlement": 4,
    "unlinked": 5,
}
FIXED_PARTNERS = {
    0: ("AWS",),
    1: ("AWS", "GCP"),
    2: ("AZURE",),
    3: ("GCP",),
    4: ("AWS",),
    5: ("AZURE",),
}
_DIURNAL = (6, 5, 5, 4, 4, 5, 7, 9, 11, 12, 13, 13, 12, 12, 13, 13, 12, 11, 10, 9, 8, 8, 7, 6)
_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class ScenarioInfo:
    """What `build_scenario` created, so tests and the demo can find each case by role."""

    seed: int
    now: datetime
    data_start: datetime
    customer_ids: list[str] = field(default_factory=list)
    metric_ids: dict[str, str] = field(default_factory=dict)  # name -> id (archived included)
    archived_metric_names: list[str] = field(default_factory=list)
    roles: dict[str, str] = field(default_factory=dict)  # role -> customer id
    linked_customer_ids: list[str] = field(default_factory=list)
    unlinked_customer_ids: list[str] = field(default_factory=list)
    partners: dict[str, list[str]] = field(
        default_factory=dict
    )  # customer -> partners of its buyers
    buyer_ids: dict[str, list[str]] = field(default_factory=dict)  # customer -> buyer ids
    entitlement_ids: dict[str, list[str]] = field(
        default_factory=dict
    )  # customer -> entitlement ids
    invoice_ids: dict[str, list[str]] = field(
        default_factory=dict
    )  # customer -> invoices at build time
    inactive_entitlement_id: str | None = None
    renewal_entitlement_id: str | None = None
    renewal_at: datetime | None = None
    null_usage_metric_id: str | None = None
    credit_invoice_id: str | None = None
    credit_at: datetime | None = None
    credit_cents: Decimal | None = None
    voided_invoice_id: str | None = None
    reissued_invoice_id: str | None = None
    void_at: datetime | None = None
    non_usd_invoice_id: str | None = None
    non_usd_credit_type: dict[str, str] | None = None
    scheduled_invoice_id: str | None = None

    def role(self, name: str) -> str:
        """Customer id playing `name` (KeyError when the scenario is too small for it)."""
        return self.roles[name]


def usage_generator(
    seed: int, position: int, metric: str, start: datetime, *, nulls: bool
) -> UsageGenerator:
    """Hourly values: daily rhythm, per-hour noise, growth over time, some zero (and null) hours.

    Integer arithmetic only, so values are exact and identical on every platform."""
    metric_index = [m[0] for m in METRICS].index(metric)
    scale = 10 + 4 * position  # tenths

    def generate(hour: datetime) -> Decimal | None:
        k = int((hour - start) / HOUR)
        if k < 0:
            return Decimal(0)
        h = mix64(seed, position, metric_index, k)
        if nulls and h % 13 == 0:
            return None
        if (h >> 8) % 9 == 0:
            return Decimal(0)
        # scale/10 * growth (720+k)/720 * noise (500..1499)/1000 * diurnal/10
        base = scale * (720 + k) * (500 + (h >> 16) % 1000) * _DIURNAL[hour.hour]
        unit = 10 * 720 * 1000 * 10
        if metric == "api_calls":
            return Decimal(base * 120 // unit)
        if metric == "peak_storage_gb":
            tenths = scale * (720 + k) * 50 * (900 + (h >> 16) % 200) * 10 // (10 * 720 * 1000)
            return Decimal(tenths).scaleb(-1)
        return Decimal(base * 400 // unit).scaleb(-2)

    return generate


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _short(rng: random.Random) -> str:
    return "".join(rng.choice(_ID_ALPHABET) for _ in range(9))


def _partners(position: int) -> tuple[str, ...]:
    return FIXED_PARTNERS.get(position, (("AWS", "AZURE", "GCP")[position % 3],))


def build_scenario(
    metronome: MetronomeState, suger: SugerState, *, seed: int, customers: int, now: datetime
) -> ScenarioInfo:
    """Populate both states. Data runs from 00:00 UTC on the first day of the month before `now`."""
    rng = random.Random(seed)
    start = add_months(month_start(now), -1)
    info = ScenarioInfo(seed=seed, now=now, data_start=start)
    if customers <= 0:
        return info
    for name, agg, key, price, archived in METRICS:
        metric = metronome.add_billable_metric(
            name,
            aggregation_type=agg,
            aggregation_key=key,
            id=_uuid(rng),
            archived=archived,
            unit_price_cents=price,
        )
        info.metric_ids[name] = metric["id"]
        if archived:
            info.archived_metric_names.append(name)
    for position in range(customers):
        _add_customer(metronome, suger, info, rng, position)
    values = _add_special_cases(metronome, suger, info, rng)
    return ScenarioInfo(**{**info.__dict__, **values})


def _add_customer(
    metronome: MetronomeState,
    suger: SugerState,
    info: ScenarioInfo,
    rng: random.Random,
    position: int,
) -> None:
    name = NAMES[position % len(NAMES)] + (
        "" if position < len(NAMES) else f" {position // len(NAMES) + 1}"
    )
    slug = name.lower().replace(" ", "-")
    customer = metronome.add_customer(
        name,
        id=_uuid(rng),
        ingest_aliases=[f"{slug}@example.com"],
        created_at=info.data_start - 30 * DAY,
        custom_fields={"tier": ("enterprise", "growth", "startup")[position % 3]},
    )
    customer_id = customer["id"]
    info.customer_ids.append(customer_id)
    for role, role_position in ROLE_POSITIONS.items():
        if role_position == position:
            info.roles[role] = customer_id
    for metric_name, metric_id in info.metric_ids.items():
        if metric_name in info.archived_metric_names:
            continue
        nulls = position == ROLE_POSITIONS["null_usage"] and metric_name == "cpu_hours"
        generator = usage_generator(info.seed, position, metric_name, info.data_start, nulls=nulls)
        metronome.set_usage_generator(customer_id, metric_id, generator)
    unlinked = position == ROLE_POSITIONS["unlinked"]
    (info.unlinked_customer_ids if unlinked else info.linked_customer_ids).append(customer_id)
    for partner in _partners(position):
        buyer = suger.add_buyer(
            f"{name} ({partner})",
            partner=partner,
            metronome_customer_id=None if unlinked else customer_id,
            id=_short(rng),
        )
        entitlement = suger.add_entitlement(
            buyer["id"],
            partner=partner,
            dimensions=[dict(d) for d in DIMENSIONS],
            id=_short(rng),
            start_time=info.data_start - 60 * DAY,
            name=f"{name} {partner} pay-as-you-go",
        )
        info.partners.setdefault(customer_id, []).append(partner)
        info.buyer_ids.setdefault(customer_id, []).append(buyer["id"])
        info.entitlement_ids.setdefault(customer_id, []).append(entitlement["id"])
    info.invoice_ids[customer_id] = metronome.add_monthly_invoices(
        customer_id, first_period_start=info.data_start
    )


def _invoice_covering(info: ScenarioInfo, customer_id: str, at: datetime) -> str:
    """The customer's monthly USAGE invoice whose period contains `at` (ids are in month order)."""
    months = (at.year * 12 + at.month) - (info.data_start.year * 12 + info.data_start.month)
    return info.invoice_ids[customer_id][months]


def _add_special_cases(
    metronome: MetronomeState, suger: SugerState, info: ScenarioInfo, rng: random.Random
) -> dict[str, Any]:
    """Credits, void + re-issue, non-USD and SCHEDULED invoices, an inactive entitlement, a
    renewal."""
    values: dict[str, Any] = {}
    now_hour = floor_hour(info.now)
    roles = info.roles
    if "null_usage" in roles:
        values["null_usage_metric_id"] = info.metric_ids["cpu_hours"]
    if "credit" in roles:
        credit_at = now_hour - 3 * HOUR
        invoice_id = _invoice_covering(info, roles["credit"], credit_at)
        total = metronome.invoice_total(invoice_id, as_of=credit_at)
        cents = max((total / 4).quantize(Decimal(1), ROUND_DOWN), Decimal(1))
        metronome.add_credit(roles["credit"], invoice_id, cents, effective_at=credit_at)
        values.update(credit_invoice_id=invoice_id, credit_at=credit_at, credit_cents=cents)
    if "void" in roles:
        void_at = now_hour - 2 * HOUR
        invoice_id = _invoice_covering(info, roles["void"], void_at)
        reissued = metronome.void_invoice(invoice_id, at=void_at, reissue=True)
        assert reissued is not None
        info.invoice_ids[roles["void"]].append(reissued["id"])
        values.update(
            voided_invoice_id=invoice_id, reissued_invoice_id=reissued["id"], void_at=void_at
        )
    if "scheduled" in roles:
        invoice = metronome.add_invoice(
            roles["scheduled"],
            period_start=info.data_start,
            period_end=add_months(info.data_start, 1),
            id=_uuid(rng),
            type="SCHEDULED",
        )
        metronome.set_invoice_total(invoice["id"], 50_000, effective_at=info.data_start)
        info.invoice_ids[roles["scheduled"]].append(invoice["id"])
        values["scheduled_invoice_id"] = invoice["id"]
    if "non_usd" in roles:
        credit_type = {"id": _uuid(rng), "name": "AI credits"}
        period_start = month_start(info.now)
        invoice = metronome.add_invoice(
            roles["non_usd"],
            period_start=period_start,
            period_end=add_months(period_start, 1),
            id=_uuid(rng),
            credit_type=credit_type,
        )
        running, day = 0, period_start
        while day < add_months(period_start, 1):
            running += rng.randint(100, 500)
            metronome.set_invoice_total(invoice["id"], running, effective_at=day)
            day += DAY
        info.invoice_ids[roles["non_usd"]].append(invoice["id"])
        values.update(non_usd_invoice_id=invoice["id"], non_usd_credit_type=credit_type)
    if "inactive_entitlement" in roles:
        customer_id = roles["inactive_entitlement"]
        buyer_id = info.buyer_ids[customer_id][0]
        partner = info.partners[customer_id][0]
        entitlement = suger.add_entitlement(
            buyer_id,
            partner=partner,
            dimensions=[dict(d) for d in DIMENSIONS],
            status="CANCELLED",
            id=_short(rng),
            start_time=info.data_start - 400 * DAY,
            end_time=info.data_start - 35 * DAY,
            name="Legacy plan (cancelled)",
        )
        info.entitlement_ids[customer_id].append(entitlement["id"])
        values["inactive_entitlement_id"] = entitlement["id"]
    if "renewal" in roles:
        customer_id = roles["renewal"]
        entitlement_id = info.entitlement_ids[customer_id][0]
        renewal_at = floor_day(info.data_start + (info.now - info.data_start) / 2)
        suger.renew_entitlement(entitlement_id, at=renewal_at)
        values.update(renewal_entitlement_id=entitlement_id, renewal_at=renewal_at)
    return values
