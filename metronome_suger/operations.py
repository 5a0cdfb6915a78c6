"""``verify``, ``link``, ``status`` and ``reconcile``: what an operator runs by hand."""

import json
from collections import Counter
from collections.abc import Collection, Sequence
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

from metronome_suger.clients.errors import ApiError, AuthError
from metronome_suger.clients.metronome import MetronomeClient
from metronome_suger.clients.suger import SugerClient
from metronome_suger.config import AppConfig, ConfigError
from metronome_suger.core.conversion import (
    AMOUNT_SOURCE_KEY,
    Dimension,
    LinkedEntitlement,
    Metric,
    find_gaps,
    mapping_rows,
    whitelisted_ids,
)
from metronome_suger.core.linkage import ENDED_STATUSES, UnknownEntitlementError, reports_usage
from metronome_suger.core.reconciliation import PROBLEMS, Reconciliation, money, units
from metronome_suger.core.windows import iso
from metronome_suger.steps.reconciliation import read_reports
from metronome_suger.steps.snapshots import read_links
from metronome_suger.storage.db import connect


def print_table(table: Sequence[Sequence[str]]) -> None:
    """Rows of cells in aligned columns (the first row is the header)."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


def _metronome(config: AppConfig) -> MetronomeClient:
    return MetronomeClient(config.metronome.base_url, config.metronome_token(),
                           max_workers=config.max_concurrency, **config.http.client_options())


def _suger(config: AppConfig) -> SugerClient:
    return SugerClient(config.suger.base_url, config.suger.org_id, config.suger_api_key(),
                       **config.http.client_options())


def suger_metronome_groups(client: SugerClient, entitlement_ids: Collection[str]) -> str | None:
    """The warning when Suger's own Metronome integration reports for our linked entitlements too
    (its groups carry ``metaInfo.source`` METRONOME, in Suger's default 30-day listing window)."""
    counts = Counter(g.entitlementID for g in client.list_usage_record_groups(source="METRONOME")
                     if g.entitlementID in entitlement_ids)
    if not counts:
        return None
    named = ", ".join(f"{ent} ({n} group{'s' if n > 1 else ''})" for ent, n in sorted(counts.items()))
    return (f"Suger's own Metronome integration is also reporting usage (source METRONOME) for linked "
            f"entitlements: {named}: every dollar would be billed twice; switch its Auto Report Usage off")


def verify(config: AppConfig) -> int:
    """Suger's VERIFY: tokens accepted, mapping complete for the linked entitlements."""
    problems: list[str] = []
    warnings: list[str] = []
    metrics: list[Metric] = []
    try:
        with _metronome(config) as client:
            metrics = [Metric(m.id, m.name, m.archived) for m in client.list_billable_metrics()]
        print(f"Metronome: token accepted, {len(metrics)} billable metrics")
    except (ConfigError, AuthError) as exc:
        problems.append(f"Metronome: {exc}")
    except ApiError as exc:
        problems.append(f"Metronome unreachable or failing: {exc}")
    links = []
    dimension_problems: dict[str, str] = {}
    double: str | None = None  # Suger's own Metronome integration reporting too
    try:
        with _suger(config) as client:
            overrides = [(lk.metronome_customer_id, lk.entitlement_id) for lk in config.customer_links]
            found = read_links(client, overrides)
            links, dimension_problems = found.links, found.dimension_problems
            metering = client.get_usage_metering_config()
            double = suger_metronome_groups(client, {link.entitlement.id for link in links})
        partners = sorted({link.entitlement.partner for link in links if link.entitlement.partner})
        print(f"Suger: key accepted, {len(links)} customer → entitlement links on "
              f"{', '.join(partners) or 'no partner'}")
        for partner in partners:
            own = metering.for_partner(partner)
            if own and own.enableDimensionMapping:
                warnings.append(
                    f"Suger converts dimensions itself for {partner} (usageMeteringConfigInfo "
                    "enableDimensionMapping): records would be converted twice"
                )
    except (ConfigError, AuthError, UnknownEntitlementError) as exc:
        problems.append(f"Suger: {exc}")
    except ApiError as exc:
        problems.append(f"Suger unreachable or failing: {exc}")
    if metrics and links:
        try:
            whitelist = config.billable_metric_whitelist
            reportable = whitelisted_ids(whitelist.enabled, whitelist.metrics, metrics)
        except ValueError as exc:
            problems.append(str(exc))
            reportable = set()
        if config.amount_mode:
            keys = [AMOUNT_SOURCE_KEY]
        else:
            keys = sorted(m.name for m in metrics if m.id in reportable and not m.archived)
        usable = [link for link in links if reports_usage(link.entitlement.status, link.entitlement.endTime)]
        partners = sorted({link.entitlement.partner for link in usable if link.entitlement.partner})
        required = [(p, k, "reportable") for p in partners for k in keys]
        ents = [
            LinkedEntitlement(link.entitlement.id, link.entitlement.partner or "", tuple(
                Dimension(d.key, d.name, d.rate)
                for d in (link.entitlement.info.dimensions if link.entitlement.info else [])
            ), dimension_problems.get(link.entitlement.id))
            for link in usable
        ]
        rows = mapping_rows(config.dimension_conversion, metrics, amount_mode=config.amount_mode)
        problems += [str(gap) for gap in find_gaps(required, rows, ents)]
    warnings.append(double or "Suger's own Metronome integration must have Auto Report Usage switched off, "
                              "or usage is reported twice")
    for warning in warnings:
        print(f"warning: {warning}")
    if problems:
        for problem in problems:
            print(f"problem: {problem}")
        print(f"NOT VERIFIED: {len(problems)} problem(s)")
        return 1
    print("VERIFIED")
    return 0


def link(config: AppConfig, buyer_id: str, metronome_customer_id: str) -> int:
    """Suger's "Connect Metronome Customer", then what that customer now reports to."""
    with _suger(config) as client:
        buyer = client.link_metronome_customer(buyer_id, metronome_customer_id)
        ents = client.list_entitlements(buyer_id=buyer.id)
    print(f"buyer {buyer.id} ({buyer.name}) is linked to Metronome customer {metronome_customer_id}")
    if not ents:
        print("it has no entitlements yet: nothing will be reported for this customer")
    for ent in ents:
        usable = "does not report"
        if reports_usage(ent.status, ent.endTime):
            usable = f"reports usage before {iso(ent.endTime)}" if ent.status in ENDED_STATUSES and ent.endTime \
                else "reports"
        dims = ", ".join(d.key for d in (ent.info.dimensions if ent.info else []))
        print(f"  {ent.partner} entitlement {ent.id} [{ent.status}] {usable}; dimensions: {dims or '-'}")
    return 0


def status(config: AppConfig, *, since: datetime | None = None) -> int:
    """Per window: groups computed, sent, accepted, rejected, expired, Suger statuses, over-reporting."""
    since = since or datetime.now(timezone.utc) - timedelta(hours=24)
    if since.tzinfo is None:
        since = since.replace(tzinfo=timezone.utc)
    if not config.storage.is_postgres and not config.duckdb_path.exists():
        print(f"no data yet: {config.duckdb_path} does not exist (run the pipeline first)")
        return 0
    with connect(config.database(), read_only=True) as conn:
        rows = conn.execute(
            """SELECT g.window_start, count(*) AS computed,
                count(*) FILTER (WHERE status IN ('sent', 'accepted')) AS sent,
                count(*) FILTER (WHERE status = 'accepted') AS accepted,
                count(*) FILTER (WHERE status = 'rejected') AS rejected,
                count(*) FILTER (WHERE status = 'expired') AS expired,
                count(*) FILTER (WHERE status = 'pending') AS pending,
                string_agg(DISTINCT suger_status, ',' ORDER BY suger_status) AS suger,
                (SELECT count(*) FROM over_reported o WHERE o.window_start = g.window_start) AS over
            FROM report_ledger g WHERE g.window_start >= ? GROUP BY g.window_start ORDER BY 1""",
            [since],
        ).fetchall()
    headers = ("window (UTC)", "computed", "sent", "accepted", "rejected", "expired", "pending",
               "suger statuses", "over-reported")
    table = [headers] + [
        (f"{r[0]:%Y-%m-%d %H:%M}", *(str(v) for v in r[1:7]), r[7] or "-", str(r[8])) for r in rows
    ]
    print_table(table)
    if not rows:
        print(f"no record groups since {since:%Y-%m-%d %H:%M} UTC")
    return 0


def reconcile(config: AppConfig, *, day: date | None = None, entitlement_id: str | None = None,
              as_json: bool = False) -> int:
    """Read Suger's usage record reports of the UTC ``day`` (default yesterday), store them, and print the
    three-way reconciliation; 1 when a line has an unexplained difference or a report missing past the grace."""
    now = datetime.now(timezone.utc)
    day = day or (now - timedelta(days=1)).date()
    if not config.storage.is_postgres and not config.duckdb_path.exists():
        print(f"no data yet: {config.duckdb_path} does not exist (run the pipeline first)")
        return 0
    with _suger(config) as client:
        out = read_reports(client, lambda **kw: connect(config.database(), **kw), day, now,
                           config.reconciliation_grace, entitlement_id, config.deadlines)
    result = out.reconciliation
    if as_json:
        print(json.dumps(reconciliation_json(result), indent=2))
    else:
        print_reconciliation(result)
    return 1 if result.problems else 0


def reconciliation_json(result: Reconciliation) -> dict[str, object]:
    return {"day": result.day, "reports": result.reports, "foreign_groups": result.foreign_groups,
            "lines": [line.as_dict() for line in result.lines], "problems": len(result.problems),
            "billed_dollars": units(result.total_dollars("billed_dollars")),
            "lost_dollars": units(result.total_dollars("lost_dollars"))}


def print_reconciliation(result: Reconciliation) -> None:
    """One line per entitlement × dimension, the totals, then every named difference and note."""
    print(f"marketplace reconciliation of {result.day} (UTC): {result.reports} usage record report(s)")
    headers = ("entitlement", "partner", "dimension", "converted", "sent", "told", "billed", "lost",
               "unexplained")
    table = [headers] + [(line.entitlement_id, line.partner, line.dimension_key, units(line.converted),
                          units(line.sent), units(line.told), money(line.billed_dollars),
                          money(line.lost_dollars), units(line.unexplained)) for line in result.lines]
    table.append(("total", "", "", units(result.total("converted")), units(result.total("sent")),
                  units(result.total("told")), money(result.total_dollars("billed_dollars")),
                  money(result.total_dollars("lost_dollars")),
                  units(sum((abs(line.unexplained) for line in result.lines), Decimal(0)))))
    print_table(table)
    for line in result.lines:
        named = ", ".join(f"{name} {units(value)}" for name, value in line.differences().items())
        if named or line.notes:
            print(f"- {line.entitlement_id} {line.dimension_key}: {named or 'no difference'}"
                  + "".join(f"; {note}" for note in line.notes))
    for group_id in result.foreign_groups:
        print(f"- foreign group {group_id}: in a report of ours, sent by neither this pipeline nor Suger's "
              "Metronome integration (its units are unexplained)")
    problems = result.problems
    print(f"{len(problems)} line(s) with {' or '.join(PROBLEMS)}" if problems else
          "every difference is explained" if result.lines else "nothing to reconcile for this day")
