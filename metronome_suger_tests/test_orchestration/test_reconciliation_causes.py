"""Three-way reconciliation, one cause at a time (issue 13): real runs of the windows, the Suger emulator's
hourly forwarder with its fault hooks, then ``suger_usage_record_reports`` and ``marketplace_reconciliation``
for the day at a chosen clock time, with exact figures per line and the check's verdict and metadata.

The check fails only on units *unexplained* or on a *missing report* past the grace; refused and expired
groups are lost dollars, named, and the check passes. Every scenario runs after its last pipeline run: no
status poll follows the forwarder's verdict (a poll would retry a REPORT_FAILED group or reject an INVALID one)."""

from datetime import datetime, timedelta
from decimal import Decimal

import dagster as dg

from metronome_suger.core.reconciliation import REPORT_GRACE, Reconciliation
from metronome_suger.sandbox.server import Sandbox
from metronome_suger.sandbox.suger_forwarder import INJECTED_FAILURE
from metronome_suger.storage.db import connect
from metronome_suger.storage.reconciliation import reconcile
from metronome_suger_tests.conftest import Pipeline, failure_text
from metronome_suger_tests.test_orchestration.test_reconciliation import (
    DAY,
    at,
    check,
    figures,
    key,
    lines,
    world,
)


def reconciliation(pipeline: Pipeline, now: datetime, grace: timedelta = REPORT_GRACE) -> Reconciliation:
    with connect(pipeline.database(), read_only=True) as conn:
        return reconcile(conn, datetime.fromisoformat(DAY).date(), now, grace=grace)


def reconciled(pipeline: Pipeline, now: datetime) -> dg.AssetCheckEvaluation:
    """The reports asset and its check for DAY as of ``now``; the run itself succeeds whatever the verdict."""
    result = pipeline.reconcile(DAY, at=now)
    assert result.success, failure_text(result)
    return check(result)


def meta(evaluation: dg.AssetCheckEvaluation, *names: str) -> dict[str, object]:
    return {name: evaluation.metadata[name].value for name in names}


def test_expired_and_failed_groups_are_lost_dollars_not_problems(sandbox: Sandbox, pipeline: Pipeline) -> None:
    """Hour 5 (1 cpu hour) is billed; hour 0 (1) is run at 07:05, past AWS's 6 h: expired, never sent; hour 6
    (2) is refused by the marketplace (fail_next_report) at the forwarder's 08:00 run. Lost: 3 × $0.12."""
    ents = world(sandbox, {"AWS": [(0, "1"), (5, "1"), (6, "2")]})
    for partition, when in ((key(5), at(6, 5)), (key(0), at(7, 5))):
        result = pipeline.run(partition, at=when)
        assert result.success, failure_text(result)
    # After the 07:05 run: the forwarder's 07:00 run (billing hour 5) has happened, 08:00 is the next.
    sandbox.suger.fail_next_report(ents["AWS"])
    result = pipeline.run(key(6), at=at(7, 10))
    assert result.success, failure_text(result)

    evaluation = reconciled(pipeline, at(9))

    reports = sandbox.suger.usage_record_reports()
    assert [r["info"]["status"] for r in reports] == ["SUCCESS", "FAILED"]
    failed = reports[1]
    assert failed["info"]["message"] == INJECTED_FAILURE
    ledger = {w.hour: (status, sent) for w, status, sent in
              pipeline.query("SELECT window_start, status, sent_at FROM report_ledger")}
    assert ledger[0] == ("expired", None)  # never handed over
    assert ledger[6][0] == "sent"
    [line] = lines(pipeline, at(9)).values()
    assert figures(line) == {"converted": Decimal(4), "sent": Decimal(3), "told": Decimal(1),
                             "failed": Decimal(2), "expired": Decimal(1)}
    assert line.unexplained == 0
    assert line.unit_price == Decimal("0.12")
    assert line.billed_dollars == Decimal("0.12")
    assert line.lost_dollars == Decimal("0.36")  # failed 2 × 0.12 + expired 1 × 0.12
    assert line.dollars(line.cause("expired")) == Decimal("0.12")
    assert line.dollars(line.cause("failed")) == Decimal("0.24")
    assert line.notes == [f"report {failed['id']} FAILED: {INJECTED_FAILURE}"]

    assert evaluation.passed, evaluation.description
    assert meta(evaluation, "lost_dollars", "lost", "billed_dollars", "billed", "unexplained_units",
                "units:missing_report", "units:failed", "units:expired", "units:in_flight", "reports",
                "problem_lines") == {
        "lost_dollars": 0.36, "lost": "$0.36", "billed_dollars": 0.12, "billed": "$0.12",
        "unexplained_units": 0.0, "units:missing_report": 0.0, "units:failed": 2.0, "units:expired": 1.0,
        "units:in_flight": 0.0, "reports": 2, "problem_lines": 0}
    assert evaluation.description == "1 line(s) reconciled: told 1 units, $0.12 billed, $0.36 lost"
    assert INJECTED_FAILURE in str(evaluation.metadata["lines"].value)


def test_suger_metronome_integration_in_our_report_is_named_not_unexplained(
        sandbox: Sandbox, pipeline: Pipeline) -> None:
    """Suger's own Metronome integration stores 3 cpu hours for the same hour before the forwarder runs: the
    hourly report tells the marketplace our 2 plus its 3."""
    ents = world(sandbox, {"AWS": [(0, "2")]})
    result = pipeline.run(key(0))  # 01:05: queued for the forwarder's 02:00 run
    assert result.success, failure_text(result)
    theirs = sandbox.suger.add_foreign_group(ents["AWS"], {"cpu_hour": 3}, source="METRONOME", timestamp=at(0, 30))

    evaluation = reconciled(pipeline, at(3))

    [report] = sandbox.suger.usage_record_reports()
    assert report["info"]["status"] == "SUCCESS"
    assert theirs["id"] in report["info"]["usageRecordGroupIds"]
    assert report["info"]["reportedRecords"] == {"cpu_hour": 5}
    [line] = lines(pipeline, at(3)).values()
    assert figures(line) == {"converted": Decimal(2), "sent": Decimal(2), "told": Decimal(5),
                             "suger_integration": Decimal(3)}
    assert line.billed == Decimal(2)
    assert line.unexplained == 0
    assert line.billed_dollars == Decimal("0.60")  # told 5 × 0.12: what the marketplace bills
    assert line.notes == []
    assert reconciliation(pipeline, at(3)).foreign_groups == []  # the integration's group is known, not foreign

    assert evaluation.passed, evaluation.description
    assert meta(evaluation, "units:suger_integration", "unexplained_units", "foreign_groups", "billed_dollars",
                "problem_lines") == {
        "units:suger_integration": 3.0, "unexplained_units": 0.0, "foreign_groups": 0, "billed_dollars": 0.6,
        "problem_lines": 0}


def test_a_group_from_another_source_is_foreign_and_unexplained(sandbox: Sandbox, pipeline: Pipeline) -> None:
    """A group sent through Suger's API by someone else (source API) lands in our entitlement's hourly report:
    its id is foreign (never counted as ours), its 4 units unexplained, and the check names the line."""
    ents = world(sandbox, {"AWS": [(0, "2")]})
    result = pipeline.run(key(0))
    assert result.success, failure_text(result)
    stranger = sandbox.suger.add_foreign_group(ents["AWS"], {"cpu_hour": 4}, source="API", timestamp=at(0, 30))

    evaluation = reconciled(pipeline, at(3))

    [report] = sandbox.suger.usage_record_reports()
    assert report["info"]["reportedRecords"] == {"cpu_hour": 6}
    found = reconciliation(pipeline, at(3))
    assert found.foreign_groups == [stranger["id"]]
    assert pipeline.query("SELECT count(*) FROM report_ledger WHERE record_group_id = ?", [stranger["id"]]) == [(0,)]
    [line] = found.lines
    assert figures(line) == {"converted": Decimal(2), "sent": Decimal(2), "told": Decimal(6),
                             "unexplained": Decimal(4)}
    assert line.billed == Decimal(2)
    assert line.problem_units == Decimal(4)
    assert line.billed_dollars == Decimal("0.72")
    assert line.notes == [f"report {report['id']} (SUCCESS) told the marketplace 6 but its groups sum 2"]
    assert found.problems == [line]

    assert not evaluation.passed
    description = evaluation.description or ""
    assert description.startswith("1 line(s) with missing_report or unexplained: ")
    assert (f"{ents['AWS']} AWS cpu_hour: converted 2, sent 2, told 6 ($0.72); differences: unexplained 4"
            in description)
    assert meta(evaluation, "unexplained_units", "foreign_groups", "problem_lines", "units:missing_report") == {
        "unexplained_units": 4.0, "foreign_groups": 1, "problem_lines": 1, "units:missing_report": 0.0}


def test_a_report_that_never_arrives_is_in_flight_within_the_grace_then_missing(
        sandbox: Sandbox, pipeline: Pipeline) -> None:
    """Suger accepts the group (200) and marks it INVALID at its next run: no report ever names it. Handed over
    at 01:05: in flight at 02:05, a missing report at 08:05 (grace 6 h), in flight again with a 12 h grace."""
    ents = world(sandbox, {"AWS": [(0, "2")]})
    sandbox.suger.forwarder.invalidate_next(ents["AWS"], "Suger found the group invalid after accepting it")
    result = pipeline.run(key(0))  # 01:05
    assert result.success, failure_text(result)
    [(sent_at,)] = pipeline.query("SELECT sent_at FROM report_ledger")
    assert sent_at == at(1, 5)

    within = reconciled(pipeline, at(2, 5))  # 1 h after the handover
    assert [g["status"] for g in sandbox.suger.groups()] == ["INVALID"]
    assert sandbox.suger.usage_record_reports() == []
    [line] = lines(pipeline, at(2, 5)).values()
    assert figures(line) == {"converted": Decimal(2), "sent": Decimal(2), "told": Decimal(0),
                             "in_flight": Decimal(2)}
    assert within.passed, within.description
    assert meta(within, "units:in_flight", "units:missing_report", "reports", "problem_lines") == {
        "units:in_flight": 2.0, "units:missing_report": 0.0, "reports": 0, "problem_lines": 0}

    past = reconciled(pipeline, at(8, 5))  # 7 h after
    [line] = lines(pipeline, at(8, 5)).values()
    assert figures(line) == {"converted": Decimal(2), "sent": Decimal(2), "told": Decimal(0),
                             "missing_report": Decimal(2)}
    assert line.problem_units == Decimal(2)
    assert not past.passed
    assert past.description == (f"1 line(s) with missing_report or unexplained: {ents['AWS']} AWS cpu_hour: "
                                "converted 2, sent 2, told 0 ($0.00); differences: missing_report 2")
    assert meta(past, "units:in_flight", "units:missing_report", "unexplained_units", "problem_lines") == {
        "units:in_flight": 0.0, "units:missing_report": 2.0, "unexplained_units": 0.0, "problem_lines": 1}

    pipeline.settings["reconciliation_grace_hours"] = 12
    longer = reconciled(pipeline, at(8, 5))
    [line] = reconciliation(pipeline, at(8, 5), grace=timedelta(hours=12)).lines
    assert figures(line) == {"converted": Decimal(2), "sent": Decimal(2), "told": Decimal(0),
                             "in_flight": Decimal(2)}
    assert longer.passed, longer.description
    assert meta(longer, "units:in_flight", "units:missing_report", "problem_lines") == {
        "units:in_flight": 2.0, "units:missing_report": 0.0, "problem_lines": 0}


def test_a_day_without_reports_yet_is_all_in_flight(sandbox: Sandbox, pipeline: Pipeline) -> None:
    """Windows 0 and 1 handed over at 02:05 and 02:10, read at 02:30: the forwarder's first run (03:00) has
    not happened, Suger has no report of the day. Everything is in flight; no error."""
    world(sandbox, {"AWS": [(0, "1"), (1, "2")], "GCP": [(1, "1.5")]})
    for partition, when in ((key(0), at(2, 5)), (key(1), at(2, 10))):
        result = pipeline.run(partition, at=when)
        assert result.success, failure_text(result)

    evaluation = reconciled(pipeline, at(2, 30))

    assert sandbox.suger.usage_record_reports() == []
    assert {g["status"] for g in sandbox.suger.groups()} == {"CREATED"}
    found = lines(pipeline, at(2, 30))
    assert figures(found[("AWS", "cpu_hour")]) == {
        "converted": Decimal(3), "sent": Decimal(3), "told": Decimal(0), "in_flight": Decimal(3)}
    assert figures(found[("GCP", "vcpu_hours")]) == {  # 1.5 cpu hours × 2 vCPU
        "converted": Decimal(3), "sent": Decimal(3), "told": Decimal(0), "in_flight": Decimal(3)}
    assert all(line.billed_dollars == 0 and line.lost_dollars == 0 for line in found.values())
    assert reconciliation(pipeline, at(2, 30)).reports == 0

    assert evaluation.passed, evaluation.description
    assert evaluation.description == "2 line(s) reconciled: told 0 units, $0.00 billed, $0.00 lost"
    assert meta(evaluation, "reports", "units:in_flight", "billed_dollars", "lost_dollars", "unexplained_units",
                "units:missing_report", "problem_lines") == {
        "reports": 0, "units:in_flight": 6.0, "billed_dollars": 0.0, "lost_dollars": 0.0,
        "unexplained_units": 0.0, "units:missing_report": 0.0, "problem_lines": 0}


def test_a_report_held_in_flight_stays_in_flight_past_the_grace(sandbox: Sandbox, pipeline: Pipeline) -> None:
    """The marketplace call of the 02:00 report stays open (hold_next_report): its report exists, CREATED, so
    the group is in flight even 8 h after the handover, never a missing report. Released, it is billed."""
    ents = world(sandbox, {"AWS": [(0, "2")]})
    sandbox.suger.forwarder.hold_next_report(ents["AWS"])
    result = pipeline.run(key(0))  # 01:05
    assert result.success, failure_text(result)

    for when in (at(2, 5), at(9, 5)):  # 1 h, then 8 h after the handover
        evaluation = reconciled(pipeline, when)
        [report] = sandbox.suger.usage_record_reports()
        assert report["info"]["status"] == "CREATED"
        [line] = lines(pipeline, when).values()
        assert figures(line) == {"converted": Decimal(2), "sent": Decimal(2), "told": Decimal(0),
                                 "in_flight": Decimal(2)}, when
        assert evaluation.passed, evaluation.description
        assert meta(evaluation, "units:in_flight", "units:missing_report", "reports", "problem_lines") == {
            "units:in_flight": 2.0, "units:missing_report": 0.0, "reports": 1, "problem_lines": 0}
    assert pipeline.query("SELECT marketplace_status FROM report_ledger") == [("in_flight",)]

    sandbox.suger.forwarder.release(ents["AWS"])  # the marketplace answers at 09:05
    evaluation = reconciled(pipeline, at(9, 10))
    [line] = lines(pipeline, at(9, 10)).values()
    assert figures(line) == {"converted": Decimal(2), "sent": Decimal(2), "told": Decimal(2)}
    assert line.billed_dollars == Decimal("0.24")
    assert evaluation.passed, evaluation.description
    assert meta(evaluation, "units:in_flight", "billed_dollars") == {"units:in_flight": 0.0, "billed_dollars": 0.24}
    history = pipeline.query("SELECT status, observed_at FROM marketplace_report_history ORDER BY observed_at")
    assert history == [("CREATED", at(2, 5)), ("SUCCESS", at(9, 10))]
    assert pipeline.query("SELECT marketplace_status FROM report_ledger") == [("billed",)]
