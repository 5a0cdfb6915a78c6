"""The component loads the same definitions from a defs.yaml, without any network call."""

from pathlib import Path

import dagster as dg
from dagster.components.testing import create_defs_folder_sandbox

from metronome_suger import MetronomeSugerComponent

SETTINGS = {
    "suger": {"org_id": "org-1"},
    "billing_mode": "amount_daily",
    "start": "2026-11-01T00:00:00Z",
    "dimension_conversion": {"AWS": {"metronome": [{"dimension_key": "usage_fee", "multiplier": 100}]}},
}


def _asset_keys(defs: dg.Definitions) -> set[str]:
    return {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}


def test_component_with_inline_settings_builds_the_amount_mode_graph() -> None:
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(component_cls=MetronomeSugerComponent,
                                          defs_yaml_contents={"type": "metronome_suger.MetronomeSugerComponent",
                                                              "attributes": {"settings": SETTINGS}})
        with sandbox.load_component_and_build_defs(defs_path=path) as (component, defs):
            assert isinstance(component, MetronomeSugerComponent)
            keys = _asset_keys(defs)
            assert "metronome_invoice_snapshots" in keys and "metronome_usage" not in keys
            assert {"suger_usage_records", "suger_usage_report", "suger_entitlements"} <= keys
            partitions = defs.resolve_assets_def("suger_usage_report").partitions_def
            assert isinstance(partitions, dg.DailyPartitionsDefinition)


def test_component_reads_a_config_file_next_to_defs_yaml(tmp_path: Path) -> None:
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(component_cls=MetronomeSugerComponent,
                                          defs_yaml_contents={"type": "metronome_suger.MetronomeSugerComponent",
                                                              "attributes": {"config_file": "ms.yaml"}})
        (Path(path) / "ms.yaml").write_text(
            "suger: {org_id: org-2}\nstart: '2026-11-01T00:00:00Z'\n"
        )
        with sandbox.load_component_and_build_defs(defs_path=path) as (_, defs):
            assert "metronome_usage" in _asset_keys(defs)
            partitions = defs.resolve_assets_def("metronome_usage").partitions_def
            assert partitions.get_first_partition_key() == "2026-11-01-00:00"
