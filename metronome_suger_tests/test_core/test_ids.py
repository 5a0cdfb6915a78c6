"""Deterministic record-group ids (CONTRACT §5): same usage, same id; anything else, another id."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metronome_suger.core.ids import NAMESPACE, record_group_id

UTC = timezone.utc
START = datetime(2026, 11, 25, 13, tzinfo=UTC)
MODES = ("quantity", "amount_hourly", "amount_daily")


def check_uuid5(value: str) -> None:
    assert isinstance(value, str)
    assert len(value) == 36
    parsed = uuid.UUID(value)
    assert parsed.version == 5
    assert parsed.variant == uuid.RFC_4122
    assert str(parsed) == value  # canonical lower-case, hyphenated


def test_golden_id_is_stable() -> None:
    # Pinned: a change here would re-send every group ever reported under a new id.
    assert NAMESPACE == uuid.UUID("6d3c2b0e-8f1a-5c4e-9b7d-2a1f0e9c8b70")
    assert record_group_id("org-123", "ent-1", "quantity", START, 0) == "7f277c53-4290-5b59-b39d-27316a5907b4"


def test_same_inputs_same_id() -> None:
    a = record_group_id("org-123", "ent-1", "quantity", START, 0)
    b = record_group_id("org-123", "ent-1", "quantity", datetime(2026, 11, 25, 13, tzinfo=UTC), 0)
    assert a == b
    check_uuid5(a)


def test_each_field_changes_the_id() -> None:
    base = ("org-123", "ent-1", "quantity", START, 0)
    variants = [
        base,
        ("org-124", *base[1:]),
        (base[0], "ent-2", *base[2:]),
        (*base[:2], "amount_hourly", *base[3:]),
        (*base[:2], "amount_daily", *base[3:]),
        (*base[:3], START + timedelta(hours=1), 0),
        (*base[:3], START + timedelta(days=1), 0),
        (*base[:4], 1),
        (*base[:4], 2),
    ]
    ids = [record_group_id(*v) for v in variants]
    assert len(set(ids)) == len(variants)
    for value in ids:
        check_uuid5(value)


def test_equivalent_instants_give_the_same_id() -> None:
    naive = datetime(2026, 11, 25, 13)
    plus_two = datetime(2026, 11, 25, 15, tzinfo=timezone(timedelta(hours=2)))
    expected = record_group_id("org", "ent", "quantity", START, 3)
    assert record_group_id("org", "ent", "quantity", naive, 3) == expected
    assert record_group_id("org", "ent", "quantity", plus_two, 3) == expected


@pytest.mark.parametrize("revision", [-1, -100])
def test_negative_revision_rejected(revision: int) -> None:
    with pytest.raises(ValueError, match="revision"):
        record_group_id("org", "ent", "quantity", START, revision)


def test_revision_zero_and_large_are_valid() -> None:
    check_uuid5(record_group_id("org", "ent", "quantity", START, 0))
    check_uuid5(record_group_id("org", "ent", "quantity", START, 10**9))


# ---------------------------------------------------------------------------------------------------------
# Properties

# Suger org and entitlement ids are opaque tokens: letters, digits and punctuation, never the '|' separator.
ID_TEXT = st.text(
    alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="|"), min_size=1, max_size=40
)
WINDOW_STARTS = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)).map(
    lambda d: d.replace(minute=0, second=0, microsecond=0, tzinfo=UTC)
)
REVISIONS = st.integers(min_value=0, max_value=10_000)
INPUTS = st.tuples(ID_TEXT, ID_TEXT, st.sampled_from(MODES), WINDOW_STARTS, REVISIONS)


@settings(max_examples=300)
@given(INPUTS, INPUTS)
def test_ids_are_deterministic_and_distinct(a: tuple, b: tuple) -> None:
    id_a = record_group_id(*a)
    check_uuid5(id_a)
    assert record_group_id(*a) == id_a
    if a == b:
        assert record_group_id(*b) == id_a
    else:
        assert record_group_id(*b) != id_a


@settings(max_examples=300)
@given(
    st.text(min_size=1, max_size=20),
    st.lists(
        st.tuples(st.text(min_size=1, max_size=20), st.sampled_from(MODES), WINDOW_STARTS, REVISIONS),
        min_size=2,
        max_size=8,
        unique=True,
    ),
)
def test_within_one_org_any_entitlement_id_is_unambiguous(org: str, rest: list[tuple]) -> None:
    """One deployment has one org: then even entitlement ids containing '|' cannot collide."""
    ids = [record_group_id(org, *r) for r in rest]
    assert len(set(ids)) == len(rest)
    for value in ids:
        check_uuid5(value)


@given(WINDOW_STARTS, st.integers(min_value=-(10**6), max_value=-1))
def test_negative_revision_property(start: datetime, revision: int) -> None:
    with pytest.raises(ValueError):
        record_group_id("org", "ent", "quantity", start, revision)
