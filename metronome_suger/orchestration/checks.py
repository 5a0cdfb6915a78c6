"""Asset checks. On ``suger_usage_records``: mapping completeness (blocking) and customer linkage. On
``suger_usage_report``: verification against Metronome, Suger-side statuses, deadlines. Each body calls
one plain function and turns its result into a check result."""

from decimal import Decimal
from typing import Any

import dagster as dg

from metronome_suger.config import AppConfig
from metronome_suger.core.windows import Window
from metronome_suger.orchestration.assets import conversion_of
from metronome_suger.orchestration.keys import CLOCK, DUCKDB, POOL, RECORDS, REPORT, Keys
from metronome_suger.orchestration.partitions import context_windows, partitions_for
from metronome_suger.steps.records import check_linkage, check_mapping, verify_windows
from metronome_suger.steps.report import deadline_status
from metronome_suger.storage.db import Connect
from metronome_suger.storage.ledger import flagged_groups, suger_status_counts


def bullets(items: list[str], limit: int = 50) -> str:
    shown = [f"- {item}" for item in items[:limit]]
    if len(items) > limit:
        shown.append(f"- … and {len(items) - limit} more")
    return "\n".join(shown)


def _money(value: Decimal) -> str:
    return f"${value.quantize(Decimal('0.01')):,}"


def _tally(by_partner: dict[str, tuple[int, Decimal]]) -> tuple[int, Decimal]:
    return sum(n for n, _ in by_partner.values()), sum((d for _, d in by_partner.values()), Decimal(0))


def _by_partner(by_partner: dict[str, tuple[int, Decimal]]) -> str:
    return ", ".join(f"{p} {n} groups {_money(d)}" for p, (n, d) in by_partner.items())


def build_checks(config: AppConfig, keys: Keys) -> list[dg.AssetChecksDefinition]:
    conv = conversion_of(config)
    common: dict[str, Any] = {"partitions_def": partitions_for(config), "pool": POOL,
                              "required_resource_keys": keys.resources(DUCKDB)}

    def connect(context: dg.AssetCheckExecutionContext) -> Connect:
        return keys.resource(context, DUCKDB).get_connection

    def span(context: dg.AssetCheckExecutionContext) -> Window:
        """All the windows of the run as one interval."""
        windows = context_windows(context, config.hourly)
        return Window(windows[0].start, windows[-1].end)

    @dg.asset_check(asset=keys.asset(RECORDS), blocking=True, **common)
    def mapping_completeness(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        """Every reportable source key is mapped for every partner in use, and every mapped dimension
        exists, unambiguously, on the linked entitlement. Blocking: a failing window sends nothing."""
        gaps = check_mapping(connect(context), context_windows(context, config.hourly), conv)
        return dg.AssetCheckResult(
            passed=not gaps, severity=dg.AssetCheckSeverity.ERROR,
            description="all reportable source keys are mapped" if not gaps
            else f"{len(gaps)} mapping gap(s), nothing sent for the window: " + "; ".join(gaps[:20]),
            metadata={"gaps": len(gaps), "details": dg.MetadataValue.md(bullets(gaps) or "none")},
        )

    @dg.asset_check(asset=keys.asset(RECORDS), **common)
    def customer_linkage(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        """Usage of customers with no Suger entitlement for the window is not silently dropped."""
        out = check_linkage(connect(context), context_windows(context, config.hourly), conv)
        description = "every customer with usage is linked"
        if out.unlinked:
            description = f"{len(out.customers)} customer(s) with usage but no link: not reported"
        if out.multi_linked:
            description += f"; {len(out.multi_linked)} customer-window(s) report one invoice to several entitlements"
        return dg.AssetCheckResult(
            passed=not (out.unlinked or out.multi_linked), severity=dg.AssetCheckSeverity.WARN,
            description=description,
            metadata={"unlinked_customers": len(out.customers), "multi_linked": len(out.multi_linked),
                      "details": dg.MetadataValue.md(bullets(out.unlinked + out.multi_linked) or "none")},
        )

    @dg.asset_check(asset=keys.asset(REPORT), **common)
    def usage_verification(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        """What Suger holds vs what Metronome's stored values convert to, per customer × dimension:
        over- and under-reporting in units and dollars (pending, rejected or expired groups show as under)."""
        found = verify_windows(connect(context), context_windows(context, config.hourly), conv)
        over = sum((d.dollars or Decimal(0) for _, d in found if d.difference > 0), Decimal(0))
        under = sum((-(d.dollars or Decimal(0)) for _, d in found if d.difference < 0), Decimal(0))
        return dg.AssetCheckResult(
            passed=not found, severity=dg.AssetCheckSeverity.WARN,
            description="reported equals Metronome for every customer and dimension" if not found
            else f"{len(found)} discrepancies: over-reported {_money(over)}, under-reported {_money(under)}",
            metadata={"discrepancies": len(found), "over_reported_dollars": float(over),
                      "under_reported_dollars": float(under),
                      "details": dg.MetadataValue.md(bullets([f"{w.partition_key}: {d}" for w, d in found]) or "none")},
        )

    @dg.asset_check(asset=keys.asset(REPORT), **common)
    def suger_record_status(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        """Groups Suger marked INVALID, failed to forward (REPORT_FAILED) or holds in an unknown status."""
        window = span(context)
        with connect(context)() as conn:
            rows, counts = flagged_groups(conn, window), suger_status_counts(conn, window)
        lines = [f"group {g} ({p}, entitlement {e}): {s} {m}".strip() for g, e, p, s, m in rows]
        return dg.AssetCheckResult(
            passed=not rows,
            description="no INVALID, REPORT_FAILED or unknown-status group" if not rows
            else f"{len(rows)} group(s) need attention",
            metadata={**{f"suger:{k}": v for k, v in sorted(counts.items())},
                      "details": dg.MetadataValue.md(bullets(lines) or "none")},
        )

    @dg.asset_check(asset=keys.asset(REPORT), **{**common, "required_resource_keys": keys.resources(DUCKDB, CLOCK)})
    def report_deadline(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        """Groups past their marketplace deadline (never sent: fails, with the revenue they carried) and
        groups handed over inside Suger's forwarding lag before it (at risk: warns, with their dollars)."""
        now = keys.resource(context, CLOCK).now()
        status = deadline_status(connect(context), span(context), config.deadlines, now)
        lost, risky = _tally(status.expired), _tally(status.at_risk)
        parts = []
        if status.expired:
            parts.append(f"{lost[0]} group(s) expired unsent: {_money(lost[1])} of revenue lost ("
                         + _by_partner(status.expired) + ")")
        if status.at_risk:
            parts.append(f"{risky[0]} group(s) at risk: {_money(risky[1])} handed to Suger less than "
                         f"{config.suger_forward_lag_minutes} min before the marketplace deadline ("
                         + _by_partner(status.at_risk) + ")")
        return dg.AssetCheckResult(
            passed=not parts,
            severity=dg.AssetCheckSeverity.ERROR if status.expired else dg.AssetCheckSeverity.WARN,
            description="; ".join(parts) or "every group was handed over in time for its marketplace deadline",
            metadata={"expired_groups": lost[0], "lost_dollars": float(lost[1]),
                      "at_risk_groups": risky[0], "at_risk_dollars": float(risky[1]),
                      **{f"lost_dollars:{p}": float(d) for p, (_, d) in status.expired.items()},
                      **{f"at_risk_dollars:{p}": float(d) for p, (_, d) in status.at_risk.items()}},
        )

    return [mapping_completeness, customer_linkage, usage_verification, suger_record_status, report_deadline]
