"""The one configuration model, shared by the YAML file, the CLI and the Dagster definitions (and component).

Loading order: the file named by ``METRONOME_SUGER_CONFIG``, else ``./metronome_suger.yaml``, else the
bundled sandbox configuration. Every error names the key and the file, so a user can fix it without
reading a traceback. Secrets are never in the file: only the *names* of the environment variables.
"""

import ipaddress
import os
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import httpx
import yaml
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from metronome_suger.clients.retry import RetryPolicy
from metronome_suger.core.conversion import Partner
from metronome_suger.core.deadlines import Deadlines
from metronome_suger.storage.db import Database

CONFIG_ENV_VAR = "METRONOME_SUGER_CONFIG"
LOCAL_CONFIG_NAME = "metronome_suger.yaml"
BUNDLED_CONFIG = Path(__file__).parent / "sandbox" / "sandbox.yaml"

BillingMode = Literal["quantity", "amount_hourly", "amount_daily"]
InvoiceChangePolicy = Literal["period", "invoice"]
DEFAULT_DEADLINE_HOURS: dict[Partner, Decimal] = {
    "AWS": Decimal(6),
    "AZURE": Decimal(24),
    "GCP": Decimal(1),
}
_NAME_SEGMENT = r"[A-Za-z0-9_]+"
MULTIPLIER_PLACES = 10  # the ledger's DECIMAL(38,10)
MULTIPLIER_LIMIT = Decimal(10) ** 18  # an exact DECIMAL(38,10) product holds |quantity x multiplier| < 10^18


class ConfigError(Exception):
    """A configuration problem, phrased for the user: names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_base_url(url: str) -> str:
    """https everywhere; plain http only to loopback (the sandbox), so tokens never cross a network."""
    parts = urlsplit(url)
    if "@" in parts.netloc:  # checked first, and the URL never echoed: it may hold a secret
        raise ValueError("must not carry credentials (user:password@host): the token comes from the environment "
                         "variable the configuration names")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query string or fragment (a token there would be logged)")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL with a host, got scheme {parts.scheme or 'none'!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(f"must use https:// (http:// is allowed only for loopback hosts), got http://{parts.hostname}")
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_name_segment(value: str) -> str:
    if not re.fullmatch(_NAME_SEGMENT, value):
        raise ValueError(
            f"must be a Dagster name segment (letters, digits and underscores only, not empty), got {value!r}"
        )
    return value


# One element of an asset key (what ``key_prefix`` holds): checked here, so a typo fails at load time.
NameSegment = Annotated[
    str, AfterValidator(_check_name_segment), WithJsonSchema({"type": "string", "pattern": f"^{_NAME_SEGMENT}$"})
]


_URL_RULE = "https:// is required; plain http:// is accepted only for a loopback host (the local sandbox)."


class MetronomeSettings(_Strict):
    """Where the Metronome API is, and which environment variable holds its token."""

    base_url: str = Field("https://api.metronome.com", description=f"Metronome API base URL. {_URL_RULE}")
    api_token_env: str = Field(
        "METRONOME_API_TOKEN",
        description="NAME of the environment variable that holds the Metronome API token; "
        "the token itself is never in the file.",
    )

    _url = field_validator("base_url")(_check_base_url)


class SugerSettings(_Strict):
    """Where the Suger API is, the Suger organization, and which environment variable holds its key."""

    base_url: str = Field("https://api.suger.cloud", description=f"Suger API base URL. {_URL_RULE}")
    org_id: str = Field(
        min_length=1, description="Suger organization id: the organization whose entitlements receive the usage."
    )
    api_key_env: str = Field(
        "SUGER_API_KEY",
        description="NAME of the environment variable that holds the Suger API key (sent as "
        "'Authorization: Key <value>'); the key itself is never in the file.",
    )

    _url = field_validator("base_url")(_check_base_url)


class DimensionMapping(_Strict):
    """Suger's ``dimensionMappingV2`` value: one target dimension of a source key."""

    dimension_key: str = Field(
        min_length=1, description="The entitlement dimension to report to: its key, or its name when no dimension "
        "has that key (two dimensions matching the same way is a configuration error)."
    )
    mapping_mode: Literal["QUANTITY", "AMOUNT"] = Field(
        "QUANTITY",
        description="QUANTITY sends quantity x multiplier; AMOUNT sends dollars / rate, with rate the unit "
        "price of that dimension on the linked entitlement.",
    )
    multiplier: Annotated[Decimal, Field(ge=0)] = Field(
        Decimal(1), description="Factor applied to the source value (an exact decimal, 0 or more)."
    )

    @field_validator("multiplier")
    @classmethod
    def _fits_the_ledger(cls, value: Decimal) -> Decimal:
        """The ledger keeps DECIMAL(38,10): a finer multiplier would be rounded (0.00000000001 to 0, so nothing
        would ever be sent) and a larger one would overflow every conversion; refused here, naming the key."""
        exponent = value.normalize().as_tuple().exponent
        if isinstance(exponent, int) and exponent < -MULTIPLIER_PLACES:
            raise ValueError(f"has more than {MULTIPLIER_PLACES} decimal places ({value:f}), which the ledger's "
                             "DECIMAL(38,10) would round")
        if value >= MULTIPLIER_LIMIT:
            raise ValueError(f"must be below 10^18 (got {value}): the ledger converts |quantity x multiplier| < 10^18")
        return value


# Per marketplace: source key (a billable metric name or id, or ``metronome``) -> its target dimensions.
DimensionConversion = dict[Partner, dict[str, list[DimensionMapping]]]


class Whitelist(_Strict):
    """Which Metronome billable metrics are reported."""

    enabled: bool = Field(False, description="Report only the listed metrics; false reports every metric.")
    metrics: list[str] = Field(
        default_factory=list, description="Metronome billable metric names or ids to report when enabled."
    )


class CustomerLink(_Strict):
    """An explicit Metronome customer → Suger entitlement link."""

    metronome_customer_id: str = Field(min_length=1, description="Metronome customer id.")
    entitlement_id: str = Field(
        min_length=1, description="Suger entitlement that receives this customer's usage."
    )


class HttpSettings(_Strict):
    """How long each API call may take and how hard transient failures (timeouts, dropped connections, 408,
    429, 5xx) are retried, for both APIs; a POST to Suger is safe to retry (the group id makes it exactly-once)."""

    timeout_seconds: Annotated[float, Field(gt=0, le=600)] = Field(
        30.0, description="Seconds to wait for an answer before the call counts as failed (and is retried).")
    max_attempts: Annotated[int, Field(ge=1, le=20)] = Field(5, description="Tries per call, the first included.")
    initial_wait_seconds: Annotated[float, Field(ge=0, le=600)] = Field(
        0.5, description="Wait after the first failure; it doubles with each further one (plus jitter).")
    max_wait_seconds: Annotated[float, Field(ge=0, le=600)] = Field(
        8.0, description="Longest wait between two tries, a server's Retry-After included.")
    max_total_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(
        60.0, description="Give up on a call once retrying it would take longer than this in total.")

    def client_options(self) -> dict[str, Any]:
        """The ``timeout`` and ``retry`` arguments of both API clients."""
        return {
            "timeout": httpx.Timeout(self.timeout_seconds, connect=min(5.0, self.timeout_seconds)),
            "retry": RetryPolicy(max_attempts=self.max_attempts, initial_wait=self.initial_wait_seconds,
                                 max_wait=self.max_wait_seconds, max_total_seconds=self.max_total_seconds,
                                 jitter=min(0.5, self.initial_wait_seconds)),
        }


class AlertSettings(_Strict):
    """Where run failures and failed asset checks are posted: one webhook (a Slack incoming webhook or any
    endpoint taking a JSON POST), its URL read from an environment variable because it usually embeds a token."""

    webhook_url_env: str = Field(
        "SUGER_ALERT_WEBHOOK_URL",
        description="NAME of the environment variable that holds the webhook URL alerts are POSTed to (it may "
        "embed a secret token, as a Slack incoming webhook does); the URL itself is never in the file, and is "
        "never logged. Read when an alert is sent: https:// is required, plain http:// only for a loopback host.",
    )


def _webhook_url_problem(url: str) -> str | None:
    """What is wrong with a webhook URL, phrased without echoing any part of it (it may hold a token)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https") or not host:
        return "must be an http(s) URL with a host"
    if parts.scheme == "http" and not _is_loopback(host):
        return "must use https:// (http:// is allowed only for loopback hosts)"
    return None


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class StorageSettings(_Strict):
    """Where the pipeline keeps its state: one database, a DuckDB file or PostgreSQL (reached through DuckDB)."""

    url: str = Field(
        "data/metronome_suger.duckdb",
        validation_alias=AliasChoices("url", "duckdb_path"),
        description="The database holding snapshots, records and the report ledger: a DuckDB file path "
        "(relative to the working directory; the default) or postgresql://user@host:5432/db for deployments "
        "where runs execute on several machines or ephemeral pods. storage.duckdb_path is accepted as its "
        "first name.",
    )
    password_env: str | None = Field(
        None,
        description="PostgreSQL only: NAME of the environment variable holding the database password (never "
        "put the password in the URL).",
    )

    @field_validator("url")
    @classmethod
    def _no_inline_password(cls, value: str) -> str:
        if value.startswith(POSTGRES_SCHEMES):
            parts = urlsplit(value)
            if parts.password is not None:
                raise ValueError("has a password in the URL: put it in the environment variable named by "
                                 "storage.password_env instead")
            if not parts.hostname or not parts.path.strip("/"):
                raise ValueError("a PostgreSQL URL needs a host and a database: postgresql://user@host:5432/db")
        return value

    @property
    def is_postgres(self) -> bool:
        return self.url.startswith(POSTGRES_SCHEMES)


class AppConfig(_Strict):
    """The whole configuration: one Suger organization metered from one Metronome account."""

    metronome: MetronomeSettings = Field(
        default_factory=MetronomeSettings, description="Metronome API: base URL and the token's variable."
    )
    suger: SugerSettings = Field(description="Suger API: organization id, base URL and the API key's variable.")
    billing_mode: BillingMode = Field(
        "quantity",
        description="quantity: metered quantities per hour; amount_hourly / amount_daily: the rise of "
        "Metronome invoice totals (dollars) per hour / per day.",
    )
    auto_report: bool = Field(
        True, description="false: compute and store record groups but never send them to Suger."
    )
    dry_run: bool = Field(
        False, description="true: validate record groups with Suger (batchValidate) instead of sending them."
    )
    start: datetime = Field(
        description="First partition: a whole UTC hour (ISO 8601, e.g. 2026-11-01T00:00:00Z)."
    )
    settle_minutes: Annotated[int, Field(ge=0, le=24 * 60)] = Field(
        15,
        description="Minutes to wait after a window closes before reading it (below 60 for hourly modes).",
    )
    billable_metric_whitelist: Whitelist = Field(
        default_factory=Whitelist, description="Report only some Metronome billable metrics."
    )
    dimension_conversion: DimensionConversion = Field(
        default_factory=dict,
        description="Per marketplace (AWS, AZURE, GCP): source key (a billable metric name or id, or "
        "'metronome' for the invoice dollars of the amount modes) -> the dimensions it is reported as.",
    )
    customer_links: list[CustomerLink] = Field(
        default_factory=list,
        description="Explicit links that replace the buyer-derived links of the Metronome customers they name.",
    )
    invoice_change_policy: InvoiceChangePolicy = Field(
        "period",
        description="Amount modes: keep the highest invoice total per billing period (period) or per "
        "Metronome invoice (invoice, Suger's rule: a re-issued invoice is reported again).",
    )
    marketplace_deadline_hours: dict[Partner, Annotated[Decimal, Field(gt=0)]] = Field(
        default_factory=dict,
        description="Hours within which each marketplace accepts usage, counted as it counts them: AWS and "
        "AZURE from the group's timestamp, GCP from the end of the usage hour (and a month's usage by 01:00 US "
        "Pacific of the next). Missing marketplaces default to AWS 6, AZURE 24, GCP 1.",
    )
    suger_forward_lag_minutes: Annotated[int, Field(ge=0, le=24 * 60)] = Field(
        60,
        description="Suger forwards a group at its next hourly report: a group handed over less than this many "
        "minutes before its marketplace deadline is at risk (still sent, urgent first, report_deadline warns).",
    )
    reconciliation_grace_hours: Annotated[Decimal, Field(gt=0, le=72)] = Field(
        Decimal(6),
        description="marketplace_reconciliation: a group handed to Suger counts as in flight for this many hours "
        "without a usage record report naming it, and as a missing report (a problem) after.",
    )
    max_concurrency: Annotated[int, Field(ge=1, le=64)] = Field(
        8, description="Most requests in flight at once to each API (Metronome, Suger): 1 to 64."
    )
    http: HttpSettings = Field(default_factory=HttpSettings, description="Timeouts and retries of API calls.")
    storage: StorageSettings = Field(default_factory=StorageSettings, description="Where state is kept.")
    key_prefix: list[NameSegment] = Field(
        default_factory=list,
        description="Asset key prefix, e.g. [acme] (none by default): lets two Suger organizations, i.e. two "
        "configuration files, live in one Dagster code location.",
    )
    alerts: AlertSettings | None = Field(
        None,
        description="Post each failed run and each failed asset check of this pipeline as a short JSON message "
        "to a webhook (Slack or any other), e.g. {webhook_url_env: SUGER_ALERT_WEBHOOK_URL}; absent (the "
        "default): no alerts, and the alert sensors are not defined.",
    )

    @field_validator("start")
    @classmethod
    def _utc_start(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        if value.minute or value.second or value.microsecond:
            raise ValueError("must be on a whole UTC hour")
        return value

    @model_validator(mode="after")
    def _settle_within_window(self) -> "AppConfig":
        """The schedule ticks once per window, so the settle time must fit inside one."""
        if self.hourly and self.settle_minutes >= 60:
            raise ValueError(
                f"settle_minutes must be below 60 for billing_mode {self.billing_mode} "
                f"(got {self.settle_minutes})"
            )
        return self

    @model_validator(mode="after")
    def _fill_deadlines(self) -> "AppConfig":
        merged: dict[Partner, Decimal] = {**DEFAULT_DEADLINE_HOURS, **self.marketplace_deadline_hours}
        object.__setattr__(self, "marketplace_deadline_hours", merged)
        short = {p: h for p, h in merged.items() if h * 60 < self.suger_forward_lag_minutes}
        if short:
            raise ValueError(
                "marketplace_deadline_hours " + ", ".join(f"{p}: {h}" for p, h in short.items())
                + f" is shorter than suger_forward_lag_minutes ({self.suger_forward_lag_minutes}): a group would "
                "expire before Suger's next hourly report could forward it"
            )
        return self

    @property
    def deadlines(self) -> Deadlines:
        return Deadlines(self.marketplace_deadline_hours, timedelta(minutes=self.suger_forward_lag_minutes))

    @property
    def reconciliation_grace(self) -> timedelta:
        return timedelta(hours=float(self.reconciliation_grace_hours))

    @property
    def hourly(self) -> bool:
        return self.billing_mode != "amount_daily"

    @property
    def amount_mode(self) -> bool:
        return self.billing_mode != "quantity"

    @property
    def duckdb_path(self) -> Path:
        """The DuckDB file (the default storage); a PostgreSQL ledger has none."""
        if self.storage.is_postgres:
            raise ConfigError("storage.url is a PostgreSQL database, not a DuckDB file")
        return Path(self.storage.url)

    def database(self) -> Database:
        """Where the state is, with the password read from its environment variable now (not at load)."""
        password = None
        if self.storage.is_postgres and self.storage.password_env:
            password = read_secret(self.storage.password_env, "the database password")
        return Database(self.storage.url, password)

    def metronome_token(self) -> SecretStr:
        return read_secret(self.metronome.api_token_env)

    def suger_api_key(self) -> SecretStr:
        return read_secret(self.suger.api_key_env)

    def alert_webhook_url(self) -> SecretStr:
        """The alerts' webhook URL, read from its environment variable now (definitions load without it); a
        ConfigError names the variable, never the URL."""
        if self.alerts is None:
            raise ConfigError("alerts is not configured: there is no webhook to post to")
        env_var = self.alerts.webhook_url_env
        url = read_secret(env_var, "the alert webhook URL")
        problem = _webhook_url_problem(url.get_secret_value())
        if problem:
            raise ConfigError(f"environment variable {env_var} (the alert webhook URL, not shown: it may hold a "
                              f"token) {problem}")
        return url


def read_secret(env_var: str, what: str = "the API token") -> SecretStr:
    """Read a secret from the environment at the moment it is needed (definitions load without it)."""
    value = os.environ.get(env_var, "")
    if not value.strip():
        raise ConfigError(f"environment variable {env_var} is not set (it must hold {what})")
    return SecretStr(value.strip())


class LoadedConfig(BaseModel):
    """A config plus where it came from, so commands can announce a fallback to the sandbox."""

    model_config = ConfigDict(frozen=True)

    config: AppConfig
    path: Path
    source: Literal["env", "cwd", "bundled"]

    @property
    def announcement(self) -> str:
        if self.source == "bundled":
            return (
                f"metronome-suger: using the bundled sandbox configuration ({self.path}); "
                f"set {CONFIG_ENV_VAR} or create ./{LOCAL_CONFIG_NAME} to use your own"
            )
        return f"metronome-suger: using configuration {self.path}"


def resolve_config_path() -> tuple[Path, Literal["env", "cwd", "bundled"]]:
    named = os.environ.get(CONFIG_ENV_VAR, "").strip()
    if named:
        return Path(named), "env"
    local = Path.cwd() / LOCAL_CONFIG_NAME
    if local.is_file():
        return local, "cwd"
    return BUNDLED_CONFIG, "bundled"


def load_config(path: Path | str | None = None) -> LoadedConfig:
    """Load and validate the configuration; raise ConfigError naming the file and the key."""
    if path is None:
        resolved, source = resolve_config_path()
    else:
        resolved, source = Path(path), "env"
    return LoadedConfig(config=parse_config_file(resolved), path=resolved, source=source)


def parse_config_file(path: Path) -> AppConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config_data(data, origin=str(path))


def parse_config_data(data: Any, *, origin: str = "<config>") -> AppConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the configuration must be a YAML mapping")
    try:
        return AppConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {describe_validation_error(exc)}") from None


def describe_validation_error(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if not key:  # a rule across keys: its message names them
            problems.append(str(err["msg"]).removeprefix("Value error, "))
        elif err["type"] == "extra_forbidden":
            problems.append(f"unknown key '{key}'")
        elif err["type"] == "missing":
            problems.append(f"missing required key '{key}'")
        else:
            problems.append(f"key '{key}': {err['msg']}")
    return "; ".join(problems)
