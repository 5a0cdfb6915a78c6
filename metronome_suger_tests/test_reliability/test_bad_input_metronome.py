"""Bad Metronome data, met over real HTTP: the emulator answers the client's real request with a crafted body
(``respond`` faults), and a real Dagster run of the window must end with the named error or the documented
outcome, nothing wrong at Suger, and every other window as it was (``World.play``).

Rounding: the ledger keeps quantities as ``DECIMAL(38,10)`` (``storage/db.py`` ``QTY``): 10 decimal places,
``|value| < 10^28``. A Metronome value with more places is rounded half away from zero (DuckDB's cast:
7.12345678905 → 7.1234567891, where half-even would give 7.1234567890), stored and sent as rounded. A value the
type cannot hold is refused by name before anything is stored; one whose conversion the ledger cannot compute
exactly (``|value × multiplier| ≥ 10^18``) is refused by name like a negative value, and kept.
"""

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from metronome_suger.sandbox.server import Sandbox
from metronome_suger_tests.conftest import AWS_DIMS, NOW, Pipeline, PostgresLedger
from metronome_suger_tests.figures import record
from metronome_suger_tests.test_reliability.test_bad_input_world import (
    HOUR,
    HTML,
    HTTP,
    PROXY_502,
    Arrange,
    Played,
    World,
    hourly_keys,
    metronome_answers,
    quantity_world,
    start_of,
    usage_answers,
    usage_row,
    utc,
)

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

Check = Callable[[World, str, Played], None]


@pytest.fixture(autouse=True)
def one_case() -> None:
    record("bad_input", cases=1)


@dataclass(frozen=True)
class Case:
    arrange: Arrange
    fails: tuple[str, ...] = ()  # fragments of the run's failure text (World.text fills the names); () → success
    sent: Decimal | None = None  # the cpu_hour Suger holds for the window afterwards; None: nothing
    check: Check | None = None  # the rest of the documented outcome


def usage_of(world: World, key: str) -> list[tuple[object, ...]]:
    return world.query("SELECT customer_id, value, value_was_null FROM usage WHERE window_start = ?", [start_of(key)])


def usage_is(*rows: tuple[object, ...]) -> Check:
    """The window's ``usage`` rows afterwards, as (value, value_was_null), for Alice."""
    def check(world: World, key: str, played: Played) -> None:
        assert usage_of(world, key) == [(world.customer, *row) for row in rows]
    return check


def retried_once(world: World, key: str, played: Played) -> None:
    """The proxy's page was retried, and the second answer was the emulator's own."""
    calls = world.sandbox.metronome_log.find("POST", "/v1/usage")
    assert [c.status for c in calls[-2:]] == [502, 200] and calls[-2].fault == "respond"


def unknown_metric_named(world: World, key: str, played: Played) -> None:
    assert played.metadata("metronome_usage")["unknown_metrics"] == "gpu_minutes (metric-gpu)"


def whitelist(metrics: list[str]) -> Arrange:
    def arrange(world: World, start: datetime) -> None:
        world.pipeline.settings["billable_metric_whitelist"] = {"enabled": True, "metrics": metrics}
    return arrange


SHAPE = "Metronome POST /v1/usage -> 200: response does not match the expected shape: "
QUANTITY_CASES: dict[str, Case] = {
    "usage_value_null": Case(usage_answers(lambda w, s: usage_row(w, s, None)),
                             check=usage_is((Decimal(0), True))),  # no data: stored as 0, flagged, not sent
    "usage_value_negative": Case(
        usage_answers(lambda w, s: usage_row(w, s, -4)),
        fails=("negative usage -4.0000000000 for customer {customer} metric 'cpu_hours' in window {window}",),
        check=usage_is((Decimal(-4), False))),  # refused, and what was fetched is kept
    "usage_value_nan": Case(usage_answers(lambda w, s: usage_row(w, s, "raw:NaN")),
                            fails=(SHAPE + "data.0.value: Input should be a finite number",), check=usage_is()),
    "usage_value_infinity": Case(usage_answers(lambda w, s: usage_row(w, s, "raw:Infinity")),
                                 fails=(SHAPE + "data.0.value: Input should be a finite number",), check=usage_is()),
    "usage_value_1e30": Case(
        usage_answers(lambda w, s: usage_row(w, s, "raw:1e30")),
        fails=("Metronome returned usage 1E+30 for customer {customer} metric 'cpu_hours' ({window}): larger than "
               "the ledger's DECIMAL(38,10) holds (|value| < 10^28); nothing is stored or sent",),
        check=usage_is()),
    "usage_value_beyond_exact_conversion": Case(
        usage_answers(lambda w, s: usage_row(w, s, 10**19)),
        fails=("usage 10000000000000000000 for customer {customer} metric 'cpu_hours' in window {window} is too "
               "large to convert exactly (x 1; the ledger converts |value x multiplier| < 10^18)",),
        check=usage_is((Decimal(10**19), False))),
    "usage_value_more_decimals_than_kept": Case(
        usage_answers(lambda w, s: usage_row(w, s, "raw:7.12345678905")),
        sent=Decimal("7.1234567891"), check=usage_is((Decimal("7.1234567891"), False))),
    "usage_value_wrong_json_type": Case(
        usage_answers(lambda w, s: usage_row(w, s, True)),
        fails=(SHAPE + "data.0.value: Decimal input should be an integer, float, string or Decimal object",)),
    "usage_customer_id_wrong_json_type": Case(
        usage_answers(lambda w, s: usage_row(w, s, customer_id=12345)),
        fails=(SHAPE + "data.0.customer_id: Input should be a valid string",)),
    "usage_field_missing": Case(
        usage_answers(lambda w, s: {k: v for k, v in usage_row(w, s).items() if k != "billable_metric_name"}),
        fails=(SHAPE + "data.0.billable_metric_name: Field required",), check=usage_is()),
    "usage_extra_fields": Case(  # Metronome adds fields without notice: kept, ignored
        usage_answers(lambda w, s: usage_row(w, s, groups=None, region={"name": "us-east-1"}, unit="hours")),
        sent=Decimal(10)),
    "usage_row_duplicated": Case(  # one aggregate returned twice (a repeated page): counted once, not 20
        usage_answers(lambda w, s: usage_row(w, s), lambda w, s: usage_row(w, s)),
        sent=Decimal(10), check=usage_is((Decimal(10), False))),
    "usage_row_duplicated_with_another_value": Case(
        usage_answers(lambda w, s: usage_row(w, s, 10), lambda w, s: usage_row(w, s, 12)),
        fails=("Metronome POST /v1/usage -> 200: customer {customer} metric 'cpu_hours' ({window}) was returned "
               "twice with different values (10 and 12); nothing is stored or sent",), check=usage_is()),
    "usage_timestamps_non_utc_offset": Case(  # the same instants written +01:00: the UTC window's value
        usage_answers(lambda w, s: usage_row(w, s, start_timestamp=(s + HOUR).strftime("%Y-%m-%dT%H:%M:%S+01:00"),
                                             end_timestamp=(s + 2 * HOUR).strftime("%Y-%m-%dT%H:%M:%S+01:00"))),
        sent=Decimal(10), check=usage_is((Decimal(10), False))),
    "usage_timestamps_not_on_the_hour": Case(  # straddles two windows: neither takes it, the run names it
        usage_answers(lambda w, s: usage_row(w, s, start_timestamp=f"{s + HOUR / 2:%Y-%m-%dT%H:%M:%SZ}",
                                             end_timestamp=f"{s + HOUR * 3 / 2:%Y-%m-%dT%H:%M:%SZ}")),
        fails=("Metronome POST /v1/usage -> 200: customer {customer} metric 'cpu_hours' ({half}) is not one whole "
               "UTC hour (window_size HOUR)",), check=usage_is()),
    "usage_timestamps_half_an_hour": Case(
        usage_answers(lambda w, s: usage_row(w, s, end_timestamp=f"{s + HOUR / 2:%Y-%m-%dT%H:%M:%SZ}")),
        fails=("customer {customer} metric 'cpu_hours' ({start}..{half_end}) is not one whole UTC hour",),
        check=usage_is()),
    "usage_unknown_metric": Case(  # a metric absent from the billable metric list: named, not reported
        usage_answers(lambda w, s: usage_row(w, s),
                      lambda w, s: usage_row(w, s, 5, billable_metric_id="metric-gpu",
                                             billable_metric_name="gpu_minutes")),
        sent=Decimal(10), check=unknown_metric_named),
    "whitelist_names_an_unknown_metric": Case(
        whitelist(["cpu_hours", "gpu_minutes"]),
        fails=("billable_metric_whitelist names metrics Metronome does not have: gpu_minutes",)),
    "usage_empty_body_200": Case(
        metronome_answers("/v1/usage", lambda w, s: "", method="POST"),
        fails=("Metronome POST /v1/usage -> 200: expected a JSON object with a 'data' list",)),
    "usage_proxy_html_502": Case(  # a transient proxy page: retried, the window ends exact
        metronome_answers("/v1/usage", lambda w, s: PROXY_502, method="POST", status=502, headers=HTML),
        sent=Decimal(10), check=retried_once),
    "customers_wrong_json_type": Case(
        metronome_answers("/v1/customers", lambda w, s: {"data": [{"id": w.customer, "name": 42}], "next_page": None}),
        fails=("Metronome GET /v1/customers -> 200: response does not match the expected shape: "
               "data.0.name: Input should be a valid string",)),
    "billable_metrics_field_missing": Case(
        metronome_answers("/v1/billable-metrics", lambda w, s: {"data": [{"id": w.metric}], "next_page": None}),
        fails=("Metronome GET /v1/billable-metrics -> 200: response does not match the expected shape: "
               "data.0.name: Field required",)),
}
QUANTITY_KEYS = hourly_keys(utc(2026, 11, 24), list(QUANTITY_CASES))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with quantity_world(tmp_path_factory.mktemp("bad_metronome"), "2026-11-24-00:00") as built:
        yield built


@pytest.mark.parametrize("name", [pytest.param(name, id=name) for name in QUANTITY_CASES])
def test_bad_metronome_data(world: World, name: str) -> None:
    case, key = QUANTITY_CASES[name], QUANTITY_KEYS[name]
    world.reset()
    start = start_of(key)
    world.extra.update(half=f"{start + HOUR / 2:%Y-%m-%dT%H:%M:%SZ}..{start + HOUR * 3 / 2:%Y-%m-%dT%H:%M:%SZ}",
                       half_end=f"{start + HOUR / 2:%Y-%m-%dT%H:%M:%SZ}")
    case.arrange(world, start)
    played = world.play(key)
    played.ended_as(case.fails, lambda fragment: world.text(fragment, key))
    assert [g["records"] for g in played.held] == ([] if case.sent is None else [{"cpu_hour": case.sent}])
    assert all(status == "sent" for status, _, _ in world.ledger(key))  # nothing refused, pending or half-done
    if case.check:
        case.check(world, key, played)


def test_rounding_and_a_repeated_row_on_the_postgresql_ledger(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_ledger: PostgresLedger,
) -> None:
    """The same rules on the PostgreSQL ledger (its column is DECIMAL(38,10) too, and the cast is DuckDB's):
    a value with 11 decimal places, returned twice, is stored and sent once, rounded half away from zero."""
    cpu = sandbox.metronome.add_billable_metric("cpu_hours")["id"]
    alice = sandbox.metronome.add_customer("Alice")["id"]
    buyer = sandbox.suger.add_buyer("Alice AWS", partner="AWS", metronome_customer_id=alice)["id"]
    entitlement = sandbox.suger.add_entitlement(buyer, partner="AWS", dimensions=AWS_DIMS)["id"]
    pipeline = Pipeline(sandbox, tmp_path, monkeypatch, postgres_ledger)
    pipeline.settings.update(http=HTTP, dimension_conversion={"AWS": {"cpu_hours": [{"dimension_key": "cpu_hour"}]}})
    world = World(sandbox, pipeline, alice, entitlement, copy.deepcopy(pipeline.settings), cpu)
    key = "2026-11-25-13:00"
    row = usage_row(world, start_of(key), "raw:7.12345678905")
    usage_answers(lambda w, s: row, lambda w, s: row)(world, start_of(key))
    played = world.play(key)
    assert played.result.success, played.failure
    assert [g["records"] for g in played.held] == [{"cpu_hour": Decimal("7.1234567891")}]
    assert usage_of(world, key) == [(alice, Decimal("7.1234567891"), False)]
    assert world.ledger(key) == [("sent", '{"cpu_hour":"7.1234567891"}', None)]  # the exact text DuckDB wrote


# -- amount modes: invoices ----------------------------------------------------------------------------------

NOV, DEC = utc(2026, 11, 1), utc(2026, 12, 1)
AI_CREDITS = {"id": "c0ffee00-0000-4000-8000-000000000001", "name": "AI credits"}


def invoice(world: World, start: datetime, **fields: object) -> dict[str, object]:
    """The case customer's invoice as Metronome renders it, with ``fields`` changed."""
    rendered = world.sandbox.metronome.get_invoice(world.extra["invoice"])
    assert rendered is not None
    return {**rendered, **fields}


def invoices_answer(*invoices: Callable[[World, datetime], dict[str, object]]) -> Arrange:
    def arrange(world: World, start: datetime) -> None:
        page = {"data": [inv(world, start) for inv in invoices], "next_page": None}
        metronome_answers(f"/v1/customers/{world.extra['customer']}/invoices", lambda w, s: page)(world, start)
    return arrange


def id_change(world: World, start: datetime) -> None:
    """The invoice is voided and the period re-issued under a new id, without lineage (no
    ``regenerated_from_invoice_id``): the old id, read once more by id, answers VOID."""
    old = invoice(world, start, status="VOID")
    path = f"/v1/customers/{world.extra['customer']}/invoices"
    metronome_answers(f"{path}/{old['id']}", lambda w, s: {"data": old})(world, start)
    invoices_answer(lambda w, s: invoice(w, s, id="inv-reissued-without-lineage", total=10500))(world, start)


def metadata_has(**expected: object) -> Check:
    def check(world: World, key: str, played: Played) -> None:
        meta = played.metadata("metronome_invoice_snapshots")
        assert {k: meta.get(k) for k in expected} == expected
    return check


def non_usd_named(world: World, key: str, played: Played) -> None:
    meta = played.metadata("metronome_invoice_snapshots")
    assert meta["skipped_non_usd"] == 1
    assert f"customer {world.extra['customer']}: AI credits ({AI_CREDITS['id']})" in meta["skipped_non_usd_details"]


def high_water_kept(world: World, key: str, played: Played) -> None:
    rows = world.query("SELECT observed_cents, high_water_cents, increase_cents FROM invoice_high_water "
                       "WHERE customer_id = ? AND window_start = ?", [world.extra["customer"], start_of(key)])
    assert rows == [(Decimal(8000), Decimal(10000), Decimal(0))]


AMOUNT_CASES: dict[str, Case] = {  # sent: usage_fee units (dollars × 100); every invoice stood at $100 before
    "invoice_void": Case(invoices_answer(lambda w, s: invoice(w, s, status="VOID")),
                         check=metadata_has(**{"skipped:void": 1})),
    "invoice_non_usd_credit_type": Case(
        invoices_answer(lambda w, s: invoice(w, s),
                        lambda w, s: invoice(w, s, id="inv-ai-credits", credit_type=AI_CREDITS, total=999_999)),
        check=non_usd_named),
    "invoice_total_decreases": Case(invoices_answer(lambda w, s: invoice(w, s, total=8000)), check=high_water_kept),
    "invoice_id_changes": Case(id_change, sent=Decimal(500)),  # $5 above the period's $100, not $105 again
    "invoice_total_missing": Case(
        invoices_answer(lambda w, s: {k: v for k, v in invoice(w, s).items() if k != "total"}),
        fails=("Metronome GET /v1/customers/{customer}/invoices -> 200: response does not match the expected shape: "
               "data.0.total: Field required",)),
}
AMOUNT_KEYS = hourly_keys(utc(2026, 11, 22), list(AMOUNT_CASES))


@pytest.fixture(scope="module")
def amount_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """amount_hourly, AWS ``metronome`` → ``usage_fee`` × 100; one customer per case, each with a November
    USAGE invoice at $100 since the 20th, reported in the baseline window."""
    with Sandbox(customers=0, now=NOW) as sandbox, pytest.MonkeyPatch.context() as monkeypatch:
        pipeline = Pipeline(sandbox, tmp_path_factory.mktemp("bad_invoices"), monkeypatch)
        pipeline.settings.update(billing_mode="amount_hourly", http=HTTP, dimension_conversion={
            "AWS": {"metronome": [{"dimension_key": "usage_fee", "mapping_mode": "QUANTITY", "multiplier": 100}]}})
        world = World(sandbox, pipeline, "", "", copy.deepcopy(pipeline.settings))
        for name in AMOUNT_CASES:
            customer = sandbox.metronome.add_customer(name)["id"]
            buyer = sandbox.suger.add_buyer(name, partner="AWS", metronome_customer_id=customer)["id"]
            entitlement = sandbox.suger.add_entitlement(buyer, partner="AWS", dimensions=AWS_DIMS)["id"]
            invoice_id = sandbox.metronome.add_invoice(customer, period_start=NOV, period_end=DEC)["id"]
            sandbox.metronome.set_invoice_total(invoice_id, 10000, effective_at=utc(2026, 11, 20))
            world.per_case[name] = {"customer": customer, "entitlement": entitlement, "invoice": invoice_id}
        played = world.play("2026-11-22-00:00")
        assert played.result.success, played.failure
        assert sorted(g["entitlementID"] for g in played.held) == sorted(c["entitlement"] for c in world.per_case.values())
        assert all(g["records"] == {"usage_fee": Decimal(10000)} for g in played.held)
        yield world


@pytest.mark.parametrize("name", [pytest.param(name, id=name) for name in AMOUNT_CASES])
def test_bad_invoices(amount_world: World, name: str) -> None:
    case, key, world = AMOUNT_CASES[name], AMOUNT_KEYS[name], amount_world
    world.reset()
    world.extra.update(world.per_case[name])
    case.arrange(world, start_of(key))
    played = world.play(key)
    played.ended_as(case.fails, lambda fragment: world.text(fragment, key))
    expected = [] if case.sent is None else [(world.extra["entitlement"], {"usage_fee": case.sent})]
    assert [(g["entitlementID"], g["records"]) for g in played.held] == expected  # no other customer either
    if case.check:
        case.check(world, key, played)
