"""The seeded scenario, the bundled sandbox.yaml and the `Sandbox` harness itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from importlib import resources
from typing import Any

import httpx
import pytest
import yaml

from metronome_suger.sandbox.clock import SandboxClock
from metronome_suger.sandbox.constants import METRONOME_TOKEN, ORG_ID, SUGER_API_KEY
from metronome_suger.sandbox.metronome_state import MetronomeState
from metronome_suger.sandbox.scenario import ScenarioInfo, build_scenario
from metronome_suger.sandbox.server import Sandbox
from metronome_suger.sandbox.suger_state import SugerState
from metronome_suger_tests.test_sandbox.conftest import NOW

HOUR = timedelta(hours=1)


def build(
    seed: int, customers: int = 6, now: datetime = NOW
) -> tuple[MetronomeState, SugerState, ScenarioInfo]:
    clock = SandboxClock(now)
    metronome, suger = MetronomeState(clock, seed=seed), SugerState(ORG_ID, clock)
    return (
        metronome,
        suger,
        build_scenario(metronome, suger, seed=seed, customers=customers, now=now),
    )


def fingerprint(metronome: MetronomeState, suger: SugerState, info: ScenarioInfo) -> dict[str, Any]:
    hours = [info.data_start + k * 7 * HOUR for k in range(200)]
    return {
        "info": info,
        "usage": [
            metronome.usage_value(c, m, h)
            for c in info.customer_ids
            for m in info.metric_ids.values()
            for h in hours
        ],
        "invoices": {
            c: [(i["id"], i["total"], i["status"]) for i in metronome.invoices(c)]
            for c in info.customer_ids
        },
        "buyers": suger.buyers(),
        "entitlements": suger.entitlements(),
    }


def test_same_seed_gives_the_same_world_and_another_seed_a_different_one() -> None:
    first, second, other = fingerprint(*build(3)), fingerprint(*build(3)), fingerprint(*build(4))
    assert first == second
    assert set(first["info"].customer_ids).isdisjoint(other["info"].customer_ids)
    assert set(first["info"].metric_ids.values()).isdisjoint(other["info"].metric_ids.values())
    assert first["usage"] != other["usage"]
    ids = [
        *first["info"].customer_ids,
        *first["info"].metric_ids.values(),
        *(i for ids in first["info"].invoice_ids.values() for i in ids),
    ]
    assert len(ids) == len(set(ids))  # no id is reused across kinds


def test_zero_customers_is_an_empty_world() -> None:
    metronome, suger, info = build(1, customers=0)
    assert metronome.customers() == [] and metronome.metrics() == [] and suger.buyers() == []
    assert info.customer_ids == [] and info.roles == {}


def test_small_worlds_have_a_subset_of_roles() -> None:
    _, _, info = build(1, customers=2)
    assert set(info.roles) == {"aws", "credit", "null_usage", "multi_marketplace"}
    assert info.voided_invoice_id is None and info.unlinked_customer_ids == []


def test_metrics_and_usage_shape() -> None:
    metronome, _, info = build(5)
    by_name = {m["name"]: m for m in metronome.metrics()}
    assert {
        n: (m["aggregation_type"], m["archived_at"] is not None) for n, m in by_name.items()
    } == {
        "cpu_hours": ("SUM", False),
        "api_calls": ("COUNT", False),
        "peak_storage_gb": ("MAX", False),
        "legacy_jobs": ("SUM", True),
    }
    hours = [info.data_start + k * HOUR for k in range(int((NOW - info.data_start) / HOUR))]
    cpu = info.metric_ids["cpu_hours"]
    null_customer, other = info.role("null_usage"), info.role("void")
    null_values = [metronome.usage_value(null_customer, cpu, h) for h in hours]
    other_values = [metronome.usage_value(other, cpu, h) for h in hours]
    assert None in null_values and None not in other_values
    assert Decimal(0) in other_values
    first_week = sum(v for v in other_values[: 7 * 24] if v is not None)
    last_week = sum(v for v in other_values[-7 * 24 :] if v is not None)
    assert last_week > first_week  # usage grows over time
    assert info.data_start == datetime(2026, 10, 1, tzinfo=timezone.utc)


def test_suger_links_roles_and_dimensions() -> None:
    _, suger, info = build(5)
    buyers = suger.buyers()
    linked = {b["info"].get("metronomeCustomerId") for b in buyers} - {None}
    assert linked == set(info.linked_customer_ids)
    assert (
        info.unlinked_customer_ids == [info.role("unlinked")]
        and info.role("unlinked") not in linked
    )
    multi = [
        b for b in buyers if b["info"].get("metronomeCustomerId") == info.role("multi_marketplace")
    ]
    assert sorted(b["partner"] for b in multi) == ["AWS", "GCP"]
    for buyer in multi:
        assert [e["status"] for e in suger.entitlements(buyerID=buyer["id"])] == ["ACTIVE"]
    entitlements = suger.entitlements()
    assert {e["partner"] for e in entitlements} == {"AWS", "AZURE", "GCP"}
    inactive = suger.get_entitlement(str(info.inactive_entitlement_id))
    assert inactive["status"] == "CANCELLED"
    assert info.renewal_at is not None and info.data_start < info.renewal_at < NOW
    terms = suger.entitlement_terms(str(info.renewal_entitlement_id))
    assert len(terms) == 2 and terms[1]["startTime"] == info.renewal_at.strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def test_invoice_cases_exist() -> None:
    metronome, _, info = build(5)
    for customer in info.customer_ids:
        usd_usage = [
            i
            for i in metronome.invoices(customer)
            if i["type"] == "USAGE" and i["credit_type"]["name"] == "USD (cents)"
        ]
        periods = {i["start_timestamp"] for i in usd_usage}
        assert {"2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z"} <= periods
    voided = metronome.get_invoice(str(info.voided_invoice_id))
    assert voided is not None and voided["status"] == "VOID"
    assert (
        info.void_at == NOW.replace(minute=0) - 2 * HOUR
        and info.credit_at == NOW.replace(minute=0) - 3 * HOUR
    )
    scheduled = metronome.get_invoice(str(info.scheduled_invoice_id))
    assert scheduled is not None and scheduled["type"] == "SCHEDULED"


def sandbox_config() -> dict[str, Any]:
    text = resources.files("metronome_suger.sandbox").joinpath("sandbox.yaml").read_text()
    config: dict[str, Any] = yaml.safe_load(text)
    return config


def test_sandbox_yaml_follows_the_contract_and_matches_the_scenario() -> None:
    config = sandbox_config()
    assert set(config) == {
        "metronome",
        "suger",
        "billing_mode",
        "auto_report",
        "start",
        "settle_minutes",
        "billable_metric_whitelist",
        "dimension_conversion",
        "customer_links",
        "invoice_change_policy",
        "marketplace_deadline_hours",
        "storage",
    }
    assert config["metronome"] == {
        "base_url": "http://127.0.0.1:8701",
        "api_token_env": "METRONOME_API_TOKEN",
    }
    assert config["suger"] == {
        "base_url": "http://127.0.0.1:8702",
        "org_id": ORG_ID,
        "api_key_env": "SUGER_API_KEY",
    }
    assert (config["billing_mode"], config["start"], config["storage"]) == (
        "quantity",
        "2026-11-01T00:00:00Z",
        {"duckdb_path": "data/metronome_suger.duckdb"},
    )
    _, suger, info = build(0)
    active_metrics = set(info.metric_ids) - set(info.archived_metric_names)
    for partner in ("AWS", "AZURE", "GCP"):
        mapping = config["dimension_conversion"][partner]
        assert set(mapping) == active_metrics | {"metronome"}
        keys_on_entitlements = [
            {d["key"] for d in e["info"]["dimensions"]}
            for e in suger.entitlements()
            if e["partner"] == partner
        ]
        assert keys_on_entitlements
        for targets in mapping.values():
            for target in targets:
                assert set(target) == {"dimension_key", "mapping_mode", "multiplier"}
                assert all(target["dimension_key"] in keys for keys in keys_on_entitlements)
    modes = {
        p: m["metronome"][0]["mapping_mode"] for p, m in config["dimension_conversion"].items()
    }
    assert modes == {"AWS": "QUANTITY", "AZURE": "AMOUNT", "GCP": "QUANTITY"}
    assert config["dimension_conversion"]["AWS"]["metronome"][0]["multiplier"] == 100


def test_two_sandboxes_run_at_once_and_stop_cleanly() -> None:
    with Sandbox(seed=1, customers=1, now=NOW) as one, Sandbox(seed=2, customers=1, now=NOW) as two:
        urls = {one.metronome_url, one.suger_url, two.metronome_url, two.suger_url}
        assert len(urls) == 4 and all(u.startswith("http://127.0.0.1:") for u in urls)
        assert one.env() == {"METRONOME_API_TOKEN": METRONOME_TOKEN, "SUGER_API_KEY": SUGER_API_KEY}
        headers = {"Authorization": f"Bearer {METRONOME_TOKEN}"}
        first = httpx.get(f"{one.metronome_url}/v1/customers", headers=headers).json()["data"]
        second = httpx.get(f"{two.metronome_url}/v1/customers", headers=headers).json()["data"]
        assert first[0]["id"] == one.scenario.customer_ids[0] != second[0]["id"]
        stopped_url = one.metronome_url
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{stopped_url}/v1/customers", headers=headers)


def test_real_time_clock_when_now_is_not_given() -> None:
    sandbox = Sandbox(customers=1)
    assert not sandbox.clock.frozen
    assert abs(sandbox.clock.now() - datetime.now(timezone.utc)) < timedelta(seconds=5)
    sandbox.clock.advance(timedelta(hours=2))
    assert sandbox.clock.now() - datetime.now(timezone.utc) > timedelta(hours=1, minutes=59)


def test_serve_forever_prints_the_environment_and_stops_on_ctrl_c() -> None:
    code = (
        "from metronome_suger.sandbox.server import serve_forever; "
        "serve_forever(metronome_port=0, suger_port=0, customers=1)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env={**os.environ}
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        for line in process.stdout:
            lines.append(line.strip())
            if line.startswith("Press Ctrl-C"):
                break
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert f"org id: {ORG_ID}" in lines
    assert f"export METRONOME_API_TOKEN={METRONOME_TOKEN}" in lines
    assert f"export SUGER_API_KEY={SUGER_API_KEY}" in lines
    assert any(line.startswith("Metronome emulator: http://127.0.0.1:") for line in lines)
