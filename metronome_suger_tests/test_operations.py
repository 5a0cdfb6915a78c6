"""``verify``, ``link`` and ``status`` through the real CLI against a running sandbox."""

from pathlib import Path

import yaml

from metronome_suger.sandbox.server import Sandbox
from metronome_suger_tests.conftest import AWS_DIMS, Pipeline
from metronome_suger_tests.test_cli import BIN, run
from metronome_suger_tests.test_orchestration.test_quantity_e2e import KEY, build_world


def cli(pipeline: Pipeline, tmp_path: Path, *args: str, **env: str):
    config = tmp_path / "metronome_suger.yaml"
    config.write_text(yaml.safe_dump(pipeline.settings))
    return run([str(BIN / "metronome-suger"), *args], cwd=tmp_path,
               env={"METRONOME_SUGER_CONFIG": str(config), **pipeline.sandbox.env(), **env})


def test_verify_passes_on_a_complete_configuration(sandbox: Sandbox, pipeline: Pipeline, tmp_path: Path) -> None:
    build_world(sandbox)
    proc = cli(pipeline, tmp_path, "verify")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("metronome-suger: using configuration")
    assert lines[-1] == "VERIFIED"
    assert "Auto Report Usage switched off" in proc.stdout


def test_verify_lists_each_problem_and_exits_1(sandbox: Sandbox, pipeline: Pipeline, tmp_path: Path) -> None:
    build_world(sandbox)
    pipeline.settings["dimension_conversion"]["GCP"]["cpu_hours"] = [{"dimension_key": "gpu_hours"}]
    del pipeline.settings["dimension_conversion"]["AWS"]["api_calls"]
    proc = cli(pipeline, tmp_path, "verify")
    assert proc.returncode == 1
    assert "problem: AWS: source key 'api_calls' is not mapped" in proc.stdout
    assert "problem: GCP: 'cpu_hours' maps to dimension 'gpu_hours', which does not exist" in proc.stdout
    assert "NOT VERIFIED: 2 problem(s)" in proc.stdout


def test_verify_reports_a_rejected_token_without_printing_it(sandbox: Sandbox, pipeline: Pipeline, tmp_path: Path) -> None:
    build_world(sandbox)
    proc = cli(pipeline, tmp_path, "verify", METRONOME_API_TOKEN="wrong-token-123")
    assert proc.returncode == 1
    assert "problem: Metronome:" in proc.stdout and "401" in proc.stdout
    assert "wrong-token-123" not in proc.stdout + proc.stderr


def test_verify_rejects_an_unknown_billing_mode(sandbox: Sandbox, pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.settings["billing_mode"] = "amount_weekly"
    proc = cli(pipeline, tmp_path, "verify")
    assert proc.returncode == 1
    assert "billing_mode" in proc.stderr and "Traceback" not in proc.stderr


def test_verify_warns_when_suger_converts_dimensions_itself(sandbox: Sandbox, pipeline: Pipeline, tmp_path: Path) -> None:
    build_world(sandbox)
    sandbox.suger.set_metering_config({"partnerUsageMeteringConfigs": [
        {"partner": "AWS", "enableDimensionMapping": True, "dimensionMappingV2": {}}]})
    proc = cli(pipeline, tmp_path, "verify")
    assert proc.returncode == 0, proc.stdout
    assert "warning: Suger converts dimensions itself for AWS" in proc.stdout


def test_link_connects_a_buyer_and_shows_its_entitlements(sandbox: Sandbox, pipeline: Pipeline, tmp_path: Path) -> None:
    customer = sandbox.metronome.add_customer("Erin")["id"]
    buyer = sandbox.suger.add_buyer("Erin AWS", partner="AWS")["id"]
    ent = sandbox.suger.add_entitlement(buyer, partner="AWS", dimensions=AWS_DIMS)["id"]
    proc = cli(pipeline, tmp_path, "link", buyer, customer)
    assert proc.returncode == 0, proc.stderr
    assert sandbox.suger.get_buyer(buyer)["info"]["metronomeCustomerId"] == customer
    assert f"AWS entitlement {ent} [ACTIVE] reports" in proc.stdout


def test_status_shows_the_window_counts(sandbox: Sandbox, pipeline: Pipeline, tmp_path: Path) -> None:
    w = build_world(sandbox)
    sandbox.suger.reject_next(w.bob_gcp, "nope")
    pipeline.run(KEY)
    proc = cli(pipeline, tmp_path, "status", "--since", "2026-11-25T00:00:00Z")
    assert proc.returncode == 0, proc.stderr
    header, row = proc.stdout.splitlines()[1], proc.stdout.splitlines()[2]
    assert header.split()[:3] == ["window", "(UTC)", "computed"]
    assert row.split()[:8] == ["2026-11-25", "13:00", "3", "2", "0", "1", "0", "0"]


def test_verify_warns_when_sugers_own_metronome_integration_reports_too(
    sandbox: Sandbox, pipeline: Pipeline, tmp_path: Path
) -> None:
    """Groups with ``metaInfo.source`` METRONOME for a linked entitlement: Suger's own integration is
    reporting as well, every dollar would be billed twice. A warning (verify's warnings never fail it)."""
    w = build_world(sandbox)
    for _ in range(2):
        sandbox.suger.add_foreign_group(w.alice_aws, {"cpu_hour": 1}, source="METRONOME")
    sandbox.suger.add_foreign_group(w.bob_gcp, {"vcpu_hours": 1}, source="METRONOME")
    stranger = sandbox.suger.add_buyer("Not linked", partner="AWS")["id"]
    unlinked = sandbox.suger.add_entitlement(stranger, partner="AWS", dimensions=AWS_DIMS)["id"]
    sandbox.suger.add_foreign_group(unlinked, {"cpu_hour": 1}, source="METRONOME")
    sandbox.suger.add_foreign_group(w.bob_aws, {"cpu_hour": 1}, source="LAGO")
    proc = cli(pipeline, tmp_path, "verify")
    assert proc.returncode == 0, proc.stdout
    [warning] = [line for line in proc.stdout.splitlines() if "source METRONOME" in line]
    named = ", ".join(sorted([f"{w.alice_aws} (2 groups)", f"{w.bob_gcp} (1 group)"]))
    assert warning == (
        "warning: Suger's own Metronome integration is also reporting usage (source METRONOME) for "
        f"linked entitlements: {named}: every dollar would be billed twice; switch its Auto Report "
        "Usage off")
    assert unlinked not in proc.stdout and w.bob_aws not in warning
    assert proc.stdout.splitlines()[-1] == "VERIFIED"


def test_verify_without_foreign_groups_only_reminds(sandbox: Sandbox, pipeline: Pipeline, tmp_path: Path) -> None:
    w = build_world(sandbox)
    sandbox.suger.add_foreign_group(w.alice_aws, {"cpu_hour": 1}, source="API")
    proc = cli(pipeline, tmp_path, "verify")
    assert proc.returncode == 0 and "source METRONOME" not in proc.stdout
    assert "must have Auto Report Usage switched off" in proc.stdout


def test_verify_reads_dimensions_past_the_50th_from_the_product(
    sandbox: Sandbox, pipeline: Pipeline, tmp_path: Path
) -> None:
    w = build_world(sandbox)
    buyer = sandbox.suger.get_buyer(sandbox.suger.get_entitlement(w.alice_aws)["buyerID"])["id"]
    dims = [{"key": f"dim_{n:02d}", "rate": "0.5"} for n in range(1, 61)]
    big = sandbox.suger.add_entitlement(buyer, partner="AWS", dimensions=AWS_DIMS + dims,
                                        product_id="prod-big")["id"]
    pipeline.settings["dimension_conversion"]["AWS"]["api_calls"] = [{"dimension_key": "dim_55"}]
    proc = cli(pipeline, tmp_path, "verify")
    assert "problem: AWS: 'api_calls' maps to dimension 'dim_55', which does not exist" in proc.stdout
    assert f"on entitlement {w.alice_aws}" in proc.stdout and big not in proc.stdout  # found on the product

    sandbox.suger.fail_product_dimensions("prod-big", status=404, message="product prod-big not found")
    failing = cli(pipeline, tmp_path, "verify")
    assert failing.returncode == 1
    assert (f"entitlement {big} has more than 50 dimensions and the dimension list of its product "
            "prod-big could not be read") in failing.stdout
