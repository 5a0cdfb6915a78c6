"""Alerts end to end: real Dagster runs (against the emulators) that fail or whose checks fail, on a SQLite
instance (run-sharded, as ``dagster dev``'s), then ticks of the alert sensors of the user's definitions, then
exactly the JSON a loopback webhook received. The webhook URL carries a token in its path: it is a secret."""

import json
import logging
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import pytest
from pydantic import SecretStr

from metronome_suger.config import parse_config_data
from metronome_suger.orchestration.alerts import (
    HIDDEN_URL,
    MESSAGE_LIMIT,
    Alert,
    Scope,
    alert_sensor_names,
    failure_reason,
    one_line,
    post_alert,
)
from metronome_suger.orchestration.definitions import build_definitions, build_reconciliation_definitions
from metronome_suger.orchestration.keys import JOB, RECONCILIATION_GROUP, Keys
from metronome_suger.orchestration.reconciliation import RECONCILIATION_JOB
from metronome_suger.orchestration.resources import ClockResource
from metronome_suger.sandbox.server import Sandbox
from metronome_suger_tests.conftest import Pipeline, failure_text
from metronome_suger_tests.secret_scan import register_token
from metronome_suger_tests.test_orchestration.test_quantity_e2e import KEY, START, build_world
from metronome_suger_tests.test_orchestration.test_reconciliation import DAY
from metronome_suger_tests.test_orchestration.test_reconciliation import at as reconciliation_at
from metronome_suger_tests.test_orchestration.test_reconciliation import key as hour_key
from metronome_suger_tests.test_orchestration.test_reconciliation import world as reconciliation_world

UTC = timezone.utc
URL_ENV = "SUGER_ALERT_WEBHOOK_URL"
RUN_FAILURE, CHECK_FAILURE = alert_sensor_names()
AT = START.replace(hour=14, minute=5)  # the window's run, as the schedule starts it


# --- a webhook on 127.0.0.1 --------------------------------------------------------------------------------------


@dataclass
class Webhook:
    """A loopback HTTP server that records every POST (path and JSON body) before it answers ``status``."""

    token: str
    status: int = 200
    posts: list[tuple[str, Any]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{self.token}"

    @property
    def bodies(self) -> list[Any]:
        return [body for _, body in self.posts]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook(token=f"alert-hook-token-{uuid.uuid4().hex}")
    register_token("the alert webhook URL's token", hook.token)  # the suite's secrets scan looks for it too

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            length = int(self.headers.get("Content-Length", 0))
            hook.posts.append((self.path, json.loads(self.rfile.read(length))))  # recorded before answering
            self.send_response(hook.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
            """Quiet: the default prints each request line (the path holds the token) to stderr."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the pipeline, its runs and its sensor ticks -----------------------------------------------------------------


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """A SQLite instance (run-sharded event log, as ``dagster dev``'s) under tmp_path, so the suite's secrets scan
    reads its files too."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


@pytest.fixture
def alerting(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, webhook: Webhook) -> Pipeline:
    """The pipeline (DuckDB) with ``alerts: {}`` and the webhook URL in its default variable."""
    pipeline = Pipeline(sandbox, tmp_path, monkeypatch)
    pipeline.settings["alerts"] = {}
    monkeypatch.setenv(URL_ENV, webhook.url)
    return pipeline


def definitions(pipeline: Pipeline, at: datetime = AT) -> dg.Definitions:
    return build_definitions(pipeline.config(), resources={"clock": ClockResource(frozen_at=at.isoformat())})


def run_job(pipeline: Pipeline, instance: dg.DagsterInstance, at: datetime = AT,
            partition: str = KEY) -> dg.ExecuteInProcessResult:
    """The window's job, as its schedule runs it."""
    pipeline.sandbox.clock.set(at)
    job = definitions(pipeline, at).resolve_job_def(JOB)
    return job.execute_in_process(partition_key=partition, instance=instance, raise_on_error=False)


class Lines(logging.Handler):
    """What a sensor tick logged (the tick's log in the UI)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


@dataclass
class Tick:
    data: Any  # dg's SensorExecutionData
    log: list[str]

    @property
    def cursor(self) -> str | None:
        return self.data.cursor


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, name: str, cursor: str | None) -> Tick:
    """One evaluation of sensor ``name`` of ``defs`` from ``cursor``, as the daemon runs it."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=defs.resources)
    lines = Lines()
    context.log.addHandler(lines)
    data = defs.resolve_sensor_def(name).evaluate_tick(context)
    return Tick(data, lines.lines)


def start(defs: dg.Definitions, instance: dg.DagsterInstance, *names: str) -> dict[str, str]:
    """Each sensor's first tick, as when the daemon starts it: it notes where the event log is, and posts nothing."""
    cursors = {}
    for name in names:
        first = tick(defs, instance, name, None)
        assert first.data.skip_message.startswith(f"Initiating {name}")
        assert first.cursor
        cursors[name] = first.cursor
    return cursors


def expected(kind: Literal["run_failure", "check_failure"], run_id: str, message: str, *, job: str = JOB, partition: str | None = KEY,
             asset: str | None = None, check: str | None = None, severity: str = "ERROR") -> dict[str, Any]:
    alert = Alert(kind, job, run_id, partition, message, asset=asset, check=check, severity=severity)
    body = {"source": "metronome-suger", "kind": kind, "job": job, "run_id": run_id, "partition": partition,
            "asset": asset, "check": check, "severity": severity, "message": message,
            "url_path": f"/runs/{run_id}", "text": f"metronome-suger: {alert.subject}: {message} (/runs/{run_id})"}
    assert alert.payload() == body
    return body


def assert_no_secret(webhook: Webhook, *texts: object) -> None:
    for text in texts:
        assert webhook.token not in str(text)
        assert f"127.0.0.1:{webhook.port}/hooks" not in str(text)


def run_events_text(instance: dg.DagsterInstance) -> str:
    return "\n".join(dg.serialize_value(e) for run in instance.get_runs() for e in instance.all_logs(run.run_id))


LINKAGE = ("1 customer(s) with usage but no link: not reported")
DEADLINE = ("1 group(s) at risk: $0.70 handed to Suger less than 60 min before the marketplace deadline "
            "(GCP 1 groups $0.70)")


# --- tests -------------------------------------------------------------------------------------------------------


def test_failed_checks_of_a_successful_run_are_posted_once_each(
    sandbox: Sandbox, alerting: Pipeline, webhook: Webhook, instance: dg.DagsterInstance,
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
) -> None:
    """The quantity world's window succeeds with two failed checks: Carol has usage but no link
    (customer_linkage) and Bob's GCP group is handed over inside Suger's forwarding lag (report_deadline)."""
    caplog.set_level(logging.DEBUG)  # httpx's request line included: it must not show the URL
    build_world(sandbox)
    defs = definitions(alerting)
    cursors = start(defs, instance, RUN_FAILURE, CHECK_FAILURE)
    result = run_job(alerting, instance)
    assert result.success, failure_text(result)

    checks = tick(defs, instance, CHECK_FAILURE, cursors[CHECK_FAILURE])
    assert webhook.bodies == [
        expected("check_failure", result.run_id, LINKAGE, asset="suger_usage_records", check="customer_linkage",
                 severity="WARN"),
        expected("check_failure", result.run_id, DEADLINE, asset="suger_usage_report", check="report_deadline",
                 severity="WARN"),
    ]
    assert {path for path, _ in webhook.posts} == {f"/hooks/{webhook.token}"}
    assert checks.log == [
        f"INFO alert posted: check customer_linkage on suger_usage_records partition {KEY} failed (WARN), "
        f"run {result.run_id}",
        f"INFO alert posted: check report_deadline on suger_usage_report partition {KEY} failed (WARN), "
        f"run {result.run_id}",
    ]
    assert [r.dagster_run.run_id for r in checks.data.dagster_run_reactions] == [result.run_id]

    again = tick(defs, instance, CHECK_FAILURE, checks.cursor)
    assert len(webhook.posts) == 2 and again.log == []  # the cursor moved past the run
    failures = tick(defs, instance, RUN_FAILURE, cursors[RUN_FAILURE])
    assert len(webhook.posts) == 2 and failures.log == []  # the run did not fail
    assert f'HTTP Request: POST {HIDDEN_URL} "HTTP/1.0 200 OK"' in caplog.text  # httpx's line, redacted
    assert_no_secret(webhook, caplog.text, checks.log, capfd.readouterr(), run_events_text(instance))


def test_a_failed_run_is_posted_with_the_step_that_failed_then_its_failed_checks(
    sandbox: Sandbox, alerting: Pipeline, webhook: Webhook, instance: dg.DagsterInstance,
) -> None:
    w = build_world(sandbox)
    gpu = sandbox.metronome.add_billable_metric("gpu_minutes")["id"]
    sandbox.metronome.set_usage(w.alice, gpu, START, 5)  # mapped nowhere: the blocking mapping check fails
    defs = definitions(alerting)
    cursors = start(defs, instance, RUN_FAILURE, CHECK_FAILURE)
    result = run_job(alerting, instance)
    assert not result.success

    failures = tick(defs, instance, RUN_FAILURE, cursors[RUN_FAILURE])
    gap = "source key 'gpu_minutes' is not mapped (has usage in 2026-11-25T13:00:00Z..2026-11-25T14:00:00Z)"
    assert webhook.bodies == [
        expected("run_failure", result.run_id, "step(s) failed: suger_usage_records_mapping_completeness: "
                 "DagsterAssetCheckFailedError: 1 blocking asset check failed with ERROR severity: "
                 "suger_usage_records: mapping_completeness"),
        expected("check_failure", result.run_id, LINKAGE, asset="suger_usage_records", check="customer_linkage",
                 severity="WARN"),
        expected("check_failure", result.run_id, f"2 mapping gap(s), nothing sent for the window: {KEY}: AWS: {gap}; "
                 f"{KEY}: GCP: {gap}", asset="suger_usage_records", check="mapping_completeness"),
    ]
    assert failures.log[0] == f"INFO alert posted: run of {JOB} partition {KEY} failed, run {result.run_id}"
    assert len(failures.log) == 3

    assert tick(defs, instance, RUN_FAILURE, failures.cursor).log == []
    assert tick(defs, instance, CHECK_FAILURE, cursors[CHECK_FAILURE]).log == []  # its checks went with the failure
    assert len(webhook.posts) == 3


@pytest.mark.parametrize("answer", ["HTTP 500", "unreachable"])
def test_a_webhook_that_fails_is_logged_and_the_tick_completes_without_retrying(
    sandbox: Sandbox, alerting: Pipeline, webhook: Webhook, instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
    answer: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    build_world(sandbox)
    defs = definitions(alerting)
    cursors = start(defs, instance, CHECK_FAILURE)
    result = run_job(alerting, instance)
    assert result.success, failure_text(result)

    if answer == "HTTP 500":
        webhook.status = 500
        reason = "answered HTTP 500"
    else:
        monkeypatch.setenv(URL_ENV, f"http://127.0.0.1:{closed_port()}/hooks/{webhook.token}")
        reason = "could not be reached (ConnectError: "  # then the OS's words: "[Errno 111] Connection refused)"
    failed = tick(defs, instance, CHECK_FAILURE, cursors[CHECK_FAILURE])
    subject = f"check customer_linkage on suger_usage_records partition {KEY} failed (WARN)"
    first, more = failed.log
    assert first.startswith(f"WARNING alert not delivered ({subject}, run {result.run_id}): the webhook in {URL_ENV} "
                            f"{reason}")
    assert first.endswith("; not retried")
    assert more == f"WARNING 1 more alert(s) of run {result.run_id} not attempted"  # a webhook that is down: not hammered
    assert len(webhook.posts) == (1 if answer == "HTTP 500" else 0)
    assert [r.error for r in failed.data.dagster_run_reactions] == [None]  # the tick itself succeeded

    webhook.status = 200
    monkeypatch.setenv(URL_ENV, webhook.url)
    assert tick(defs, instance, CHECK_FAILURE, failed.cursor).log == []  # the cursor moved on: no retry storm
    assert len(webhook.posts) == (1 if answer == "HTTP 500" else 0)
    assert_no_secret(webhook, caplog.text, failed.log, capfd.readouterr(), run_events_text(instance))


@pytest.mark.parametrize(("value", "problem"), [
    (None, "environment variable SUGER_ALERT_WEBHOOK_URL is not set (it must hold the alert webhook URL)"),
    ("http://hooks.example.com/services/{token}", "environment variable SUGER_ALERT_WEBHOOK_URL (the alert webhook "
     "URL, not shown: it may hold a token) must use https:// (http:// is allowed only for loopback hosts)"),
])
def test_a_missing_or_unusable_webhook_url_fails_the_tick_naming_the_variable_never_the_url(
    sandbox: Sandbox, alerting: Pipeline, webhook: Webhook, instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch, value: str | None, problem: str,
) -> None:
    """Read when a run is handled, like the API tokens (definitions load without it): the tick fails, in the UI,
    with the variable's name; nothing is posted."""
    build_world(sandbox)
    if value is None:
        monkeypatch.delenv(URL_ENV)
    else:
        monkeypatch.setenv(URL_ENV, value.format(token=webhook.token))
    defs = definitions(alerting)  # loads without the URL
    cursors = start(defs, instance, CHECK_FAILURE)
    result = run_job(alerting, instance)
    assert result.success, failure_text(result)

    failed = tick(defs, instance, CHECK_FAILURE, cursors[CHECK_FAILURE])
    [reaction] = failed.data.dagster_run_reactions
    assert reaction.error is not None
    error = reaction.error.to_string()
    assert f"ConfigError: {problem}" in error
    assert_no_secret(webhook, error, failed.log)
    assert webhook.posts == []


def test_reconciliation_check_failure_is_posted_by_its_own_sensor(
    sandbox: Sandbox, alerting: Pipeline, webhook: Webhook, instance: dg.DagsterInstance,
) -> None:
    """A group Suger accepted, then found INVALID: no usage record report ever names it, so seven hours after the
    handover ``marketplace_reconciliation`` fails (missing report past the 6 h grace)."""
    ents = reconciliation_world(sandbox, {"AWS": [(0, "2")]})
    sandbox.suger.forwarder.invalidate_next(ents["AWS"], "Suger found the group invalid after accepting it")
    window = alerting.run(hour_key(0))  # 01:05, on the pipeline's own instance
    assert window.success, failure_text(window)

    now = reconciliation_at(8, 5)
    defs = build_reconciliation_definitions(alerting.config(),
                                            resources={"clock": ClockResource(frozen_at=now.isoformat())})
    run_failure, check_failure = alert_sensor_names(stem=RECONCILIATION_GROUP)
    assert {s.name for s in defs.sensors or []} == {run_failure, check_failure}
    cursors = start(defs, instance, check_failure)
    main_cursors = start(definitions(alerting), instance, CHECK_FAILURE)
    sandbox.clock.set(now)
    result = defs.resolve_job_def(RECONCILIATION_JOB).execute_in_process(
        partition_key=DAY, instance=instance, raise_on_error=False)
    assert result.success, failure_text(result)

    posted = tick(defs, instance, check_failure, cursors[check_failure])
    assert webhook.bodies == [expected(
        "check_failure", result.run_id, f"1 line(s) with missing_report or unexplained: {ents['AWS']} AWS cpu_hour: "
        "converted 2, sent 2, told 0 ($0.00); differences: missing_report 2", job=RECONCILIATION_JOB, partition=DAY,
        asset="suger_usage_record_reports", check="marketplace_reconciliation")]
    assert len(posted.log) == 1
    # the windows' check sensor handles that run too (same instance), and it has none of its checks
    assert tick(definitions(alerting), instance, CHECK_FAILURE, main_cursors[CHECK_FAILURE]).log == []
    assert len(webhook.posts) == 1


def test_two_organizations_in_one_code_location_each_hear_about_their_own_runs(
    sandbox: Sandbox, alerting: Pipeline, webhook: Webhook, instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    w = build_world(sandbox)
    gpu = sandbox.metronome.add_billable_metric("gpu_minutes")["id"]
    sandbox.metronome.set_usage(w.alice, gpu, START, 5)
    monkeypatch.setenv("ACME_ALERTS", f"{webhook.url}/acme")
    monkeypatch.setenv("GLOBEX_ALERTS", f"{webhook.url}/globex")
    acme = parse_config_data({**alerting.settings, "key_prefix": ["acme"], "alerts": {"webhook_url_env": "ACME_ALERTS"}})
    globex = parse_config_data({**alerting.settings, "key_prefix": ["globex"], "suger": {"org_id": "org-globex"},
                                "storage": {"duckdb_path": str(tmp_path / "globex.duckdb")},
                                "alerts": {"webhook_url_env": "GLOBEX_ALERTS"}})
    clock = {"clock": ClockResource(frozen_at=AT.isoformat())}
    defs = dg.Definitions.merge(build_definitions(acme, resources=clock), build_definitions(globex, resources=clock))
    acme_sensors, globex_sensors = alert_sensor_names(Keys.of(["acme"])), alert_sensor_names(Keys.of(["globex"]))
    assert acme_sensors == ("acme__metronome_suger_run_failure_alert", "acme__metronome_suger_check_failure_alert")
    cursors = start(defs, instance, *acme_sensors, *globex_sensors)
    sandbox.clock.set(AT)
    result = defs.resolve_job_def("acme__metronome_suger_job").execute_in_process(
        partition_key=KEY, instance=instance, raise_on_error=False)
    assert not result.success

    for name in (*globex_sensors, *acme_sensors):
        tick(defs, instance, name, cursors[name])
    assert [(path.rsplit("/", 1)[-1], body["kind"], body["job"], body["check"]) for path, body in webhook.posts] == [
        ("acme", "run_failure", "acme__metronome_suger_job", None),
        ("acme", "check_failure", "acme__metronome_suger_job", "customer_linkage"),
        ("acme", "check_failure", "acme__metronome_suger_job", "mapping_completeness"),
    ]
    assert {body["asset"] for body in webhook.bodies} == {None, "acme/suger_usage_records"}


# --- definitions and the pieces ----------------------------------------------------------------------------------

BASE: dict[str, Any] = {"suger": {"org_id": "org-1"}, "start": "2026-11-01T00:00:00Z"}
EXISTING = {"metronome_late_usage_sensor", "suger_status_sensor"}


def test_without_alerts_no_alert_sensor_is_defined() -> None:
    config = parse_config_data(BASE)
    assert config.alerts is None
    assert {s.name for s in build_definitions(config).sensors or []} == EXISTING
    assert not build_reconciliation_definitions(config).sensors


def test_with_alerts_both_code_locations_get_two_running_sensors() -> None:
    """The URL is not needed to load the definitions (it is read when a run is handled)."""
    config = parse_config_data({**BASE, "alerts": {}})
    assert config.alerts is not None and config.alerts.webhook_url_env == URL_ENV
    sensors = {s.name: s for s in build_definitions(config).sensors or []}
    assert set(sensors) == EXISTING | {"metronome_suger_run_failure_alert", "metronome_suger_check_failure_alert"}
    reconciliation = {s.name: s for s in build_reconciliation_definitions(config).sensors or []}
    assert set(reconciliation) == {"metronome_suger_reconciliation_run_failure_alert",
                                   "metronome_suger_reconciliation_check_failure_alert"}
    for sensor in [*sensors.values(), *reconciliation.values()]:
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert f"the webhook in {URL_ENV}" in (sensors["metronome_suger_run_failure_alert"].description or "")


def _run(job: str, assets: list[str] | None = None, checks: list[str] | None = None) -> dg.DagsterRun:
    return dg.DagsterRun(
        job_name=job, asset_selection=frozenset(dg.AssetKey(a.split("/")) for a in assets or []) or None,
        asset_check_selection=frozenset(dg.AssetCheckKey(dg.AssetKey(c.split("/")[:-1]), c.split("/")[-1])
                                        for c in checks or []) or None)


def test_a_run_belongs_to_the_pipeline_by_job_or_by_what_it_selected() -> None:
    keys = Keys.of(["acme"])
    scope = Scope(frozenset({keys.name(JOB)}), frozenset({keys.asset("suger_usage_records")}),
                  frozenset({dg.AssetCheckKey(keys.asset("suger_usage_records"), "customer_linkage")}))
    assert scope.owns(_run("acme__metronome_suger_job"))
    assert scope.owns(_run("__ASSET_JOB"))  # the code location's implicit job, everything selected
    assert scope.owns(_run("__ASSET_JOB", ["acme/suger_usage_records"]))  # "Materialize" in the UI
    assert scope.owns(_run("__ASSET_JOB", checks=["acme/suger_usage_records/customer_linkage"]))
    assert not scope.owns(_run("__ASSET_JOB", ["globex/suger_usage_records"]))
    assert not scope.owns(_run("globex__metronome_suger_job"))
    assert not scope.owns(_run("someone_elses_job"))


def test_a_post_to_a_webhook_is_one_json_request(webhook: Webhook, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    alert = Alert("run_failure", JOB, "r-1", None, "boom")
    log = logging.getLogger("test_alerts")
    assert post_alert(SecretStr(webhook.url), alert, log, url_env=URL_ENV)
    assert webhook.posts == [(f"/hooks/{webhook.token}", expected("run_failure", "r-1", "boom", partition=None))]
    assert webhook.bodies[0]["text"] == "metronome-suger: run of metronome_suger_job failed: boom (/runs/r-1)"
    webhook.status = 404
    assert not post_alert(SecretStr(webhook.url), alert, log, url_env=URL_ENV)
    assert len(webhook.posts) == 2
    assert "the webhook in SUGER_ALERT_WEBHOOK_URL answered HTTP 404; not retried" in caplog.text
    assert_no_secret(webhook, caplog.text)


def test_the_message_is_one_short_line() -> None:
    assert one_line("  a\n\tb  c \n") == "a b c"
    long = one_line("x" * 1000)
    assert len(long) == MESSAGE_LIMIT and long.endswith("…")


def test_a_failure_reason_never_quotes_the_url() -> None:
    url = "https://hooks.example.com/services/T0/B0/secret-path-token?key=secret-query-token"
    assert failure_reason(ConnectionRefusedError("[Errno 111] Connection refused"), url) == (
        "ConnectionRefusedError: [Errno 111] Connection refused")
    for text in (f"cannot reach {url}", "bad path /services/T0/B0/secret-path-token", "key=secret-query-token"):
        assert failure_reason(RuntimeError(text), url) == "RuntimeError"
