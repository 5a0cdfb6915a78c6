"""Quantity mode's source: one paginated ``POST /v1/usage`` for the windows, stored in ``usage``."""

from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal

from metronome_suger.clients.metronome import MetronomeClient
from metronome_suger.core.windows import Window
from metronome_suger.storage.db import Connect, table_markdown
from metronome_suger.storage.usage import replace_usage, reportable_metrics, usage_totals


class NoReportableMetric(Exception):
    """The metric snapshot is missing, or the whitelist leaves nothing to report."""


@dataclass
class UsageResult:
    rows: int
    null_values: int
    nonzero_rows: int
    totals: dict[str, Decimal] = field(default_factory=dict)
    unknown_metrics: list[str] = field(default_factory=list)  # returned by Metronome, not in the list
    preview: str = ""


def fetch_usage(client: MetronomeClient, connect: Connect, windows: list[Window]) -> UsageResult:
    start, end = windows[0].start, windows[-1].end
    with connect() as conn:
        known = reportable_metrics(conn)
    if not known:
        raise NoReportableMetric("no reportable billable metric: materialize metronome_billable_metrics first, "
                                 "or check billable_metric_whitelist")
    # The client asks for whole UTC days (Metronome's rule for these bounds) and keeps our hours.
    rows = client.list_usage(starting_on=start, ending_before=end, window_size="HOUR",
                             billable_metric_ids=sorted(known))
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
