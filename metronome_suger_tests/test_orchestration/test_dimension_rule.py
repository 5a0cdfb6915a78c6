"""The dimension rule end to end: an exact key match wins over another dimension's name (the bug this
replaced sent 2 units where 10 were due), and a target two dimensions match the same way is a
configuration error named by ``mapping_completeness`` and ``verify``, with nothing sent."""

from decimal import Decimal
from pathlib import Path

from metronome_suger.sandbox.server import Sandbox
from metronome_suger_tests.conftest import Pipeline, failure_text, sent_groups
from metronome_suger_tests.test_operations import cli
from metronome_suger_tests.test_orchestration.test_quantity_e2e import KEY, START


def world(sb: Sandbox, dimensions: list[dict]) -> str:
    """One customer with $10 of 'spend' in the window, linked to one AWS entitlement."""
    spend = sb.metronome.add_billable_metric("spend", aggregation_type="SUM")["id"]
    alice = sb.metronome.add_customer("Alice")["id"]
    buyer = sb.suger.add_buyer("Alice AWS", partner="AWS", metronome_customer_id=alice)["id"]
    entitlement = sb.suger.add_entitlement(buyer, partner="AWS", dimensions=dimensions)["id"]
    sb.metronome.set_usage(alice, spend, START, 10)
    return entitlement


def amount_to_a(pipeline: Pipeline) -> None:
    pipeline.settings["dimension_conversion"] = {"AWS": {"spend": [{"dimension_key": "a", "mapping_mode": "AMOUNT"}]}}


def test_a_key_match_wins_over_another_dimensions_name(sandbox: Sandbox, pipeline: Pipeline) -> None:
    ent = world(sandbox, [{"key": "a", "name": "A", "rate": 1}, {"key": "b", "name": "a", "rate": 5}])
    amount_to_a(pipeline)
    result = pipeline.run(KEY)
    assert result.success, failure_text(result)
    [group] = sent_groups(sandbox)
    assert group["entitlementID"] == ent and group["records"] == {"a": Decimal(10)}  # $10 at $1, not $10 at $5
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == {
        "mapping_completeness": True, "customer_linkage": True, "usage_verification": True,
        "suger_record_status": True, "report_deadline": True,
    }
    assert pipeline.query("SELECT rate, quantity FROM usage_records") == [(Decimal(1), Decimal(10))]
    assert pipeline.query("SELECT dollars FROM report_ledger") == [(Decimal(10),)]


def test_a_target_two_dimensions_name_is_a_named_configuration_error(
    sandbox: Sandbox, pipeline: Pipeline, tmp_path: Path
) -> None:
    ent = world(sandbox, [{"key": "x", "name": "a", "rate": 1}, {"key": "y", "name": "a", "rate": 5}])
    amount_to_a(pipeline)
    result = pipeline.run(KEY)
    assert not result.success
    assert sent_groups(sandbox) == []
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "mapping_completeness")
    assert not check.passed
    assert f"'spend' maps to dimension 'a', which is ambiguous (2 dimensions have that name: 'x', 'y') on " \
           f"entitlement {ent}" in check.description
    proc = cli(pipeline, tmp_path, "verify")
    assert proc.returncode == 1
    assert "problem: AWS: 'spend' maps to dimension 'a', which is ambiguous" in proc.stdout
    assert ent in proc.stdout
