"""The window steps over stored data: converting a window's source into record groups, and the checks
that read the same conversion (mapping completeness, customer linkage, verification against Metronome)."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import duckdb

from metronome_suger.core.conversion import Target, mapping_rows
from metronome_suger.core.windows import Window, iso
from metronome_suger.storage.amounts import amount_source
from metronome_suger.storage.db import Connect, table_markdown
from metronome_suger.storage.gaps import mapping_gaps, multi_linked, unlinked_usage
from metronome_suger.storage.records import plan_groups
from metronome_suger.storage.usage import latest_metrics, usage_source
from metronome_suger.storage.verification import Discrepancy, discrepancies
from metronome_suger.storage.window import MappingTables, Source, WindowScope


@dataclass(frozen=True)
class Conversion:
    """What the window steps need of the configuration: the dimension conversion and the billing mode's
    source (usage per metric, or invoice dollars under ``metronome``)."""

    conversion: Mapping[Any, Mapping[str, Sequence[Target]]]
    amount_mode: bool

    def tables(self, conn: duckdb.DuckDBPyConnection) -> MappingTables:
        """The run's mapping rows (metric ids resolved against the latest metric snapshot) and matches."""
        return MappingTables(conn, mapping_rows(self.conversion, latest_metrics(conn), amount_mode=self.amount_mode))

    def source(self, conn: duckdb.DuckDBPyConnection, window: Window) -> Source:
        return amount_source(conn, window) if self.amount_mode else usage_source(conn, window)

    def scope(self, tables: MappingTables, window: Window) -> WindowScope:
        """The window's scope with its source loaded (whatever problems the source has)."""
        return WindowScope(tables, window, self.source(tables.conn, window))


@dataclass
class RecordsOutcome:
    groups: int = 0
    lines: int = 0
    over_reported: list[str] = field(default_factory=list)
    totals: dict[str, Decimal] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # windows that send nothing, and why
    preview: str = ""


def compute_records(
    connect: Connect, windows: Sequence[Window], conv: Conversion, *, org_id: str, billing_mode: str,
    now: datetime,
) -> RecordsOutcome:
    """Record groups per (entitlement, window, revision): only what is not yet at Suger."""
    out = RecordsOutcome()
    with connect() as conn:
        tables = conv.tables(conn)
        for window in windows:
            source = conv.source(conn, window)
            if source.problems:
                out.problems += source.problems
                continue
            result = plan_groups(WindowScope(tables, window, source), org_id=org_id,
                                 billing_mode=billing_mode, now=now)
            out.groups += result.groups
            out.lines += result.lines
            for dim, qty in result.totals.items():
                out.totals[dim] = out.totals.get(dim, Decimal(0)) + qty
            out.over_reported += [
                f"entitlement {ent} dimension {dim} in {window}: {reported} reported, Metronome now gives "
                f"{current} (not sent as a negative)" for ent, dim, reported, current in result.over_reported
            ]
        out.preview = table_markdown(
            conn,
            """SELECT record_group_id, revision, entitlement_id, partner, customer_id, source_key,
                      origin_quantity, dimension_key, mapping_mode, quantity
            FROM usage_records WHERE window_start >= ? AND window_start < ? AND computed_at = ?
            ORDER BY entitlement_id, source_key""",
            [windows[0].start, windows[-1].end, now],
        )
    return out


def window_gaps(tables: MappingTables, window: Window, amount_mode: bool) -> list[str]:
    """The window's mapping gaps, each prefixed by its partition key."""
    return [f"{window.partition_key}: {gap}" for gap in mapping_gaps(WindowScope(tables, window), amount_mode)]


def check_mapping(connect: Connect, windows: Sequence[Window], conv: Conversion) -> list[str]:
    with connect() as conn:
        tables = conv.tables(conn)
        return [gap for window in windows for gap in window_gaps(tables, window, conv.amount_mode)]


@dataclass
class LinkageOutcome:
    unlinked: list[str] = field(default_factory=list)
    customers: set[str] = field(default_factory=set)
    multi_linked: list[str] = field(default_factory=list)


def _no_usable_link(entitlements: Sequence[tuple[str, str, datetime | None]]) -> str:
    """Why the customer has no usable link for the window: no Suger link at all, or each entitlement's state."""
    if not entitlements:
        return "no Suger buyer or customer_links entry links this customer"
    states = [f"{ent} is {status or 'of unknown status'}" + (f", ended {iso(end)}" if end else "")
              for ent, status, end in entitlements]
    return "no entitlement usable for this window (" + "; ".join(states) + ")"


def check_linkage(connect: Connect, windows: Sequence[Window], conv: Conversion) -> LinkageOutcome:
    """Usage of customers with no usable link is named, not dropped; in the amount modes a customer
    linked to several entitlements (each sent the same invoice dollars) is named too."""
    out = LinkageOutcome()
    with connect() as conn:
        tables = conv.tables(conn)
        for window in windows:
            scope = conv.scope(tables, window)
            for customer, key, value, entitlements in unlinked_usage(scope):
                out.customers.add(customer)
                out.unlinked.append(f"{window.partition_key}: customer {customer} '{key}' = {value}: "
                                    + _no_usable_link(entitlements))
            if conv.amount_mode:
                out.multi_linked += [
                    f"{window.partition_key}: customer {customer} is linked to {count} entitlements ({partners}): "
                    "each is sent the same invoice dollars" for customer, count, partners in multi_linked(scope)
                ]
    return out


def verify_windows(connect: Connect, windows: Sequence[Window], conv: Conversion) -> list[tuple[Window, Discrepancy]]:
    """What Suger holds vs what Metronome's stored values convert to (windows whose source has a problem
    are skipped: the records step already failed for them)."""
    found: list[tuple[Window, Discrepancy]] = []
    with connect() as conn:
        tables = conv.tables(conn)
        for window in windows:
            source = conv.source(conn, window)
            if not source.problems:
                found += [(window, d) for d in discrepancies(WindowScope(tables, window, source))]
    return found
