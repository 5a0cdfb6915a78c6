"""``metronome-suger backfill``: run a range of past windows through Dagster, with the user's configuration.

Each window is one run of the pipeline's job (``metronome_suger_job``), executed in this process, one after
the other, oldest first: on the Dagster instance of ``DAGSTER_HOME`` when it is set (the runs show in the UI
with their partition), else on an ephemeral one. Running a window again is safe: the report ledger sends each
record group exactly once, so a window already reported sends only what is new (usually nothing).

The range: ``--from`` is the first window, given as its partition key or its start time; ``--to`` given as
a partition key or a day (YYYY-MM-DD) is the last window (or day), included; given as a time, it is the end
of the range, excluded. Every window must have closed ``settle_minutes`` ago, as the schedule waits.
"""

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Literal

import dagster as dg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from metronome_suger.config import AppConfig
from metronome_suger.core.reconciliation import money
from metronome_suger.core.windows import (
    DAILY_KEY_FORMAT,
    HOURLY_KEY_FORMAT,
    Window,
    floor,
    grain,
    iso,
    utc,
    windows_in,
)
from metronome_suger.demo import WindowSummary, failure_lines, run_window, window_table
from metronome_suger.orchestration.definitions import build_definitions
from metronome_suger.orchestration.keys import JOB, Keys
from metronome_suger.orchestration.sensors import TRIGGER_TAG
from metronome_suger.storage.db import connect
from metronome_suger.storage.figures import window_figures

TRIGGER = "backfill"  # the value of the metronome_suger/trigger tag on the runs this command launches

_HOUR_KEY = re.compile(r"\d{4}-\d{2}-\d{2}-\d{2}:\d{2}")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class BackfillError(Exception):
    """A range the command refuses, phrased for the user: names the value given."""


@dataclass(frozen=True)
class Bound:
    """One end of the range as given: an hourly partition key, a day (a daily key), or a time."""

    text: str
    kind: Literal["hour_key", "day", "time"]
    at: datetime  # UTC: the start of the key's window or day, or the time itself


def parse_bound(option: str, value: str) -> Bound:
    """The form of ``--from`` or ``--to`` (the range is checked against the configuration afterwards)."""
    text = value.strip()
    try:
        if _HOUR_KEY.fullmatch(text):
            return Bound(text, "hour_key", datetime.strptime(text, HOURLY_KEY_FORMAT).replace(tzinfo=timezone.utc))
        if _DAY.fullmatch(text):
            return Bound(text, "day", datetime.strptime(text, DAILY_KEY_FORMAT).replace(tzinfo=timezone.utc))
        return Bound(text, "time", utc(datetime.fromisoformat(text.replace("Z", "+00:00"))))
    except ValueError:
        raise BackfillError(f"{option} {value!r}: not a partition key (2026-11-25-13:00 hourly, 2026-11-25 "
                            "daily) or an ISO-8601 time (2026-11-25T13:00:00Z)") from None


def _mode_grain(config: AppConfig) -> str:
    return (f"billing_mode {config.billing_mode} has "
            + ("hourly windows (a whole UTC hour)" if config.hourly else "daily windows (midnight UTC)"))


def _start_of(option: str, bound: Bound, config: AppConfig) -> datetime:
    """Where the window named by ``bound`` starts; refused when it is not on the billing mode's grain."""
    if bound.kind == "hour_key" and not config.hourly:
        raise BackfillError(f"{option} {bound.text}: an hourly partition key, but {_mode_grain(config)}: "
                            f"give a day such as {bound.at:%Y-%m-%d}")
    if bound.at != floor(bound.at, config.hourly):
        what = "partition key" if bound.kind == "hour_key" else "time"
        raise BackfillError(f"{option} {bound.text}: this {what} is not on a window boundary ({iso(bound.at)}), "
                            f"and {_mode_grain(config)}")
    return bound.at


def resolve_range(config: AppConfig, start: Bound, end: Bound, now: datetime) -> list[Window]:
    """The windows from ``start`` to ``end`` (as the module says), oldest first; BackfillError names a bad value."""
    hourly, now = config.hourly, utc(now)
    first = _start_of("--from", start, config)
    stop = _start_of("--to", end, config)
    if end.kind == "hour_key":
        stop += grain(True)
    elif end.kind == "day":
        stop += timedelta(days=1)
    if stop <= first:
        excluded = " (a time given to --to is the end of the range, excluded)" if end.kind == "time" else ""
        raise BackfillError(f"--to {end.text} is not after --from {start.text}: the range is empty{excluded}")
    earliest = floor(config.start, hourly)
    if first < earliest:
        raise BackfillError(f"--from {start.text} is before the configuration's start ({iso(earliest)}): there "
                            "are no windows before it")
    settle = timedelta(minutes=config.settle_minutes)
    ready = floor(now - settle, hourly)  # the end of the last window the schedule would have run by now
    if stop > ready:
        last = Window(stop - grain(hourly), stop)
        state = "is in the future" if last.start >= now else "has not closed yet" if last.end > now else \
            f"closed less than settle_minutes ({config.settle_minutes}) ago"
        latest = Window(ready - grain(hourly), ready)
        raise BackfillError(f"--to {end.text}: the window {last.partition_key} {state} (it is read from "
                            f"{iso(last.end + settle)}); the last window ready now is {latest.partition_key}")
    return list(windows_in(first, stop, hourly))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


@dataclass(frozen=True)
class Sent:
    """What the report ledger says was handed to Suger ('sent' or 'accepted') for a window."""

    groups: int = 0
    dollars: Decimal = Decimal(0)

    def __add__(self, other: "Sent") -> "Sent":
        return Sent(self.groups + other.groups, self.dollars + other.dollars)

    def __sub__(self, other: "Sent") -> "Sent":
        return Sent(self.groups - other.groups, self.dollars - other.dollars)


def sent_in(config: AppConfig, window: Window) -> Sent:
    """The window's groups and dollars handed to Suger, per the report ledger."""
    with connect(config.database(), read_only=True) as conn:
        figures = window_figures(conn, window)
    return Sent(figures.groups_sent, figures.dollars_sent)


def instance_for_backfill() -> tuple[dg.DagsterInstance, str]:
    """``DAGSTER_HOME``'s instance when it is set (the runs show in its UI), else an ephemeral one."""
    home = os.environ.get("DAGSTER_HOME", "").strip()
    if home:
        try:
            return dg.DagsterInstance.get(), f"the Dagster instance in {home}"
        except dg.DagsterError as exc:  # not a directory, not absolute, a dagster.yaml Dagster refuses...
            raise BackfillError(str(exc).strip()) from None
    return dg.DagsterInstance.ephemeral(), "an ephemeral Dagster instance (set DAGSTER_HOME to keep the runs)"


def progress_console() -> Console:
    """stderr; when it is not a terminal (a log, CI) rich prints the bar once, at the end: wide enough for it."""
    console = Console(stderr=True)
    return console if console.is_terminal else Console(stderr=True, width=200)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("backfill {task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TextColumn("windows · {task.fields[groups]} sent ({task.fields[new]} new) · {task.fields[dollars]} · "
                   "{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        console=console,
    )


@dataclass
class Outcome:
    summaries: list[WindowSummary] = field(default_factory=list)
    sent: Sent = Sent()  # what the ledger says was handed to Suger of the windows run
    new: Sent = Sent()  # ... of it by this backfill
    interrupted: bool = False


def run_windows(config: AppConfig, windows: list[Window], instance: dg.DagsterInstance, console: Console) -> Outcome:
    """Each window's run, oldest first, under the progress bar, with one line per window above it; Ctrl-C stops
    after the window it interrupted (Dagster fails that run's step instead of raising)."""
    defs = build_definitions(config)
    job_name = Keys.of(config.key_prefix).name(JOB)
    out, failed = Outcome(), 0
    with _progress(console) as progress:
        task = progress.add_task("", total=len(windows), groups=_count(0, "group"), new=0,
                                 dollars=money(Decimal(0)), failed=0)
        for window in windows:
            progress.update(task, description=window.partition_key)
            try:
                before = sent_in(config, window)
                try:
                    summary = run_window(defs, window, instance, job_name=job_name, tags={TRIGGER_TAG: TRIGGER})
                except dg.DagsterError as exc:  # refused by Dagster before any step ran: this window failed
                    summary = WindowSummary(window, False, {}, f"not run: {exc}")
                after = sent_in(config, window)
            except KeyboardInterrupt:
                out.interrupted = True
                break
            out.summaries.append(summary)
            out.sent, out.new, failed = out.sent + after, out.new + (after - before), failed + (not summary.success)
            state = "INTERRUPTED" if summary.interrupted else "ok" if summary.success else "FAILED"
            progress.console.print(f"{window.partition_key}  {state}  {_count(after.groups, 'group')} sent "
                                   f"({money(after.dollars)}), {after.groups - before.groups} new",
                                   highlight=False, markup=False)
            progress.update(task, advance=1, groups=_count(out.sent.groups, "group"), new=out.new.groups,
                            dollars=money(out.sent.dollars), failed=failed)
            if summary.interrupted:
                out.interrupted = True
                break
        progress.update(task, description="interrupted" if out.interrupted else "done")
    return out


def run_backfill(config: AppConfig, start: str, end: str, *, now: datetime | None = None,
                 console: Console | None = None) -> int:
    """Check the range, run its windows, print the per-window table; 1 when a window failed, 130 on Ctrl-C."""
    windows = resolve_range(config, parse_bound("--from", start), parse_bound("--to", end),
                            now or datetime.now(timezone.utc))
    # Both secrets, the instance and the database before any run: a problem is one clear line, not N failed windows.
    config.metronome_token()
    config.suger_api_key()
    instance, where = instance_for_backfill()
    with instance:
        with connect(config.database()):  # created and migrated, so the ledger can be read after each window
            pass
        span = windows[0].partition_key if len(windows) == 1 else \
            f"{windows[0].partition_key} to {windows[-1].partition_key}"
        print(f"backfill: {_count(len(windows), 'hourly window' if config.hourly else 'daily window')}, {span} "
              f"({iso(windows[0].start)}..{iso(windows[-1].end)}), billing mode {config.billing_mode}; runs of "
              f"{Keys.of(config.key_prefix).name(JOB)} on {where}", flush=True)
        if not config.auto_report:
            print("(auto_report is off: record groups are computed and stored, never sent)", flush=True)
        elif config.dry_run:
            print("(dry_run is on: record groups are validated with Suger, not sent)", flush=True)
        out = run_windows(config, windows, instance, console or progress_console())
    if out.summaries:
        print(window_table(config, out.summaries))
    failures = failure_lines(out.summaries)
    for line in failures:
        print(line)
    print("(marketplace billed: per Suger's usage record reports, read by the daily reconciliation job or "
          "`metronome-suger reconcile`)")
    ran = _count(len(out.summaries), "window")
    print(f"backfill: {f'interrupted after {ran} of {len(windows)}' if out.interrupted else f'{ran} run'}, "
          f"{len(failures)} failed; {_count(out.sent.groups, 'group')} sent ({money(out.sent.dollars)}), "
          f"{out.new.groups} of them by this backfill")
    return 130 if out.interrupted else 1 if failures else 0
