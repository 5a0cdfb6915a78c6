"""Bad Suger answers, met over real HTTP: the emulator answers the client's real request with a crafted status
and body (``respond`` faults: JSON strings as Suger writes its errors, HTML pages from a proxy, a Retry-After
in HTTP-date form...), and a real Dagster run of the window must end as the ledger's state machine says
(``core/ledger.py``, README "The ledger"): 409 counts as sent; any other 4xx is ``rejected`` with Suger's
message and recomputed under the same id; 401/403 keep the group ``pending`` and fail the run; 408/429/5xx are
retried within the run, and a 2xx that cannot be read keeps the group ``pending``. A re-run never sends a group
twice, and no other window changes (``World.play``). Suger's listings (buyers, entitlements) and the
customer → entitlement links they give are here too: a bad listing fails the run naming the call, before
anything is computed or sent.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from email.utils import format_datetime

import pytest

from metronome_suger_tests.conftest import AWS_DIMS
from metronome_suger_tests.figures import record
from metronome_suger_tests.test_reliability.test_bad_input_world import (
    HTML,
    JSON,
    PROXY_502,
    Arrange,
    Played,
    World,
    hourly_keys,
    json_body,
    quantity_world,
    start_of,
    utc,
)

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

Check = Callable[[World, str, Played], None]
PAGE_413 = ("<!DOCTYPE html>\n<html><head><title>413 Request Entity Too Large</title>"
            "<style>body{font-family:sans-serif}</style></head><body><h1>413 Request Entity Too Large</h1>"
            "<hr><center>cloudflare</center></body></html>")
SIGN_IN = "<html><head><title>Sign in</title></head><body><form action='/login'>...</form></body></html>"


@pytest.fixture(autouse=True)
def one_case() -> None:
    record("bad_input", cases=1)


@dataclass(frozen=True)
class Answer:
    arrange: Arrange
    fails: tuple[str, ...] = ()  # fragments of the run's failure text (World.text fills the names); () → success
    status: str | None = "sent"  # the window's ledger status afterwards (None: no group was computed)
    message: str | None = None  # the ledger's message afterwards, exactly
    held: Decimal | None = Decimal(10)  # the cpu_hour Suger holds for the window afterwards; None: nothing
    posts: int = 1  # POSTs of the window's group during the run (a retry is a second one)
    rerun: int | None = None  # a re-run of the window POSTs this many times, then Suger holds one group
    check: Check | None = None


def suger_answers(status: int, body: str, *, headers: dict[str, str] | None = None, suffix: str | None = None,
                  method: str = "POST") -> Arrange:
    """The next ``method`` to ``/org/{org}{suffix}`` (default: the POST of the window's group) is answered
    ``status`` with ``body``."""
    def arrange(world: World, start: datetime) -> None:
        path = world.post_path if suffix is None else f"/org/{world.sandbox.org_id}{suffix}"
        world.sandbox.suger_faults.inject("respond", status=status, body=body, headers=headers or JSON,
                                          method=method, path_prefix=path)
    return arrange


def too_many_requests_until_a_date(world: World, start: datetime) -> None:
    """429 with ``Retry-After`` as an HTTP date about a second ahead (what the client waits is capped at
    ``max_wait_seconds``; only the retry itself is asserted)."""
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=1), usegmt=True)
    suger_answers(429, '"rate limit exceeded"', headers={**JSON, "Retry-After": when})(world, start)


def entitlements_with(change: Callable[[dict[str, object]], dict[str, object]]) -> Arrange:
    """The entitlement listing answers Alice's entitlement as the emulator renders it, changed."""
    def arrange(world: World, start: datetime) -> None:
        listed = [change(world.sandbox.suger.get_entitlement(world.entitlement))]
        suger_answers(200, json_body(listed), suffix="/entitlement", method="GET")(world, start)
    return arrange


def bad_rate(entitlement: dict[str, object]) -> dict[str, object]:
    info = dict(entitlement["info"])  # type: ignore[call-overload]
    info["dimensions"] = [{**d, "rate": "twelve cents"} for d in info["dimensions"]]
    return {**entitlement, "info": info}


def links(world: World, customer: str, entitlement: str) -> None:
    world.pipeline.settings["customer_links"] = [{"metronome_customer_id": customer, "entitlement_id": entitlement}]


def inactive_entitlement(world: World, start: datetime) -> None:
    """Dora has usage in the window, and only a SUSPENDED entitlement."""
    dora = world.sandbox.metronome.add_customer(f"Dora {start:%H}")["id"]
    world.sandbox.metronome.set_usage(dora, world.metric, start, 4)
    buyer = world.sandbox.suger.add_buyer(f"Dora {start:%H}", partner="AWS", metronome_customer_id=dora)["id"]
    entitlement = world.sandbox.suger.add_entitlement(buyer, partner="AWS", dimensions=AWS_DIMS)["id"]
    world.sandbox.suger.set_entitlement_status(entitlement, "SUSPENDED")
    world.extra.update(dora=dora, dora_entitlement=entitlement)


def inactive_named(world: World, key: str, played: Played) -> None:
    linkage = played.check("customer_linkage")
    details = str(linkage.metadata["details"].value)
    assert not linkage.passed
    assert world.text("customer {dora} 'cpu_hours' = 4", key) in details
    assert world.text("{dora_entitlement} is SUSPENDED", key) in details


def second_customer(world: World, start: datetime) -> None:
    """Carol (7 in the window) is linked by ``customer_links`` to the entitlement Alice's buyer already links
    to Alice: the buyer's entitlement takes both customers' usage."""
    carol = world.sandbox.metronome.add_customer(f"Carol {start:%H}")["id"]
    world.sandbox.metronome.set_usage(carol, world.metric, start, 7)
    links(world, carol, world.entitlement)
    world.extra.update(carol=carol)


def both_customers_named(world: World, key: str, played: Played) -> None:
    customers = ",".join(sorted([world.customer, world.extra["carol"]]))
    assert world.query("SELECT customer_id FROM report_ledger WHERE window_start = ?", [start_of(key)]) == [
        (customers,)]
    origin = world.query("SELECT customer_id, origin_quantity FROM usage_records WHERE window_start = ? ORDER BY 2",
                         [start_of(key)])
    assert origin == [(world.extra["carol"], Decimal(7)), (world.customer, Decimal(10))]


def unknown_entitlement(world: World, start: datetime) -> None:
    links(world, world.customer, "ent-unknown-to-suger")


def dry_run(world: World, start: datetime) -> None:
    """batchValidate's documented 200 for a valid batch is an empty string; here its body is empty."""
    world.pipeline.settings["dry_run"] = True
    suger_answers(200, "", suffix="/batchValidateUsageRecordGroups")(world, start)


def retried(first: int) -> Check:
    def check(world: World, key: str, played: Played) -> None:
        calls = world.sandbox.suger_log.find("POST", world.post_path)
        assert [c.status for c in calls[-2:]] == [first, 200] and calls[-2].fault == "respond"
    return check


REFUSED = "1 problem(s) reporting to Suger: group "
ANSWERS: dict[str, Answer] = {
    "suger_400_refused": Answer(
        suger_answers(400, '"records: all the quantity of usage records are zero"'),
        fails=(REFUSED, "rejected: records: all the quantity of usage records are zero"),
        status="rejected", message="records: all the quantity of usage records are zero", held=None, rerun=1),
    "suger_401_unauthorized": Answer(
        suger_answers(401, '{"message": "invalid API key"}'),
        fails=("pending: not sent, credentials refused: Suger POST {post} -> 401: invalid API key",),
        status="pending", message="not sent, credentials refused: Suger POST {post} -> 401: invalid API key",
        held=None, rerun=1),
    "suger_403_forbidden": Answer(
        suger_answers(403, '"this key may not report usage"'),
        fails=("Suger POST {post} -> 403: this key may not report usage",),
        status="pending", message="not sent, credentials refused: Suger POST {post} -> 403: this key may not "
        "report usage", held=None, rerun=1),
    "suger_404_not_found": Answer(
        suger_answers(404, '"entitlement not found"'), fails=("rejected: entitlement not found",),
        status="rejected", message="entitlement not found", held=None, rerun=1),
    "suger_409_duplicate": Answer(  # Suger says it has the group: sent, and never posted again
        suger_answers(409, '"usage record group already exists"'),
        message="Suger already had this group (409)", held=None, rerun=0),
    "suger_413_html_page": Answer(  # the proxy's page title, not its markup
        suger_answers(413, PAGE_413, headers=HTML), fails=("rejected: 413 Request Entity Too Large",),
        status="rejected", message="413 Request Entity Too Large", held=None, rerun=1),
    "suger_422_unprocessable": Answer(
        suger_answers(422, '{"message": "timestamp is older than the marketplace accepts"}'),
        fails=("rejected: timestamp is older than the marketplace accepts",),
        status="rejected", message="timestamp is older than the marketplace accepts", held=None, rerun=1),
    "suger_502_html_proxy_page": Answer(
        suger_answers(502, PROXY_502, headers=HTML), posts=2, check=retried(502)),
    "suger_429_retry_after_http_date": Answer(too_many_requests_until_a_date, posts=2, check=retried(429)),
    "suger_200_html_page": Answer(  # a 2xx that cannot be read: not counted as sent, the re-run sends it
        suger_answers(200, SIGN_IN, headers=HTML),
        fails=("pending: not sent, will retry: Suger POST {post} -> 200: response body is not valid JSON",),
        status="pending", held=None, rerun=1),
    "suger_200_empty_body": Answer(  # Suger answers the stored group: an empty 2xx is not proof it stored it
        suger_answers(200, ""),
        fails=("pending: not sent, will retry: Suger POST {post} -> 200: a 2xx answer with an empty body",),
        status="pending", held=None, rerun=1),
    "suger_200_wrong_json_shape": Answer(
        suger_answers(200, '{"id": 7, "records": "ten"}'),
        fails=("Suger POST {post} -> 200: response does not match the expected shape: id: Input should be a "
               "valid string",), status="pending", held=None, rerun=1),
    "suger_batch_validate_empty_200": Answer(dry_run, status="pending", held=None),  # valid; dry run sends nothing
    "suger_buyers_html_page": Answer(
        suger_answers(200, SIGN_IN, headers=HTML, suffix="/buyer", method="GET"),
        fails=("Suger GET /org/{org}/buyer -> 200: response body is not valid JSON",),
        status=None, held=None, posts=0),
    "suger_entitlement_missing_id": Answer(
        entitlements_with(lambda e: {k: v for k, v in e.items() if k != "id"}),
        fails=("Suger GET /org/{org}/entitlement -> 200: response does not match the expected shape: 0.id: Field "
               "required",), status=None, held=None, posts=0),
    "suger_dimension_rate_wrong_json_type": Answer(
        entitlements_with(bad_rate),
        fails=("Suger GET /org/{org}/entitlement -> 200: response does not match the expected shape: "
               "0.info.dimensions.0.rate: Input should be a valid decimal",), status=None, held=None, posts=0),
    "suger_entitlement_inactive": Answer(inactive_entitlement, check=inactive_named),  # Dora's usage: named
    "suger_entitlement_unknown": Answer(
        unknown_entitlement, fails=("customer_links name entitlements Suger does not have: ent-unknown-to-suger",),
        status=None, held=None, posts=0),
    "buyer_linked_to_two_customers": Answer(second_customer, held=Decimal(17), check=both_customers_named),
}
KEYS = hourly_keys(utc(2026, 11, 23), list(ANSWERS))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with quantity_world(tmp_path_factory.mktemp("bad_suger"), "2026-11-23-00:00") as built:
        yield built


@pytest.mark.parametrize("name", [pytest.param(name, id=name) for name in ANSWERS])
def test_bad_suger_answer(world: World, name: str) -> None:
    case, key = ANSWERS[name], KEYS[name]
    world.reset()
    case.arrange(world, start_of(key))
    played = world.play(key)
    played.ended_as(case.fails, lambda fragment: world.text(fragment, key))
    assert [g["records"] for g in played.held] == ([] if case.held is None else [{"cpu_hour": case.held}])
    assert played.posts == case.posts
    ledger = world.ledger(key)
    assert [status for status, _, _ in ledger] == ([] if case.status is None else [case.status])
    if case.message is not None:
        assert [message for _, _, message in ledger] == [world.text(case.message, key)]
    if case.check:
        case.check(world, key, played)
    if case.rerun is not None:  # as the schedule or a backfill would run the window again
        world.reset()
        again = world.play(key)
        assert again.result.success, again.failure
        assert again.posts == case.rerun
        assert [status for status, _, _ in world.ledger(key)] == ["sent"]
        expected = [] if case.rerun == 0 else [{"cpu_hour": Decimal(10)}]
        assert [g["records"] for g in again.held] == expected  # one group for the window, never two
