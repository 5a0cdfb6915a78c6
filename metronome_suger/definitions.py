"""What ``workspace.yaml`` and ``dagster ... -m metronome_suger.definitions`` load: the windows' assets."""

import sys

from metronome_suger.config import ConfigError, load_config
from metronome_suger.orchestration.definitions import build_definitions

try:
    loaded = load_config()
except ConfigError as exc:  # a clear message instead of a traceback from deep inside Dagster
    raise SystemExit(f"metronome-suger: {exc}") from None
if loaded.source == "bundled":
    print(loaded.announcement, file=sys.stderr)

defs = build_definitions(loaded.config)
