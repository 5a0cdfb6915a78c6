"""Quantity mode's source: one paginated ``POST /v1/usage`` for the windows, stored in ``usage``.

What Metronome answers is checked before anything is stored, so a bad answer never replaces the usage a
window already holds: every row that overlaps the windows must be one whole UTC hour (``window_size:
HOUR``), a customer × metric × hour must not come back twice with different values (the same value twice
is kept once: it is one aggregate, not two), and a value must fit the ledger's ``DECIMAL(38,10)``
(``|value| < 10^28``; more than 10 decimal places are rounded half away from zero by that type).
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal

from metronome_suger.clients.errors import MalformedResponseError
from metronome_suger.clients.metronome import MetronomeClient, day_bounds
from metronome_suger.clients.metronome_models import UsageRow
from metronome_suger.core.windows import HOUR, Window, iso
from metronome_suger.storage.db import Connect, table_markdown
from metronome_suger.storage.usage import replace_usage, reportable_metrics, usage_totals

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


def checked_rows(rows: list[UsageRow], start: datetime, end: datetime) -> tuple[list[UsageRow], int]:
    """The rows of [start, end), each once, and how many exact repeats were dropped; raises on a row
    overlapping the windows that is not one whole UTC hour, on a customer × metric × hour returned with two
    different values, and on a value the ledger cannot hold."""
    kept: dict[tuple[datetime, str, str], UsageRow] = {}
    repeats = 0
    for row in rows:
        if row.end_timestamp <= start or row.start_timestamp >= end:
            continue  # another hour of the UTC day Metronome answers for
        hour = row.start_timestamp.replace(minute=0, second=0, microsecond=0)
        if row.start_timestamp != hour or row.end_timestamp - row.start_timestamp != HOUR:
            raise _malformed(f"{_row_name(row)} is not one whole UTC hour (window_size HOUR)")
        key = (row.start_timestamp, row.customer_id, row.billable_metric_id)
        seen = kept.get(key)
        if seen is not None:
            if seen.value != row.value:
                raise _malformed(f"{_row_name(row)} was returned twice with different values "
                                 f"({seen.value} and {row.value})")
            repeats += 1
            continue
        if row.value is not None and abs(row.value) >= LARGEST_STORED:
            raise UsageTooLarge(f"Metronome returned usage {row.value} for {_row_name(row)}: larger than the "
                                f"ledger's DECIMAL(38,10) holds (|value| < 10^28); nothing is stored or sent "
                                "for these windows")
        kept[key] = row
    return list(kept.values()), repeats


def fetch_usage(client: MetronomeClient, connect: Connect, windows: list[Window]) -> UsageResult:
    start, end = windows[0].start, windows[-1].end
    with connect() as conn:
        known = reportable_metrics(conn)
    if not known:
        raise NoReportableMetric("no reportable billable metric: materialize metronome_billable_metrics first, "
                                 "or check billable_metric_whitelist")
    # Metronome takes only whole UTC days: ask for them, and keep our hours once every row is checked (a row
    # straddling a window boundary is refused here rather than silently left out).
    query_start, query_end = day_bounds(start, end)
    rows, repeats = checked_rows(
        client.list_usage(starting_on=query_start, ending_before=query_end, window_size="HOUR",
                          billable_metric_ids=sorted(known)),
        start, end)
    if repeats:
        logger.warning("Metronome returned %d usage row(s) twice with the same value: each is kept once", repeats)
    fetched = datetime.now(timezone.utc)
    unknown = sorted({f"{r.billable_metric_name} ({r.billable_metric_id})" for r in rows
                      if r.billable_metric_id not in known})
    with connect() as conn:
        replace_usage(conn, start, end, [(r.start_timestamp, r.end_timestamp, r.customer_id, r.billable_metric_id,
                                          r.billable_metric_name, r.value) for r in rows], fetched)
        totals = usage_totals(conn, start, end)
        preview = table_markdown(
            conn, "SELECT window_start, customer_id, metric_name, value, value_was_null FROM usage "
                  "WHERE window_start >= ? AND window_start < ? AND value <> 0 ORDER BY 1, 2, 3", [start, end])
    return UsageResult(
        rows=len(rows), null_values=sum(1 for r in rows if r.value is None),
        nonzero_rows=sum(int(n) for _, _, n in totals), totals={name: total for name, total, _ in totals},
        unknown_metrics=unknown, preview=preview,
    )
