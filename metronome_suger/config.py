"""The one configuration model (CONTRACT §3), shared by the YAML file, the CLI and the Dagster definitions.

Loading order: the file named by ``METRONOME_SUGER_CONFIG``, else ``./metronome_suger.yaml``, else the
bundled sandbox configuration. Every error names the key and the file, so a user can fix it without
reading a traceback. Secrets are never in the file: only the *names* of the environment variables.
"""

import ipaddress
import os
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

CONFIG_ENV_VAR = "METRONOME_SUGER_CONFIG"
LOCAL_CONFIG_NAME = "metronome_suger.yaml"
BUNDLED_CONFIG = Path(__file__).parent / "sandbox" / "sandbox.yaml"

Partner = Literal["AWS", "AZURE", "GCP"]
PARTNERS: tuple[Partner, ...] = ("AWS", "AZURE", "GCP")
BillingMode = Literal["quantity", "amount_hourly", "amount_daily"]
AMOUNT_SOURCE_KEY = "metronome"
DEFAULT_DEADLINE_HOURS: dict[str, Decimal] = {
    "AWS": Decimal(6),
    "AZURE": Decimal(24),
    "GCP": Decimal(1),
}


class ConfigError(Exception):
    """A configuration problem, phrased for the user: names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_base_url(url: str) -> str:
    """https everywhere; plain http only to loopback (the sandbox), so tokens never cross a network."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL, got {url!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(f"must use https:// (http:// is allowed only for loopback hosts), got {url!r}")
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MetronomeSettings(_Strict):
    base_url: str = "https://api.metronome.com"
    api_token_env: str = "METRONOME_API_TOKEN"

    _url = field_validator("base_url")(_check_base_url)


class SugerSettings(_Strict):
    base_url: str = "https://api.suger.cloud"
    org_id: str = Field(min_length=1)
    api_key_env: str = "SUGER_API_KEY"

    _url = field_validator("base_url")(_check_base_url)


class DimensionMapping(_Strict):
    """Suger's ``dimensionMappingV2`` value: one target dimension of a source key."""

    dimension_key: str = Field(min_length=1)
    mapping_mode: Literal["QUANTITY", "AMOUNT"] = "QUANTITY"
    multiplier: Annotated[Decimal, Field(ge=0)] = Decimal(1)


class Whitelist(_Strict):
    enabled: bool = False
    metrics: list[str] = Field(default_factory=list)


class CustomerLink(_Strict):
    metronome_customer_id: str = Field(min_length=1)
    entitlement_id: str = Field(min_length=1)


class StorageSettings(_Strict):
    duckdb_path: str = "data/metronome_suger.duckdb"


class AppConfig(_Strict):
    """CONTRACT §3. ``dry_run`` validates groups with Suger instead of sending them."""

    metronome: MetronomeSettings = Field(default_factory=MetronomeSettings)
    suger: SugerSettings
    billing_mode: BillingMode = "quantity"
    auto_report: bool = True
    dry_run: bool = False
    start: datetime
    settle_minutes: Annotated[int, Field(ge=0, le=24 * 60)] = 15
    billable_metric_whitelist: Whitelist = Field(default_factory=Whitelist)
    dimension_conversion: dict[Partner, dict[str, list[DimensionMapping]]] = Field(
        default_factory=dict
    )
    customer_links: list[CustomerLink] = Field(default_factory=list)
    invoice_change_policy: Literal["period", "invoice"] = "period"
    marketplace_deadline_hours: dict[Partner, Annotated[Decimal, Field(gt=0)]] = Field(
        default_factory=dict
    )
    max_concurrency: Annotated[int, Field(ge=1, le=64)] = 8
    storage: StorageSettings = Field(default_factory=StorageSettings)

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
        merged = {**DEFAULT_DEADLINE_HOURS, **self.marketplace_deadline_hours}
        object.__setattr__(self, "marketplace_deadline_hours", merged)
        return self

    @property
    def hourly(self) -> bool:
        return self.billing_mode != "amount_daily"

    @property
    def amount_mode(self) -> bool:
        return self.billing_mode != "quantity"

    @property
    def duckdb_path(self) -> Path:
        return Path(self.storage.duckdb_path)

    def metronome_token(self) -> SecretStr:
        return read_secret(self.metronome.api_token_env)

    def suger_api_key(self) -> SecretStr:
        return read_secret(self.suger.api_key_env)


def read_secret(env_var: str) -> SecretStr:
    """Read a token from the environment at the moment it is needed (definitions load without it)."""
    value = os.environ.get(env_var, "")
    if not value.strip():
        raise ConfigError(f"environment variable {env_var} is not set (it must hold the API token)")
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
