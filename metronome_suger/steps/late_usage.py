"""Late usage: re-read windows that already ran and name those whose Metronome values (or invoice
totals) changed, so a run of each reports the positive difference. Each tick does a bounded amount of
work and resumes after ``after`` (a position the caller keeps between ticks)."""

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TypeVar

from metronome_suger.clients.metronome import MetronomeClient
from metronome_suger.core.amounts import Policy
from metronome_suger.core.deadlines import Deadlines
from metronome_suger.core.windows import HOUR, floor, iso, last_closed_windows, window_at
from metronome_suger.steps.invoices import read_invoices, window_selection
from metronome_suger.steps.usage import checked_rows
from metronome_suger.storage.amounts import linked_customers
from metronome_suger.storage.db import Connect, ndjson_file
from metronome_suger.storage.late_usage import (
    WindowChange,
    amount_window_was_run,
    changed_windows,
    customer_partners,
    high_waters,
    last_reads,
    observed_changes,
    partners_in_use,
    run_windows,
    stored_metrics,
)
from metronome_suger.storage.usage import FETCHED_COLUMNS, fresh_values, load_fetched, snapshot_customer_ids

T = TypeVar("T")


@dataclass(frozen=True)
class Rerun:
    partition_key: str
    run_key: str
    trigger: str  # late_usage | late_invoice_total
    why: str


@dataclass
class Tick:
    reruns: list[Rerun] = field(default_factory=list)
    skip: str = ""  # why nothing (more) is requested
    after: str | None = None  # where the next tick resumes; None: from the start
    keep_cursor: bool = True  # False: the tick ended before reading anything (leave the cursor alone)


def chunk(items: Sequence[T], key: Callable[[T], str], after: str | None, size: int) -> tuple[list[T], str | None]:
    """The next ``size`` items after ``after`` (wrapping to the start), and where the next tick resumes."""
    rest = [item for item in items if after is None or key(item) > after] or list(items)
    part = rest[:size]
    return part, key(part[-1]) if len(rest) > size else None


def _rerun(change: WindowChange, source: str) -> Rerun:
    key = window_at(change.window_start, True).partition_key
    return Rerun(key, f"late-usage:{key}:{change.digest[:16]}", "late_usage",
                 f"late usage in {key} ({source}): {change.rose} value(s) rose, {change.fell} fell; requesting a run")


def quantity_tick(
    client: Callable[[], MetronomeClient], connect: Connect, now: datetime, *, start: datetime,
    deadlines: Deadlines, after: str | None, per_tick: int, reread_after: timedelta,
) -> Tick:
    """A rerun per window some marketplace in use still accepts whose values moved.

    Metronome answers whole UTC days, and each hourly run reads its day: the windows of a day a run read less
    than ``reread_after`` before ``now`` (the pipeline's time, which stamps the runs' reads) take their changes
    from what that run saw (``late_usage_observed``). The other windows are read here, at most ``per_tick``
    per tick (one read, of the UTC days they fall in), resuming after ``after``."""
    with connect(read_only=True) as conn:
        partners = [p for p in partners_in_use(conn) if p in deadlines.hours]
        if not partners:
            return Tick(skip="no marketplace in use yet (no linked entitlement, nothing in the ledger)",
                        keep_cursor=False)
        widest = max(partners, key=lambda p: deadlines.deadline(now, p))
        since = max(start, now - timedelta(hours=float(deadlines.hours[widest])) - 2 * HOUR)
        windows = [w for w in (window_at(s, True) for s in run_windows(conn, since, now))
                   if w.end <= now and not deadlines.is_expired(now, w.report_timestamp, widest)]
        if not windows:
            return Tick(skip=f"no run window is still within the widest deadline in use, "
                             f"{deadlines.describe(widest)}: nothing to re-read", keep_cursor=False)
        fresh = {day for day, read_at in last_reads(conn, [w.start for w in windows]).items()
                 if now - read_at < reread_after}
        covered = [w.start for w in windows if floor(w.start, False) in fresh]
        reruns = [_rerun(c, "seen by a later run of its day") for c in observed_changes(conn, covered)]
        stale = [w for w in windows if floor(w.start, False) not in fresh]
        if not stale:
            return Tick(reruns, f"{len(covered)} window(s) of days a run read in the last {reread_after}: "
                                "no usage value changed since", after)
        part, next_after = chunk(stale, lambda w: iso(w.start), after, per_tick)
        starts = [w.start for w in part]
        metrics = stored_metrics(conn, starts)
        customers = snapshot_customer_ids(conn)
    with client() as metronome:
        batches = metronome.iter_usage_overlapping(starting_on=part[0].start, ending_before=part[-1].end,
                                                   customer_ids=customers, billable_metric_ids=metrics)
        rows = checked_rows(batches, part[0].start, part[-1].end, dict.fromkeys(metrics, ""), set())
        with ndjson_file(list(FETCHED_COLUMNS), rows) as (path, _), connect(read_only=True) as conn:
            changes = changed_windows(conn, starts, metrics, fresh_values(load_fetched(conn, path)))
    reruns += [_rerun(c, "re-read") for c in changes]
    span = f"{len(part)} window(s) {iso(part[0].start)}..{iso(part[-1].end)}"
    return Tick(reruns, f"re-read {span}: no usage value changed", next_after)


def amount_tick(
    client: Callable[[], MetronomeClient], connect: Connect, now: datetime, *, hourly: bool, settle: timedelta,
    policy: Policy, deadlines: Deadlines, after: str | None, per_tick: int,
) -> Tick:
    """Re-run the latest closed window when a tracked invoice total passed its high water since."""
    [window] = last_closed_windows(now, hourly, 1, settle)
    with connect(read_only=True) as conn:
        if not amount_window_was_run(conn, window.start):
            return Tick(skip=f"the latest closed window {window.partition_key} has not run yet: "
                             "its scheduled run will observe every invoice total", keep_cursor=False)
        customers = linked_customers(conn)
    if not customers:
        return Tick(skip="no linked customer: no invoice total to watch", keep_cursor=False)
    part, next_after = chunk(customers, str, after, per_tick)
    with client() as metronome:
        views = read_invoices(metronome, part, window.start)
    with connect(read_only=True) as conn:
        totals = window_selection(conn, window, views, policy).totals
        high = high_waters(conn, [t.history_key for t in totals])
        rising = [t for t in totals if t.observed_cents > high.get(t.history_key, Decimal(0))]
        partners = customer_partners(conn, sorted({t.customer_id for t in rising}))
    skip = f"invoice totals of {len(part)} customer(s): none passed its high water"
    if not rising:
        return Tick(skip=skip, after=next_after)
    late = sorted({p for t in rising for p in partners.get(t.customer_id, [])
                   if p in deadlines.hours and deadlines.is_expired(now, window.report_timestamp, p)})
    if late:
        return Tick(skip=f"{len(rising)} invoice total(s) rose, but window {window.partition_key} is past "
                         f"the {', '.join(late)} deadline: the next window's run reports the increase",
                    after=next_after)
    digest = hashlib.sha256(";".join(f"{t.history_key}={t.observed_cents}" for t in rising).encode()).hexdigest()[:16]
    rerun = Rerun(window.partition_key, f"late-amount:{window.partition_key}:{digest}", "late_invoice_total",
                  f"{len(rising)} invoice total(s) rose since {window.partition_key} ran; requesting a run")
    return Tick([rerun], skip, next_after)
