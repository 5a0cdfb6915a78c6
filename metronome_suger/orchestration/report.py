"""``suger_usage_report``: send each pending group once; 409 is success; the ledger is written per answer."""

from concurrent.futures import ThreadPoolExecutor, as_completed

import dagster as dg

from metronome_suger.clients.http import ApiError
from metronome_suger.clients.suger import SugerClient
from metronome_suger.clients.suger_models import NewUsageRecordGroup
from metronome_suger.config import AppConfig
from metronome_suger.core.deadlines import is_expired, send_order
from metronome_suger.orchestration.partitions import context_windows, partitions_for
from metronome_suger.orchestration.records import latest_metrics
from metronome_suger.orchestration.resources import ClockResource, SafeDuckDBResource, SugerResource
from metronome_suger.orchestration.snapshots import GROUP, POOL
from metronome_suger.storage.gaps import mapping_gaps
from metronome_suger.storage.ledger import LedgerGroup, groups_in_window, record_answer
from metronome_suger.core.conversion import mapping_rows


def _payload(config: AppConfig, group: LedgerGroup) -> NewUsageRecordGroup:
    return NewUsageRecordGroup(
        id=group.record_group_id,
        organizationID=config.suger.org_id,
        entitlementID=group.entitlement_id,
        records=group.records,
        timestamp=group.timestamp,
    )


def _send(client: SugerClient, payload: NewUsageRecordGroup) -> tuple[str, str | None, str | None]:
    """(ledger status, Suger status, message) for one group; only transient failures stay pending."""
    try:
        result = client.report_usage_record_group(payload)
    except ApiError as exc:
        if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (408, 429):
            return "rejected", None, exc.message
        return "pending", None, f"not sent, will retry: {exc}"
    if result.outcome == "duplicate":
        return "sent", None, "Suger already had this group (409)"
    return "sent", result.group.status if result.group else "CREATED", None


def build_report_asset(config: AppConfig) -> dg.AssetsDefinition:
    @dg.asset(
        group_name=GROUP,
        kinds={"duckdb"},
        pool=POOL,
        partitions_def=partitions_for(config),
        deps=["suger_usage_records"],
    )
    def suger_usage_report(
        context: dg.AssetExecutionContext, suger: SugerResource, duckdb: SafeDuckDBResource,
        clock: ClockResource,
    ) -> dg.MaterializeResult:
        """Hand the window's pending record groups to Suger, urgent ones first."""
        now = clock.now()
        windows = context_windows(context, config.hourly)
        hours = config.marketplace_deadline_hours
        todo: list[LedgerGroup] = []
        expired: list[LedgerGroup] = []
        blocked: list[str] = []
        with duckdb.get_connection() as conn:
            mapping = mapping_rows(config, latest_metrics(conn))
            for window in windows:
                gaps = mapping_gaps(conn, window, mapping, config.amount_mode)
                if gaps:  # the blocking check should have stopped us; never send a partial window
                    blocked.append(f"{window}: " + "; ".join(map(str, gaps)))
                    continue
                for group in groups_in_window(conn, window, ("pending",)):
                    if is_expired(now, group.timestamp, group.partner, hours):
                        expired.append(group)
                        record_answer(conn, group.record_group_id, status="expired", now=now, sent=False,
                                      message=f"past the {group.partner} deadline of {hours[group.partner]} h")
                    else:
                        todo.append(group)
        todo.sort(key=lambda g: send_order(now, g.timestamp, g.partner, hours))
        outcomes: dict[str, int] = {"sent": 0, "rejected": 0, "pending": 0}
        problems: list[str] = [f"mapping incomplete, nothing sent for {b}" for b in blocked]
        if not config.auto_report:
            context.log.info(f"auto_report is off: {len(todo)} groups computed and kept pending, none sent")
        elif config.dry_run:
            with suger.get_client() as client:
                verdict = client.validate_usage_record_groups([_payload(config, g) for g in todo]) if todo else None
            if verdict:
                problems.append(f"Suger validation failed: {verdict}")
            context.log.info(f"dry_run: validated {len(todo)} groups with Suger, none sent")
        elif todo:
            with suger.get_client() as client, ThreadPoolExecutor(max_workers=suger.max_workers) as pool:
                futures = {pool.submit(_send, client, _payload(config, g)): g for g in todo}
                with duckdb.get_connection() as conn:
                    for future in as_completed(futures):
                        group = futures[future]
                        status, suger_status, message = future.result()
                        record_answer(conn, group.record_group_id, status=status,
                                      suger_status=suger_status, message=message,
                                      now=clock.now(), sent=status != "pending")
                        outcomes[status] += 1
                        if status != "sent":
                            problems.append(
                                f"group {group.record_group_id} (entitlement {group.entitlement_id}, "
                                f"{group.timestamp:%Y-%m-%dT%H:%MZ}) {status}: {message}"
                            )
        if expired:  # not a run failure: the report_deadline check reports it, with the dollars lost
            context.log.warning(f"{len(expired)} groups were past their marketplace deadline and were not sent")
        metadata = {
            "groups_to_send": len(todo),
            "sent": outcomes["sent"],
            "rejected": outcomes["rejected"],
            "not_sent_transient": outcomes["pending"],
            "expired": len(expired),
            "auto_report": config.auto_report,
            "dry_run": config.dry_run,
        }
        if problems:
            raise dg.Failure(
                description=f"{len(problems)} problem(s) reporting to Suger: " + "; ".join(problems),
                metadata=metadata,
            )
        return dg.MaterializeResult(metadata=metadata)

    return suger_usage_report
