"""Named crash points on the money path, for proving crash consistency with real ``kill -9``s.

Off unless ``METRONOME_SUGER_CRASH_AT`` names a point (only the reliability tests set it). With
``METRONOME_SUGER_CRASH_AT=report.after_ledger_write@2`` the process SIGKILLs itself the 2nd time it
passes that point (default: the 1st) — no cleanup, no ``finally``, no flush: what a power cut or an OOM
kill leaves behind. One line goes to stderr first so a test can tell the kill happened where it meant.
"""

import os
import signal
import sys
import threading

CRASH_ENV = "METRONOME_SUGER_CRASH_AT"

# Where the reporting path can die, in the order a window passes them.
POINTS: dict[str, str] = {
    "report.before_post": "a pending group is about to be POSTed to Suger",
    "report.after_post": "Suger stored the group; its answer is not yet in the ledger",
    "report.between_groups": "a group is answered (its answer maybe not yet saved), others are not yet sent",
    "report.after_ledger_write": "a batch of Suger's answers is committed to the ledger",
    "invoices.inside_high_water": "the amount-mode snapshot and high water are written but not committed",
    "status.after_answer": "the status poll has Suger's statuses; the ledger is not yet updated",
}

_lock = threading.Lock()
_passes: dict[str, int] = {}


def _target() -> tuple[str, int] | None:
    raw = os.environ.get(CRASH_ENV, "").strip()
    if not raw:
        return None
    name, _, nth = raw.partition("@")
    if name not in POINTS:
        raise ValueError(f"{CRASH_ENV}={raw!r} names no crash point; known: {', '.join(POINTS)}")
    return name, int(nth or 1)


def crash_point(name: str) -> None:
    """SIGKILL this process if ``METRONOME_SUGER_CRASH_AT`` names ``name`` and this is the chosen pass."""
    target = _target()
    if target is None or target[0] != name:
        return
    with _lock:
        _passes[name] = _passes.get(name, 0) + 1
        if _passes[name] != target[1]:
            return
        sys.stderr.write(f"crash point {name} (pass {target[1]}): SIGKILL\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
