"""The ledger state machine: every (state, event) pair is either in the table or raises."""

import itertools
from pathlib import Path

import pytest

from metronome_suger.core.ledger import (
    MAX_STATUS_RETRIES,
    STATES,
    TRANSITIONS,
    Event,
    IllegalTransition,
    answer_event,
    status_event,
    transition,
)

# The whole machine, written out independently of the module: (state, event) -> next state.
EXPECTED = {
    ("pending", Event.CREATED): "sent",
    ("pending", Event.DUPLICATE): "sent",
    ("pending", Event.REFUSED): "rejected",
    ("pending", Event.UNAVAILABLE): "pending",
    ("pending", Event.UNAUTHORIZED): "pending",
    ("pending", Event.DEADLINE_PASSED): "expired",
    ("sent", Event.IN_PROGRESS): "sent",
    ("sent", Event.REPORT_FAILED): "sent",
    ("sent", Event.RETRY): "sent",
    ("sent", Event.REPORTED): "accepted",
    ("sent", Event.RETRIES_EXHAUSTED): "rejected",
    ("sent", Event.INVALID): "rejected",
    ("sent", Event.DELETED): "rejected",
    ("sent", Event.DEADLINE_PASSED): "expired",
}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(STATES, Event)))
def test_every_pair_is_allowed_or_raises(state: str, event: Event) -> None:
    if (state, event) in EXPECTED:
        assert transition(state, event).to == EXPECTED[(state, event)]
    else:
        with pytest.raises(IllegalTransition, match=f"'{event.value}' is not allowed in state '{state}'"):
            transition(state, event)


def test_the_table_is_exactly_the_expected_machine() -> None:
    assert {k: r.to for k, r in TRANSITIONS.items()} == EXPECTED


def test_closed_states_accept_no_event() -> None:
    for state in ("accepted", "rejected", "expired"):
        assert not [e for e in Event if (state, e) in TRANSITIONS]


def test_only_answers_to_a_post_count_an_attempt_and_only_retry_counts_a_retry() -> None:
    assert {k for k, r in TRANSITIONS.items() if r.submitted} == {
        ("pending", Event.CREATED), ("pending", Event.DUPLICATE), ("pending", Event.REFUSED)}
    assert {k for k, r in TRANSITIONS.items() if r.retried} == {("sent", Event.RETRY)}


def test_unknown_state_raises() -> None:
    with pytest.raises(IllegalTransition):
        transition("lost", Event.CREATED)


@pytest.mark.parametrize(
    ("status", "retryable", "event"),
    [
        (401, False, Event.UNAUTHORIZED),  # credentials, not the group: stays pending, the run fails
        (403, False, Event.UNAUTHORIZED),
        (400, False, Event.REFUSED),
        (404, False, Event.REFUSED),
        (413, False, Event.REFUSED),
        (422, False, Event.REFUSED),
        (408, True, Event.UNAVAILABLE),
        (429, True, Event.UNAVAILABLE),
        (500, True, Event.UNAVAILABLE),
        (503, True, Event.UNAVAILABLE),
        (None, True, Event.UNAVAILABLE),  # no response
        (None, False, Event.UNAVAILABLE),  # not retried by the client, but never refused by Suger
        (200, False, Event.UNAVAILABLE),  # a 2xx we could not read: the next run re-sends, 409 if it landed
    ],
)
def test_answer_event(status: int | None, retryable: bool, event: Event) -> None:
    assert answer_event(status, retryable) == event


@pytest.mark.parametrize(
    ("suger", "previous", "expired", "retries", "may_retry", "event"),
    [
        (None, "CREATED", False, 0, True, None),  # not listed: nothing changes
        ("CREATED", None, False, 0, True, Event.IN_PROGRESS),
        ("CREATED", "CREATED", False, 0, True, None),
        ("REPORT_PENDING", "CREATED", False, 0, True, Event.IN_PROGRESS),
        ("REPORTED", "CREATED", False, 0, True, Event.REPORTED),
        ("INVALID", "CREATED", False, 0, True, Event.INVALID),
        ("DELETED", "CREATED", False, 0, True, Event.DELETED),
        ("REPORT_FAILED", "CREATED", False, 0, True, Event.RETRY),
        ("REPORT_FAILED", "CREATED", True, 0, True, Event.DEADLINE_PASSED),
        ("REPORT_FAILED", "CREATED", False, MAX_STATUS_RETRIES, True, Event.RETRIES_EXHAUSTED),
        ("REPORT_FAILED", "CREATED", False, 0, False, Event.REPORT_FAILED),
        ("REPORT_FAILED", "REPORT_FAILED", False, 0, False, None),  # recorded once while retries are off
    ],
)
def test_status_event(suger: str | None, previous: str | None, expired: bool, retries: int, may_retry: bool,
                      event: Event | None) -> None:
    assert status_event(suger, previous=previous, expired=expired, retries=retries, may_retry=may_retry) == event
    if event is not None:
        transition("sent", event)  # every event a poll produces is legal for a sent group


def test_no_module_but_the_ledger_writes_report_ledger_status() -> None:
    """Every status write goes through storage/ledger.py (which applies the state machine)."""
    package = Path(__file__).resolve().parents[2] / "metronome_suger"
    writers = []
    for path in package.rglob("*.py"):
        text = " ".join(path.read_text(encoding="utf-8").split()).lower()
        if "update report_ledger" in text and path.relative_to(package).as_posix() != "storage/ledger.py":
            writers.append(path.relative_to(package).as_posix())
    assert writers == []
