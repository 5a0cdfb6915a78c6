"""What ``workspace.yaml`` and ``dagster ... -m metronome_suger.reconciliation_definitions`` load: the daily
marketplace reconciliation (``suger_usage_record_reports`` and ``marketplace_reconciliation``), a code location
of its own because its partitions are daily whatever the billing mode (see ``build_reconciliation_definitions``).
"""

from metronome_suger.definitions import loaded
from metronome_suger.orchestration.definitions import build_reconciliation_definitions

defs = build_reconciliation_definitions(loaded.config)
