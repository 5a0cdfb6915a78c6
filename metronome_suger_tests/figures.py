"""Figures the reliability suites measure, for the README "Reliability" table.

A test calls ``record("fault_matrix", windows=48, faults=311, duplicates=0, lost=0)``; when
``METRONOME_SUGER_FIGURES`` names a file (``make reliability`` sets it) the figures are appended to it as one
JSON line, and ``scripts/reliability_table.py`` sums them per suite and key into the table. Without the
variable nothing is written: ``make test`` runs the same suites and asserts the same things.
"""

import json
import os
import threading

FIGURES_ENV = "METRONOME_SUGER_FIGURES"
_lock = threading.Lock()


def record(suite: str, **figures: int) -> None:
    """Add ``figures`` (counts, summed across tests) to ``suite``'s row."""
    target = os.environ.get(FIGURES_ENV)
    if not target:
        return
    line = json.dumps({"suite": suite, **figures}, sort_keys=True)
    with _lock, open(target, "a", encoding="utf-8") as out:
        out.write(line + "\n")
