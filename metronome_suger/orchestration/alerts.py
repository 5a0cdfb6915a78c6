"""Alerts: each failed run and each failed asset check of the pipeline, POSTed to a webhook as short JSON.

OSS Dagster has no alerting of its own. With ``alerts`` in the configuration, the definitions get two
run-status sensors, RUNNING by default (without ``alerts`` they are not defined at all):

- ``..._run_failure_alert``: a run of the pipeline failed: one ``run_failure`` message, then one
  ``check_failure`` message per failed check evaluation of that run (a blocking check that stopped it, a
  warning recorded before the failure);
- ``..._check_failure_alert``: a run of the pipeline succeeded with failed checks (``customer_linkage``,
  ``report_deadline``...): one ``check_failure`` message per failed evaluation.

Dagster keeps their cursors (run-status change events), so each finished run is handled once, on the default
run-sharded SQLite storage (``dagster dev``) as on PostgreSQL; a run's check evaluations are read from that run's
own events. (A cross-run event cursor, ``get_event_records`` after a storage id, is refused by the run-sharded
SQLite storage.) A run belongs to the pipeline when it is one of its jobs or selected one of its assets, so two
organizations sharing a code location (``key_prefix``) each hear about their own runs only.

The webhook URL usually embeds a token: it is read from its environment variable when a run is handled, and is
never logged, put in an exception or in Dagster metadata (httpx's request log line is redacted while we post).
A post is tried once with a short timeout: a failure (unreachable, timeout, non-2xx) is logged as a warning on
the sensor tick and never raised into the sensor loop; the remaining alerts of that run are then not attempted,
so an unreachable webhook cannot hold a tick past Dagster's sensor timeout.
"""

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import dagster as dg
import httpx
from pydantic import SecretStr

from metronome_suger.config import AppConfig
from metronome_suger.orchestration.failures import failure_description, innermost_error
from metronome_suger.orchestration.keys import GROUP, NO_PREFIX, Keys

__all__ = ["SOURCE", "Alert", "Scope", "alert_sensor_names", "build_alert_sensors", "check_alerts", "post_alert",
           "post_alerts", "run_failure_alert"]

SOURCE = "metronome-suger"
RUN_FAILURE_ALERT = "run_failure_alert"  # sensor names: keys.name(f"{stem}_run_failure_alert")
CHECK_FAILURE_ALERT = "check_failure_alert"
# One try per alert, 10 s at worst (connect, write, read); a tick handles at most 5 runs (Dagster's default) and stops
# a run's alerts at the first failure, so even a webhook that hangs keeps a tick inside the 60 s sensor timeout.
TIMEOUT = httpx.Timeout(4.0, connect=2.0)
MESSAGE_LIMIT = 300  # characters of the one-line message
USER_AGENT = "metronome-suger/0.1 (alerts)"
HIDDEN_URL = "<alert webhook URL>"
IMPLICIT_ASSET_JOB = "__ASSET_JOB"  # Dagster's job of every asset of a code location (UI "Materialize all"...)
PARTITION_TAG = "dagster/partition"
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


class Log(Protocol):
    def info(self, msg: str) -> Any: ...

    def warning(self, msg: str) -> Any: ...


@dataclass(frozen=True)
class Alert:
    """One message: ``payload()`` is exactly what the webhook receives."""

    kind: Literal["run_failure", "check_failure"]
    job: str
    run_id: str
    partition: str | None
    message: str
    asset: str | None = None
    check: str | None = None
    severity: str = "ERROR"

    @property
    def url_path(self) -> str:
        """The run's page, relative to the Dagster UI's base URL."""
        return f"/runs/{self.run_id}"

    @property
    def subject(self) -> str:
        where = f" partition {self.partition}" if self.partition else ""
        if self.kind == "run_failure":
            return f"run of {self.job}{where} failed"
        return f"check {self.check} on {self.asset}{where} failed ({self.severity})"

    def payload(self) -> dict[str, Any]:
        return {
            "source": SOURCE, "kind": self.kind, "job": self.job, "run_id": self.run_id, "partition": self.partition,
            "asset": self.asset, "check": self.check, "severity": self.severity, "message": self.message,
            "url_path": self.url_path,
            # what Slack (and Mattermost, Teams...) incoming webhooks display
            "text": f"{SOURCE}: {self.subject}: {self.message} ({self.url_path})",
        }


def one_line(text: str | None, limit: int = MESSAGE_LIMIT) -> str:
    """Whitespace collapsed, at most ``limit`` characters."""
    flat = re.sub(r"\s+", " ", text or "").strip()
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


class _HideUrl(logging.Filter):
    """Redacts the webhook URL from httpx's ``HTTP Request: POST <url> ...`` log line (while one post runs)."""

    def __init__(self, url: str) -> None:
        super().__init__()
        try:
            self._forms = {url, str(httpx.URL(url))}
        except httpx.InvalidURL:
            self._forms = {url}

    def _hides(self, value: object) -> bool:
        text = str(value)
        return any(form in text for form in self._forms)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(self._hides(arg) for arg in record.args):
            record.args = tuple(HIDDEN_URL if self._hides(arg) else arg for arg in record.args)
        if self._hides(record.msg):
            record.msg, record.args = HIDDEN_URL, ()
        return True


def failure_reason(exc: Exception, url: str) -> str:
    """The exception's class and, when it does not quote the URL or a piece of it, its message."""
    text = str(exc)
    pieces = [url]
    try:
        parts = urlsplit(url)
        pieces += [parts.path, parts.query, parts.username or "", parts.password or ""]
    except ValueError:
        pass
    if not text or any(len(piece) > 1 and piece in text for piece in pieces):
        return type(exc).__name__
    return f"{type(exc).__name__}: {one_line(text, 120)}"


def post_alert(url: SecretStr, alert: Alert, log: Log, *, url_env: str,
               timeout: httpx.Timeout = TIMEOUT) -> bool:
    """POST one alert, once. True when the webhook answered 2xx; anything else is logged (never the URL:
    ``url_env`` names where it came from) and returned as False, never raised."""
    secret = url.get_secret_value()
    hide = _HideUrl(secret)
    httpx_log = logging.getLogger("httpx")
    httpx_log.addFilter(hide)
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            response = client.post(secret, json=alert.payload(), headers={"User-Agent": USER_AGENT})
    except Exception as exc:  # whatever went wrong, the sensor loop goes on; the message never quotes the URL
        log.warning(f"alert not delivered ({alert.subject}, run {alert.run_id}): the webhook in {url_env} "
                    f"could not be reached ({failure_reason(exc, secret)}); not retried")
        return False
    finally:
        httpx_log.removeFilter(hide)
    if not response.is_success:
        log.warning(f"alert not delivered ({alert.subject}, run {alert.run_id}): the webhook in {url_env} "
                    f"answered HTTP {response.status_code}; not retried")
        return False
    log.info(f"alert posted: {alert.subject}, run {alert.run_id}")
    return True


def post_alerts(config: AppConfig, alerts: Sequence[Alert], log: Log) -> int:
    """Post ``alerts`` in order and stop at the first failure (a webhook that is down is not hammered).
    Returns how many were delivered. The URL is read now: unset, it is a ConfigError naming the variable."""
    if not alerts:
        return 0
    url = config.alert_webhook_url()  # raises without ``alerts``
    assert config.alerts is not None
    url_env = config.alerts.webhook_url_env
    for done, alert in enumerate(alerts):
        if not post_alert(url, alert, log, url_env=url_env):
            if len(alerts) - done - 1:
                log.warning(f"{len(alerts) - done - 1} more alert(s) of run {alert.run_id} not attempted")
            return done
    return len(alerts)


# --- what a run says -------------------------------------------------------------------------------------------------


def _partition(run: dg.DagsterRun) -> str | None:
    if run.tags.get(PARTITION_TAG):
        return run.tags[PARTITION_TAG]
    start, end = (run.tags.get(tag) for tag in RANGE_TAGS)
    return f"{start}...{end}" if start and end else None


@dataclass(frozen=True)
class Scope:
    """What belongs to one definitions: its jobs, assets and checks."""

    jobs: frozenset[str]
    assets: frozenset[dg.AssetKey]
    checks: frozenset[dg.AssetCheckKey] = field(default_factory=frozenset)

    @classmethod
    def of(cls, jobs: Iterable[Any], assets: Iterable[dg.AssetsDefinition],
           checks: Iterable[dg.AssetChecksDefinition]) -> "Scope":
        return cls(frozenset(job.name for job in jobs), frozenset(k for a in assets for k in a.keys),
                   frozenset(k for c in checks for k in c.check_keys))

    def owns(self, run: dg.DagsterRun) -> bool:
        """One of our jobs; else a run that selected one of our assets or checks; else (no selection) the
        implicit job of the whole code location."""
        if run.job_name in self.jobs:
            return True
        selected = set(run.asset_selection or ()) | {key.asset_key for key in run.asset_check_selection or ()}
        if selected:
            return bool(selected & self.assets)
        return run.job_name.startswith(IMPLICIT_ASSET_JOB)


def _error_text(event: dg.DagsterEvent) -> str:
    """A step failure's own words: its description, else the innermost error without its module path, else the
    event's message."""
    described = failure_description(event)
    if described:
        return described
    error = innermost_error(event)
    if error is None:
        return event.message or ""
    return re.sub(r"^(?:\w+\.)+(?=\w+: )", "", error)  # "pkg.mod.Error: ..." -> "Error: ..."


def run_failure_alert(context: dg.RunFailureSensorContext) -> Alert:
    run = context.dagster_run
    steps = context.get_step_failure_events()
    if steps:
        names = ", ".join(dict.fromkeys(e.step_key or "?" for e in steps))
        message = f"step(s) failed: {names}: {_error_text(steps[0])}"
    else:
        message = context.failure_event.message or "the run failed"
    return Alert("run_failure", run.job_name, run.run_id, _partition(run), one_line(message))


def check_alerts(instance: dg.DagsterInstance, run: dg.DagsterRun, scope: Scope) -> list[Alert]:
    """One alert per failed evaluation, in the run, of one of our checks."""
    records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    alerts = []
    for record in records:
        event = record.event_log_entry.dagster_event
        evaluation = event.event_specific_data if event is not None else None
        if not isinstance(evaluation, dg.AssetCheckEvaluation) or evaluation.passed:
            continue
        if evaluation.asset_check_key not in scope.checks:
            continue
        alerts.append(Alert(
            "check_failure", run.job_name, run.run_id, evaluation.partition or _partition(run),
            one_line(evaluation.description or "the check did not pass"),
            asset=evaluation.asset_key.to_user_string(), check=evaluation.check_name,
            severity=evaluation.severity.value))
    return alerts


# --- the sensors -----------------------------------------------------------------------------------------------------


def alert_sensor_names(keys: Keys = NO_PREFIX, stem: str = GROUP) -> tuple[str, str]:
    """(run-failure, check-failure) sensor names: ``metronome_suger_run_failure_alert``... with the prefix."""
    return keys.name(f"{stem}_{RUN_FAILURE_ALERT}"), keys.name(f"{stem}_{CHECK_FAILURE_ALERT}")


def build_alert_sensors(config: AppConfig, scope: Scope, keys: Keys = NO_PREFIX, *,
                        stem: str = GROUP) -> list[dg.SensorDefinition]:
    """The run-failure and check-failure alert sensors of one definitions (``stem``: the group the names start
    with, one per code location), or none without ``alerts`` in the configuration."""
    if config.alerts is None:
        return []
    target = f"the webhook in {config.alerts.webhook_url_env}"
    run_failure_name, check_failure_name = alert_sensor_names(keys, stem)

    @dg.run_failure_sensor(
        name=run_failure_name, default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Posts each failed run of the pipeline to {target}, then each failed check of that run.",
    )
    def run_failure_alert_sensor(context: dg.RunFailureSensorContext) -> None:
        run = context.dagster_run
        if not scope.owns(run):
            return
        post_alerts(config, [run_failure_alert(context), *check_alerts(context.instance, run, scope)], context.log)

    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS, name=check_failure_name,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Posts each failed asset check (any severity) of a successful run of the pipeline to {target} "
                    "(the checks of failed runs go with their run-failure alert).",
    )
    def check_failure_alert_sensor(context: dg.RunStatusSensorContext) -> None:
        post_alerts(config, check_alerts(context.instance, context.dagster_run, scope), context.log)

    return [run_failure_alert_sensor, check_failure_alert_sensor]
