"""The fault matrix: a 48-window backfill while both emulators fail a seeded 20 % of requests (429 with and
without Retry-After, 500, 502, 503, read timeouts, connections dropped before and after the work, malformed
JSON, slow answers; Metronome's listings also answer an empty page with a cursor before each page of data).
Every window ends exact after retries and re-runs: 0 lost, 0 duplicate. A fault that persists fails the run
naming the call, leaves the ledger consistent, and a later run completes the window."""

from collections import Counter
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

from metronome_suger.core.windows import window_at
from metronome_suger.sandbox.server import Sandbox
from metronome_suger_tests.conftest import AWS_DIMS, GCP_DIMS, HOUR, Pipeline, failure_text, sent_groups
from metronome_suger_tests.figures import record

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

WINDOWS = 48
FIRST = datetime(2026, 11, 23, 14, tzinfo=timezone.utc)
RATE = 0.2
MAX_RUNS = 10  # per window; with 20 % faults and 4 tries per call a window needs 1-3
HTTP = {"timeout_seconds": 0.5, "max_attempts": 4, "initial_wait_seconds": 0.01, "max_wait_seconds": 0.05,
        "max_total_seconds": 5}
CUSTOMERS = (("Ann", "AWS", AWS_DIMS), ("Ben", "AWS", AWS_DIMS), ("Cid", "GCP", GCP_DIMS))


def usage(customer: int, hour: int) -> tuple[Decimal, Decimal]:
    """cpu_hours and api_calls of customer ``customer`` in hour ``hour`` of the backfill (never zero)."""
    return Decimal(1 + (customer * 7 + hour) % 5), Decimal(100 * (1 + (customer + hour) % 3))


def world(sb: Sandbox) -> list[str]:
    cpu = sb.metronome.add_billable_metric("cpu_hours")["id"]
    api = sb.metronome.add_billable_metric("api_calls")["id"]
    ents = []
    for i, (name, partner, dims) in enumerate(CUSTOMERS):
        customer = sb.metronome.add_customer(name)["id"]
        buyer = sb.suger.add_buyer(name, partner=partner, metronome_customer_id=customer)["id"]
        ents.append(sb.suger.add_entitlement(buyer, partner=partner, dimensions=dims)["id"])
        for hour in range(WINDOWS):
            cpu_qty, api_qty = usage(i, hour)
            sb.metronome.set_usage(customer, cpu, FIRST + hour * HOUR, cpu_qty)
            sb.metronome.set_usage(customer, api, FIRST + hour * HOUR, api_qty)
    return ents


def expected(ents: list[str]) -> dict[tuple[str, str], dict[str, Decimal]]:
    """(entitlement, timestamp) → the records Suger must hold, from the conftest conversion config."""
    out = {}
    for i, ent in enumerate(ents):
        for hour in range(WINDOWS):
            cpu_qty, api_qty = usage(i, hour)
            ts = f"{FIRST + hour * HOUR:%Y-%m-%dT%H:%M:%SZ}"
            aws = CUSTOMERS[i][1] == "AWS"
            out[ent, ts] = ({"cpu_hour": cpu_qty, "api_request": api_qty * Decimal("0.001")} if aws
                            else {"vcpu_hours": cpu_qty * 2, "requests": api_qty})
    return out


def held(sb: Sandbox) -> tuple[dict[tuple[str, str], dict[str, Decimal]], int]:
    """What Suger holds per (entitlement, timestamp), and how many (entitlement, hour)s it holds twice."""
    groups = sent_groups(sb)
    keys = Counter((g["entitlementID"], g["metaInfo"]["timestamp"]) for g in groups)
    return ({(g["entitlementID"], g["metaInfo"]["timestamp"]): g["records"] for g in groups},
            sum(n - 1 for n in keys.values()))


def fault_free(pipeline: Pipeline) -> None:
    pipeline.settings["http"] = HTTP


def test_a_48_window_backfill_under_20_percent_faults_ends_exact(sandbox: Sandbox, pipeline: Pipeline) -> None:
    ents = world(sandbox)
    fault_free(pipeline)
    for seed, faults in enumerate((sandbox.metronome_faults, sandbox.suger_faults)):
        faults.chaos(RATE, seed=seed, timeout_seconds=HTTP["timeout_seconds"] + 0.3)
    sandbox.metronome_faults.empty_pages = True
    runs, failed = 0, 0
    for hour in range(WINDOWS):
        key = window_at(FIRST + hour * HOUR, True).partition_key
        for _ in range(MAX_RUNS):
            result = pipeline.run(key)
            runs += 1
            if result.success:
                break
            failed += 1
        else:
            pytest.fail(f"window {key} still failing after {MAX_RUNS} runs: {failure_text(result)[-2000:]}")
    for faults in (sandbox.metronome_faults, sandbox.suger_faults):
        faults.calm()
    want = expected(ents)
    got, duplicates = held(sandbox)
    lost = len(set(want) - set(got))
    injected: Counter[str] = sandbox.metronome_faults.fired + sandbox.suger_faults.fired
    record("fault_matrix", windows=WINDOWS, runs=runs, failed_runs=failed, faults=sum(injected.values()),
           duplicates=duplicates, lost=lost)
    print(f"\n{pipeline.backend}: {WINDOWS} windows, {runs} runs ({failed} failed and re-run), "
          f"faults injected {dict(sorted(injected.items()))}")
    assert duplicates == 0 and lost == 0
    assert got == want  # every group exact, nothing extra
    assert pipeline.query("SELECT status, count(*) FROM report_ledger GROUP BY 1") == [("sent", len(want))]
    assert pipeline.query("SELECT count(*) FROM window_claims WHERE holder IS NOT NULL") == [(0,)]
    # Every kind of fault was met, on both sides, and some runs needed a re-run: the matrix was exercised.
    assert set(sandbox.suger_faults.fired) >= {"429", "500", "drop_after", "timeout", "malformed"}
    assert len(sandbox.metronome_faults.fired) >= 8 and failed > 0


SUGER_POST = "/org/{org}/entitlement/"  # POST .../entitlement/{id}/usageRecordGroup


@pytest.mark.parametrize("fault", [{"kind": "5xx", "status": 503}, {"kind": "drop"}, {"kind": "latency"}],
                         ids=["503", "dropped", "read-timeout"])
def test_a_persistent_fault_fails_the_run_naming_the_call_and_a_later_run_completes(
    sandbox: Sandbox, pipeline: Pipeline, fault: dict[str, Any]
) -> None:
    ents = world(sandbox)
    fault_free(pipeline)
    key = window_at(FIRST + (WINDOWS - 1) * HOUR, True).partition_key
    path = SUGER_POST.format(org=sandbox.org_id)
    delay = {"delay_seconds": HTTP["timeout_seconds"] + 0.3} if fault["kind"] == "latency" else {}
    sandbox.suger_faults.inject(fault["kind"], status=fault.get("status"), times=1000, method="POST",
                                path_prefix=path, **delay)
    result = pipeline.run(key)
    assert not result.success
    text = failure_text(result)
    assert f"POST {path}" in text, text[-2000:]
    assert pipeline.query("SELECT status, count(*) FROM report_ledger GROUP BY 1") == [("pending", 3)]
    sandbox.suger_faults.clear()
    result = pipeline.run(key)
    assert result.success, failure_text(result)
    got, duplicates = held(sandbox)
    want = {k: v for k, v in expected(ents).items() if k[1] == f"{FIRST + (WINDOWS - 1) * HOUR:%Y-%m-%dT%H:%M:%SZ}"}
    assert duplicates == 0 and got == want
    assert pipeline.query("SELECT status, count(*) FROM report_ledger GROUP BY 1") == [("sent", 3)]
    record("fault_matrix", persistent_faults=1)
