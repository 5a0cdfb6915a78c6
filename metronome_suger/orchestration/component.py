"""``MetronomeSugerComponent``: the plugin's definitions from a ``defs.yaml`` (``dg scaffold defs``).

The configuration keys are the component's own attributes, typed with the configuration model's types, so
``dg`` validates a defs.yaml against them and shows their schema and descriptions. The configuration model
(``AppConfig``) stays the one place that decides what a valid configuration is: the component hands it the
keys it was given.
"""

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, TypeVar

import dagster as dg
from pydantic import BaseModel, ValidationError
from typing_extensions import Self, TypeAliasType

from metronome_suger.config import (
    AlertSettings,
    AppConfig,
    BillingMode,
    ConfigError,
    CustomerLink,
    DimensionConversion,
    HttpSettings,
    InvoiceChangePolicy,
    MetronomeSettings,
    StorageSettings,
    SugerSettings,
    Whitelist,
    describe_validation_error,
    load_config,
    parse_config_data,
)
from metronome_suger.core.conversion import Partner
from metronome_suger.orchestration.definitions import build_definitions
from metronome_suger.orchestration.scaffold import MetronomeSugerScaffolder

T = TypeVar("T")

# An inline configuration key: ``T`` when the defs.yaml gives it, ``None`` when it leaves it to the
# configuration's default. A *named* alias on purpose: Dagster's resolver inspection rejects a pydantic
# model whose fields carry constraints or Decimals (``SugerSettings.org_id``, ``DimensionMapping.multiplier``)
# even when the attribute has its own Resolver. Behind the alias Dagster only uses that Resolver (whose
# ``model_field_type`` is the configuration's own type), while pydantic and mypy still see ``T | None``.
Inline = TypeAliasType("Inline", T | None, type_params=(T,))


def _as_given(context: dg.ResolutionContext, value: Any) -> Any:
    """Top-level strings were already rendered (``{{ env.X }}``); the values are validated by the model."""
    return value


def _key(name: str) -> dg.Resolver:
    """The Resolver of inline key ``name``: its yaml schema and description are the configuration's own."""
    field = AppConfig.model_fields[name]
    return dg.Resolver(_as_given, model_field_type=field.rebuild_annotation() | None, description=field.description)


def _defs_file(folder: Path) -> Path:
    """The file that declared the component, for error messages."""
    for name in ("defs.yaml", "defs.yml", "component.py"):
        if (folder / name).is_file():
            return folder / name
    return folder


@dg.scaffold_with(MetronomeSugerScaffolder)
class MetronomeSugerComponent(dg.Component, dg.Model, dg.Resolvable):
    """Meters Metronome usage into the AWS, Azure and GCP marketplaces through Suger.

    The attributes are the keys of a metronome_suger.yaml (``suger``, ``start``, ``billing_mode``,
    ``dimension_conversion``, ...). Give them inline, or give ``config_file`` (a metronome_suger.yaml, relative
    to the defs.yaml folder), not both; with neither, the configuration is loaded as the CLI loads it
    (``METRONOME_SUGER_CONFIG``, else ./metronome_suger.yaml, else the bundled sandbox configuration). Tokens
    are never in the file: the ``*_env`` keys name the environment variables that hold them. Templates such as
    ``{{ env.START }}`` are rendered in top-level string values only, as Dagster does for plain pydantic models
    (not inside ``suger``, ``metronome``, ...).
    """

    config_file: Annotated[
        str | None,
        dg.Resolver.default(
            description="Path of a metronome_suger.yaml, relative to the defs.yaml folder: instead of giving "
            "the configuration keys inline."
        ),
    ] = None
    metronome: Annotated[Inline[MetronomeSettings], _key("metronome")] = None
    suger: Annotated[Inline[SugerSettings], _key("suger")] = None
    billing_mode: Annotated[Inline[BillingMode], _key("billing_mode")] = None
    auto_report: Annotated[Inline[bool], _key("auto_report")] = None
    dry_run: Annotated[Inline[bool], _key("dry_run")] = None
    start: Annotated[Inline[datetime], _key("start")] = None
    settle_minutes: Annotated[Inline[int], _key("settle_minutes")] = None
    billable_metric_whitelist: Annotated[Inline[Whitelist], _key("billable_metric_whitelist")] = None
    dimension_conversion: Annotated[Inline[DimensionConversion], _key("dimension_conversion")] = None
    customer_links: Annotated[Inline[list[CustomerLink]], _key("customer_links")] = None
    invoice_change_policy: Annotated[Inline[InvoiceChangePolicy], _key("invoice_change_policy")] = None
    marketplace_deadline_hours: Annotated[Inline[dict[Partner, Decimal]], _key("marketplace_deadline_hours")] = None
    suger_forward_lag_minutes: Annotated[Inline[int], _key("suger_forward_lag_minutes")] = None
    reconciliation_grace_hours: Annotated[Inline[Decimal], _key("reconciliation_grace_hours")] = None
    alerts: Annotated[Inline[AlertSettings | None], _key("alerts")] = None
    max_concurrency: Annotated[Inline[int], _key("max_concurrency")] = None
    http: Annotated[Inline[HttpSettings], _key("http")] = None
    storage: Annotated[Inline[StorageSettings], _key("storage")] = None
    key_prefix: Annotated[Inline[list[str]], _key("key_prefix")] = None

    @classmethod
    def resolve_from_model(cls, context: dg.ResolutionContext, model: BaseModel) -> Self:
        """A value of the wrong type (``billing_mode: hourly``): a ConfigError naming the defs.yaml and the key."""
        try:
            return super().resolve_from_model(context, model)
        except ValidationError as exc:
            tree = context.source_position_tree
            origin = tree.position.filename if tree is not None else "defs.yaml"
            raise ConfigError(f"{origin}: {describe_validation_error(exc)}") from None

    def inline_config(self) -> dict[str, Any]:
        """The configuration keys given inline (a key given as null counts as not given)."""
        given = {name: getattr(self, name) for name in self.model_fields_set if name != "config_file"}
        return {name: value for name, value in given.items() if value is not None}

    def load_app_config(self, folder: Path) -> AppConfig:
        """The configuration of the component declared in ``folder``: inline keys, config_file or the default."""
        inline = self.inline_config()
        if inline and self.config_file is not None:
            raise ConfigError(
                f"{_defs_file(folder)}: give either config_file or the configuration keys inline "
                f"({', '.join(sorted(inline))}), not both"
            )
        if inline:
            return parse_config_data(inline, origin=str(_defs_file(folder)))
        if self.config_file is not None:
            return load_config(folder / self.config_file).config
        return load_config().config

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return build_definitions(self.load_app_config(Path(context.path)))
