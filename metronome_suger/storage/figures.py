"""A run's windows in numbers, for the metadata Dagster plots across partitions: groups, units per dimension and
dollars handed to Suger, units and dollars found over-reported, and the delay from the windows' close to Suger's
answer."""

from dataclasses import dataclass
from decimal import Decimal

import duckdb

from metronome_suger.core.windows import Window
from metronome_suger.storage.snapshots import LATEST_RATES_SQL


@dataclass(frozen=True)
class WindowFigures:
    groups: int  # record groups of the windows, every status
    groups_sent: int  # at Suger (sent or accepted)
    dollars_sent: Decimal
    units_sent: dict[str, Decimal]  # per dimension
    units_over_reported: Decimal  # converted values that fell after they were sent
    dollars_over_reported: Decimal  # the same at each dimension's rate (latest entitlement snapshot)
    delay_minutes: float | None  # from the last window's close to Suger's last answer; None before any answer


def window_figures(conn: duckdb.DuckDBPyConnection, span: Window) -> WindowFigures:
    groups, sent, dollars, answered = conn.execute(
        """SELECT count(*), count(*) FILTER (WHERE status IN ('sent', 'accepted')),
                  coalesce(sum(dollars) FILTER (WHERE status IN ('sent', 'accepted')), 0), max(answered_at)
        FROM report_ledger WHERE window_start >= ? AND window_start < ?""", [span.start, span.end]).fetchone() or (
        0, 0, Decimal(0), None)
    units = conn.execute(
        """SELECT l.dimension_key, sum(l.quantity) FROM report_ledger g JOIN report_lines l USING (record_group_id)
        WHERE g.window_start >= ? AND g.window_start < ? AND g.status IN ('sent', 'accepted')
        GROUP BY 1 ORDER BY 1""", [span.start, span.end]).fetchall()
    over = conn.execute(
        f"""SELECT coalesce(sum(o.reported - o.current), 0), coalesce(sum((o.reported - o.current) * d.rate), 0)
        FROM over_reported o LEFT JOIN ({LATEST_RATES_SQL}) d
          ON d.entitlement_id = o.entitlement_id AND d.dimension_key = o.dimension_key
        WHERE o.window_start >= ? AND o.window_start < ?""", [span.start, span.end]).fetchone() or (0, 0)
    delay = None if answered is None else (answered - span.end).total_seconds() / 60
    return WindowFigures(int(groups), int(sent), Decimal(dollars), {k: Decimal(v) for k, v in units},
                         Decimal(over[0]), Decimal(over[1]), delay)
