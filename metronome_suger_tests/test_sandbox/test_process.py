"""Emulators in their own processes (sandbox/process.py): ready line, clients over real HTTP, request
counters by route template, injected latency, the clock, and no process left behind."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from metronome_suger.clients.metronome import MetronomeClient
from metronome_suger.clients.suger import SugerClient
from metronome_suger.clients.suger_models import NewUsageRecordGroup
from metronome_suger.sandbox.bench_world import (
    NOW,
    WINDOW_START,
    customer_id,
    metric_id,
    metric_names,
    usage_generator,
)
from metronome_suger.sandbox.process import ProcessSandbox, emulator_processes, route_template

LATENCY = 0.15  # seconds; every test request pays it once
CUSTOMERS, METRICS = 5, 2
DAY = WINDOW_START.replace(hour=0)


@pytest.fixture(scope="module")
def procs() -> Iterator[ProcessSandbox]:
    with emulator_processes(customers=CUSTOMERS, metrics=METRICS, latency=LATENCY, now=NOW) as sb:
        yield sb


@pytest.fixture
def sb(procs: ProcessSandbox) -> Iterator[ProcessSandbox]:
    procs.set_clock(NOW)
    procs.reset_stats()
    yield procs
    procs.set_clock(NOW)


def metronome(sb: ProcessSandbox) -> MetronomeClient:
    return MetronomeClient(sb.metronome_url, sb.env()["METRONOME_API_TOKEN"])


def suger(sb: ProcessSandbox) -> SugerClient:
    return SugerClient(sb.suger_url, sb.org_id, sb.env()["SUGER_API_KEY"])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_ready_line_names_each_child(procs: ProcessSandbox) -> None:
    assert procs.metronome_url.startswith("http://127.0.0.1:")
    assert procs.suger_url.startswith("http://127.0.0.1:")
    assert procs.metronome_url != procs.suger_url
    assert set(procs.pids) == {"metronome", "suger"}
    for name, pid in procs.pids.items():
        assert pid != os.getpid() and alive(pid)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"metronome_suger.sandbox.process" in cmdline
        assert cmdline[cmdline.index(b"--emulator") + 1] == name.encode()


def test_clients_read_the_bench_world(sb: ProcessSandbox) -> None:
    with metronome(sb) as client:
        customers = client.list_customers()
        assert [c.id for c in customers] == [customer_id(p) for p in range(CUSTOMERS)]
        rows = client.list_usage(starting_on=WINDOW_START, ending_before=WINDOW_START + timedelta(hours=1),
                                 customer_ids=[customer_id(3)])
    names = metric_names(METRICS)
    assert [(r.billable_metric_id, r.billable_metric_name) for r in rows] == [
        (metric_id(n), n) for n in names]
    assert [r.value for r in rows] == [usage_generator(3, i)(WINDOW_START) for i in range(METRICS)]
    with suger(sb) as client:
        entitlements = client.list_entitlements()
    assert [(e.id, e.partner) for e in entitlements] == [
        (f"ent-{p}", ("AWS", "AZURE", "GCP")[p % 3]) for p in range(CUSTOMERS)]


def test_stats_count_by_route_template_and_reset(sb: ProcessSandbox) -> None:
    assert sb.stats("metronome")["total"] == 0  # admin calls are not counted
    with metronome(sb) as client:
        for position in (0, 1):
            assert client.list_invoices(customer_id(position)) == []
    with suger(sb) as client:
        client.list_entitlements(buyer_id="buyer-2")
    unauthorized = httpx.get(f"{sb.metronome_url}/v1/customers", timeout=10)
    assert unauthorized.status_code == 401

    stats = sb.stats("metronome")
    assert stats["requests"] == {"GET /v1/customers/{id}/invoices": 2, "GET /v1/customers": 1}
    assert stats["total"] == 3
    assert stats["cpu_seconds"] > 0 and stats["rss_peak_bytes"] > 0
    assert sb.stats("suger")["requests"] == {"GET /org/{org}/entitlement": 1}

    sb.reset_stats()
    for name in ("metronome", "suger"):
        assert sb.stats(name)["requests"] == {} and sb.stats(name)["total"] == 0


def test_route_templates_name_parameters_org_or_id() -> None:
    assert route_template("/org/{orgId}/entitlement/{entitlementId}/usageRecordGroup") == (
        "/org/{org}/entitlement/{id}/usageRecordGroup")
    assert route_template("/v1/customers/{customer_id}/invoices/{invoice_id}") == (
        "/v1/customers/{id}/invoices/{id}")


def test_latency_delays_every_request(sb: ProcessSandbox) -> None:
    with metronome(sb) as client:
        client.get_customer(customer_id(0))  # the connection is open: only the latency is left
        started = time.monotonic()
        client.get_customer(customer_id(1))
        elapsed = time.monotonic() - started
    assert elapsed >= LATENCY
    assert sb.stats("metronome")["latency"] == LATENCY


def test_set_clock_moves_both_emulators(sb: ProcessSandbox) -> None:
    later = NOW + timedelta(hours=1)
    open_hour = NOW.replace(minute=0)  # 14:00-15:00 has not closed at NOW (14:05)

    def value() -> Decimal | None:
        with metronome(sb) as client:
            rows = client.list_usage(starting_on=open_hour, ending_before=open_hour + timedelta(hours=1),
                                     customer_ids=[customer_id(0)])
        return rows[0].value

    group = NewUsageRecordGroup(id=f"clock-{time.time_ns()}", organizationID=sb.org_id,
                                entitlementID="ent-0", records={"cpu_hour": Decimal(2)},
                                timestamp=open_hour)
    with suger(sb) as client:
        assert client.report_usage_record_group(group).outcome == "created"
    assert value() == 0
    sb.set_clock(later)
    assert value() == usage_generator(0, 0)(open_hour) != 0
    assert {sb.stats(name)["now"] for name in ("metronome", "suger")} == {"2026-11-25T15:05:00Z"}
    # Suger's hourly job has run for the new hour: the group went to AWS (within its 6 hours).
    sb.reset_stats()
    with suger(sb) as client:
        statuses = {g.id: g.status for g in client.list_usage_record_groups(entitlement_id="ent-0")}
    assert statuses[group.id] == "REPORTED"


def emulator_children() -> set[int]:
    """Pids of this process's emulator children, from /proc (zombies included: not yet reaped)."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and b"sandbox.process" in cmdline:
            found.add(int(entry.name))
    return found


def test_leaving_the_context_stops_both_children() -> None:
    before = emulator_children()
    with emulator_processes(world="scenario", customers=6, seed=7, now=NOW) as sb:
        pids = dict(sb.pids)
        assert emulator_children() == before | set(pids.values())
        with metronome(sb) as client:
            assert len(client.list_customers()) == 6
    assert not any(alive(pid) for pid in pids.values())
    assert emulator_children() == before


def test_an_error_inside_or_at_startup_leaves_no_child() -> None:
    before = emulator_children()
    with pytest.raises(KeyError):
        with emulator_processes(customers=1, now=NOW) as sb:
            pids = dict(sb.pids)
            raise KeyError("boom")
    assert not any(alive(pid) for pid in pids.values())

    with pytest.raises(RuntimeError, match=r"(?s)exited .* before it was ready.*--mode: invalid choice"):
        with emulator_processes(customers=1, mode="bogus", now=NOW):
            pass  # pragma: no cover - never reached
    assert emulator_children() == before
