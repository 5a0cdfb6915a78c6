"""The assets. Each body reads its inputs, calls one plain function of ``steps``, and turns the result
into metadata."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import dagster as dg

from metronome_suger.config import AppConfig
from metronome_suger.core.amounts import cents_to_dollars, dollars_text
from metronome_suger.core.linkage import UnknownEntitlementError
from metronome_suger.core.windows import Window, iso
from metronome_suger.orchestration.keys import (
    CLOCK,
    CUSTOMERS,
    DUCKDB,
    ENTITLEMENTS,
    GROUP,
    INVOICES,
    METRICS,
    METRONOME,
    POOL,
    RECORDS,
    REPORT,
    SUGER,
    USAGE,
    Keys,
)
from metronome_suger.orchestration.partitions import context_windows, partitions_for
from metronome_suger.orchestration.schemas import asset_options
from metronome_suger.steps.invoices import observe_invoices
from metronome_suger.steps.records import Conversion, compute_records
from metronome_suger.steps.report import deadline_status, report_windows
from metronome_suger.steps.snapshots import snapshot_customers, snapshot_links, snapshot_metrics
from metronome_suger.steps.usage import NoReportableMetric, fetch_usage
from metronome_suger.storage.claims import ClaimTimeoutError, claimed
from metronome_suger.storage.db import Connect
from metronome_suger.storage.figures import window_figures

CLAIM_WAIT = 600.0  # seconds a step waits for another run to finish writing the same window
HIGH_WATER = "invoice_high_water"  # the amount modes' high water is shared by every window


def _now() -> datetime:
    return datetime.now(timezone.utc)


def conversion_of(config: AppConfig) -> Conversion:
    return Conversion(config.dimension_conversion, config.amount_mode)


def build_assets(config: AppConfig, keys: Keys) -> list[dg.AssetsDefinition]:
    """The snapshot assets, the billing mode's source, the records and the report."""
    common: dict[str, Any] = {"group_name": keys.name(GROUP), "kinds": {"duckdb"}, "pool": POOL}
    windowed: dict[str, Any] = {**common, "partitions_def": partitions_for(config)}
    conv = conversion_of(config)

    def res(context: Any, name: str) -> Any:
        return keys.resource(context, name)

    def plotted(connect: Connect, windows: list[Window], now: datetime) -> dict[str, Any]:
        """The windows' figures as floats, which the UI plots across partitions (exact values stay in the
        tables): groups, units per dimension and dollars at Suger, dollars at risk and expired, units and
        dollars over-reported, and minutes from the close of the window to Suger's answer."""
        span = Window(windows[0].start, windows[-1].end)
        with connect(read_only=True) as conn:
            figures = window_figures(conn, span)
        deadlines = deadline_status(connect, span, config.deadlines, now)
        plotted: dict[str, Any] = {
            "groups": figures.groups, "groups_sent": figures.groups_sent,
            "dollars_sent": float(figures.dollars_sent),
            "dollars_at_risk": float(sum((d for _, d in deadlines.at_risk.values()), Decimal(0))),
            "dollars_expired": float(sum((d for _, d in deadlines.expired.values()), Decimal(0))),
            "units_over_reported": float(figures.units_over_reported),
            "dollars_over_reported": float(figures.dollars_over_reported),
            **{f"units:{dim}": float(units) for dim, units in figures.units_sent.items()}}
        if figures.delay_minutes is not None:
            plotted["delay_minutes"] = round(figures.delay_minutes, 1)
        return plotted

    @contextmanager
    def hold(context: dg.AssetExecutionContext, *shared: str) -> Iterator[None]:
        """Claim the run's windows (and shared state) for this step: two runs of a window, in any processes
        sharing the database, write it one after the other (exactly-once without a Dagster pool)."""
        names = [f"{config.billing_mode}:{w.partition_key}" for w in context_windows(context, config.hourly)]
        try:
            db = res(context, DUCKDB)
            with claimed(db.get_connection, [*names, *shared], context.run.run_id, wait=CLAIM_WAIT,
                         heartbeat=db.target.is_postgres):
                yield
        except ClaimTimeoutError as exc:
            raise dg.Failure(description=str(exc)) from None

    @dg.asset(key=keys.asset(CUSTOMERS), required_resource_keys=keys.resources(METRONOME, DUCKDB), **common,
              **asset_options(CUSTOMERS, layer="source"))
    def metronome_customers(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        """Metronome customers (active and archived), one snapshot per run."""
        with res(context, METRONOME).get_client() as client:
            out = snapshot_customers(client, res(context, DUCKDB).get_connection, _now())
        return dg.MaterializeResult(metadata={"dagster/row_count": out.rows, "archived": out.archived,
                                              "preview": dg.MetadataValue.md(out.preview)})

    @dg.asset(key=keys.asset(METRICS), required_resource_keys=keys.resources(METRONOME, DUCKDB), **common,
              **asset_options(METRICS, layer="source"))
    def metronome_billable_metrics(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        """Suger's "Billable Metric Full List", archived included, with the whitelist flag."""
        whitelist = config.billable_metric_whitelist
        with res(context, METRONOME).get_client() as client:
            out = snapshot_metrics(client, res(context, DUCKDB).get_connection, _now(),
                                   whitelist_enabled=whitelist.enabled, whitelist=whitelist.metrics)
        if out.problem:
            raise dg.Failure(description=out.problem)
        context.log.info(f"{out.whitelisted} of {out.rows} billable metrics are reportable")
        return dg.MaterializeResult(metadata={
            "dagster/row_count": out.rows, "whitelisted": out.whitelisted, "archived": out.archived,
            "whitelist_enabled": whitelist.enabled, "preview": dg.MetadataValue.md(out.preview)})

    @dg.asset(key=keys.asset(ENTITLEMENTS), required_resource_keys=keys.resources(SUGER, DUCKDB), **common,
              **asset_options(ENTITLEMENTS, layer="source"))
    def suger_entitlements(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        """Metronome customer → Suger entitlement links, as Suger resolves them (re-resolved every run:
        renewals, upsells and plan changes create new terms and entitlements)."""
        overrides = [(link.metronome_customer_id, link.entitlement_id) for link in config.customer_links]
        with res(context, SUGER).get_client() as client:
            try:
                out = snapshot_links(client, res(context, DUCKDB).get_connection, _now(), overrides)
            except UnknownEntitlementError as exc:
                raise dg.Failure(description=str(exc)) from None
        context.log.info(f"{out.links} links to {out.entitlements} entitlements on "
                         f"{', '.join(out.partners) or 'no partner'}")
        for ent_id, problem in out.dimension_problems.items():  # mapping_completeness blocks their windows
            context.log.warning(f"entitlement {ent_id}: {problem}")
        return dg.MaterializeResult(metadata={
            "dagster/row_count": out.links, "linked_customers": out.customers, "entitlements": out.entitlements,
            "partners": ", ".join(out.partners), "preview": dg.MetadataValue.md(out.preview),
            "incomplete_dimension_lists": len(out.dimension_problems)})

    @dg.asset(key=keys.asset(USAGE), deps=[keys.asset(METRICS), keys.asset(CUSTOMERS)],
              required_resource_keys=keys.resources(METRONOME, DUCKDB, CLOCK), **windowed,
              **asset_options(USAGE, layer="source"))
    def metronome_usage(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        """Usage per customer × metric × window for the whitelisted (or all) billable metrics."""
        windows = context_windows(context, config.hourly)
        with res(context, METRONOME).get_client() as client:
            try:
                with hold(context):
                    out = fetch_usage(client, res(context, DUCKDB).get_connection, windows, res(context, CLOCK).now)
            except NoReportableMetric as exc:
                raise dg.Failure(description=str(exc)) from None
        if out.unknown_metrics:
            context.log.warning("usage returned for metrics absent from the billable metric list (not reported): "
                                + ", ".join(out.unknown_metrics))
        metadata: dict[str, Any] = {
            "dagster/row_count": out.rows, "window": f"{iso(windows[0].start)}..{iso(windows[-1].end)}",
            "null_values": out.null_values, "nonzero_rows": out.nonzero_rows,
            "preview": dg.MetadataValue.md(out.preview),
            **{f"total:{name}": float(total) for name, total in out.totals.items()},
        }
        if out.unknown_metrics:
            metadata["unknown_metrics"] = ", ".join(out.unknown_metrics)
        return dg.MaterializeResult(metadata=metadata)

    @dg.asset(key=keys.asset(INVOICES), deps=[keys.asset(ENTITLEMENTS)],
              required_resource_keys=keys.resources(METRONOME, DUCKDB, CLOCK), **windowed,
              **asset_options(INVOICES, layer="source"))
    def metronome_invoice_snapshots(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        """Invoice totals of linked customers per window, and the increase each window reports."""
        with res(context, METRONOME).get_client() as client:
            with hold(context, HIGH_WATER):
                out = observe_invoices(client, res(context, DUCKDB).get_connection,
                                       context_windows(context, config.hourly), config.invoice_change_policy,
                                       res(context, CLOCK).now())
        if out.non_usd:
            context.log.warning("invoices in a credit type other than USD are not reported (amount modes report "
                                "USD only): " + "; ".join(f"customer {c}: {t}" for c, t in out.non_usd))
        for note in out.notes:
            context.log.warning(note)
        context.log.info(f"{out.customers} linked customers, {out.invoices} invoices read, {out.tracked} tracked; "
                         f"{dollars_text(cents_to_dollars(out.new_cents))} newly observed above the high water")
        metadata: dict[str, Any] = {
            "dagster/row_count": out.invoices, "customers": out.customers, "customers_with_increase": out.paying,
            "invoices_tracked": out.tracked, "final_reads": out.final_reads,
            "increase_dollars": dg.MetadataValue.float(float(cents_to_dollars(out.window_cents))),
            "increase_dollars_exact": dollars_text(cents_to_dollars(out.window_cents)),
            "new_increase_dollars": dg.MetadataValue.float(float(cents_to_dollars(out.new_cents))),
            "skipped_non_usd": len(out.non_usd), "preview": dg.MetadataValue.md(out.preview),
            **{f"skipped:{reason}": count for reason, count in out.skipped.items()},
        }
        if out.non_usd:
            metadata["skipped_non_usd_details"] = dg.MetadataValue.md(
                "\n".join(f"- customer {c}: {t}" for c, t in out.non_usd))
        if out.notes:
            metadata["notes"] = dg.MetadataValue.md("\n".join(f"- {n}" for n in out.notes))
        return dg.MaterializeResult(metadata=metadata)

    source = metronome_invoice_snapshots if config.amount_mode else metronome_usage

    @dg.asset(key=keys.asset(RECORDS), deps=[source.key, keys.asset(ENTITLEMENTS), keys.asset(METRICS)],
              required_resource_keys=keys.resources(DUCKDB), **windowed, **asset_options(RECORDS, layer="conversion"))
    def suger_usage_records(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        """Record groups per (entitlement, window, revision): only what is not yet at Suger."""
        with hold(context):
            out = compute_records(res(context, DUCKDB).get_connection, context_windows(context, config.hourly), conv,
                                  org_id=config.suger.org_id, billing_mode=config.billing_mode, now=_now())
        for line in out.over_reported:
            context.log.warning(f"over-reported: {line}")
        if out.problems:
            raise dg.Failure(description="nothing is sent for these windows: " + "; ".join(out.problems),
                             metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in out.problems))})
        return dg.MaterializeResult(metadata={
            "dagster/row_count": out.lines, "record_groups": out.groups,
            "over_reported_dimensions": len(out.over_reported), "preview": dg.MetadataValue.md(out.preview),
            **{f"units:{dim}": float(total) for dim, total in sorted(out.totals.items())}})

    @dg.asset(key=keys.asset(REPORT), deps=[keys.asset(RECORDS)],
              required_resource_keys=keys.resources(SUGER, DUCKDB, CLOCK), **windowed,
              **asset_options(REPORT, layer="report"))
    def suger_usage_report(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        """Hand the window's pending record groups to Suger, urgent ones first."""
        suger, clock = res(context, SUGER), res(context, CLOCK)
        with hold(context):
            out = report_windows(suger.get_client, res(context, DUCKDB).get_connection,
                                 context_windows(context, config.hourly), conv, org_id=config.suger.org_id,
                                 deadlines=config.deadlines, auto_report=config.auto_report,
                                 dry_run=config.dry_run, max_workers=suger.max_workers, clock=clock.now)
        if not config.auto_report:
            context.log.info(f"auto_report is off: {out.to_send} groups computed and kept pending, none sent")
        elif config.dry_run:
            context.log.info(f"dry_run: validated {out.to_send} groups with Suger, none sent")
        if out.expired:  # not a run failure: the report_deadline check reports it, with the dollars lost
            context.log.warning(f"{out.expired} groups were past their marketplace deadline and were not sent")
        if out.at_risk:
            context.log.warning(f"{out.at_risk} groups were handed over less than suger_forward_lag_minutes before "
                                "their marketplace deadline: Suger's next hourly report may be too late for them")
        metadata = {"groups_to_send": out.to_send, "sent": out.sent, "rejected": out.rejected,
                    "not_sent_transient": out.not_sent, "expired": out.expired, "at_risk": out.at_risk,
                    "requests": out.requests, "auto_report": config.auto_report, "dry_run": config.dry_run,
                    **plotted(res(context, DUCKDB).get_connection, context_windows(context, config.hourly),
                              clock.now())}
        if out.problems:
            raise dg.Failure(metadata=metadata, description=f"{len(out.problems)} problem(s) reporting to Suger: "
                             + "; ".join(out.problems))
        return dg.MaterializeResult(metadata=metadata)

    return [metronome_customers, metronome_billable_metrics, suger_entitlements, source, suger_usage_records,
            suger_usage_report]
