"""Sensors (CONTRACT §6): re-read recent windows for late usage, and poll Suger's record-group
statuses into the ledger.

A tick must end well inside Dagster's 60 s sensor timeout: each tick does a bounded amount of work
(a JSON cursor resumes where the last one stopped), and DuckDB is opened with a short lock wait, so a
run holding the file makes the tick skip instead of hang. Neither sensor sends usage itself: late
usage becomes a run of the window (which reports only the positive difference, under the next
revision), and the status sensor only calls Suger's retry endpoint, never when ``auto_report`` is off.
"""

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
from duckdb import IOException

from metronome_suger.clients.http import ApiError
from metronome_suger.config import AppConfig
from metronome_suger.core.amounts import select
from metronome_suger.core.deadlines import is_expired, send_order
from metronome_suger.core.windows import HOUR, iso, last_closed_windows, window_at
from metronome_suger.orchestration.invoices import PERIOD_LOOKBACK, invoice_view
from metronome_suger.orchestration.resources import (
    ClockResource,
    MetronomeResource,
    SafeDuckDBResource,
    SugerResource,
)
from metronome_suger.storage.amounts import linked_customers, seen_before
from metronome_suger.storage.db import connect
from metronome_suger.storage.late_usage import (
    amount_window_was_run,
    changed_windows,
    customer_partners,
    high_waters,
    partners_in_use,
    run_windows,
    stored_metrics,
)
from metronome_suger.storage.status import AwaitingGroup, Verdict, apply_verdicts, awaiting_groups

LATE_USAGE_SENSOR = "metronome_late_usage_sensor"
STATUS_SENSOR = "suger_status_sensor"
TICK_INTERVAL_SECONDS = 300
LOCK_TIMEOUT_SECONDS = 15.0
WINDOWS_PER_TICK = 24  # one POST /v1/usage per tick covers at most this many hourly windows
CUSTOMERS_PER_TICK = 200  # amount modes: invoice listings per tick
MAX_STATUS_RETRIES = 3  # calls of Suger's retry endpoint per group before it is given up
RETRIES_PER_TICK = 50
POLL_PERIOD = timedelta(days=30)  # Suger lists the last 30 days by default; older groups are not polled
TRIGGER_TAG = "metronome_suger/trigger"
BUSY = "the DuckDB file is locked by a run; trying again next tick"

T = TypeVar("T")


def build_sensors(config: AppConfig, job: Any) -> list[dg.SensorDefinition]:
    return [build_late_usage_sensor(config, job), build_status_sensor(config)]


def _is_busy(exc: IOException) -> bool:
    return "lock" in str(exc).lower()


def _read_cursor(cursor: str | None) -> str | None:
    """The ``after`` position of a JSON cursor; anything unreadable restarts from the beginning."""
    try:
        after = json.loads(cursor or "{}").get("after")
    except (ValueError, AttributeError):
        return None
    return after if isinstance(after, str) else None


def _chunk(items: Sequence[T], key: Callable[[T], str], after: str | None, size: int) -> tuple[list[T], str | None]:
    """The next ``size`` items after ``after`` (wrapping to the start), and where the next tick resumes."""
    rest = [item for item in items if after is None or key(item) > after] or list(items)
    chunk = rest[:size]
    return chunk, key(chunk[-1]) if len(rest) > size else None


def _result(requests: list[dg.RunRequest], skip: str, after: str | None) -> dg.SensorResult:
    cursor = json.dumps({"after": after})
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=cursor)
    return dg.SensorResult(skip_reason=skip, cursor=cursor)


# -- late usage ----------------------------------------------------------------------------------------


def _quantity_tick(
    context: dg.SensorEvaluationContext, config: AppConfig, metronome: MetronomeResource, path: Path,
    now: datetime, per_tick: int, lock_timeout: float,
) -> dg.SensorResult | dg.SkipReason:
    """Re-read the run windows some marketplace in use still accepts; a run per window that moved."""
    hours = config.marketplace_deadline_hours
    with connect(path, read_only=True, lock_timeout=lock_timeout) as conn:
        partners = [p for p in partners_in_use(conn) if p in hours]
        if not partners:
            return dg.SkipReason("no marketplace in use yet (no linked entitlement, nothing in the ledger)")
        widest = max(partners, key=lambda p: hours[p])
        since = max(config.start, now - timedelta(hours=float(hours[widest])) - 2 * HOUR)
        windows = [
            w for w in (window_at(start, True) for start in run_windows(conn, since, now))
            if w.end <= now and not is_expired(now, w.report_timestamp, widest, hours)
        ]
        if not windows:
            return dg.SkipReason(
                f"no run window is still within the widest deadline in use ({widest}, {hours[widest]} h "
                f"after its hour): nothing to re-read"
            )
        chunk, after = _chunk(windows, lambda w: iso(w.start), _read_cursor(context.cursor), per_tick)
        metrics = stored_metrics(conn, [w.start for w in chunk])
    with metronome.get_client() as client:
        rows = client.list_usage(starting_on=chunk[0].start, ending_before=chunk[-1].end,
                                 window_size="HOUR", billable_metric_ids=metrics)
    with connect(path, read_only=True, lock_timeout=lock_timeout) as conn:
        changes = changed_windows(
            conn, [w.start for w in chunk], metrics,
            ((r.start_timestamp, r.customer_id, r.billable_metric_id, r.value) for r in rows),
        )
    requests = []
    for change in changes:
        key = window_at(change.window_start, True).partition_key
        context.log.info(f"late usage in {key}: {change.rose} value(s) rose, {change.fell} fell; requesting a run")
        requests.append(dg.RunRequest(run_key=f"late-usage:{key}:{change.digest[:16]}", partition_key=key,
                                      tags={TRIGGER_TAG: "late_usage"}))
    span = f"{len(chunk)} window(s) {iso(chunk[0].start)}..{iso(chunk[-1].end)}"
    return _result(requests, f"re-read {span}: no usage value changed", after)


def _amount_tick(
    context: dg.SensorEvaluationContext, config: AppConfig, metronome: MetronomeResource, path: Path,
    now: datetime, per_tick: int, lock_timeout: float,
) -> dg.SensorResult | dg.SkipReason:
    """Re-run the latest closed window when a tracked invoice total passed its high water since."""
    hours = config.marketplace_deadline_hours
    [window] = last_closed_windows(now, config.hourly, 1, timedelta(minutes=config.settle_minutes))
    with connect(path, read_only=True, lock_timeout=lock_timeout) as conn:
        if not amount_window_was_run(conn, window.start):
            return dg.SkipReason(f"the latest closed window {window.partition_key} has not run yet: "
                                 "its scheduled run will observe every invoice total")
        customers = linked_customers(conn)
    if not customers:
        return dg.SkipReason("no linked customer: no invoice total to watch")
    chunk, after = _chunk(customers, str, _read_cursor(context.cursor), per_tick)
    with metronome.get_client() as client:
        fetched = client.list_invoices_for_customers(chunk, starting_on=window.start - PERIOD_LOOKBACK)
    views = [invoice_view(invoice) for invoices in fetched.values() for invoice in invoices]
    with connect(path, read_only=True, lock_timeout=lock_timeout) as conn:
        seen = seen_before(conn, window, [v.invoice_id for v in views])
        totals = select(views, window, config.invoice_change_policy, seen).totals
        high = high_waters(conn, [t.history_key for t in totals])
        rising = [t for t in totals if t.observed_cents > high.get(t.history_key, Decimal(0))]
        partners = customer_partners(conn, sorted({t.customer_id for t in rising}))
    skip = f"invoice totals of {len(chunk)} customer(s): none passed its high water"
    if not rising:
        return _result([], skip, after)
    late = sorted({p for t in rising for p in partners.get(t.customer_id, [])
                   if p in hours and is_expired(now, window.report_timestamp, p, hours)})
    if late:
        return _result([], f"{len(rising)} invoice total(s) rose, but window {window.partition_key} is past "
                           f"the {', '.join(late)} deadline: the next window's run reports the increase", after)
    digest = hashlib.sha256(
        ";".join(f"{t.history_key}={t.observed_cents}" for t in rising).encode()
    ).hexdigest()[:16]
    context.log.info(f"{len(rising)} invoice total(s) rose since {window.partition_key} ran; requesting a run")
    request = dg.RunRequest(run_key=f"late-amount:{window.partition_key}:{digest}",
                            partition_key=window.partition_key, tags={TRIGGER_TAG: "late_invoice_total"})
    return _result([request], skip, after)


def build_late_usage_sensor(
    config: AppConfig, job: Any, *, windows_per_tick: int = WINDOWS_PER_TICK,
    customers_per_tick: int = CUSTOMERS_PER_TICK, lock_timeout: float = LOCK_TIMEOUT_SECONDS,
) -> dg.SensorDefinition:
    @dg.sensor(
        name=LATE_USAGE_SENSOR, job=job, minimum_interval_seconds=TICK_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Re-reads Metronome for windows the marketplaces still accept and runs each window "
                    "whose values changed: a rise is reported as the next revision, a fall is recorded "
                    "as over-reported.",
    )
    def metronome_late_usage_sensor(
        context: dg.SensorEvaluationContext, metronome: MetronomeResource, duckdb: SafeDuckDBResource,
        clock: ClockResource,
    ) -> dg.SensorResult | dg.SkipReason:
        """Late usage (CONTRACT §5): Metronome values can still change after a window ran."""
        path = Path(duckdb.database)
        if not path.exists():
            return dg.SkipReason("no window has run yet: nothing to re-read")
        tick = _amount_tick if config.amount_mode else _quantity_tick
        per_tick = customers_per_tick if config.amount_mode else windows_per_tick
        try:
            result = tick(context, config, metronome, path, clock.now(), per_tick, lock_timeout)
        except IOException as exc:
            if not _is_busy(exc):
                raise
            return dg.SkipReason(BUSY)
        if config.auto_report:
            return result
        note = "auto_report is off: runs requested here store new groups and send nothing"
        if isinstance(result, dg.SkipReason):
            return dg.SkipReason(f"{result.skip_message}; {note}")
        if result.skip_reason is not None:
            return dg.SensorResult(skip_reason=f"{result.skip_reason.skip_message}; {note}", cursor=result.cursor)
        context.log.info(note)
        return result

    return metronome_late_usage_sensor


# -- Suger statuses ------------------------------------------------------------------------------------


def decide(
    group: AwaitingGroup, suger_status: str | None, now: datetime, hours: Mapping[str, Decimal],
    no_retry: str | None,
) -> Verdict | None:
    """What Suger's status means for a ``sent`` group; ``None`` when nothing changes.

    ``no_retry`` names why the retry endpoint must not be called (``auto_report`` off, dry run).
    A REPORT_FAILED group is retried at most ``MAX_STATUS_RETRIES`` times and never past its
    marketplace deadline: it would be retried forever, or reach the marketplace too late.
    """
    gid, failed = group.record_group_id, "Suger could not report it to the marketplace (REPORT_FAILED)"
    if suger_status is None:
        return None
    if suger_status == "REPORTED":
        retried = f"reported by Suger after {group.retries} retr{'y' if group.retries == 1 else 'ies'}"
        return Verdict(gid, "accepted", suger_status, retried if group.retries else None)
    if suger_status == "INVALID":
        return Verdict(gid, "rejected", suger_status, "Suger marked the group INVALID")
    if suger_status == "DELETED":
        return Verdict(gid, "rejected", suger_status, "the group was deleted at Suger: it will not be reported")
    if suger_status == "REPORT_FAILED":
        if group.partner in hours and is_expired(now, group.timestamp, group.partner, hours):
            return Verdict(gid, "expired", suger_status, f"{failed} and it is past the {group.partner} "
                                                         f"deadline of {hours[group.partner]} h: not retried")
        if group.retries >= MAX_STATUS_RETRIES:
            return Verdict(gid, "rejected", suger_status,
                           f"{failed} again after {MAX_STATUS_RETRIES} retries: given up")
        if no_retry is not None:
            if group.suger_status == suger_status:
                return None
            return Verdict(gid, "sent", suger_status, f"{failed}; not retried: {no_retry}")
        return Verdict(gid, "sent", suger_status,
                       f"{failed}; retry {group.retries + 1} of {MAX_STATUS_RETRIES} requested", retried=True)
    if suger_status != group.suger_status:
        return Verdict(gid, "sent", suger_status)
    return None


def _poll(
    context: dg.SensorEvaluationContext, config: AppConfig, suger: SugerResource, path: Path, now: datetime,
    lock_timeout: float, retries_per_tick: int,
) -> str:
    """One status tick; returns its summary line."""
    hours = config.marketplace_deadline_hours
    with connect(path, read_only=True, lock_timeout=lock_timeout) as conn:
        waiting = {g.record_group_id: g for g in awaiting_groups(conn, now - POLL_PERIOD)}
    if not waiting:
        return "no sent group awaits Suger's status"
    no_retry = ("auto_report is off" if not config.auto_report
                else "dry_run is on" if config.dry_run else None)
    first = min(g.sent_at for g in waiting.values()).date() - timedelta(days=1)
    with suger.get_client() as client:
        listed = {g.id: g.status for g in client.list_usage_record_groups(
            start_date=first, end_date=now.date() + timedelta(days=1))}
        verdicts = [v for g in waiting.values()
                    if (v := decide(g, listed.get(g.record_group_id), now, hours, no_retry)) is not None]
        to_retry = sorted((v for v in verdicts if v.retried),
                          key=lambda v: send_order(now, waiting[v.record_group_id].timestamp,
                                                   waiting[v.record_group_id].partner, hours))
        postponed = {v.record_group_id for v in to_retry[retries_per_tick:]}
        verdicts = [v for v in verdicts if v.record_group_id not in postponed]
        # The retry is counted before it is requested: a crash in between can only under-use the budget.
        with connect(path, lock_timeout=lock_timeout) as conn:
            apply_verdicts(conn, verdicts, now)
        after: list[Verdict] = []
        retry_errors = 0
        for verdict in to_retry[:retries_per_tick]:
            try:
                stored = client.retry_usage_record_group(verdict.record_group_id)
            except ApiError as exc:
                retry_errors += 1
                context.log.warning(f"retry of group {verdict.record_group_id} failed: {exc}")
                continue
            after.append(Verdict(verdict.record_group_id, "sent", stored.status or "CREATED"))
    try:
        with connect(path, lock_timeout=lock_timeout) as conn:
            apply_verdicts(conn, after, now)
    except IOException as exc:  # the retries are counted already; the next tick reads the new status
        if not _is_busy(exc):
            raise
    count = {s: sum(1 for v in verdicts if v.status == s) for s in ("accepted", "rejected", "expired")}
    in_progress = sum(1 for g in waiting if listed.get(g) in ("CREATED", "REPORT_PENDING"))
    parts = [f"{count['accepted']} accepted", f"{len(after)} retried", f"{count['rejected']} rejected",
             f"{count['expired']} expired", f"{in_progress} in progress at Suger"]
    missing = sum(1 for g in waiting if g not in listed)
    if missing:
        parts.append(f"{missing} not listed by Suger")
    if retry_errors or postponed:
        parts.append(f"{retry_errors + len(postponed)} retries left for the next tick")
    held = sum(1 for g in waiting.values() if no_retry and listed.get(g.record_group_id) == "REPORT_FAILED"
               and g.retries < MAX_STATUS_RETRIES and not is_expired(now, g.timestamp, g.partner, hours))
    if held:
        parts.append(f"{held} REPORT_FAILED not retried: {no_retry}")
    return ", ".join(parts)


def build_status_sensor(
    config: AppConfig, *, lock_timeout: float = LOCK_TIMEOUT_SECONDS, retries_per_tick: int = RETRIES_PER_TICK,
) -> dg.SensorDefinition:
    @dg.sensor(
        name=STATUS_SENSOR, minimum_interval_seconds=TICK_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Polls Suger's status of every sent record group into the ledger: REPORTED → accepted, "
                    f"INVALID → rejected, REPORT_FAILED → retried (at most {MAX_STATUS_RETRIES} times, never "
                    "past the marketplace deadline, never with auto_report off).",
    )
    def suger_status_sensor(
        context: dg.SensorEvaluationContext, suger: SugerResource, duckdb: SafeDuckDBResource,
        clock: ClockResource,
    ) -> dg.SkipReason:
        """Suger forwards groups hourly; only its status says whether usage reached the marketplace."""
        path = Path(duckdb.database)
        if not path.exists():
            return dg.SkipReason("nothing sent yet: no ledger")
        try:
            return dg.SkipReason(_poll(context, config, suger, path, clock.now(), lock_timeout, retries_per_tick))
        except IOException as exc:
            if not _is_busy(exc):
                raise
            return dg.SkipReason(BUSY)

    return suger_status_sensor
