"""metronome-suger: meter Metronome usage into the AWS, Azure and GCP marketplaces through Suger.

The public surface: the configuration model, the definitions builder, and the Dagster component.
"""

from metronome_suger.config import AppConfig as AppConfig
from metronome_suger.config import ConfigError as ConfigError
from metronome_suger.config import load_config as load_config
from metronome_suger.orchestration.component import MetronomeSugerComponent as MetronomeSugerComponent
from metronome_suger.orchestration.definitions import build_definitions as build_definitions

__version__ = "0.1.0"
