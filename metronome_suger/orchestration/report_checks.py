"""Checks on ``suger_usage_report``: verification against Metronome, Suger-side statuses, deadlines."""

from decimal import Decimal

import dagster as dg

from metronome_suger.config import AppConfig
from metronome_suger.core.conversion import mapping_rows
from metronome_suger.orchestration.checks import bullets
from metronome_suger.orchestration.partitions import context_windows, partitions_for
from metronome_suger.orchestration.records import SourceLoader, latest_metrics
from metronome_suger.orchestration.resources import SafeDuckDBResource
from metronome_suger.orchestration.snapshots import POOL
from metronome_suger.storage.verification import discrepancies

REPORT = dg.AssetKey("suger_usage_report")


def _money(value: Decimal) -> str:
    return f"${value.quantize(Decimal('0.01')):,}"


def build_report_checks(config: AppConfig, load_source: SourceLoader) -> list[dg.AssetChecksDefinition]:
    partitions = partitions_for(config)

    @dg.asset_check(asset=REPORT, partitions_def=partitions, pool=POOL)
    def usage_verification(
        context: dg.AssetCheckExecutionContext, duckdb: SafeDuckDBResource
    ) -> dg.AssetCheckResult:
        """What Suger holds vs what Metronome's stored values convert to, per customer × dimension:
        over- and under-reporting in units and dollars (pending, rejected or expired groups show as under)."""
        found = []
        with duckdb.get_connection() as conn:
            mapping = mapping_rows(config, latest_metrics(conn))
            for window in context_windows(context, config.hourly):
                problems = load_source(conn, window)
                if problems:
                    continue
                found += [(window, d) for d in discrepancies(conn, window, mapping)]
        over = sum((d.dollars or 0 for _, d in found if d.difference > 0), Decimal(0))
        under = sum((-(d.dollars or 0) for _, d in found if d.difference < 0), Decimal(0))
        return dg.AssetCheckResult(
            passed=not found,
            severity=dg.AssetCheckSeverity.WARN,
            description=(
                "reported equals Metronome for every customer and dimension"
                if not found
                else f"{len(found)} discrepancies: over-reported {_money(over)}, under-reported {_money(under)}"
            ),
            metadata={
                "discrepancies": len(found),
                "over_reported_dollars": float(over),
                "under_reported_dollars": float(under),
                "details": dg.MetadataValue.md(bullets([f"{w.partition_key}: {d}" for w, d in found]) or "none"),
            },
        )

    @dg.asset_check(asset=REPORT, partitions_def=partitions, pool=POOL)
    def suger_record_status(
        context: dg.AssetCheckExecutionContext, duckdb: SafeDuckDBResource
    ) -> dg.AssetCheckResult:
        """Groups Suger marked INVALID or failed to forward (REPORT_FAILED), as last polled."""
        windows = context_windows(context, config.hourly)
        with duckdb.get_connection() as conn:
            rows = conn.execute(
                """SELECT record_group_id, entitlement_id, partner, suger_status, coalesce(message, '')
                FROM report_ledger WHERE window_start >= ? AND window_start < ?
                  AND suger_status IN ('INVALID', 'REPORT_FAILED') ORDER BY 1""",
                [windows[0].start, windows[-1].end],
            ).fetchall()
            counts = dict(conn.execute(
                """SELECT coalesce(suger_status, 'unknown'), count(*) FROM report_ledger
                WHERE window_start >= ? AND window_start < ? AND status IN ('sent', 'accepted', 'rejected')
                GROUP BY 1""",
                [windows[0].start, windows[-1].end],
            ).fetchall())
        lines = [f"group {g} ({p}, entitlement {e}): {s} {m}".strip() for g, e, p, s, m in rows]
        return dg.AssetCheckResult(
            passed=not rows,
            description="no INVALID or REPORT_FAILED group" if not rows else f"{len(rows)} group(s) need attention",
            metadata={**{f"suger:{k}": v for k, v in sorted(counts.items())},
                      "details": dg.MetadataValue.md(bullets(lines) or "none")},
        )

    @dg.asset_check(asset=REPORT, partitions_def=partitions, pool=POOL)
    def report_deadline(
        context: dg.AssetCheckExecutionContext, duckdb: SafeDuckDBResource
    ) -> dg.AssetCheckResult:
        """Groups that missed their marketplace deadline: never sent, and the revenue they carried."""
        windows = context_windows(context, config.hourly)
        with duckdb.get_connection() as conn:
            rows = conn.execute(
                """SELECT partner, count(*), coalesce(sum(dollars), 0) FROM report_ledger
                WHERE window_start >= ? AND window_start < ? AND status = 'expired' GROUP BY 1 ORDER BY 1""",
                [windows[0].start, windows[-1].end],
            ).fetchall()
        total = sum((r[2] for r in rows), Decimal(0))
        groups = sum(r[1] for r in rows)
        return dg.AssetCheckResult(
            passed=not rows,
            description=(
                "every group was handed over before its marketplace deadline"
                if not rows
                else f"{groups} group(s) expired unsent: {_money(total)} of revenue lost ("
                + ", ".join(f"{p} {n} groups {_money(d)}" for p, n, d in rows) + ")"
            ),
            metadata={"expired_groups": groups, "lost_dollars": float(total),
                      **{f"lost_dollars:{p}": float(d) for p, _, d in rows}},
        )

    return [usage_verification, suger_record_status, report_deadline]
