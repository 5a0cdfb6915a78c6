"""``MetronomeSugerComponent``: the same definitions from a ``defs.yaml`` (``dg scaffold defs``)."""

from pathlib import Path
from typing import Any

import dagster as dg

from metronome_suger.config import ConfigError, load_config, parse_config_data
from metronome_suger.orchestration.definitions import build_definitions


class MetronomeSugerComponent(dg.Component, dg.Model, dg.Resolvable):
    """Meters Metronome usage into AWS, Azure and GCP through Suger.

    Give either ``config_file`` (a metronome_suger.yaml, relative to the defs.yaml folder) or the same
    keys inline under ``settings``. Tokens stay in the environment variables the configuration names.
    """

    config_file: str | None = None
    settings: dict[str, Any] | None = None

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        origin = Path(context.path)
        if self.settings is not None and self.config_file is not None:
            raise ConfigError(f"{origin}: give either config_file or settings, not both")
        if self.settings is not None:
            config = parse_config_data(self.settings, origin=f"{origin} (settings)")
        elif self.config_file is not None:
            config = load_config(origin / self.config_file).config
        else:
            config = load_config().config
        return build_definitions(config)
