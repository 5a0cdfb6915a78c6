"""Snapshots of Metronome customers and billable metrics, and Suger's customer → entitlement links."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from metronome_suger.clients.errors import ApiError
from metronome_suger.clients.http import iter_bounded
from metronome_suger.clients.metronome import MetronomeClient
from metronome_suger.clients.suger import SugerClient
from metronome_suger.clients.suger_models import Entitlement, MeteringDimension
from metronome_suger.core.conversion import Metric, UnknownMetricError, whitelisted_ids
from metronome_suger.core.linkage import Link, resolve_links
from metronome_suger.storage.db import Connect, table_markdown
from metronome_suger.storage.snapshots import store_customers, store_links, store_metrics


@dataclass(frozen=True)
class CustomersResult:
    rows: int
    archived: int
    preview: str


def snapshot_customers(client: MetronomeClient, connect: Connect, now: datetime) -> CustomersResult:
    customers = client.list_customers(include_archived=True)
    with connect() as conn:
        store_customers(conn, now, [(c.id, c.name, c.external_id, c.archived) for c in customers])
        preview = table_markdown(conn, "SELECT customer_id, name, archived FROM customers WHERE snapshot_at = ?", [now])
    return CustomersResult(len(customers), sum(1 for c in customers if c.archived), preview)


@dataclass(frozen=True)
class MetricsResult:
    rows: int
    whitelisted: int
    archived: int
    preview: str
    problem: str | None  # a whitelist naming unknown metrics: the snapshot is stored, the step fails


def snapshot_metrics(
    client: MetronomeClient, connect: Connect, now: datetime, *, whitelist_enabled: bool, whitelist: Sequence[str]
) -> MetricsResult:
    metrics = client.list_billable_metrics(include_archived=True)
    try:
        chosen = whitelisted_ids(whitelist_enabled, whitelist, [Metric(m.id, m.name, m.archived) for m in metrics])
        problem = None
    except UnknownMetricError as exc:
        chosen, problem = set(), str(exc)
    with connect() as conn:  # stored first, even with a problem: nothing fetched is lost
        store_metrics(conn, now, [(m.id, m.name, m.aggregation_type, m.archived, m.id in chosen) for m in metrics])
        preview = table_markdown(
            conn, "SELECT name, metric_id, aggregation_type, archived, whitelisted FROM billable_metrics "
                  "WHERE snapshot_at = ? ORDER BY name", [now])
    return MetricsResult(len(metrics), len(chosen), sum(1 for m in metrics if m.archived), preview, problem)


@dataclass(frozen=True)
class LinksResult:
    links: int
    customers: int
    entitlements: int
    partners: list[str]
    preview: str
    dimension_problems: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SugerLinks:
    """The customer → entitlement links, each entitlement with its complete dimension list, and the
    entitlements whose list could not be completed (id → why): those keep only the 50 Suger shows."""

    links: list[Link[Entitlement]]
    dimension_problems: dict[str, str]


def read_links(client: SugerClient, overrides: Sequence[tuple[str, str]]) -> SugerLinks:
    """Linkage as Suger does it: one paged listing of buyers and one of the org's entitlements; then,
    once per product, the full dimension list of the linked entitlements Suger marks
    ``dimensionsOversized`` (it keeps only 50 on the entitlement)."""
    buyers = [(b.id, b.info.metronomeCustomerId) for b in client.list_buyers()
              if b.info and b.info.metronomeCustomerId]
    links = resolve_links(buyers, client.list_entitlements(), overrides)
    oversized = {link.entitlement.id: link.entitlement for link in links
                 if link.entitlement.info.dimensionsOversized}
    if not oversized:
        return SugerLinks(links, {})
    products = sorted({e.productID for e in oversized.values() if e.productID})
    listed: dict[str, list[MeteringDimension] | BaseException] = dict(
        iter_bounded(client.list_product_dimensions, products, max_workers=client.max_workers))
    complete: dict[str, Entitlement] = {}
    problems: dict[str, str] = {}
    for ent_id, ent in oversized.items():
        found = listed.get(ent.productID) if ent.productID else None
        if isinstance(found, list):
            complete[ent_id] = with_product_dimensions(ent, found)
        elif isinstance(found, ApiError):
            problems[ent_id] = (f"entitlement {ent_id} has more than 50 dimensions and the dimension list "
                                f"of its product {ent.productID} could not be read: {found}")
        elif found is None:
            problems[ent_id] = (f"entitlement {ent_id} has more than 50 dimensions but no product id: "
                                "its dimensions past the 50th cannot be read")
        else:
            raise found  # not an API answer: a bug, never hidden as a data problem
    links = [Link(lk.metronome_customer_id, lk.buyer_id, complete.get(lk.entitlement.id, lk.entitlement), lk.source)
             for lk in links]
    return SugerLinks(links, problems)


def with_product_dimensions(ent: Entitlement, product: Sequence[MeteringDimension]) -> Entitlement:
    """The entitlement's own dimensions (their rate is the entitlement's), then the product's others."""
    own = list(ent.info.dimensions)
    keys = {d.key for d in own}
    merged = own + [d for d in product if d.key not in keys]
    return ent.model_copy(update={"info": ent.info.model_copy(update={"dimensions": merged})})


def snapshot_links(
    client: SugerClient, connect: Connect, now: datetime, overrides: Sequence[tuple[str, str]]
) -> LinksResult:
    found = read_links(client, overrides)
    links, problems = found.links, found.dimension_problems
    seen = {link.entitlement.id: link.entitlement for link in links}
    with connect() as conn:
        store_links(
            conn, now,
            [(link.metronome_customer_id, link.buyer_id, link.entitlement.id, link.entitlement.partner,
              link.entitlement.status, link.entitlement.startTime, link.entitlement.endTime,
              link.entitlement.entitlementTermID, link.source, problems.get(link.entitlement.id))
             for link in links],
            [(e.id, d.key, d.name, d.rate) for e in seen.values() for d in (e.info.dimensions if e.info else [])],
        )
        preview = table_markdown(
            conn, "SELECT metronome_customer_id, entitlement_id, partner, status, term_id, link_source "
                  "FROM entitlements WHERE snapshot_at = ? ORDER BY 1, 3", [now])
    partners = sorted({e.partner for e in seen.values() if e.partner})
    return LinksResult(len(links), len({link.metronome_customer_id for link in links}), len(seen), partners, preview,
                       problems)
