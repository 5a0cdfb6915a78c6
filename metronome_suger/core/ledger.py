"""THE report-ledger state machine: the states of a record group, the events that move it, and which
moves are allowed. Pure; ``storage/ledger.py`` is the only writer and applies nothing that is not here.

A group is created ``pending``. Handing it to Suger ends in ``sent`` (201, or 409: Suger already had it),
``rejected`` (Suger refused it; its message is kept and the group is recomputed under the same id by the
next run) or stays ``pending`` (transient failure, or a credentials problem that fails the run). Suger's
polled status then moves a ``sent`` group to ``accepted`` (forwarded to the marketplace), ``rejected``
(INVALID, DELETED, or REPORT_FAILED after the last retry) or ``expired``. A group past its marketplace
deadline is ``expired`` and never sent.
"""

from dataclasses import dataclass
from enum import Enum
from typing import Literal

State = Literal["pending", "sent", "accepted", "rejected", "expired"]
STATES: tuple[State, ...] = ("pending", "sent", "accepted", "rejected", "expired")
MAX_STATUS_RETRIES = 3  # calls of Suger's retry endpoint per group before it is given up
# Suger's usage record group statuses (suger_sdk_python api/metering_api.py, list_usage_record_groups
# ``status``). Any other status is kept verbatim, keeps the group waiting and is flagged, never success.
SUGER_STATUSES = ("CREATED", "INVALID", "REPORT_PENDING", "REPORTED", "REPORT_FAILED", "DELETED")
NEEDS_ATTENTION = ("INVALID", "REPORT_FAILED")


class Event(str, Enum):
    """What happened to a group. The first five are Suger's answer to the POST of the group."""

    CREATED = "created"  # 201: Suger stored the group
    DUPLICATE = "duplicate"  # 409: Suger already had it (an earlier attempt landed): success
    REFUSED = "refused"  # any other 4xx: Suger refused the group; recomputed by the next run
    UNAVAILABLE = "unavailable"  # 408, 429, 5xx, no or unreadable answer: the next run sends it again
    UNAUTHORIZED = "unauthorized"  # 401/403: credentials, not the group: the run fails, it stays pending
    DEADLINE_PASSED = "deadline_passed"  # the marketplace no longer accepts it
    IN_PROGRESS = "in_progress"  # Suger status CREATED / REPORT_PENDING (or a new one): waiting
    REPORTED = "reported"  # Suger status REPORTED: the marketplace has it
    REPORT_FAILED = "report_failed"  # REPORT_FAILED, not retried now (auto_report off, dry run)
    RETRY = "retry"  # REPORT_FAILED, Suger's retry endpoint is called (counted before the call)
    RETRIES_EXHAUSTED = "retries_exhausted"  # REPORT_FAILED after the last allowed retry
    INVALID = "invalid"  # Suger status INVALID
    DELETED = "deleted"  # Suger status DELETED


@dataclass(frozen=True)
class Rule:
    """The effect of one allowed transition on the ledger row."""

    to: State
    submitted: bool = False  # Suger answered a POST: count the attempt, stamp sent_at/answered_at
    retried: bool = False  # one more call of Suger's retry endpoint
    keeps_message: bool = False  # with no new message, the stored one stays (status polls)


_POLL = Rule("sent", keeps_message=True)
TRANSITIONS: dict[tuple[State, Event], Rule] = {
    ("pending", Event.CREATED): Rule("sent", submitted=True),
    ("pending", Event.DUPLICATE): Rule("sent", submitted=True),
    ("pending", Event.REFUSED): Rule("rejected", submitted=True),
    ("pending", Event.UNAVAILABLE): Rule("pending"),
    ("pending", Event.UNAUTHORIZED): Rule("pending"),
    ("pending", Event.DEADLINE_PASSED): Rule("expired"),
    ("sent", Event.IN_PROGRESS): _POLL,
    ("sent", Event.REPORT_FAILED): _POLL,
    ("sent", Event.RETRY): Rule("sent", retried=True, keeps_message=True),
    ("sent", Event.REPORTED): Rule("accepted", keeps_message=True),
    ("sent", Event.RETRIES_EXHAUSTED): Rule("rejected", keeps_message=True),
    ("sent", Event.INVALID): Rule("rejected", keeps_message=True),
    ("sent", Event.DELETED): Rule("rejected", keeps_message=True),
    ("sent", Event.DEADLINE_PASSED): Rule("expired", keeps_message=True),
}


class IllegalTransition(ValueError):
    """An event that the state machine does not allow in the group's state: a bug, never ignored."""


def transition(state: str, event: Event) -> Rule:
    rule = TRANSITIONS.get((state, event))  # type: ignore[arg-type]
    if rule is None:
        raise IllegalTransition(f"ledger: event '{event.value}' is not allowed in state '{state}'")
    return rule


def answer_event(http_status: int | None, retryable: bool) -> Event:
    """Suger's failed answer to a POST, as an event. ``retryable`` is the error's own verdict (the
    client's retry policy decides it once); a 2xx that could not be read is treated as not sent, so the
    next run re-sends it and gets 409 if it had landed."""
    if http_status in (401, 403):
        return Event.UNAUTHORIZED
    if http_status is not None and 400 <= http_status < 500 and not retryable:
        return Event.REFUSED
    return Event.UNAVAILABLE


def status_event(
    suger_status: str | None, *, previous: str | None, expired: bool, retries: int, may_retry: bool
) -> Event | None:
    """What Suger's polled status means for a ``sent`` group; ``None`` when nothing changes.

    REPORT_FAILED is retried at most ``MAX_STATUS_RETRIES`` times and never past the marketplace
    deadline (it would be retried forever, or reach the marketplace too late); with ``may_retry`` off
    (auto_report off, dry run) it is recorded once and left for a later tick.
    """
    if suger_status is None:
        return None
    if suger_status == "REPORTED":
        return Event.REPORTED
    if suger_status == "INVALID":
        return Event.INVALID
    if suger_status == "DELETED":
        return Event.DELETED
    if suger_status == "REPORT_FAILED":
        if expired:
            return Event.DEADLINE_PASSED
        if retries >= MAX_STATUS_RETRIES:
            return Event.RETRIES_EXHAUSTED
        if not may_retry:
            return None if previous == suger_status else Event.REPORT_FAILED
        return Event.RETRY
    return Event.IN_PROGRESS if suger_status != previous else None
