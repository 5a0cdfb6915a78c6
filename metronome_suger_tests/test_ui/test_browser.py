"""What a user sees in the Dagster UI, in a real headless browser.

The bundled emulators (3 generated customers plus one of ours with usage in the last closed hour), ``dagster dev``
on the repository's ``workspace.yaml`` (both code locations) in a subprocess with its own ``DAGSTER_HOME``, and
Debian's Chromium (scripts/ensure-chromium.sh) driven by Playwright. The test reads the pages as a user does (their
text), cross-checks them with the webserver's GraphQL API, launches one window through the same API the UI's
"Materialize" button calls, and saves screenshots into ``artifacts/ui/`` at the repository root.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from playwright.sync_api import expect, sync_playwright

from metronome_suger.config import BUNDLED_CONFIG
from metronome_suger.core.windows import floor
from metronome_suger.demo import DAGSTER_YAML
from metronome_suger.orchestration.keys import (
    CUSTOMERS,
    ENTITLEMENTS,
    JOB,
    LATE_USAGE_SENSOR,
    METRICS,
    RECORDS,
    REPORT,
    REPORTS,
    STATUS_SENSOR,
    USAGE,
)
from metronome_suger.sandbox.scenario import DIMENSIONS
from metronome_suger.sandbox.server import Sandbox
from metronome_suger_tests.conftest import sent_groups

pytestmark = pytest.mark.slow

UTC = timezone.utc
HOUR = timedelta(hours=1)
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
WORKSPACE = REPO / "workspace.yaml"
SHOTS = REPO / "artifacts" / "ui"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

LOCATION, RECONCILIATION_LOCATION = "metronome-suger", "metronome-suger-reconciliation"
SCHEDULE = f"{JOB}_schedule"
# What each location shows (default quantity mode): asset -> its checks.
WINDOW_ASSETS = {CUSTOMERS: [], METRICS: [], ENTITLEMENTS: [], USAGE: [],
                 RECORDS: ["mapping_completeness", "customer_linkage"],
                 REPORT: ["usage_verification", "suger_record_status", "report_deadline"]}
RECONCILIATION_ASSETS = {REPORTS: ["marketplace_reconciliation"]}
ALL_ASSETS = {**WINDOW_ASSETS, **RECONCILIATION_ASSETS}

STARTUP_TIMEOUT = 300.0  # s: dagster dev up, both code locations loaded (a minute or more on a loaded 2-core box)
RUN_TIMEOUT = 600.0  # s: the launched run queued, started and finished
UI_TIMEOUT_MS = 120_000  # a page's text (the UI fetches its data after the first paint)
MIN_SHOT_BYTES = 10_000
VIEWPORT: Any = {"width": 1600, "height": 1000}
LOADING = re.compile(r"^Loading(…|\.\.\.)$")  # the UI's placeholder while a part of the page fetches its data


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class DagsterUI:
    url: str
    log: Path
    proc: "subprocess.Popen[bytes]"
    sandbox: Sandbox
    partition: str  # the window we put usage in (the last closed hour)
    entitlement: str  # our customer's, with 7.5 CPU hours in that window

    def redact(self, text: str) -> str:
        """Never a token in an assertion message: each value replaced by its variable's name."""
        for name, value in self.sandbox.env().items():
            text = text.replace(value, f"<{name}>")
        return text

    def log_tail(self, chars: int = 6000) -> str:
        text = self.log.read_text(errors="replace") if self.log.is_file() else "(no log)"
        return self.redact(text[-chars:])

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=120)
        assert answer.status_code == 200, f"GraphQL HTTP {answer.status_code}: {self.redact(answer.text[:3000])}"
        body = answer.json()
        assert not body.get("errors"), f"GraphQL errors: {self.redact(json.dumps(body['errors'])[:3000])}"
        return body["data"]


def build_world(sb: Sandbox, start: datetime) -> str:
    """Our own customer on AWS with CPU hours in the window, next to the scenario's 3 generated ones; returns her
    entitlement."""
    cpu = sb.scenario.metric_ids["cpu_hours"]
    customer = sb.metronome.add_customer("Dana")["id"]
    buyer = sb.suger.add_buyer("Dana AWS", partner="AWS", metronome_customer_id=customer)["id"]
    entitlement = sb.suger.add_entitlement(buyer, partner="AWS", dimensions=[dict(d) for d in DIMENSIONS])["id"]
    sb.metronome.set_usage(customer, cpu, start, Decimal("7.5"))
    return str(entitlement)


def write_config(path: Path, sb: Sandbox, db: Path, start: datetime, now: datetime) -> Path:
    """The bundled sandbox configuration (its conversion covers every scenario metric and marketplace), pointed at
    this sandbox and a DuckDB file of the test. The schedule's minute is half an hour from now, so it cannot
    launch the same window while the test runs."""
    data = yaml.safe_load(BUNDLED_CONFIG.read_text())
    data["metronome"]["base_url"] = sb.metronome_url
    data["suger"].update(base_url=sb.suger_url, org_id=sb.org_id)
    data["storage"] = {"duckdb_path": str(db)}
    data["start"] = floor(start - timedelta(days=1), False).strftime("%Y-%m-%dT%H:%M:%SZ")
    data["settle_minutes"] = (now.minute + 30) % 60
    path.write_text(yaml.safe_dump(data))
    return path


def stop_process_group(proc: "subprocess.Popen[bytes]") -> None:
    """dagster dev first (SIGINT: it stops its webserver, daemon and code servers), then whatever of its session
    is still alive."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def wait_for_webserver(ui: DagsterUI) -> None:
    """Poll ``/server_info`` until the webserver answers, then GraphQL until both code locations are loaded."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        if ui.proc.poll() is not None:
            pytest.fail(f"dagster dev exited ({ui.proc.returncode}):\n{ui.log_tail()}")
        try:
            answer = httpx.get(f"{ui.url}/server_info", timeout=5)
            if answer.status_code == 200:
                locations = locations_loaded(ui)
                if locations == {LOCATION: "LOADED", RECONCILIATION_LOCATION: "LOADED"}:
                    return
                last = f"code locations {locations}"
            else:
                last = f"/server_info HTTP {answer.status_code}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}"
        time.sleep(1.0)  # polling interval of a bounded wait, not a synchronization
    pytest.fail(f"dagster dev not ready after {STARTUP_TIMEOUT:g} s ({last}):\n{ui.log_tail()}")


LOCATIONS_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def locations_loaded(ui: DagsterUI) -> dict[str, str]:
    data = ui.graphql(LOCATIONS_QUERY)["workspaceOrError"]
    out = {}
    for entry in data.get("locationEntries", []):
        error = entry["locationOrLoadError"]
        if error and error["__typename"] == "PythonError":
            pytest.fail(f"code location {entry['name']} failed to load: {ui.redact(error['message'])}\n{ui.log_tail()}")
        out[entry["name"]] = entry["loadStatus"]
    return out


@contextmanager
def dagster_ui(tmp: Path) -> Iterator[DagsterUI]:
    """The sandbox with our data, and ``dagster dev -w workspace.yaml`` pointed at it, until the block ends."""
    now = datetime.now(UTC)
    start = floor(now, True) - HOUR  # the last closed hour (the sandbox runs on the real clock here)
    with Sandbox(customers=3) as sb:
        entitlement = build_world(sb, start)
        config = write_config(tmp / "metronome_suger.yaml", sb, tmp / "data" / "metronome_suger.duckdb", start, now)
        home = tmp / "dagster_home"
        home.mkdir()
        # demo.py's instance (the DuckDB pool at 1); no telemetry, and no "Join the Dagster community" dialog over
        # the pages (what a user's first "Skip" click would store).
        (home / "dagster.yaml").write_text(DAGSTER_YAML + "telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "METRONOME_SUGER"))}
        env.update(sb.env(), DAGSTER_HOME=str(home), METRONOME_SUGER_CONFIG=str(config))
        port = free_port()
        log = tmp / "dagster_dev.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(BIN / "dagster"), "dev", "-w", str(WORKSPACE), "-h", "127.0.0.1", "-p", str(port)],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        ui = DagsterUI(f"http://127.0.0.1:{port}", log, proc, sb, start.strftime("%Y-%m-%d-%H:%M"), entitlement)
        try:
            wait_for_webserver(ui)
            yield ui
        finally:
            stop_process_group(proc)


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterUI]:
    with dagster_ui(tmp_path_factory.mktemp("dagster_ui")) as running:
        yield running


# --- GraphQL: what the webserver serves the pages from ------------------------------------------------------------

REPOSITORIES_QUERY = """
{ repositoriesOrError { __typename ... on RepositoryConnection { nodes {
    location { name }
    schedules { name scheduleState { status } }
    sensors { name sensorState { status } }
    assetNodes { assetKey { path } assetChecksOrError { __typename ... on AssetChecks { checks { name } } } } } } } }"""
LAUNCH_MUTATION = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PipelineNotFoundError { message }
  }
}"""
RUN_QUERY = "query Run($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"
FAILURES_QUERY = """
query Failures($id: ID!) { logsForRun(runId: $id) { __typename ... on EventConnection { events {
    __typename ... on ExecutionStepFailureEvent { stepKey error { message } } ... on RunFailureEvent { message } } } } }"""
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def definitions_served(ui: DagsterUI) -> tuple[dict[str, dict[str, list[str]]], dict[str, str]]:
    """Per code location its assets and their checks; every schedule's and sensor's status."""
    nodes = ui.graphql(REPOSITORIES_QUERY)["repositoriesOrError"]["nodes"]
    assets: dict[str, dict[str, list[str]]] = {}
    statuses: dict[str, str] = {}
    for node in nodes:
        location = assets.setdefault(node["location"]["name"], {})
        for asset in node["assetNodes"]:
            checks = asset["assetChecksOrError"].get("checks", [])
            location["/".join(asset["assetKey"]["path"])] = sorted(c["name"] for c in checks)
        statuses.update({s["name"]: s["scheduleState"]["status"] for s in node["schedules"]})
        statuses.update({s["name"]: s["sensorState"]["status"] for s in node["sensors"]})
    return assets, statuses


def launch_window(ui: DagsterUI) -> str:
    """One window of the job, as the UI's "Materialize" of one partition launches it; returns the run id."""
    params = {"selector": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "jobName": JOB},
              "runConfigData": {},
              "executionMetadata": {"tags": [{"key": "dagster/partition", "value": ui.partition}]}}
    result = ui.graphql(LAUNCH_MUTATION, {"params": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", f"launchRun: {ui.redact(json.dumps(result))}"
    return str(result["run"]["runId"])


def wait_for_run(ui: DagsterUI, run_id: str) -> None:
    """Poll the run until it has finished (bounded); fail with its step failures and the dagster dev log."""
    deadline = time.monotonic() + RUN_TIMEOUT
    status = "unknown"
    while time.monotonic() < deadline:
        status = ui.graphql(RUN_QUERY, {"id": run_id})["runOrError"].get("status", "unknown")
        if status in TERMINAL:
            break
        if ui.proc.poll() is not None:
            pytest.fail(f"dagster dev exited ({ui.proc.returncode}) during run {run_id}:\n{ui.log_tail()}")
        time.sleep(2.0)  # polling interval of a bounded wait, not a synchronization
    if status == "SUCCESS":
        return
    events = ui.graphql(FAILURES_QUERY, {"id": run_id})["logsForRun"].get("events", [])
    failures = [f"{e.get('stepKey')}: {(e.get('error') or {}).get('message') or e.get('message')}"
                for e in events if e["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent")]
    pytest.fail(ui.redact(f"run {run_id} of {ui.partition} is {status} (after at most {RUN_TIMEOUT:g} s):\n"
                          + "\n".join(failures)[:6000]) + f"\n--- dagster dev log ---\n{ui.log_tail()}")


# --- the browser --------------------------------------------------------------------------------------------------

class Browser:
    """One headless Chromium page on the webserver; every failure names the page and shows its text and the
    dagster dev log."""

    def __init__(self, ui: DagsterUI, page: Any) -> None:
        self.ui, self.page = ui, page

    def fail(self, what: str, exc: BaseException | None = None) -> None:
        try:
            body = self.page.inner_text("body", timeout=5000)
        except Exception as inner:  # the page itself is gone: say so instead
            body = f"(page text unavailable: {type(inner).__name__})"
        cause = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}\n" if exc else ""
        pytest.fail(self.ui.redact(f"{what}\n{cause}--- page {self.page.url} ---\n{body[-6000:]}")
                    + f"\n--- dagster dev log ---\n{self.ui.log_tail()}")

    def open(self, path: str, *, expect: str) -> None:
        """Go to ``path`` and wait until ``expect`` is shown (the UI fetches its data after the first paint)."""
        self.page.goto(f"{self.ui.url}{path}", wait_until="domcontentloaded", timeout=UI_TIMEOUT_MS)
        self.shows(expect, where=path)

    def shows(self, text: str, *, where: str = "", exact: bool = True, scope: Any = None) -> None:
        try:
            # the first *visible* match: the page keeps hidden copies of some texts (tooltips, the other view)
            match = (scope or self.page).get_by_text(text, exact=exact).filter(visible=True).first
            match.wait_for(state="visible", timeout=UI_TIMEOUT_MS)
        except Exception as exc:
            self.fail(f"{text!r} is not shown on {where or self.page.url}", exc)

    def loaded(self, where: str) -> None:
        """Wait until no "Loading…" placeholder is left on the page."""
        try:
            expect(self.page.get_by_text(LOADING).filter(visible=True)).to_have_count(0, timeout=UI_TIMEOUT_MS)
        except AssertionError as exc:
            self.fail(f"{where} is still loading", exc)

    def screenshot(self, name: str) -> Path:
        path = SHOTS / name
        self.page.screenshot(path=str(path), full_page=True)
        return path


def automation_row(browser: Browser, name: str) -> Any:
    """The automation list's row of ``name``: the nearest block around its name that holds its controls."""
    return browser.page.get_by_text(name, exact=True).first.locator("xpath=ancestor::div[.//input][1]")


@pytest.fixture(scope="module")
def browser(ui: DagsterUI) -> Iterator[Browser]:
    assert Path(CHROMIUM).is_file(), f"no {CHROMIUM}: run scripts/ensure-chromium.sh (make test does)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = chromium.new_context(viewport=VIEWPORT)  # a fresh profile
            yield Browser(ui, context.new_page())
            context.close()
        finally:
            chromium.close()


SHOT_NAMES = ["01_asset_graph.png", "02_automation.png", "03_report_partitions.png", "04_report_plots.png",
              "05_report_checks.png"]


def test_the_ui_shows_assets_checks_automation_and_a_launched_window(ui: DagsterUI, browser: Browser) -> None:
    """Every asset of both code locations in the asset graph and the catalog, each check in its asset's Checks tab;
    the schedule and both sensors listed and running; one window launched through the webserver's GraphQL API
    succeeds and shows as a materialized partition with its metadata, plotted in the Plots view. Screenshots of
    each page in artifacts/ui/."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for name in SHOT_NAMES:  # only this run's pictures count
        (SHOTS / name).unlink(missing_ok=True)

    # The window runs while the pages are read.
    run_id = launch_window(ui)

    # What the webserver serves: both locations' assets and checks, the automation running.
    assets, statuses = definitions_served(ui)
    assert assets == {LOCATION: {k: sorted(v) for k, v in WINDOW_ASSETS.items()},
                      RECONCILIATION_LOCATION: {k: sorted(v) for k, v in RECONCILIATION_ASSETS.items()}}, assets
    for name in (SCHEDULE, LATE_USAGE_SENSOR, STATUS_SENSOR):
        assert statuses.get(name) == "RUNNING", f"{name}: {statuses.get(name)} (all: {statuses})"

    # The catalog lists every asset with its code location.
    browser.open("/assets", expect=REPORT)
    for asset in ALL_ASSETS:
        browser.shows(asset, where="the asset catalog")
    browser.shows(RECONCILIATION_LOCATION, where="the asset catalog")

    # Each check in its asset's Checks tab.
    for asset, checks in ALL_ASSETS.items():
        if checks:
            browser.open(f"/assets/{asset}?view=checks", expect=f"Checks ({len(checks)})")
            for check in checks:
                browser.shows(check, where=f"the Checks tab of {asset}")

    # The automation: listed, each toggle on.
    browser.open("/automation", expect=SCHEDULE)
    for name in (SCHEDULE, LATE_USAGE_SENSOR, STATUS_SENSOR):
        browser.shows(name, where="the automation list")
        switch = automation_row(browser, name).locator("label[class*=Switch] input[type=checkbox]")
        try:  # the switch is drawn first, its state filled in when the instigator's status has loaded
            expect(switch).to_be_checked(timeout=UI_TIMEOUT_MS)
        except AssertionError as exc:
            browser.fail(f"the automation list does not show {name} running (its switch is off or missing)", exc)
    browser.shows(LOCATION, where="the automation list")
    browser.screenshot("02_automation.png")

    # The window's run succeeds, and Suger received our customer's CPU hours.
    wait_for_run(ui, run_id)
    ours = [g["records"] for g in sent_groups(ui.sandbox) if g["entitlementID"] == ui.entitlement]
    assert ours == [{"cpu_hour": Decimal("7.5")}], ours

    # The global asset graph, every group expanded (Alt+E, the graph's "Expand all groups"): all 7 assets.
    browser.open("/asset-groups", expect="metronome_suger_reconciliation")
    browser.page.keyboard.press("Alt+e")
    for asset in ALL_ASSETS:
        browser.shows(asset, where="the global asset graph (groups expanded)")
    browser.loaded("the global asset graph")  # each node's status filled in, for the picture
    browser.screenshot("01_asset_graph.png")

    # The report asset's Partitions tab, on the launched window: materialized by our run, with its metadata.
    browser.open(f"/assets/{REPORT}?view=partitions&partition={ui.partition}", expect="groups_to_send")
    browser.shows("Materialized", where="the report's partitions")
    browser.shows(run_id[:8], where="the report's partition (its run)")
    browser.screenshot("03_report_partitions.png")

    # Its Plots: the Overview's Metadata section, switched from Table to Plots (Dagster 1.13 has no Plots tab).
    browser.open(f"/assets/{REPORT}", expect="groups_to_send")
    try:
        browser.page.get_by_role("button", name="Plots").click(timeout=UI_TIMEOUT_MS)  # its name includes the icon's
    except Exception as exc:
        browser.fail("no Plots button in the report's Metadata section", exc)
    browser.shows("When graphing values by partition", exact=False, where="the report's Plots")
    for key in ("sent", "groups_to_send"):
        browser.shows(key, where="the report's Plots")
    if browser.page.locator("canvas").count() < 2:
        browser.fail("the report's Plots draw no charts")
    # The section at the top of a window tall enough for every chart (the app scrolls inside the page, so a
    # full-page screenshot shows what the window shows).
    browser.page.set_viewport_size({"width": 1600, "height": 2600})
    browser.page.get_by_text("Metadata", exact=True).first.evaluate("e => e.scrollIntoView({block: 'start'})")
    browser.screenshot("04_report_plots.png")
    browser.page.set_viewport_size(VIEWPORT)

    # Its Checks tab after the run: each check evaluated for the window.
    browser.open(f"/assets/{REPORT}?view=checks", expect="Checks (3)")
    browser.shows(ui.partition, where="the report's Checks tab (the evaluated partition)")
    browser.screenshot("05_report_checks.png")

    for name in SHOT_NAMES:
        shot = SHOTS / name
        assert shot.is_file(), f"no screenshot {shot}"
        assert shot.stat().st_size > MIN_SHOT_BYTES, f"{shot}: {shot.stat().st_size} bytes"
