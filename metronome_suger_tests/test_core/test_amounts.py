"""Invoice-amount accounting: Suger's high-water rule, history keys per policy, which invoices count."""

import itertools
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metronome_suger.clients.metronome_models import USD_CREDIT_TYPE_ID
from metronome_suger.core.amounts import (
    InvoiceView,
    Orphan,
    Seen,
    cents_to_dollars,
    dollars_text,
    high_water_step,
    history_key,
    lineage_keys,
    observe_in_window,
    report_sequence,
    select,
    skip_reason,
)
from metronome_suger.core.windows import Window

UTC = timezone.utc
NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)
JAN = datetime(2027, 1, 1, tzinfo=UTC)
W = Window(datetime(2026, 11, 25, 13, tzinfo=UTC), datetime(2026, 11, 25, 14, tzinfo=UTC))

cents = st.decimals(min_value=-10**9, max_value=10**12, places=2, allow_nan=False, allow_infinity=False)
totals = st.lists(cents, max_size=40)


def invoice(**changes: object) -> InvoiceView:
    base = InvoiceView(
        invoice_id="inv-a", customer_id="cust-1", invoice_type="USAGE", status="DRAFT",
        credit_type_id=USD_CREDIT_TYPE_ID, credit_type_name="USD (cents)", period_start=NOV, period_end=DEC,
        total_cents=Decimal(10000), usd=True,
    )
    view = replace(base, **changes)  # type: ignore[arg-type]
    return replace(view, usd=view.credit_type_id == USD_CREDIT_TYPE_ID)  # decided at the client edge


def reported_sums(observed: list[Decimal]) -> list[Decimal]:
    """Cumulative sum reported after each observation."""
    out, running = [], Decimal(0)
    for increase in report_sequence(observed):
        running += increase
        out.append(running)
    return out


# ---------------------------------------------------------------------------------------------------------
# the high-water rule (properties)


@given(totals)
def test_reported_sum_never_exceeds_the_maximum_observed(observed: list[Decimal]) -> None:
    for i, total in enumerate(reported_sums(observed)):
        assert total <= max([Decimal(0), *observed[: i + 1]])


@given(totals)
def test_every_increase_is_non_negative(observed: list[Decimal]) -> None:
    assert all(increase >= 0 for increase in report_sequence(observed))


@given(totals)
def test_reported_sum_never_decreases(observed: list[Decimal]) -> None:
    sums = reported_sums(observed)
    assert all(a <= b for a, b in itertools.pairwise(sums))


@given(st.lists(cents.filter(lambda c: c >= 0), min_size=1, max_size=40))
def test_sequence_ending_on_its_maximum_reports_exactly_the_maximum(observed: list[Decimal]) -> None:
    observed = [*observed, max(observed)]
    assert reported_sums(observed)[-1] == max(observed)


@given(totals)
def test_reported_sum_is_the_running_maximum_clamped_at_zero(observed: list[Decimal]) -> None:
    """The strongest form: after each observation exactly max(0, highest total so far) is reported."""
    for i, total in enumerate(reported_sums(observed)):
        assert total == max([Decimal(0), *observed[: i + 1]])


@given(st.lists(st.tuples(st.integers(0, 5), cents), max_size=40))
def test_windows_observed_in_any_order_with_reruns_report_the_maximum_once(
    events: list[tuple[int, Decimal]],
) -> None:
    """Model of ``invoice_high_water``: one row per window; the high water is the max over all rows.

    Whatever the order of windows and re-runs, the windows together attribute exactly the running
    maximum, and no window's attribution ever shrinks (a sent group is never taken back)."""
    rows: dict[int, tuple[Decimal, Decimal]] = {}  # window -> (high water, cumulative increase)
    seen: list[Decimal] = []
    for window, total in events:
        high = max((h for h, _ in rows.values()), default=Decimal(0))
        before = rows.get(window, (Decimal(0), Decimal(0)))[1]
        row = observe_in_window(high, before, total)
        assert row.increase_cents >= before
        assert row.observed_cents == total
        rows[window] = (row.high_water_cents, row.increase_cents)
        seen.append(total)
        assert sum(i for _, i in rows.values()) == max([Decimal(0), *seen])


def test_credit_then_recovery_reports_only_the_excess_over_the_old_maximum() -> None:
    observed = [Decimal(v) for v in (10000, 12000, 9000, 11500, 12000, 13000)]
    assert report_sequence(observed) == [Decimal(v) for v in (10000, 2000, 0, 0, 0, 1000)]


def test_high_water_step_examples() -> None:
    step = high_water_step(Decimal(100), Decimal(150))
    assert (step.increase_cents, step.high_water_cents) == (Decimal(50), Decimal(150))
    step = high_water_step(Decimal(100), Decimal(60))
    assert (step.increase_cents, step.high_water_cents) == (Decimal(0), Decimal(100))


def test_rerunning_a_window_with_the_same_total_adds_nothing() -> None:
    first = observe_in_window(Decimal(0), Decimal(0), Decimal(2050))
    again = observe_in_window(first.high_water_cents, first.increase_cents, Decimal(2050))
    assert again == first


@given(st.decimals(min_value=-10**15, max_value=10**15, places=10, allow_nan=False, allow_infinity=False))
def test_cents_to_dollars_is_exact(value: Decimal) -> None:
    dollars = cents_to_dollars(value)
    assert dollars * 100 == value
    assert isinstance(dollars, Decimal)


def test_cents_to_dollars_examples() -> None:
    assert cents_to_dollars(Decimal(14392)) == Decimal("143.92")
    assert cents_to_dollars(Decimal("0.5")) == Decimal("0.005")


def test_dollars_text() -> None:
    assert dollars_text(Decimal("20.500000000000")) == "$20.50"
    assert dollars_text(Decimal("0E-12")) == "$0.00"
    assert dollars_text(Decimal("0.005")) == "$0.005"
    assert dollars_text(Decimal("1234567.1")) == "$1,234,567.10"


# ---------------------------------------------------------------------------------------------------------
# history keys per policy


def test_period_policy_keys_a_reissue_like_the_voided_invoice() -> None:
    voided, reissued = invoice(invoice_id="inv-a"), invoice(invoice_id="inv-b")
    assert history_key(voided, "period") == history_key(reissued, "period")
    assert history_key(voided, "period") == f"period:cust-1:{USD_CREDIT_TYPE_ID}:2026-11-01T00:00:00Z"


def test_invoice_policy_keys_a_reissue_as_a_new_history() -> None:
    assert history_key(invoice(invoice_id="inv-a"), "invoice") == "invoice:inv-a"
    assert history_key(invoice(invoice_id="inv-b"), "invoice") == "invoice:inv-b"


@pytest.mark.parametrize("change", [
    {"customer_id": "cust-2"},
    {"credit_type_id": "other-credit-type"},
    {"period_start": DEC, "period_end": JAN},
])
def test_period_keys_differ_by_customer_credit_type_and_period(change: dict[str, object]) -> None:
    assert history_key(invoice(), "period") != history_key(invoice(**change), "period")


# lineage first, billing period second (``regenerated_from_invoice_id``)
PARENT_KEY = f"period:cust-1:{USD_CREDIT_TYPE_ID}:2026-11-01T00:00:00Z"


def test_a_reissue_that_moves_the_period_start_continues_its_parents_history() -> None:
    moved = invoice(invoice_id="b", regenerated_from="a", period_start=NOV + timedelta(days=9))
    keys, orphans = lineage_keys([moved], "period", {"a": PARENT_KEY})
    assert keys == {"b": PARENT_KEY} and orphans == []
    assert history_key(moved, "period") != PARENT_KEY  # what the period alone would have said


def test_lineage_chains_through_recorded_keys_and_through_the_same_batch() -> None:
    b = invoice(invoice_id="b", regenerated_from="a", period_start=NOV + timedelta(days=3))
    c = invoice(invoice_id="c", regenerated_from="b", period_start=NOV + timedelta(days=6))
    keys, orphans = lineage_keys([c, b], "period", {"a": PARENT_KEY})
    assert keys == {"b": PARENT_KEY, "c": PARENT_KEY} and orphans == []
    assert lineage_keys([c], "period", {"b": PARENT_KEY}) == ({"c": PARENT_KEY}, [])


def test_a_recorded_key_is_kept_even_if_the_parent_turns_up_later() -> None:
    b = invoice(invoice_id="b", regenerated_from="a", period_start=DEC, period_end=JAN)
    own = history_key(b, "period")
    assert lineage_keys([b], "period", {"b": own, "a": PARENT_KEY}) == ({"b": own}, [])


def test_an_orphan_reissue_starts_its_own_history_and_is_named() -> None:
    b = invoice(invoice_id="b", regenerated_from="never-seen", period_start=NOV + timedelta(days=9))
    keys, orphans = lineage_keys([b], "period", {})
    assert keys == {"b": history_key(b, "period")}
    assert orphans == [Orphan("b", "never-seen", "cust-1", history_key(b, "period"))]
    assert "invoice b" in orphans[0].note() and "invoice never-seen" in orphans[0].note()


def test_keys_of_another_policy_are_not_continued() -> None:
    """A switch from ``invoice`` to ``period`` starts over instead of mixing the two kinds of history."""
    b = invoice(invoice_id="b", regenerated_from="a")
    keys, orphans = lineage_keys([b], "period", {"a": "invoice:a", "b": "invoice:b"})
    assert keys == {"b": PARENT_KEY} and [o.parent_id for o in orphans] == ["a"]


def test_invoice_policy_ignores_lineage() -> None:
    b = invoice(invoice_id="b", regenerated_from="a")
    assert lineage_keys([b], "invoice", {"a": PARENT_KEY}) == ({"b": "invoice:b"}, [])


def test_select_files_a_reissue_under_its_parents_key() -> None:
    voided = invoice(invoice_id="a", status="VOID", total_cents=Decimal(12000))
    moved = invoice(invoice_id="b", regenerated_from="a", period_start=NOV + timedelta(days=9),
                    total_cents=Decimal(13000))
    selection = select([voided, moved], W, "period", {"a": Seen(draft=True)}, {"a": PARENT_KEY})
    assert [(t.history_key, t.invoice_ids) for t in selection.totals] == [(PARENT_KEY, ("b",))]
    assert selection.keys == {"b": PARENT_KEY} and selection.orphans == []


def test_period_key_needs_a_period() -> None:
    with pytest.raises(ValueError, match="no billing period"):
        history_key(invoice(period_start=None), "period")


# ---------------------------------------------------------------------------------------------------------
# which invoices are tracked


@pytest.mark.parametrize("change, reason", [
    ({"status": "VOID"}, "void"),
    ({"credit_type_id": "ai-credits"}, "non_usd"),
    ({"invoice_type": "SCHEDULED"}, "not_usage"),
    ({"invoice_type": "USAGE_CONSOLIDATED"}, "not_usage"),
    ({"invoice_type": None}, "not_usage"),
    ({"period_start": None}, "no_period"),
    ({"period_start": W.end, "period_end": W.end + timedelta(days=30)}, "not_started"),
    ({"status": "FINALIZED"}, "finalized_unseen"),
])
def test_skipped_invoices(change: dict[str, object], reason: str) -> None:
    assert skip_reason(invoice(**change), W) == reason


def test_draft_with_an_open_period_is_tracked() -> None:
    assert skip_reason(invoice(), W) is None
    assert skip_reason(invoice(status="draft"), W) is None  # status case does not matter


def test_previous_months_draft_in_grace_is_tracked() -> None:
    window = Window(DEC + timedelta(hours=5), DEC + timedelta(hours=6))
    assert skip_reason(invoice(period_start=NOV, period_end=DEC), window) is None


def test_finalized_is_observed_once_after_being_tracked_as_draft_then_dropped() -> None:
    window = Window(DEC + timedelta(days=1), DEC + timedelta(days=1, hours=1))
    final = invoice(status="FINALIZED")
    assert skip_reason(final, window, Seen(draft=True)) is None
    assert skip_reason(final, window, Seen(draft=True, finalized=True)) == "finalized_earlier"
    assert skip_reason(final, window, Seen()) == "finalized_unseen"


def test_select_totals_tracked_invoices_per_key_and_names_non_usd() -> None:
    invoices = [
        invoice(invoice_id="a", status="VOID", total_cents=Decimal(12000)),
        invoice(invoice_id="b", total_cents=Decimal(13000)),
        invoice(invoice_id="c", total_cents=Decimal(700)),  # a second contract's invoice, same period
        invoice(invoice_id="d", credit_type_id="ai", credit_type_name="AI credits", total_cents=Decimal(5)),
        invoice(invoice_id="e", status="FINALIZED", period_start=NOV - timedelta(days=30), period_end=NOV),
    ]
    period = select(invoices, W, "period", {})
    assert [(t.history_key, t.invoice_ids, t.observed_cents) for t in period.totals] == [
        (history_key(invoices[1], "period"), ("b", "c"), Decimal(13700)),
    ]
    assert period.non_usd() == [("cust-1", "AI credits (ai)")]
    assert sorted(inv.invoice_id for inv in period.kept()) == ["a", "b", "c", "d"]  # stale "e" not kept
    by_invoice = select(invoices, W, "invoice", {})
    assert [(t.history_key, t.observed_cents) for t in by_invoice.totals] == [
        ("invoice:b", Decimal(13000)), ("invoice:c", Decimal(700)),
    ]


def test_select_uses_what_earlier_windows_saw() -> None:
    final = invoice(invoice_id="x", status="FINALIZED", period_start=NOV - timedelta(days=30), period_end=NOV)
    assert [t.invoice_ids for t in select([final], W, "period", {"x": Seen(draft=True)}).totals] == [("x",)]
    assert select([final], W, "period", {"x": Seen(draft=True, finalized=True)}).totals == []
