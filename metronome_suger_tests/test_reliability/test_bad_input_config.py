"""Bad configuration: each case is a YAML file loaded as the commands load it (``load_config``), and must be
refused at load time with one message naming the file and the key, or give its documented outcome (``start``
with a UTC offset is converted to UTC; without one it is taken as UTC). Nothing is called and nothing is sent:
these cases never reach an API. The CLI turns the same errors into one line and exit code 1.

Multipliers: the ledger keeps DECIMAL(38,10) (``storage/db.py`` ``QTY``) and converts exactly only
``|quantity × multiplier| < 10^18``, so a multiplier with more than 10 decimal places (0.00000000001 would be
stored as 0: nothing would ever be sent) or of 10^18 or more is refused by name.
"""

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from metronome_suger import cli
from metronome_suger.config import CONFIG_ENV_VAR, AppConfig, ConfigError, load_config
from metronome_suger_tests.figures import record

pytestmark = [pytest.mark.reliability]

Change = Callable[[dict[str, Any]], None]
MULTIPLIER = "key 'dimension_conversion.AWS.cpu_hours.0.multiplier': "


@pytest.fixture(autouse=True)
def one_case() -> None:
    record("bad_input", cases=1)


def good() -> dict[str, Any]:
    """A valid configuration (loopback URLs: nothing here is ever called)."""
    return {
        "metronome": {"base_url": "http://127.0.0.1:8701"},
        "suger": {"base_url": "http://127.0.0.1:8702", "org_id": "org-123"},
        "start": "2026-11-01T00:00:00Z",
        "dimension_conversion": {"AWS": {"cpu_hours": [{"dimension_key": "cpu_hour", "multiplier": 1}]}},
    }


def setting(path: str, value: Any) -> Change:
    """Set ``a.b.c`` (list items by index) to ``value``; ``value`` ``...`` deletes the key."""
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if value is ...:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return change


def multiplier(value: Any) -> Change:
    return setting("dimension_conversion.AWS.cpu_hours.0.multiplier", value)


# case → (change to the good configuration, or the whole file's text; the message after "<file>: ", or None
# when the file loads: then ``accepted`` says what it became)
REFUSED: dict[str, tuple[Change | str, str]] = {
    "unknown_key": (setting("billing_mod", "quantity"), "unknown key 'billing_mod'"),
    "missing_required_key": (setting("suger.org_id", ...), "missing required key 'suger.org_id'"),
    "wrong_enum_value": (setting("billing_mode", "hourly"),
                         "key 'billing_mode': Input should be 'quantity', 'amount_hourly' or 'amount_daily'"),
    "wrong_type_boolean": (setting("auto_report", "sometimes"),
                           "key 'auto_report': Input should be a valid boolean"),
    "multiplier_negative": (multiplier(-1), MULTIPLIER + "Input should be greater than or equal to 0"),
    "multiplier_nan": (multiplier(float("nan")), MULTIPLIER + "Input should be a finite number"),
    "multiplier_infinity": (multiplier(float("inf")), MULTIPLIER + "Input should be a finite number"),
    "multiplier_1e30": (multiplier(1e30), MULTIPLIER + "Value error, must be below 10^18 (got 1E+30)"),
    "multiplier_more_decimals_than_kept": (
        multiplier("0.00000000001"),
        MULTIPLIER + "Value error, has more than 10 decimal places (0.00000000001), which the ledger's "
        "DECIMAL(38,10) would round"),
    "unknown_marketplace": (setting("dimension_conversion.ALIBABA", {}),
                            "key 'dimension_conversion.ALIBABA.[key]': Input should be 'AWS', 'AZURE' or 'GCP'"),
    "start_not_on_the_hour": (setting("start", "2026-11-01T00:30:00Z"),
                              "key 'start': Value error, must be on a whole UTC hour"),
    "start_offset_off_the_utc_hour": (setting("start", "2026-11-01T00:00:00+05:30"),  # 2026-10-31T18:30Z
                                      "key 'start': Value error, must be on a whole UTC hour"),
    "start_not_a_time": (setting("start", "yesterday"), "key 'start': Input should be a valid datetime"),
    "plain_http_to_a_remote_host": (
        setting("suger.base_url", "http://api.suger.cloud"),
        "key 'suger.base_url': Value error, must use https:// (http:// is allowed only for loopback hosts)"),
    "settle_minutes_past_the_window": (setting("settle_minutes", 60),
                                       "settle_minutes must be below 60 for billing_mode quantity (got 60)"),
    "deadline_shorter_than_forward_lag": (
        setting("marketplace_deadline_hours", {"GCP": "0.5"}),
        "marketplace_deadline_hours GCP: 0.5 is shorter than suger_forward_lag_minutes (60)"),
    "password_in_storage_url": (
        setting("storage", {"url": "postgresql://ms:hunter2@db.internal:5432/ledger"}),
        "key 'storage.url': Value error, has a password in the URL: put it in the environment variable named by "
        "storage.password_env instead"),
    "not_a_mapping": ("- metronome\n- suger\n", "the configuration must be a YAML mapping"),
    "invalid_yaml": ("suger:\n  org_id: [org-123\n", "not valid YAML"),
}


def write(tmp_path: Path, content: Change | str) -> Path:
    path = tmp_path / "metronome_suger.yaml"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        data = good()
        content(data)
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", [pytest.param(name, id=name) for name in REFUSED])
def test_bad_config_is_refused_naming_the_file_and_the_key(tmp_path: Path, name: str) -> None:
    content, expected = REFUSED[name]
    path = write(tmp_path, content)
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert str(refused.value).startswith(f"{path}: ")
    assert expected in str(refused.value)
    assert "hunter2" not in str(refused.value)  # a refused secret is not repeated


def start_is(expected: datetime) -> Callable[[AppConfig], None]:
    def check(config: AppConfig) -> None:
        assert config.start == expected and config.start.utcoffset() == timezone.utc.utcoffset(None)
    return check


ACCEPTED: dict[str, tuple[Change, Callable[[AppConfig], None]]] = {
    # the same instant written with an offset: converted to UTC
    "start_non_utc_offset": (setting("start", "2026-11-01T01:00:00+01:00"),
                             start_is(datetime(2026, 11, 1, tzinfo=timezone.utc))),
    # no offset: taken as UTC, as documented ("ISO 8601, e.g. 2026-11-01T00:00:00Z"; every window is UTC)
    "start_without_offset": (setting("start", "2026-11-01T05:00:00"),
                             start_is(datetime(2026, 11, 1, 5, tzinfo=timezone.utc))),
}


@pytest.mark.parametrize("name", [pytest.param(name, id=name) for name in ACCEPTED])
def test_config_with_a_documented_outcome_loads(tmp_path: Path, name: str) -> None:
    change, check = ACCEPTED[name]
    check(load_config(write(tmp_path, change)).config)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "metronome_suger.yaml"
    with pytest.raises(ConfigError, match=f"^{path}: cannot read configuration file"):
        load_config(path)


def test_cli_turns_a_config_error_into_one_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    path = write(tmp_path, setting("billing_mod", "quantity"))
    monkeypatch.setenv(CONFIG_ENV_VAR, str(path))
    assert cli.main(["status"]) == 1
    out, err = capsys.readouterr()
    assert err == f"metronome-suger: error: {path}: unknown key 'billing_mod'\n" and out == ""


@pytest.mark.slow
def test_verify_names_the_unset_token_variables(tmp_path: Path) -> None:
    """The real ``metronome-suger verify``: a token variable that is unset is named when the first call would be
    made (the configuration itself loads), and nothing is called."""
    path = write(tmp_path, setting("metronome.api_token_env", "ACME_METRONOME_TOKEN"))
    env = {k: v for k, v in os.environ.items() if k not in ("ACME_METRONOME_TOKEN", "SUGER_API_KEY")}
    env[CONFIG_ENV_VAR] = str(path)
    binary = Path(sys.executable).with_name("metronome-suger")
    done = subprocess.run([str(binary), "verify"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == f"metronome-suger: using configuration {path}"
    assert "problem: Metronome: environment variable ACME_METRONOME_TOKEN is not set (it must hold the API " \
           "token)" in done.stdout
    assert "problem: Suger: environment variable SUGER_API_KEY is not set" in done.stdout
    assert "NOT VERIFIED: 2 problem(s)" in done.stdout and "Traceback" not in done.stderr
