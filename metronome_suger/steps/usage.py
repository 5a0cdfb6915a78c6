"""Quantity mode's source: ``POST /v1/usage`` for the windows (sharded by customer, concurrent), in ``usage``.

What Metronome answers is checked before anything is stored, so a bad answer never replaces the usage a
window already holds: every row that overlaps the windows must be one whole UTC hour (``window_size:
HOUR``), a customer × metric × hour must not come back twice with different values (the same value twice
is kept once: it is one aggregate, not two), and a value must fit the ledger's ``DECIMAL(38,10)``
(``|value| < 10^28``; more than 10 decimal places are rounded half away from zero by that type).
"""

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import duckdb

from metronome_suger.clients.errors import MalformedResponseError
from metronome_suger.clients.metronome import MetronomeClient, UsageBatch
from metronome_suger.clients.metronome_models import UsageRow
from metronome_suger.core.windows import HOUR, Window, floor, iso
from metronome_suger.storage.db import Connect, ndjson_file, table_markdown
from metronome_suger.storage.late_usage import changed_windows, record_observations, run_windows, stored_metrics
from metronome_suger.storage.usage import (
    FETCHED_COLUMNS,
    FetchedRow,
    fresh_values,
    load_fetched,
    replace_usage,
    reportable_metrics,
    snapshot_customer_ids,
    usage_totals,
)

logger = logging.getLogger(__name__)

USAGE_PATH = "/v1/usage"
LARGEST_STORED = Decimal(10) ** 28  # DECIMAL(38,10) holds |value| < 10^28


class NoReportableMetric(Exception):
    """The metric snapshot is missing, or the whitelist leaves nothing to report."""


class UsageTooLarge(ValueError):
    """A usage value the ledger cannot hold exactly: nothing is stored or sent for the windows."""


@dataclass
class UsageResult:
    rows: int
    null_values: int
    nonzero_rows: int
    totals: dict[str, Decimal] = field(default_factory=dict)
    unknown_metrics: list[str] = field(default_factory=list)  # returned by Metronome, not in the list
    preview: str = ""


def _malformed(what: str) -> MalformedResponseError:
    return MalformedResponseError(service="metronome", method="POST", path=USAGE_PATH, status=200,
                                  message=f"{what}; nothing is stored or sent for these windows")


def _row_name(row: UsageRow) -> str:
    return (f"customer {row.customer_id} metric '{row.billable_metric_name}' "
            f"({iso(row.start_timestamp)}..{iso(row.end_timestamp)})")


def checked_rows(batches: Iterable[UsageBatch], start: datetime, end: datetime, known: Mapping[str, str],
                 unknown: set[str]) -> Iterator[FetchedRow]:
    """The rows of [start, end) in arrival order, as ``FETCHED_COLUMNS``; raises on a row overlapping the
    windows that is not one whole UTC hour, and on a value the ledger cannot hold (repeats are the storage's
    to find). Metrics not asked for are added to ``unknown``. Earlier hours' rows pass unchecked: they are
    only compared (``storage.usage.fresh_values``)."""
    seq = 0
    for batch in batches:
        for row in batch.rows:
            if row.end_timestamp <= start or row.start_timestamp >= end:
                continue  # another hour of the UTC day Metronome answers for
            hour = row.start_timestamp.replace(minute=0, second=0, microsecond=0)
            if row.start_timestamp != hour or row.end_timestamp - row.start_timestamp != HOUR:
                raise _malformed(f"{_row_name(row)} is not one whole UTC hour (window_size HOUR)")
            value = row.value
            if value is not None and abs(value) >= LARGEST_STORED:
                raise UsageTooLarge(f"Metronome returned usage {value} for {_row_name(row)}: larger than the "
                                    f"ledger's DECIMAL(38,10) holds (|value| < 10^28); nothing is stored or sent "
                                    "for these windows")
            if row.billable_metric_id not in known:
                unknown.add(f"{row.billable_metric_name} ({row.billable_metric_id})")
            seq += 1
            yield (seq, row.start_timestamp, row.end_timestamp, row.customer_id, row.billable_metric_id,
                   row.billable_metric_name, None if value is None else str(value),
                   None if value is None else format(value.normalize(), "f"))
        for row_start, customer, metric, raw in batch.earlier:
            seq += 1
            yield (seq, row_start, None, customer, metric, None, None if raw is None else str(raw), None)


def _earlier_runs(conn: duckdb.DuckDBPyConnection, start: datetime) -> list[datetime]:
    """The windows of ``start``'s UTC day before it that already ran: the read of the day holds their rows."""
    return run_windows(conn, floor(start, False), start)


def fetch_usage(client: MetronomeClient, connect: Connect, windows: list[Window], clock: Callable[[], datetime],
                ) -> UsageResult:
    """Read, check and store the windows' usage; ``clock`` (the pipeline's time) stamps the read."""
    start, end = windows[0].start, windows[-1].end
    with connect() as conn:
        known = reportable_metrics(conn)
        customers = snapshot_customer_ids(conn)
        earlier = _earlier_runs(conn, start)
    if not known:
        raise NoReportableMetric("no reportable billable metric: materialize metronome_billable_metrics first, "
                                 "or check billable_metric_whitelist")
    # Metronome answers whole UTC days: the client drops the other hours, sharded over the customer snapshot
    # (all customers when there is none yet). The rows stream to a file; the connection opens once they are in.
    # The same pages hold the earlier hours of the day that already ran: they come along (unvalidated) and are
    # compared with what those runs stored, so the late-usage sensor need not read today again.
    batches = client.iter_usage_overlapping(starting_on=start, ending_before=end, customer_ids=customers,
                                            billable_metric_ids=sorted(known),
                                            earlier_from=earlier[0] if earlier else None)
    unknown: set[str] = set()
    with ndjson_file(list(FETCHED_COLUMNS), checked_rows(batches, start, end, known, unknown)) as (path, _):
        fetched_at = clock()
        with connect() as conn:
            fetched = load_fetched(conn, path)
            done = replace_usage(conn, start, end, fetched, fetched_at)
            if done.conflict is not None:
                customer, metric, row_start, row_end, first, other = done.conflict
                raise _malformed(f"customer {customer} metric '{metric}' ({iso(row_start)}..{iso(row_end)}) was "
                                 f"returned twice with different values ({first} and {other})")
            if earlier:
                metrics = [m for m in stored_metrics(conn, earlier) if m in known]
                record_observations(conn, earlier, changed_windows(conn, earlier, metrics, fresh_values(fetched)),
                                    fetched_at)
            totals = usage_totals(conn, start, end)
            preview = table_markdown(
                conn, "SELECT window_start, customer_id, metric_name, value, value_was_null FROM usage "
                      "WHERE window_start >= ? AND window_start < ? AND value <> 0 ORDER BY 1, 2, 3", [start, end])
    if done.repeats:
        logger.warning("Metronome returned %d usage row(s) twice with the same value: each is kept once",
                       done.repeats)
    return UsageResult(
        rows=done.rows, null_values=done.nulls,
        nonzero_rows=sum(int(n) for _, _, n in totals), totals={name: total for name, total, _ in totals},
        unknown_metrics=sorted(unknown), preview=preview,
    )
