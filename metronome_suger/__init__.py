"""metronome-suger: meter Metronome usage into the AWS, Azure and GCP marketplaces through Suger.

The public surface: the configuration model, the definitions builder, and the Dagster component. They are
imported on first use, so a process that needs only a submodule (an emulator process, the API clients) does not
pay for importing Dagster.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metronome_suger.config import AppConfig as AppConfig
    from metronome_suger.config import ConfigError as ConfigError
    from metronome_suger.config import load_config as load_config
    from metronome_suger.orchestration.component import MetronomeSugerComponent as MetronomeSugerComponent
    from metronome_suger.orchestration.definitions import build_definitions as build_definitions

__version__ = "0.1.0"
__all__ = ["AppConfig", "ConfigError", "MetronomeSugerComponent", "build_definitions", "load_config"]

_HOMES = {
    "AppConfig": "metronome_suger.config", "ConfigError": "metronome_suger.config",
    "load_config": "metronome_suger.config",
    "MetronomeSugerComponent": "metronome_suger.orchestration.component",
    "build_definitions": "metronome_suger.orchestration.definitions",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'metronome_suger' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The lazy names too: Dagster's component registry finds the component by listing this module."""
    return sorted({*globals(), *_HOMES})
