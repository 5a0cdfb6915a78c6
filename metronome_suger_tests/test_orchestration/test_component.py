"""The component loads the same definitions from a defs.yaml, without any network call: the configuration
keys are its typed attributes (validated by dg, with the configuration's descriptions), or a config_file."""

import functools
import json
import operator
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import dagster as dg
import pytest
import yaml
from dagster.components.testing import create_defs_folder_sandbox
from dagster.components.testing.utils import DefsFolderSandbox

from metronome_suger import MetronomeSugerComponent
from metronome_suger.config import CONFIG_ENV_VAR, AppConfig, ConfigError, SugerSettings, load_config
from metronome_suger.orchestration.scaffold import starting_defs_yaml

TYPE = "metronome_suger.MetronomeSugerComponent"
DG = Path(sys.executable).with_name("dg")
ATTRIBUTES: dict[str, Any] = {
    "suger": {"org_id": "org-1"},
    "billing_mode": "amount_daily",
    "start": "2026-11-01T00:00:00Z",
    "dimension_conversion": {"AWS": {"metronome": [{"dimension_key": "usage_fee", "multiplier": 100}]}},
}


@pytest.fixture(autouse=True)
def _no_config_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)  # no ./metronome_suger.yaml


@pytest.fixture
def sandbox() -> Iterator[DefsFolderSandbox]:
    with create_defs_folder_sandbox() as folder:
        yield folder


def _asset_keys(defs: dg.Definitions) -> set[str]:
    return {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}


def _defs_yaml(sandbox: DefsFolderSandbox, attributes: dict[str, Any]) -> Path:
    return sandbox.scaffold_component(
        component_cls=MetronomeSugerComponent, defs_yaml_contents={"type": TYPE, "attributes": attributes}
    )


def _load_error(sandbox: DefsFolderSandbox, path: Path) -> str:
    """The whole message of a failed load: Dagster wraps the component's own error."""
    with pytest.raises(Exception) as info:  # noqa: B017 - Dagster's wrapper type is not ours to pin
        with sandbox.load_component_and_build_defs(defs_path=path):
            pass
    messages = []
    exc: BaseException | None = info.value
    while exc is not None:
        messages.append(str(exc))
        exc = exc.__cause__
    return "\n".join(messages)


# ---------------------------------------------------------------------------------------------------------
# Typed attributes


def test_inline_keys_build_the_amount_mode_graph(sandbox: DefsFolderSandbox) -> None:
    path = _defs_yaml(sandbox, ATTRIBUTES)
    with sandbox.load_component_and_build_defs(defs_path=path) as (component, defs):
        assert isinstance(component, MetronomeSugerComponent)
        assert isinstance(component.suger, SugerSettings) and component.suger.org_id == "org-1"
        assert component.start == datetime(2026, 11, 1, tzinfo=timezone.utc)
        assert component.config_file is None
        keys = _asset_keys(defs)
        assert "metronome_invoice_snapshots" in keys and "metronome_usage" not in keys
        assert {"suger_usage_records", "suger_usage_report", "suger_entitlements"} <= keys
        partitions = defs.resolve_assets_def("suger_usage_report").partitions_def
        assert isinstance(partitions, dg.DailyPartitionsDefinition)


def test_only_the_given_keys_reach_the_configuration(sandbox: DefsFolderSandbox) -> None:
    path = _defs_yaml(sandbox, {**ATTRIBUTES, "dry_run": True, "settle_minutes": 30, "metronome": None})
    with sandbox.load_component_and_build_defs(defs_path=path) as (component, _):
        assert isinstance(component, MetronomeSugerComponent)
        assert set(component.inline_config()) == {*ATTRIBUTES, "dry_run", "settle_minutes"}  # null: not given
        config = component.load_app_config(path)
        assert config.dry_run is True and config.settle_minutes == 30
        assert config.auto_report is True  # the configuration's default, not the component's None
        assert config.metronome.base_url == "https://api.metronome.com"


def test_top_level_values_are_templates(sandbox: DefsFolderSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MS_TEST_START", "2026-12-01T05:00:00Z")
    path = _defs_yaml(sandbox, {**ATTRIBUTES, "start": "{{ env.MS_TEST_START }}"})
    with sandbox.load_component_and_build_defs(defs_path=path) as (component, _):
        assert isinstance(component, MetronomeSugerComponent)
        assert component.start == datetime(2026, 12, 1, 5, tzinfo=timezone.utc)


def test_two_organizations_share_one_code_location_with_key_prefix(sandbox: DefsFolderSandbox) -> None:
    for org in ("acme", "globex"):
        sandbox.scaffold_component(
            component_cls=MetronomeSugerComponent,
            defs_path=org,
            defs_yaml_contents={"type": TYPE, "attributes": {
                **ATTRIBUTES, "suger": {"org_id": f"org-{org}"}, "key_prefix": [org],
                "storage": {"duckdb_path": f"data/{org}.duckdb"},
            }},
        )
    with sandbox.build_all_defs() as defs:
        keys = _asset_keys(defs)
        assert {"acme/suger_usage_report", "globex/suger_usage_report"} <= keys
        assert all(key.startswith(("acme/", "globex/")) for key in keys)


def test_config_file_next_to_defs_yaml(sandbox: DefsFolderSandbox) -> None:
    path = _defs_yaml(sandbox, {"config_file": "ms.yaml"})
    (path / "ms.yaml").write_text("suger: {org_id: org-2}\nstart: '2026-11-01T00:00:00Z'\n", encoding="utf-8")
    with sandbox.load_component_and_build_defs(defs_path=path) as (_, defs):
        assert "metronome_usage" in _asset_keys(defs)
        partitions = defs.resolve_assets_def("metronome_usage").partitions_def
        assert partitions is not None
        assert partitions.get_first_partition_key() == "2026-11-01-00:00"


def test_neither_falls_back_to_the_default_configuration(sandbox: DefsFolderSandbox) -> None:
    path = _defs_yaml(sandbox, {})
    with sandbox.load_component_and_build_defs(defs_path=path) as (component, defs):
        assert isinstance(component, MetronomeSugerComponent)
        assert load_config().source == "bundled"
        assert component.load_app_config(path) == load_config().config
        assert "metronome_usage" in _asset_keys(defs)  # the bundled sandbox configuration: quantity mode


def test_config_file_and_inline_keys_are_refused(sandbox: DefsFolderSandbox) -> None:
    path = _defs_yaml(sandbox, {"config_file": "ms.yaml", "suger": {"org_id": "org-1"}})
    message = _load_error(sandbox, path)
    assert f"{path / 'defs.yaml'}: give either config_file or the configuration keys inline (suger)" in message


def test_a_bad_value_names_the_defs_yaml_and_the_key(sandbox: DefsFolderSandbox) -> None:
    path = _defs_yaml(sandbox, {**ATTRIBUTES, "billing_mode": "hourly"})
    message = _load_error(sandbox, path)
    assert f"{path / 'defs.yaml'}: key 'billing_mode': Input should be 'quantity'" in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param({"suger": {"orgid": "org-1"}}, "attributes.suger", id="unknown-nested-key"),
        pytest.param({"dimension_conversion": {"ORACLE": {}}}, "attributes.dimension_conversion", id="partner"),
        pytest.param({"key_prefix": ["acme", "b-c"]}, "attributes.key_prefix", id="key-prefix"),
        pytest.param({"suger": "org-1"}, "key 'suger'", id="string-for-a-mapping"),
        pytest.param({"start": "2026-11-01T00:30:00Z"}, "key 'start': Value error, must be on a whole UTC hour",
                     id="start-off-the-hour"),
        pytest.param({"billing_mode": "quantity", "settle_minutes": 75}, "settle_minutes must be below 60",
                     id="rule-across-keys"),
        pytest.param({"unknown_key": 1}, "unknown_key", id="unknown-key"),
    ],
)
def test_invalid_attributes_name_the_key(
    sandbox: DefsFolderSandbox, change: dict[str, Any], expected: str
) -> None:
    path = _defs_yaml(sandbox, {**ATTRIBUTES, **change})
    message = _load_error(sandbox, path)
    assert expected in message
    assert "defs.yaml" in message


def test_python_construction_is_typed_and_validated_by_the_configuration(tmp_path: Path) -> None:
    component = MetronomeSugerComponent(
        suger=SugerSettings(org_id="org-1"), start=datetime(2026, 11, 1, tzinfo=timezone.utc), settle_minutes=75
    )
    with pytest.raises(ConfigError, match=r"settle_minutes must be below 60"):
        component.load_app_config(tmp_path)


# ---------------------------------------------------------------------------------------------------------
# Schema: the configuration's own keys, types and descriptions


def _unconstrained(annotation: Any) -> Any:
    """``annotation`` without its Annotated constraints, at any depth (Literal values are kept)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _unconstrained(args[0])
    if origin is None or origin is Literal:
        return annotation
    if origin is types.UnionType:  # X | None
        return functools.reduce(operator.or_, [_unconstrained(arg) for arg in args])
    return origin[tuple(_unconstrained(arg) for arg in args)]


def test_attributes_are_exactly_the_configuration_keys_with_their_types() -> None:
    fields = MetronomeSugerComponent.model_fields
    assert set(fields) - {"config_file"} == set(AppConfig.model_fields)
    for name, field in AppConfig.model_fields.items():
        attribute = fields[name]
        assert attribute.default is None, name  # not given: the configuration's default applies
        (given_type,) = get_args(attribute.annotation)  # Inline[T]
        assert _unconstrained(given_type) == _unconstrained(field.annotation), name


def test_schema_shows_every_key_with_its_description() -> None:
    model_cls = MetronomeSugerComponent.get_model_cls()
    assert model_cls is not None
    schema = model_cls.model_json_schema()
    properties = schema["properties"]
    assert set(properties) == set(AppConfig.model_fields) | {"config_file"}
    assert "relative to the defs.yaml folder" in properties["config_file"]["description"]
    for name, field in AppConfig.model_fields.items():
        assert properties[name]["description"] == field.description, name
    assert "NAME of the environment variable" in schema["$defs"]["MetronomeSettings"]["properties"][
        "api_token_env"]["description"]
    mapping = schema["$defs"]["DimensionMapping"]["properties"]
    assert all(mapping[key].get("description") for key in ("dimension_key", "mapping_mode", "multiplier"))
    billing = json.dumps(properties["billing_mode"])
    assert all(mode in billing for mode in ("quantity", "amount_hourly", "amount_daily"))


# ---------------------------------------------------------------------------------------------------------
# Scaffolder and the real `dg` CLI


def test_scaffolded_defs_yaml_loads(sandbox: DefsFolderSandbox) -> None:
    path = sandbox.scaffold_component(component_cls=MetronomeSugerComponent)
    text = (path / "defs.yaml").read_text(encoding="utf-8")
    assert text.startswith("#")  # commented
    document = yaml.safe_load(text)
    assert document["type"].endswith("MetronomeSugerComponent")  # the name it was scaffolded under
    attributes = document["attributes"]
    assert attributes["billing_mode"] == "quantity" and attributes["suger"]["org_id"]
    assert "AWS" in attributes["dimension_conversion"]
    with sandbox.load_component_and_build_defs(defs_path=path) as (component, defs):
        assert isinstance(component, MetronomeSugerComponent)
        assert component.config_file is None
        assert "metronome_usage" in _asset_keys(defs)
        config = component.load_app_config(path)
        assert config.billing_mode == "quantity" and config.start.hour == 0


def test_scaffolded_start_is_the_current_utc_day() -> None:
    text = starting_defs_yaml(TYPE, now=datetime(2026, 12, 3, 17, 42, tzinfo=timezone.utc))
    assert yaml.safe_load(text)["attributes"]["start"] == "2026-12-03T00:00:00Z"


def _dg_env(home: Path) -> dict[str, str]:
    """No telemetry, no user configuration: `dg` writes only under ``home`` and calls no network."""
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != CONFIG_ENV_VAR}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), DAGSTER_HOME=str(dagster_home),
               NO_COLOR="1", COLUMNS="200")
    return env


def _dg(*args: str, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run([str(DG), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"dg {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_dg_list_components_lists_the_component(tmp_path: Path) -> None:
    out = _dg("list", "components", "--json", cwd=tmp_path, env=_dg_env(tmp_path))
    items = {item["key"]: item["summary"] for item in json.loads(out)["items"]}
    assert TYPE in items
    assert "Suger" in items[TYPE]


@pytest.mark.slow
def test_dg_scaffold_defs_writes_a_defs_yaml_that_dg_loads(tmp_path: Path) -> None:
    project = tmp_path / "project"
    package = project / "src" / "ms_project"
    (package / "defs").mkdir(parents=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "defs" / "__init__.py").write_text("", encoding="utf-8")
    (package / "definitions.py").write_text(
        "from pathlib import Path\n\nimport dagster as dg\n\n\n@dg.definitions\ndef defs() -> dg.Definitions:\n"
        "    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)\n",
        encoding="utf-8",
    )
    (project / "pyproject.toml").write_text(
        '[project]\nname = "ms-project"\nversion = "0.1.0"\n\n[tool.dg]\ndirectory_type = "project"\n\n'
        '[tool.dg.project]\nroot_module = "ms_project"\n',
        encoding="utf-8",
    )
    env = _dg_env(tmp_path / "home")
    env["PYTHONPATH"] = str(project / "src")

    _dg("scaffold", "defs", TYPE, "billing", cwd=project, env=env)
    defs_yaml = package / "defs" / "billing" / "defs.yaml"
    assert yaml.safe_load(defs_yaml.read_text(encoding="utf-8"))["type"] == TYPE

    listed = json.loads(_dg("list", "defs", "--json", cwd=project, env=env))
    assert {"metronome_usage", "suger_usage_report"} <= {asset["asset_key"] for asset in listed["assets"]}
    assert all("billing/defs.yaml" in asset["source"] for asset in listed["assets"])
