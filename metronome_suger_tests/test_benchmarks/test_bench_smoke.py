"""`make bench` at a tiny size, through the Makefile as a user runs it: every figure is in its JSON, each step
made at least the requests its lower bound says, and no re-run sent anything. Timings are not asserted (the
machine is shared); the full-size run is `make bench` itself."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TINY = ("--customers 20 --metrics 3 --latency 0.001 --size-windows 2 --size-customers 10 --micro-rows 2000 "
        "--micro-repeat 1")
MODES = ("quantity", "amount_hourly", "amount_daily")
SOURCE = {"quantity": "metronome_usage", "amount_hourly": "metronome_invoice_snapshots",
          "amount_daily": "metronome_invoice_snapshots"}
READS = ("metronome_customers", "metronome_billable_metrics", "suger_entitlements")


def performance_section() -> str | None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- performance:start -->.*?<!-- performance:end -->", text, re.S)
    return found.group(0) if found else None


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, dict]:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    before = performance_section()
    # -o: the venv is the one running this test; never reinstall it from here. BIN: use this interpreter's.
    proc = subprocess.run(
        [make, "-C", str(ROOT), "-o", ".venv/.installed-stamp", "bench", f"BIN={Path(sys.executable).parent}",
         f"BENCH_ARGS={TINY} --json {out}"],
        env={k: v for k, v in os.environ.items() if k not in ("METRONOME_SUGER_CONFIG", "MAKEFLAGS")},
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert performance_section() == before, "the smoke run must not rewrite README.md"
    return proc, json.loads(out.read_text(encoding="utf-8"))


def test_every_mode_ran_twice_with_a_ratio_to_its_bound(bench: tuple[subprocess.CompletedProcess, dict]) -> None:
    _, out = bench
    assert set(out["modes"]) == set(MODES)
    for mode in MODES:
        res = out["modes"][mode]
        assert res["world"]["customers"] == 20 and res["notes"] == [], (mode, res["notes"])
        for label in ("first", "rerun"):
            run = res["runs"][label]
            assert run["success"], (mode, label, run["errors"])
            assert run["bound_s"] > 0 and run["ratio"] > 0 and run["wall_s"] > 0, (mode, label)
            assert run["cpu_s"]["bench"] > 0 and run["cpu_s"]["metronome"] > 0, (mode, label, run["cpu_s"])
            assert run["rss_peak_bytes"] > 0
            assert run["other"] == {}, (mode, label, run["other"])


def test_each_step_made_at_least_its_lower_bound(bench: tuple[subprocess.CompletedProcess, dict]) -> None:
    _, out = bench
    for mode in MODES:
        for label in ("first", "rerun"):
            steps = out["modes"][mode]["runs"][label]["steps"]
            for step in (*READS, SOURCE[mode]):
                assert steps[step]["lower_bound"] >= 1, (mode, label, step)
                assert steps[step]["requests"] >= steps[step]["lower_bound"], (mode, label, step, steps[step])
                assert steps[step]["seconds"] > 0 and steps[step]["ratio"] > 0, (mode, label, step)
        first = out["modes"][mode]["runs"]["first"]["steps"]["suger_usage_report"]
        assert first["lower_bound"] >= 1 and first["requests"] >= first["lower_bound"], (mode, first)


def test_no_rerun_sent_anything(bench: tuple[subprocess.CompletedProcess, dict]) -> None:
    proc, out = bench
    for mode in MODES:
        rerun = out["modes"][mode]["runs"]["rerun"]
        assert rerun["suger_sends"] == 0, (mode, rerun["routes"])
        assert rerun["steps"]["suger_usage_report"]["requests"] == 0
        assert rerun["steps"]["suger_usage_report"]["lower_bound"] == 0
    assert out["ok"] is True
    assert "EXACTLY-ONCE BROKEN" not in proc.stdout


def test_micro_size_and_the_figure_table(bench: tuple[subprocess.CompletedProcess, dict]) -> None:
    _, out = bench
    assert out["micro"]["conversion"]["ratio"] > 0 and out["micro"]["definitions"]["ratio"] > 0
    size = out["size"]
    assert size["windows"] == 2 and size["customers"] == 10 and size["failed_windows"] == []
    assert size["total_bytes"] > 0 and size["rows"]["report_ledger"] > 0
    assert len(size["bytes_after_each"]) == 2
    figures = {f["figure"]: f for f in out["figures"]}
    ratios = [f for f in figures.values() if f["ratio"] is not None]
    assert len(ratios) == 2 * len(MODES) + 2, sorted(figures)  # window + re-run per mode, conversion, definitions
    assert all(f["ratio"] > 0 for f in ratios)
    assert sum(1 for f in figures.values() if f["met"] is not None) >= 7
    assert out["machine"]["nproc"] >= 1 and out["machine"]["dagster"] and out["commit"]
