"""Invoice-amount accounting for the amount modes (``amount_hourly``, ``amount_daily``). Pure.

Suger reports the *increase* of a customer's running invoice total, never a decrease: per history key
it keeps the highest total ever observed (the high water) and reports only what a new observation
adds above it. A credit that lowers the total therefore reports nothing until the total passes the
old maximum again, and then only the excess.

What a history key is depends on ``invoice_change_policy``:

- ``invoice`` keys by Metronome invoice id, as Suger does: an invoice voided and re-issued under a new
  id restarts at zero, so the re-issued invoice's whole total is reported again (a spike).
- ``period`` (default) follows lineage first and the billing period second: an invoice regenerated from
  one already tracked (Metronome's ``regenerated_from_invoice_id``) continues that invoice's history, even
  when the re-issue moves the period start; any other invoice keys by customer, credit type and
  billing-period start. So a re-issue does not report the same dollars twice. A re-issue whose parent
  was never tracked starts its own history, and is named (:class:`Orphan`).
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from metronome_suger.core.windows import Window, iso

TRACKED_TYPE = "USAGE"
ZERO = Decimal(0)

Policy = Literal["period", "invoice"]
SkipReason = Literal[
    "void", "non_usd", "not_usage", "no_period", "not_started", "finalized_earlier", "finalized_unseen"
]
# Skipped invoices whose totals can no longer matter: not worth a snapshot row every window.
STALE: frozenset[str] = frozenset({"finalized_earlier", "finalized_unseen"})


@dataclass(frozen=True)
class InvoiceView:
    """The fields of a Metronome invoice the accounting needs (``total_cents``: credit-type units)."""

    invoice_id: str
    customer_id: str
    invoice_type: str | None
    status: str
    credit_type_id: str
    credit_type_name: str | None
    period_start: datetime | None
    period_end: datetime | None
    total_cents: Decimal
    usd: bool  # in Metronome's "USD (cents)" credit type
    regenerated_from: str | None = None  # the invoice this one re-issues (``regenerated_from_invoice_id``)


@dataclass(frozen=True)
class Seen:
    """What earlier windows observed of one invoice: ever open (DRAFT), ever FINALIZED."""

    draft: bool = False
    finalized: bool = False


def skip_reason(invoice: InvoiceView, window: Window, seen: Seen = Seen()) -> SkipReason | None:
    """Why the invoice does not count for ``window``; ``None`` when it is tracked.

    Tracked: non-VOID, USD, ``USAGE``, with a billing period that has begun by the window's end, and
    either still DRAFT (open, or in its finalization grace after the period) or FINALIZED for the first
    time after having been tracked as a DRAFT: that last observation catches growth during the grace,
    after which the invoice can no longer change what is reported.
    """
    status = invoice.status.upper()
    if status == "VOID":
        return "void"
    if not invoice.usd:
        return "non_usd"
    if (invoice.invoice_type or "").upper() != TRACKED_TYPE:
        return "not_usage"
    if invoice.period_start is None or invoice.period_end is None:
        return "no_period"
    if invoice.period_start >= window.end:
        return "not_started"
    if status == "FINALIZED":
        if seen.finalized:
            return "finalized_earlier"
        if not seen.draft:  # never tracked: its total was never this pipeline's to report
            return "finalized_unseen"
    return None


PERIOD_PREFIX = "period:"


def history_key(invoice: InvoiceView, policy: Policy) -> str:
    """The invoice's own history key, before lineage: its id, or its customer + credit type + period."""
    if policy == "invoice":
        return f"invoice:{invoice.invoice_id}"
    if invoice.period_start is None:
        raise ValueError(f"invoice {invoice.invoice_id} has no billing period to key on")
    return f"{PERIOD_PREFIX}{invoice.customer_id}:{invoice.credit_type_id}:{iso(invoice.period_start)}"


@dataclass(frozen=True)
class Orphan:
    """A re-issue whose parent this pipeline never tracked: it starts its own history."""

    invoice_id: str
    parent_id: str
    customer_id: str
    history_key: str

    def note(self) -> str:
        return (f"invoice {self.invoice_id} (customer {self.customer_id}) was regenerated from invoice "
                f"{self.parent_id}, which this pipeline never tracked: it starts its own history "
                f"({self.history_key}), so its whole total counts as new")


def lineage_keys(
    tracked: Sequence[InvoiceView], policy: Policy, recorded: Mapping[str, str]
) -> tuple[dict[str, str], list[Orphan]]:
    """The history key of each tracked invoice, and the re-issues that start their own history.

    ``recorded``: invoice id -> the key an earlier observation filed it under. ``invoice`` policy: the
    invoice id, always (Suger's rule). ``period`` policy, lineage first: the invoice's recorded key
    (a key never changes once used), else its parent's (recorded, or decided in this same batch), else
    its own billing-period key; a parent without a key makes the invoice an :class:`Orphan`.
    """
    if policy == "invoice":
        return {inv.invoice_id: history_key(inv, policy) for inv in tracked}, []
    known = {i: k for i, k in recorded.items() if k.startswith(PERIOD_PREFIX)}  # a policy switch starts over
    batch = {inv.invoice_id: inv for inv in tracked}
    keys: dict[str, str] = {}
    orphans: list[Orphan] = []

    def key_of(inv: InvoiceView, trail: frozenset[str]) -> str:
        if inv.invoice_id in keys:
            return keys[inv.invoice_id]
        key = known.get(inv.invoice_id)
        parent = inv.regenerated_from
        if key is None and parent is not None:
            if parent in known:
                key = known[parent]
            elif parent in batch and parent not in trail:
                key = key_of(batch[parent], trail | {inv.invoice_id})
            else:
                key = history_key(inv, policy)
                orphans.append(Orphan(inv.invoice_id, parent, inv.customer_id, key))
        keys[inv.invoice_id] = key if key is not None else history_key(inv, policy)
        return keys[inv.invoice_id]

    for invoice in tracked:
        key_of(invoice, frozenset())
    return keys, orphans


@dataclass(frozen=True)
class KeyTotal:
    """The running total observed for one history key in one window (sum of its tracked invoices)."""

    history_key: str
    customer_id: str
    period_start: datetime | None
    invoice_ids: tuple[str, ...]
    observed_cents: Decimal


@dataclass
class Selection:
    totals: list[KeyTotal] = field(default_factory=list)
    tracked: list[InvoiceView] = field(default_factory=list)
    skipped: list[tuple[InvoiceView, SkipReason]] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)  # tracked invoice id -> its history key
    orphans: list[Orphan] = field(default_factory=list)

    def non_usd(self) -> list[tuple[str, str]]:
        """(customer, "credit type name (id)") of every skipped non-USD invoice, sorted, unique."""
        return sorted({
            (inv.customer_id, f"{inv.credit_type_name or '?'} ({inv.credit_type_id})")
            for inv, reason in self.skipped if reason == "non_usd"
        })

    def kept(self) -> list[InvoiceView]:
        """Invoices worth a snapshot row: tracked ones and those skipped for a reason worth showing."""
        return self.tracked + [inv for inv, reason in self.skipped if reason not in STALE]


def select(
    invoices: Iterable[InvoiceView], window: Window, policy: Policy, seen: Mapping[str, Seen],
    recorded: Mapping[str, str] | None = None,
) -> Selection:
    """Split invoices into tracked and skipped, key the tracked ones (:func:`lineage_keys`, with
    ``recorded`` the keys earlier observations used), and total them per history key."""
    result = Selection()
    for invoice in invoices:
        reason = skip_reason(invoice, window, seen.get(invoice.invoice_id, Seen()))
        if reason is None:
            result.tracked.append(invoice)
        else:
            result.skipped.append((invoice, reason))
    result.keys, result.orphans = lineage_keys(result.tracked, policy, recorded or {})
    grouped: dict[str, list[InvoiceView]] = {}
    for invoice in result.tracked:
        grouped.setdefault(result.keys[invoice.invoice_id], []).append(invoice)
    for key in sorted(grouped):
        members = sorted(grouped[key], key=lambda inv: inv.invoice_id)
        result.totals.append(KeyTotal(
            key, members[0].customer_id, members[0].period_start,
            tuple(inv.invoice_id for inv in members),
            sum((inv.total_cents for inv in members), ZERO),
        ))
    return result


@dataclass(frozen=True)
class Step:
    increase_cents: Decimal
    high_water_cents: Decimal


def high_water_step(high_water_cents: Decimal, observed_cents: Decimal) -> Step:
    """Suger's rule: report only what passes the highest total ever observed (which starts at 0)."""
    return Step(max(ZERO, observed_cents - high_water_cents), max(high_water_cents, observed_cents))


def report_sequence(observed: Sequence[Decimal]) -> list[Decimal]:
    """The increases reported for successive observations of one key (for tests and explanations)."""
    high_water, increases = ZERO, []
    for total in observed:
        step = high_water_step(high_water, total)
        high_water = step.high_water_cents
        increases.append(step.increase_cents)
    return increases


@dataclass(frozen=True)
class WindowRow:
    """The ``invoice_high_water`` row of (key, window) after one more observation."""

    observed_cents: Decimal
    high_water_cents: Decimal
    increase_cents: Decimal  # everything this window has reported for the key, cumulative


def observe_in_window(
    high_water_cents: Decimal, window_increase_cents: Decimal, observed_cents: Decimal
) -> WindowRow:
    """Apply one observation to a window that already attributed ``window_increase_cents``.

    ``high_water_cents`` is the maximum over every window of the key, so observing the same total
    again (a re-run) adds nothing; a new increase adds to what the window attributes, never subtracts.
    """
    step = high_water_step(high_water_cents, observed_cents)
    return WindowRow(observed_cents, step.high_water_cents, window_increase_cents + step.increase_cents)


def cents_to_dollars(cents: Decimal) -> Decimal:
    """Exact: moves the decimal point, no division, no rounding."""
    return cents.scaleb(-2)


def dollars_text(dollars: Decimal) -> str:
    """``$12.50`` style: whole cents with two places, finer amounts with every digit they carry."""
    cents = dollars.quantize(Decimal("0.01"))
    shown = cents if cents == dollars else dollars.normalize()
    return f"${shown:,f}"
