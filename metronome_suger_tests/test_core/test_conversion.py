"""Dimension conversion rules resolved against the metric list, and the gaps ``mapping_completeness`` reports."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import pytest

from metronome_suger.config import AppConfig, parse_config_data
from metronome_suger.core.conversion import (
    Dimension,
    DimensionMatch,
    LinkedEntitlement,
    MappingGap,
    MappingRow,
    Metric,
    UnknownMetricError,
    dimension_matches,
    find_gaps,
    mapping_rows,
    match_dimension,
    resolve_metric,
    whitelisted_ids,
)

METRICS = [
    Metric(id="m-cpu", name="cpu_hours"),
    Metric(id="m-api", name="api_calls"),
    Metric(id="m-old", name="legacy_metric", archived=True),
]


def make_config(**overrides: Any) -> AppConfig:
    data: dict[str, Any] = {"suger": {"org_id": "org-1"}, "start": "2026-11-01T00:00:00Z"}
    data.update(overrides)
    return parse_config_data(data)


def ent(entitlement_id: str, partner: str, rates: dict[str, Any]) -> LinkedEntitlement:
    return LinkedEntitlement(entitlement_id, partner, tuple(Dimension(k, None, r) for k, r in rates.items()))


def rows_of(cfg: AppConfig, metrics: list[Metric]) -> list[MappingRow]:
    return mapping_rows(cfg.dimension_conversion, metrics, amount_mode=cfg.amount_mode)


def chosen(cfg: AppConfig, metrics: list[Metric]) -> set[str]:
    return whitelisted_ids(cfg.billable_metric_whitelist.enabled, cfg.billable_metric_whitelist.metrics, metrics)


# ---------------------------------------------------------------------------------------------------------
# resolve_metric


def test_resolve_by_name() -> None:
    assert resolve_metric("cpu_hours", METRICS) == METRICS[0]


def test_resolve_by_id() -> None:
    assert resolve_metric("m-api", METRICS) == METRICS[1]


def test_resolve_unknown_is_none() -> None:
    assert resolve_metric("nope", METRICS) is None
    assert resolve_metric("cpu_hours", []) is None


def test_name_wins_over_id() -> None:
    # "x" is the id of the first metric and the name of the second: the name match wins.
    metrics = [Metric(id="x", name="first"), Metric(id="y", name="x")]
    assert resolve_metric("x", metrics) == Metric(id="y", name="x")
    assert resolve_metric("x", list(reversed(metrics))) == Metric(id="y", name="x")


def test_resolve_is_exact_match() -> None:
    assert resolve_metric("CPU_HOURS", METRICS) is None
    assert resolve_metric("cpu", METRICS) is None


# ---------------------------------------------------------------------------------------------------------
# whitelisted_ids


def test_whitelist_off_reports_every_metric() -> None:
    cfg = make_config(billable_metric_whitelist={"enabled": False, "metrics": ["does-not-matter"]})
    assert chosen(cfg, METRICS) == {"m-cpu", "m-api", "m-old"}


def test_whitelist_off_with_no_metrics() -> None:
    assert chosen(make_config(), []) == set()


def test_whitelist_on_by_name_and_id() -> None:
    cfg = make_config(billable_metric_whitelist={"enabled": True, "metrics": ["cpu_hours", "m-api"]})
    assert chosen(cfg, METRICS) == {"m-cpu", "m-api"}


def test_whitelist_on_empty_reports_nothing() -> None:
    cfg = make_config(billable_metric_whitelist={"enabled": True, "metrics": []})
    assert chosen(cfg, METRICS) == set()


def test_whitelist_unknown_names_each_unknown_metric() -> None:
    cfg = make_config(
        billable_metric_whitelist={"enabled": True, "metrics": ["zeta_metric", "cpu_hours", "alpha_metric"]}
    )
    with pytest.raises(UnknownMetricError) as info:
        chosen(cfg, METRICS)
    message = str(info.value)
    assert "zeta_metric" in message
    assert "alpha_metric" in message
    assert "cpu_hours" not in message
    assert message.index("alpha_metric") < message.index("zeta_metric")  # stable, sorted
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------------------------------------------------
# mapping_rows


def test_mapping_rows_rewrite_metric_ids_to_names() -> None:
    cfg = make_config(
        dimension_conversion={
            "AWS": {
                "m-cpu": [{"dimension_key": "cpu_hour", "multiplier": 2}],
                "api_calls": [{"dimension_key": "api_request"}],
            },
            "GCP": {"m-api": [{"dimension_key": "requests", "multiplier": "0.001"}]},
        }
    )
    rows = rows_of(cfg, METRICS)
    assert sorted(rows, key=lambda r: (r.partner, r.source_key)) == [
        MappingRow("AWS", "api_calls", "api_request", "QUANTITY", Decimal(1)),
        MappingRow("AWS", "cpu_hours", "cpu_hour", "QUANTITY", Decimal(2)),
        MappingRow("GCP", "api_calls", "requests", "QUANTITY", Decimal("0.001")),
    ]
    assert all(isinstance(r.multiplier, Decimal) for r in rows)


def test_mapping_rows_one_key_to_several_dimensions() -> None:
    cfg = make_config(
        dimension_conversion={
            "AZURE": {
                "cpu_hours": [
                    {"dimension_key": "cpu_hour", "mapping_mode": "QUANTITY", "multiplier": 1},
                    {"dimension_key": "cpu_bonus", "mapping_mode": "QUANTITY", "multiplier": 3},
                ]
            }
        }
    )
    rows = rows_of(cfg, METRICS)
    assert [(r.partner, r.source_key, r.dimension_key, r.multiplier) for r in rows] == [
        ("AZURE", "cpu_hours", "cpu_hour", Decimal(1)),
        ("AZURE", "cpu_hours", "cpu_bonus", Decimal(3)),
    ]


def test_mapping_rows_keep_unknown_keys_verbatim() -> None:
    cfg = make_config(dimension_conversion={"AWS": {"not_a_metric": [{"dimension_key": "d"}]}})
    assert [r.source_key for r in rows_of(cfg, METRICS)] == ["not_a_metric"]


@pytest.mark.parametrize("mode", ["amount_hourly", "amount_daily"])
def test_mapping_rows_keep_metronome_in_amount_modes(mode: str) -> None:
    # Even a metric whose id is "metronome" must not hijack the amount source key.
    metrics = [*METRICS, Metric(id="metronome", name="something_else")]
    cfg = make_config(
        billing_mode=mode,
        dimension_conversion={
            "AWS": {"metronome": [{"dimension_key": "usage_fee", "mapping_mode": "AMOUNT"}]},
            "GCP": {"metronome": [{"dimension_key": "usage_fee", "mapping_mode": "QUANTITY", "multiplier": 100}]},
        },
    )
    rows = rows_of(cfg, metrics)
    assert sorted(rows, key=lambda r: r.partner) == [
        MappingRow("AWS", "metronome", "usage_fee", "AMOUNT", Decimal(1)),
        MappingRow("GCP", "metronome", "usage_fee", "QUANTITY", Decimal(100)),
    ]


def test_mapping_rows_empty_conversion() -> None:
    assert rows_of(make_config(), METRICS) == []
    assert rows_of(make_config(dimension_conversion={"AWS": {}, "GCP": {}}), METRICS) == []


# ---------------------------------------------------------------------------------------------------------
# find_gaps

ROWS = [
    MappingRow("AWS", "cpu_hours", "cpu_hour", "QUANTITY", Decimal(1)),
    MappingRow("AWS", "api_calls", "api_request", "QUANTITY", Decimal(1)),
    MappingRow("AWS", "metronome", "usage_fee", "AMOUNT", Decimal(1)),
]


def test_no_gaps_when_complete() -> None:
    required = [("AWS", "cpu_hours", "reportable"), ("AWS", "api_calls", "reportable")]
    ents = [ent("e-1", "AWS", {"cpu_hour": Decimal("0.12"), "api_request": Decimal("0.0005")})]
    assert find_gaps(required, ROWS, ents) == []


def test_no_gaps_when_nothing_required() -> None:
    assert find_gaps([], ROWS, [ent("e-1", "AWS", {})]) == []


def test_unmapped_partner_key_is_reported() -> None:
    required = [("AWS", "cpu_hours", "reportable"), ("GCP", "cpu_hours", "has usage in w")]
    ents = [ent("e-1", "AWS", {"cpu_hour": None}), ent("e-2", "GCP", {"cpu_hour": None})]
    gaps = find_gaps(required, ROWS, ents)
    assert gaps == [MappingGap("GCP", "cpu_hours", reason="has usage in w")]
    text = str(gaps[0])
    assert "GCP" in text and "cpu_hours" in text and "not mapped" in text and "has usage in w" in text


def test_mapped_dimension_missing_from_entitlement() -> None:
    required = [("AWS", "cpu_hours", "reportable")]
    ents = [ent("e-good", "AWS", {"cpu_hour": None}), ent("e-bad", "AWS", {"other_dim": None})]
    gaps = find_gaps(required, ROWS, ents)
    assert gaps == [MappingGap("AWS", "cpu_hours", "cpu_hour", "e-bad", "which does not exist")]
    text = str(gaps[0])
    for part in ("AWS", "cpu_hours", "cpu_hour", "e-bad"):
        assert part in text


def test_entitlements_of_other_partners_are_not_checked_against_aws_mapping() -> None:
    required = [("AWS", "cpu_hours", "reportable")]
    ents = [ent("e-1", "AWS", {"cpu_hour": None}), ent("e-az", "AZURE", {})]
    assert find_gaps(required, ROWS, ents) == []


def test_only_required_keys_are_checked_on_entitlements() -> None:
    # api_calls is mapped but not required (e.g. not whitelisted): its missing dimension is no gap.
    required = [("AWS", "cpu_hours", "reportable")]
    ents = [ent("e-1", "AWS", {"cpu_hour": None})]
    assert find_gaps(required, ROWS, ents) == []


@pytest.mark.parametrize("rate", [None, Decimal(0), Decimal("-0.01")])
def test_amount_mapping_needs_a_positive_rate(rate: Decimal | None) -> None:
    required = [("AWS", "metronome", "the amount modes report under this key")]
    gaps = find_gaps(required, ROWS, [ent("e-1", "AWS", {"usage_fee": rate})])
    assert gaps == [MappingGap("AWS", "metronome", "usage_fee", "e-1", "an AMOUNT mapping without a positive rate")]
    text = str(gaps[0])
    assert "usage_fee" in text and "e-1" in text and "rate" in text


def test_amount_mapping_with_positive_rate_is_complete() -> None:
    required = [("AWS", "metronome", "amount")]
    assert find_gaps(required, ROWS, [ent("e-1", "AWS", {"usage_fee": Decimal("0.01")})]) == []


def test_quantity_mapping_needs_no_rate() -> None:
    required = [("AWS", "cpu_hours", "reportable")]
    assert find_gaps(required, ROWS, [ent("e-1", "AWS", {"cpu_hour": None})]) == []
    assert find_gaps(required, ROWS, [ent("e-1", "AWS", {"cpu_hour": Decimal(0)})]) == []


def test_amount_mapping_missing_dimension_reports_missing_not_rate() -> None:
    required = [("AWS", "metronome", "amount")]
    gaps = find_gaps(required, ROWS, [ent("e-1", "AWS", {"cpu_hour": Decimal(1)})])
    assert gaps == [MappingGap("AWS", "metronome", "usage_fee", "e-1", "which does not exist")]


def test_one_source_key_to_several_dimensions_each_checked() -> None:
    rows = [
        MappingRow("GCP", "cpu_hours", "cpu_a", "QUANTITY", Decimal(1)),
        MappingRow("GCP", "cpu_hours", "cpu_b", "QUANTITY", Decimal(1)),
    ]
    gaps = find_gaps([("GCP", "cpu_hours", "r")], rows, [ent("e-1", "GCP", {"cpu_a": None})])
    assert gaps == [MappingGap("GCP", "cpu_hours", "cpu_b", "e-1", "which does not exist")]


def test_duplicate_requirements_give_one_gap() -> None:
    required = [("GCP", "cpu_hours", "reportable")] * 3
    assert find_gaps(required, ROWS, []) == [MappingGap("GCP", "cpu_hours", reason="reportable")]


def _scenario() -> tuple[list[tuple[str, str, str]], list[MappingRow], list[LinkedEntitlement]]:
    required = [
        ("GCP", "cpu_hours", "reportable"),
        ("AWS", "storage", "reportable"),
        ("AWS", "cpu_hours", "reportable"),
        ("AWS", "metronome", "amount"),
        ("AZURE", "api_calls", "reportable"),
    ]
    rows = [
        *ROWS,
        MappingRow("AZURE", "api_calls", "api_request", "QUANTITY", Decimal(1)),
    ]
    ents = [
        ent("e-3", "AWS", {"usage_fee": None}),
        ent("e-1", "AWS", {"cpu_hour": None, "usage_fee": Decimal(0)}),
        ent("e-2", "AZURE", {}),
        ent("e-0", "AWS", {}),
        ent("e-4", "GCP", {}),
    ]
    return required, rows, ents


def test_gap_ordering_is_deterministic_and_sorted() -> None:
    required, rows, ents = _scenario()
    gaps = find_gaps(required, rows, ents)
    assert [(g.partner, g.source_key, g.dimension_key, g.entitlement_id) for g in gaps] == [
        ("AWS", "cpu_hours", "cpu_hour", "e-0"),
        ("AWS", "cpu_hours", "cpu_hour", "e-3"),
        ("AWS", "metronome", "usage_fee", "e-0"),
        ("AWS", "metronome", "usage_fee", "e-1"),
        ("AWS", "metronome", "usage_fee", "e-3"),
        ("AWS", "storage", None, None),
        ("AZURE", "api_calls", "api_request", "e-2"),
        ("GCP", "cpu_hours", None, None),
    ]
    reasons = {(g.source_key, g.entitlement_id): g.reason for g in gaps}
    assert reasons[("metronome", "e-0")] == "which does not exist"
    assert reasons[("metronome", "e-1")] == "an AMOUNT mapping without a positive rate"
    assert reasons[("metronome", "e-3")] == "an AMOUNT mapping without a positive rate"


def test_gap_ordering_independent_of_input_order() -> None:
    required, rows, ents = _scenario()
    expected = find_gaps(required, rows, ents)
    for perm_required, perm_ents in itertools.islice(
        zip(itertools.permutations(required), itertools.cycle(itertools.permutations(ents))), 40
    ):
        assert find_gaps(list(perm_required), list(reversed(rows)), list(perm_ents)) == expected


def test_find_gaps_accepts_iterators() -> None:
    required, rows, ents = _scenario()
    assert find_gaps(iter(required), rows, iter(ents)) == find_gaps(required, rows, ents)


def test_gaps_from_config_and_metrics_end_to_end() -> None:
    cfg = make_config(dimension_conversion={"AWS": {"m-cpu": [{"dimension_key": "cpu_hour"}]}})
    rows = rows_of(cfg, METRICS)
    keys = sorted(m.name for m in METRICS if m.id in chosen(cfg, METRICS) and not m.archived)
    required = [("AWS", k, "reportable") for k in keys]
    gaps = find_gaps(required, rows, [ent("e-1", "AWS", {"cpu_hour": None})])
    # cpu_hours is mapped (via its id), api_calls is not; the archived metric is not required.
    assert gaps == [MappingGap("AWS", "api_calls", reason="reportable")]


# ---------------------------------------------------------------------------------------------------------
# THE dimension rule: an exact key match wins; a name match only when no key matches; ambiguity is an error

A1 = Dimension("a", None, Decimal(1))
B_NAMED_A = Dimension("b", "a", Decimal(5))


@pytest.mark.parametrize(
    ("dimensions", "target", "expected_key", "problem"),
    [
        ([A1, B_NAMED_A], "a", "a", None),  # the case: the key wins over another's name
        ([B_NAMED_A, A1], "a", "a", None),  # whatever the order
        ([B_NAMED_A], "a", "b", None),  # a name match when no key matches
        ([A1], "z", None, "which does not exist"),
        ([Dimension("x", "a"), Dimension("y", "a")], "a", None, "ambiguous (2 dimensions have that name: 'x', 'y')"),
        ([Dimension("a", "p"), Dimension("a", "q")], "a", None, "ambiguous (2 dimensions have that key: 'a', 'a')"),
        ([Dimension("a"), Dimension("x", "a"), Dimension("y", "a")], "a", "a", None),  # one key match settles it
    ],
)
def test_match_dimension(dimensions: list[Dimension], target: str, expected_key: str | None, problem: str | None) -> None:
    found = match_dimension(target, dimensions)
    assert isinstance(found, DimensionMatch) and found.target == target
    assert (found.dimension.key if found.dimension else None) == expected_key
    if problem is None:
        assert found.problem is None
    else:
        assert found.problem is not None and problem in found.problem


def test_gaps_name_an_ambiguous_target() -> None:
    rows = [MappingRow("AWS", "metronome", "a", "AMOUNT", Decimal(1))]
    ents = [LinkedEntitlement("e-1", "AWS", (Dimension("x", "a", Decimal(1)), Dimension("y", "a", Decimal(2))))]
    [gap] = find_gaps([("AWS", "metronome", "amount")], rows, ents)
    assert (gap.dimension_key, gap.entitlement_id) == ("a", "e-1")
    assert "ambiguous" in str(gap) and "'x'" in str(gap) and "'y'" in str(gap)


def test_key_match_prices_with_the_keyed_dimension() -> None:
    rows = [MappingRow("AWS", "metronome", "a", "AMOUNT", Decimal(1))]
    ent_ = LinkedEntitlement("e-1", "AWS", (A1, B_NAMED_A))
    assert find_gaps([("AWS", "metronome", "amount")], rows, [ent_]) == []
    [match] = dimension_matches([ent_], rows)
    assert (match.entitlement_id, match.target, match.dimension_key, match.rate) == ("e-1", "a", "a", Decimal(1))
