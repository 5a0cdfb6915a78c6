"""The configuration file: its keys and descriptions, its validation errors, secrets and the loading order."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from metronome_suger import config as config_module
from metronome_suger.config import (
    AppConfig,
    ConfigError,
    load_config,
    parse_config_data,
    read_secret,
)

# The documented example: every key, with its comment.
CONTRACT_EXAMPLE = """\
metronome:
  base_url: https://api.metronome.com     # default
  api_token_env: METRONOME_API_TOKEN       # NAME of the env var holding the token; the token is never in this file
suger:
  base_url: https://api.suger.cloud        # default
  org_id: "org-123"
  api_key_env: SUGER_API_KEY               # NAME of the env var; sent as "Authorization: Key <value>"
billing_mode: quantity                     # quantity | amount_hourly | amount_daily
auto_report: true                          # false: compute and store record groups, never send them
start: "2026-11-01T00:00:00Z"              # first partition
settle_minutes: 15                         # how long after a window closes before it is read
billable_metric_whitelist:
  enabled: false
  metrics: []                              # Metronome billable metric names or ids
dimension_conversion:                      # Suger's dimensionMappingV2 shape, per marketplace
  AWS:
    cpu_hours: [{dimension_key: cpu_hour, mapping_mode: QUANTITY, multiplier: 1}]
    metronome: [{dimension_key: usage_fee, mapping_mode: QUANTITY, multiplier: 100}]
  AZURE: {}
  GCP: {}
customer_links: []                         # optional overrides: [{metronome_customer_id, entitlement_id}]
invoice_change_policy: period              # period | invoice   (amount modes, see §5)
marketplace_deadline_hours: {AWS: 6, AZURE: 24, GCP: 1}   # each counted as that marketplace counts it (§5)
suger_forward_lag_minutes: 60              # Suger forwards at its next hourly report (§5)
storage:
  duckdb_path: data/metronome_suger.duckdb
"""

TOKEN_VARS = ("METRONOME_API_TOKEN", "SUGER_API_KEY", "MY_METRONOME_TOKEN", "MY_SUGER_KEY")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(config_module.CONFIG_ENV_VAR, raising=False)
    for name in TOKEN_VARS:
        monkeypatch.delenv(name, raising=False)


def example_data() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load(CONTRACT_EXAMPLE))


def write_yaml(tmp_path: Path, data: Any, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def load_error(tmp_path: Path, mutate: Callable[[dict[str, Any]], None]) -> tuple[Path, str]:
    data = example_data()
    mutate(data)
    path = write_yaml(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return path, str(info.value)


# ---------------------------------------------------------------------------------------------------------
# A valid file


def test_contract_example_loads_with_right_values_and_types(tmp_path: Path) -> None:
    path = tmp_path / "metronome_suger.yaml"
    path.write_text(CONTRACT_EXAMPLE, encoding="utf-8")

    loaded = load_config(path)
    cfg = loaded.config

    assert isinstance(cfg, AppConfig)
    assert loaded.path == path
    assert cfg.metronome.base_url == "https://api.metronome.com"
    assert cfg.metronome.api_token_env == "METRONOME_API_TOKEN"
    assert cfg.suger.base_url == "https://api.suger.cloud"
    assert cfg.suger.org_id == "org-123"
    assert cfg.suger.api_key_env == "SUGER_API_KEY"
    assert cfg.billing_mode == "quantity"
    assert cfg.hourly is True
    assert cfg.amount_mode is False
    assert cfg.auto_report is True
    assert cfg.settle_minutes == 15
    assert cfg.billable_metric_whitelist.enabled is False
    assert cfg.billable_metric_whitelist.metrics == []
    assert cfg.customer_links == []
    assert cfg.invoice_change_policy == "period"
    assert cfg.storage.url == "data/metronome_suger.duckdb"  # given as storage.duckdb_path, its first name
    assert cfg.duckdb_path == Path("data/metronome_suger.duckdb")

    assert cfg.start == datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert cfg.start.utcoffset() == timedelta(0)

    aws = cfg.dimension_conversion["AWS"]
    assert set(aws) == {"cpu_hours", "metronome"}
    (cpu,) = aws["cpu_hours"]
    assert cpu.dimension_key == "cpu_hour"
    assert cpu.mapping_mode == "QUANTITY"
    assert isinstance(cpu.multiplier, Decimal) and cpu.multiplier == Decimal(1)
    (fee,) = aws["metronome"]
    assert fee.dimension_key == "usage_fee"
    assert isinstance(fee.multiplier, Decimal) and fee.multiplier == Decimal(100)
    assert cfg.dimension_conversion["AZURE"] == {}
    assert cfg.dimension_conversion["GCP"] == {}

    assert cfg.marketplace_deadline_hours == {"AWS": Decimal(6), "AZURE": Decimal(24), "GCP": Decimal(1)}
    assert all(isinstance(v, Decimal) for v in cfg.marketplace_deadline_hours.values())


def test_minimal_file_gets_documented_defaults(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, {"suger": {"org_id": "org-1"}, "start": "2026-11-01T00:00:00Z"})
    cfg = load_config(path).config
    assert cfg.metronome.base_url == "https://api.metronome.com"
    assert cfg.metronome.api_token_env == "METRONOME_API_TOKEN"
    assert cfg.suger.base_url == "https://api.suger.cloud"
    assert cfg.suger.api_key_env == "SUGER_API_KEY"
    assert cfg.billing_mode == "quantity"
    assert cfg.auto_report is True
    assert cfg.settle_minutes == 15
    assert cfg.invoice_change_policy == "period"
    assert cfg.marketplace_deadline_hours == {"AWS": Decimal(6), "AZURE": Decimal(24), "GCP": Decimal(1)}
    assert cfg.storage.url == "data/metronome_suger.duckdb"  # given as storage.duckdb_path, its first name


def test_partial_deadline_hours_are_merged_with_defaults(tmp_path: Path) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["marketplace_deadline_hours"] = {"AWS": 24}

    data = example_data()
    mutate(data)
    cfg = load_config(write_yaml(tmp_path, data)).config
    assert cfg.marketplace_deadline_hours == {"AWS": Decimal(24), "AZURE": Decimal(24), "GCP": Decimal(1)}
    assert isinstance(cfg.marketplace_deadline_hours["AWS"], Decimal)


def test_fractional_multiplier_is_an_exact_decimal(tmp_path: Path) -> None:
    data = example_data()
    data["dimension_conversion"]["AWS"]["cpu_hours"][0]["multiplier"] = 0.1
    cfg = load_config(write_yaml(tmp_path, data)).config
    assert cfg.dimension_conversion["AWS"]["cpu_hours"][0].multiplier == Decimal("0.1")


def test_zero_multiplier_is_allowed(tmp_path: Path) -> None:
    data = example_data()
    data["dimension_conversion"]["AWS"]["cpu_hours"][0]["multiplier"] = 0
    cfg = load_config(write_yaml(tmp_path, data)).config
    assert cfg.dimension_conversion["AWS"]["cpu_hours"][0].multiplier == Decimal(0)


@pytest.mark.parametrize(
    ("mode", "hourly", "amount"),
    [("quantity", True, False), ("amount_hourly", True, True), ("amount_daily", False, True)],
)
def test_billing_modes(tmp_path: Path, mode: str, hourly: bool, amount: bool) -> None:
    data = example_data()
    data["billing_mode"] = mode
    cfg = load_config(write_yaml(tmp_path, data)).config
    assert cfg.billing_mode == mode
    assert cfg.hourly is hourly
    assert cfg.amount_mode is amount


@pytest.mark.parametrize(
    "start",
    ["2026-11-01T05:00:00+05:00", "2026-11-01T00:00:00", "2026-11-01T00:00:00+00:00"],
)
def test_start_is_normalised_to_utc(tmp_path: Path, start: str) -> None:
    data = example_data()
    data["start"] = start
    cfg = load_config(write_yaml(tmp_path, data)).config
    assert cfg.start == datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert cfg.start.tzinfo is not None and cfg.start.utcoffset() == timedelta(0)


def test_unquoted_yaml_timestamp_start(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONTRACT_EXAMPLE.replace('start: "2026-11-01T00:00:00Z"', "start: 2026-11-01T00:00:00Z"))
    assert load_config(path).config.start == datetime(2026, 11, 1, tzinfo=timezone.utc)


def test_customer_links_are_parsed(tmp_path: Path) -> None:
    data = example_data()
    data["customer_links"] = [{"metronome_customer_id": "c-1", "entitlement_id": "e-1"}]
    cfg = load_config(write_yaml(tmp_path, data)).config
    assert [(link.metronome_customer_id, link.entitlement_id) for link in cfg.customer_links] == [("c-1", "e-1")]


# ---------------------------------------------------------------------------------------------------------
# Bad input: ConfigError naming the file and the key


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        node = d
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value

    return mutate


def _pop(path: tuple[str, ...]) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        node = d
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]

    return mutate


BAD_INPUTS = [
    pytest.param(_set(("storage_path",), "x"), "storage_path", id="unknown-top-level-key"),
    pytest.param(_set(("suger", "orgid"), "org-123"), "suger.orgid", id="unknown-nested-key"),
    pytest.param(_set(("metronome", "token"), "abc"), "metronome.token", id="unknown-metronome-key"),
    pytest.param(_pop(("suger", "org_id")), "suger.org_id", id="missing-org-id"),
    pytest.param(_pop(("suger",)), "suger", id="missing-suger"),
    pytest.param(_pop(("start",)), "start", id="missing-start"),
    pytest.param(_set(("billing_mode",), "hourly"), "billing_mode", id="bad-billing-mode"),
    pytest.param(
        _set(("dimension_conversion", "AWS", "cpu_hours"), [{"dimension_key": "cpu_hour", "mapping_mode": "PRICE"}]),
        "dimension_conversion.AWS.cpu_hours.0.mapping_mode",
        id="bad-mapping-mode",
    ),
    pytest.param(
        _set(("dimension_conversion", "AWS", "cpu_hours"), [{"dimension_key": "cpu_hour", "multiplier": -1}]),
        "dimension_conversion.AWS.cpu_hours.0.multiplier",
        id="negative-multiplier",
    ),
    pytest.param(
        _set(("dimension_conversion", "AWS", "cpu_hours"), [{"mapping_mode": "QUANTITY"}]),
        "dimension_conversion.AWS.cpu_hours.0.dimension_key",
        id="missing-dimension-key",
    ),
    pytest.param(
        _set(("dimension_conversion", "AWS", "cpu_hours"), [{"dimension_key": "cpu_hour", "multipler": 2}]),
        "dimension_conversion.AWS.cpu_hours.0.multipler",
        id="unknown-mapping-key",
    ),
    pytest.param(_set(("dimension_conversion", "ORACLE"), {}), "ORACLE", id="unknown-partner"),
    pytest.param(_set(("start",), "2026-11-01T00:30:00Z"), "start", id="start-not-hour-aligned"),
    pytest.param(_set(("start",), "2026-11-01T00:00:30Z"), "start", id="start-has-seconds"),
    pytest.param(_set(("start",), "2026-11-01T00:00:00+05:30"), "start", id="start-off-hour-in-utc"),
    pytest.param(_set(("start",), "not a date"), "start", id="start-not-a-date"),
    pytest.param(
        _set(("metronome", "base_url"), "http://api.example.com"), "metronome.base_url", id="http-non-loopback"
    ),
    pytest.param(_set(("suger", "base_url"), "http://10.0.0.1:8702"), "suger.base_url", id="http-private-ip"),
    pytest.param(
        _set(("suger", "base_url"), "http://localhost.example.com"), "suger.base_url", id="http-localhost-lookalike"
    ),
    pytest.param(_set(("suger", "base_url"), "ftp://127.0.0.1"), "suger.base_url", id="not-http"),
    pytest.param(_set(("settle_minutes",), -1), "settle_minutes", id="negative-settle"),
    pytest.param(_set(("invoice_change_policy",), "customer"), "invoice_change_policy", id="bad-policy"),
    pytest.param(
        _set(("marketplace_deadline_hours",), {"AWS": 0}), "marketplace_deadline_hours.AWS", id="zero-deadline"
    ),
    pytest.param(
        _set(("marketplace_deadline_hours",), {"ORACLE": 3}), "marketplace_deadline_hours", id="deadline-partner"
    ),
    pytest.param(_set(("suger", "org_id"), ""), "suger.org_id", id="empty-org-id"),
    pytest.param(_set(("suger_forward_lag_minutes",), -5), "suger_forward_lag_minutes", id="negative-forward-lag"),
    pytest.param(
        _set(("customer_links",), [{"metronome_customer_id": "c-1"}]),
        "customer_links.0.entitlement_id",
        id="link-missing-entitlement",
    ),
    pytest.param(_set(("key_prefix",), ["acme", "a-b"]), "key_prefix.1", id="key-prefix-hyphen"),
    pytest.param(_set(("key_prefix",), "acme"), "key_prefix", id="key-prefix-not-a-list"),
]


@pytest.mark.parametrize(("mutate", "key"), BAD_INPUTS)
def test_bad_input_names_file_and_key(tmp_path: Path, mutate: Callable[[dict[str, Any]], None], key: str) -> None:
    path, message = load_error(tmp_path, mutate)
    assert str(path) in message
    assert key in message


def test_error_distinguishes_unknown_and_missing(tmp_path: Path) -> None:
    _, unknown = load_error(tmp_path, _set(("suger", "orgid"), "x"))
    assert "unknown" in unknown.lower()
    _, missing = load_error(tmp_path, _pop(("start",)))
    assert "missing" in missing.lower()


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["bogus"] = 1
        d["billing_mode"] = "weekly"

    _, message = load_error(tmp_path, mutate)
    assert "bogus" in message and "billing_mode" in message


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8701", "http://localhost:1", "http://[::1]:1", "http://127.1.2.3:9", "https://api.example.com"],
)
def test_allowed_base_urls(tmp_path: Path, url: str) -> None:
    data = example_data()
    data["metronome"]["base_url"] = url
    data["suger"]["base_url"] = url
    cfg = load_config(write_yaml(tmp_path, data)).config
    assert cfg.metronome.base_url == url
    assert cfg.suger.base_url == url


def test_base_url_trailing_slash_is_dropped(tmp_path: Path) -> None:
    data = example_data()
    data["suger"]["base_url"] = "https://api.suger.cloud/"
    assert load_config(write_yaml(tmp_path, data)).config.suger.base_url == "https://api.suger.cloud"


def test_malformed_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("suger: {org_id: [unclosed\nstart: :\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "YAML" in str(info.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n", ""])
def test_non_mapping_yaml_is_rejected(tmp_path: Path, text: str) -> None:
    path = tmp_path / "list.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "mapping" in str(info.value)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a_directory.yaml"
    path.mkdir()
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_undecodable_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"suger: {org_id: \xff\xfe}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_config_is_immutable(tmp_path: Path) -> None:
    cfg = load_config(write_yaml(tmp_path, example_data())).config
    with pytest.raises(ValidationError):
        cfg.billing_mode = "amount_daily"  # type: ignore[misc]
    assert cfg.billing_mode == "quantity"


def test_parse_config_data_uses_origin() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config_data({"start": "2026-11-01T00:00:00Z"}, origin="somewhere.yaml")
    assert "somewhere.yaml" in str(info.value)
    assert "suger" in str(info.value)


# ---------------------------------------------------------------------------------------------------------
# Secrets


@pytest.mark.parametrize("value", [None, "", "   ", "\t\n"])
def test_read_secret_unset_or_blank_names_the_variable(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is not None:
        monkeypatch.setenv("MY_METRONOME_TOKEN", value)
    with pytest.raises(ConfigError) as info:
        read_secret("MY_METRONOME_TOKEN")
    assert "MY_METRONOME_TOKEN" in str(info.value)


def test_token_accessors_name_the_configured_variable(tmp_path: Path) -> None:
    data = example_data()
    data["metronome"]["api_token_env"] = "MY_METRONOME_TOKEN"
    data["suger"]["api_key_env"] = "MY_SUGER_KEY"
    # Definitions load without any token in the environment.
    cfg = load_config(write_yaml(tmp_path, data)).config
    with pytest.raises(ConfigError) as info:
        cfg.metronome_token()
    assert "MY_METRONOME_TOKEN" in str(info.value)
    with pytest.raises(ConfigError) as info:
        cfg.suger_api_key()
    assert "MY_SUGER_KEY" in str(info.value)


def test_default_token_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(write_yaml(tmp_path, example_data())).config
    with pytest.raises(ConfigError, match="METRONOME_API_TOKEN"):
        cfg.metronome_token()
    monkeypatch.setenv("METRONOME_API_TOKEN", "")
    with pytest.raises(ConfigError, match="METRONOME_API_TOKEN"):
        cfg.metronome_token()
    with pytest.raises(ConfigError, match="SUGER_API_KEY"):
        cfg.suger_api_key()


def test_set_token_is_secret_and_hidden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "mtr-supersecret-token-123"
    key = "sgr-supersecret-key-456"
    monkeypatch.setenv("METRONOME_API_TOKEN", token)
    monkeypatch.setenv("SUGER_API_KEY", key)
    cfg = load_config(write_yaml(tmp_path, example_data())).config

    secret = cfg.metronome_token()
    assert isinstance(secret, SecretStr)
    assert secret.get_secret_value() == token
    assert token not in repr(secret)
    assert token not in str(secret)
    assert token not in f"{secret}"

    api_key = cfg.suger_api_key()
    assert isinstance(api_key, SecretStr)
    assert api_key.get_secret_value() == key
    assert key not in repr(api_key) and key not in str(api_key)

    # The config itself never holds the token.
    assert token not in repr(cfg) and key not in repr(cfg)
    assert token not in cfg.model_dump_json() and key not in cfg.model_dump_json()


def test_read_secret_strips_surrounding_whitespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SUGER_KEY", "  abc \n")
    assert read_secret("MY_SUGER_KEY").get_secret_value() == "abc"


def test_secret_error_does_not_leak_other_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUGER_API_KEY", "sgr-visible-if-leaked")
    with pytest.raises(ConfigError) as info:
        read_secret("MY_METRONOME_TOKEN")
    assert "sgr-visible-if-leaked" not in str(info.value)


# ---------------------------------------------------------------------------------------------------------
# Loading order


def _write_named(path: Path, org_id: str) -> Path:
    data = example_data()
    data["suger"]["org_id"] = org_id
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_env_var_wins_over_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    _write_named(workdir / "metronome_suger.yaml", "org-cwd")
    named = _write_named(tmp_path / "elsewhere.yaml", "org-env")
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("METRONOME_SUGER_CONFIG", str(named))

    loaded = load_config()
    assert loaded.source == "env"
    assert loaded.path == named
    assert loaded.config.suger.org_id == "org-env"
    assert str(named) in loaded.announcement
    assert "bundled" not in loaded.announcement


def test_env_var_pointing_at_missing_file_is_an_error_not_a_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_named(tmp_path / "metronome_suger.yaml", "org-cwd")
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "missing.yaml"
    monkeypatch.setenv("METRONOME_SUGER_CONFIG", str(missing))
    with pytest.raises(ConfigError) as info:
        load_config()
    assert str(missing) in str(info.value)


def test_cwd_file_when_env_var_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = _write_named(tmp_path / "metronome_suger.yaml", "org-cwd")
    monkeypatch.chdir(tmp_path)

    loaded = load_config()
    assert loaded.source == "cwd"
    assert loaded.path.resolve() == local.resolve()
    assert loaded.config.suger.org_id == "org-cwd"
    assert "bundled" not in loaded.announcement


def test_blank_env_var_falls_back_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_named(tmp_path / "metronome_suger.yaml", "org-cwd")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("METRONOME_SUGER_CONFIG", "  ")
    loaded = load_config()
    assert loaded.source == "cwd"
    assert loaded.config.suger.org_id == "org-cwd"


def test_bundled_sandbox_config_when_nothing_else(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # empty directory, no metronome_suger.yaml

    loaded = load_config()
    assert loaded.source == "bundled"
    assert loaded.path == Path(config_module.__file__).parent / "sandbox" / "sandbox.yaml"
    assert loaded.path.is_file()
    announcement = loaded.announcement.lower()
    assert "bundled" in announcement
    assert "sandbox" in announcement
    assert "configuration" in announcement
    # The sandbox talks to loopback emulators only.
    for url in (loaded.config.metronome.base_url, loaded.config.suger.base_url):
        assert url.startswith(("http://127.", "http://localhost", "http://[::1]"))


def test_cwd_directory_named_like_config_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "metronome_suger.yaml").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_config().source == "bundled"


def test_settle_minutes_must_fit_in_an_hourly_window() -> None:
    base = {"suger": {"org_id": "x"}, "start": "2026-11-01T00:00:00Z", "settle_minutes": 75}
    with pytest.raises(ConfigError, match=r"cfg\.yaml: settle_minutes must be below 60 for billing_mode quantity"):
        parse_config_data(base, origin="cfg.yaml")
    assert parse_config_data({**base, "billing_mode": "amount_daily"}, origin="cfg.yaml").settle_minutes == 75


# ---------------------------------------------------------------------------------------------------------
# key_prefix: asset key segments, so two configurations can share one code location


def test_key_prefix_defaults_to_none(tmp_path: Path) -> None:
    assert load_config(write_yaml(tmp_path, example_data())).config.key_prefix == []


@pytest.mark.parametrize("prefix", [["acme"], ["acme", "eu_west_1"], ["ORG_2"], ["2026"]])
def test_key_prefix_of_name_segments(tmp_path: Path, prefix: list[str]) -> None:
    cfg = load_config(write_yaml(tmp_path, {**example_data(), "key_prefix": prefix})).config
    assert cfg.key_prefix == prefix


@pytest.mark.parametrize("segment", ["a-b", "", "two words", "a/b", "a.b", "caf\u00e9", "acme\n"])
def test_key_prefix_rejects_what_is_not_a_name_segment(tmp_path: Path, segment: str) -> None:
    _, message = load_error(tmp_path, _set(("key_prefix",), ["ok", segment]))
    assert "key 'key_prefix.1'" in message
    assert "Dagster name segment (letters, digits and underscores only" in message
    assert repr(segment) in message


def test_key_prefix_schema_states_the_rule() -> None:
    items = AppConfig.model_json_schema()["properties"]["key_prefix"]["items"]
    assert items == {"type": "string", "pattern": "^[A-Za-z0-9_]+$"}


# ---------------------------------------------------------------------------------------------------------
# Descriptions: every key says what it does (the component's schema and `dg` show them)


def _models(model: type[BaseModel]) -> Iterator[type[BaseModel]]:
    yield model
    for field in model.model_fields.values():
        for arg in _types_in(field.annotation):
            if inspect.isclass(arg) and issubclass(arg, BaseModel):
                yield from _models(arg)


def _types_in(annotation: Any) -> Iterator[Any]:
    yield annotation
    for arg in getattr(annotation, "__args__", ()):
        yield from _types_in(arg)


def test_every_key_of_every_model_has_a_description() -> None:
    models = set(_models(AppConfig))
    assert {m.__name__ for m in models} == {
        "AppConfig", "MetronomeSettings", "SugerSettings", "DimensionMapping", "Whitelist", "CustomerLink",
        "StorageSettings", "HttpSettings", "AlertSettings",
    }
    for model in models:
        for name, field in model.model_fields.items():
            assert field.description and len(field.description) > 10, f"{model.__name__}.{name}"
            assert "CONTRACT" not in field.description


@pytest.mark.parametrize(
    ("model", "key"), [(config_module.MetronomeSettings, "api_token_env"), (config_module.SugerSettings, "api_key_env")]
)
def test_secret_keys_say_the_secret_is_not_in_the_file(model: type[BaseModel], key: str) -> None:
    description = model.model_fields[key].description or ""
    assert "NAME of the environment variable" in description and "never in the file" in description


def test_no_reference_to_documents_outside_the_repository() -> None:
    source = Path(config_module.__file__).read_text(encoding="utf-8")
    assert "CONTRACT" not in source and "§" not in source


def test_deadline_below_the_forwarding_lag_names_both_keys(tmp_path: Path) -> None:
    def mutate(data: dict[str, Any]) -> None:
        data["marketplace_deadline_hours"] = {"GCP": "0.5"}
        data["suger_forward_lag_minutes"] = 45

    path, message = load_error(tmp_path, mutate)
    assert str(path) in message
    assert "marketplace_deadline_hours GCP: 0.5" in message and "suger_forward_lag_minutes (45)" in message


def test_forwarding_lag_defaults_to_an_hour_and_feeds_the_deadlines() -> None:
    cfg = parse_config_data(example_data())
    assert cfg.suger_forward_lag_minutes == 60
    assert cfg.deadlines.forward_lag == timedelta(minutes=60)
    assert cfg.deadlines.hours == cfg.marketplace_deadline_hours


def test_storage_url_takes_a_postgres_ledger_with_the_password_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = example_data()
    data["storage"] = {"url": "postgresql://meter@db.internal:5432/ledger", "password_env": "MY_DB_PASSWORD"}
    cfg = parse_config_data(data)
    assert cfg.storage.is_postgres
    with pytest.raises(ConfigError, match="MY_DB_PASSWORD is not set .it must hold the database password"):
        cfg.database()  # definitions load without it; the first connection needs it
    monkeypatch.setenv("MY_DB_PASSWORD", "s3cret-pw")
    db = cfg.database()
    assert db.password is not None and db.password.get_secret_value() == "s3cret-pw"
    assert str(db) == "postgresql://meter@db.internal:5432/ledger"
    with pytest.raises(ConfigError, match="not a DuckDB file"):
        _ = cfg.duckdb_path


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://meter:hunter2@db.internal:5432/ledger", "has a password in the URL"),
        ("postgresql://meter@db.internal:5432/", "needs a host and a database"),
    ],
)
def test_bad_postgres_urls_are_config_errors(tmp_path: Path, url: str, message: str) -> None:
    path, text = load_error(tmp_path, lambda d: d.update(storage={"url": url}))
    assert str(path) in text and "storage.url" in text and message in text
    assert "hunter2" not in text


def test_http_settings_reach_both_clients_as_timeout_and_retry_policy() -> None:
    """A user's http section is what both clients use: the fault tests rely on short timeouts and fast retries."""
    http = config_module.HttpSettings(timeout_seconds=2, max_attempts=7, initial_wait_seconds=0.01,
                                      max_wait_seconds=0.2, max_total_seconds=9)
    options = http.client_options()
    assert options["timeout"].read == 2 and options["timeout"].connect == 2
    retry = options["retry"]
    assert (retry.max_attempts, retry.initial_wait, retry.max_wait, retry.max_total_seconds) == (7, 0.01, 0.2, 9)
    with pytest.raises(ValidationError, match="max_attempts"):
        config_module.HttpSettings(max_attempts=0)


# ---------------------------------------------------------------------------------------------------------
# alerts: the webhook's URL comes from the environment variable the file names


ALERT_URL_ENV = "SUGER_ALERT_WEBHOOK_URL"
HOOK_TOKEN = "hook-secret-0123456789"


@pytest.mark.parametrize(("section", "variable"), [({}, ALERT_URL_ENV), ({"webhook_url_env": "MY_HOOK"}, "MY_HOOK")])
def test_alerts_section_names_the_webhook_variable(tmp_path: Path, section: dict[str, str], variable: str) -> None:
    data = example_data()
    data["alerts"] = section
    cfg = load_config(write_yaml(tmp_path, data)).config
    assert cfg.alerts is not None and cfg.alerts.webhook_url_env == variable


@pytest.mark.parametrize("given", [False, True])
def test_alerts_are_off_by_default_and_with_null(tmp_path: Path, given: bool) -> None:
    data = example_data()
    if given:
        data["alerts"] = None
    assert load_config(write_yaml(tmp_path, data)).config.alerts is None


def test_alerts_unknown_key_is_named_and_a_pasted_url_is_not_echoed(tmp_path: Path) -> None:
    url = f"https://hooks.slack.com/services/T0/B0/{HOOK_TOKEN}"
    path, message = load_error(tmp_path, lambda d: d.update(alerts={"webhook_url": url}))
    assert str(path) in message and "unknown key 'alerts.webhook_url'" in message
    assert HOOK_TOKEN not in message


def test_alerts_must_be_a_mapping(tmp_path: Path) -> None:
    _, message = load_error(tmp_path, lambda d: d.update(alerts="SUGER_ALERT_WEBHOOK_URL"))
    assert "key 'alerts'" in message


def test_alert_webhook_url_is_read_when_needed_and_unset_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Like the API tokens: the configuration (and the definitions) load without it; asking for it names it."""
    monkeypatch.delenv("MY_HOOK", raising=False)
    cfg = parse_config_data({**example_data(), "alerts": {"webhook_url_env": "MY_HOOK"}})
    with pytest.raises(ConfigError) as info:
        cfg.alert_webhook_url()
    assert str(info.value) == "environment variable MY_HOOK is not set (it must hold the alert webhook URL)"
    url = f" https://hooks.slack.com/services/T0/B0/{HOOK_TOKEN}\n"
    monkeypatch.setenv("MY_HOOK", url)
    secret = cfg.alert_webhook_url()
    assert isinstance(secret, SecretStr) and secret.get_secret_value() == url.strip()
    assert HOOK_TOKEN not in str(secret) and HOOK_TOKEN not in repr(cfg)


def test_alert_webhook_url_without_alerts_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="alerts is not configured"):
        parse_config_data(example_data()).alert_webhook_url()


@pytest.mark.parametrize("url", [
    "https://hooks.slack.com/services/T0/B0/{token}",
    "https://chat.googleapis.com/v1/spaces/X/messages?key=k&token={token}",  # a token in the query is fine too
    "http://127.0.0.1:8080/hooks/{token}",
    "http://localhost/hooks/{token}",
])
def test_alert_webhook_urls_accepted(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv(ALERT_URL_ENV, url.format(token=HOOK_TOKEN))
    cfg = parse_config_data({**example_data(), "alerts": {}})
    assert cfg.alert_webhook_url().get_secret_value() == url.format(token=HOOK_TOKEN)


@pytest.mark.parametrize(("url", "problem"), [
    ("http://hooks.example.com/{token}", "must use https:// (http:// is allowed only for loopback hosts)"),
    ("ftp://hooks.example.com/{token}", "must be an http(s) URL with a host"),
    ("hooks.example.com/{token}", "must be an http(s) URL with a host"),
    ("https://[::1/{token}", "is not a valid URL"),
])
def test_unusable_alert_webhook_url_names_the_variable_not_the_url(
    monkeypatch: pytest.MonkeyPatch, url: str, problem: str,
) -> None:
    monkeypatch.setenv(ALERT_URL_ENV, url.format(token=HOOK_TOKEN))
    cfg = parse_config_data({**example_data(), "alerts": {}})
    with pytest.raises(ConfigError) as info:
        cfg.alert_webhook_url()
    assert str(info.value) == (f"environment variable {ALERT_URL_ENV} (the alert webhook URL, not shown: it may hold "
                               f"a token) {problem}")
    assert HOOK_TOKEN not in str(info.value) and "example.com" not in str(info.value)


def test_alert_webhook_key_says_the_url_is_not_in_the_file() -> None:
    description = config_module.AlertSettings.model_fields["webhook_url_env"].description or ""
    assert "NAME of the environment variable" in description and "never in the file" in description
