"""The ledger saves Suger's answers in batches (issue 12): at most ``FLUSH_ANSWERS`` or ``FLUSH_SECONDS`` unsaved."""

import time

from metronome_suger.core.ledger import Event
from metronome_suger.steps.report import FLUSH_ANSWERS, FLUSH_SECONDS, Unsaved
from metronome_suger.storage.ledger import Change


def _change(n: int) -> Change:
    return Change(f"group-{n}", "pending", Event.CREATED)


def test_answers_are_saved_in_batches_of_at_most_flush_answers_and_all_at_the_end() -> None:
    writes: list[list[str]] = []
    unsaved = Unsaved(lambda changes: writes.append([c.record_group_id for c in changes]))
    total = 2 * FLUSH_ANSWERS + 50
    for n in range(total):
        unsaved.add(_change(n))
        assert sum(map(len, writes)) >= n + 1 - (FLUSH_ANSWERS - 1)  # never FLUSH_ANSWERS answers unsaved
    unsaved.flush()
    unsaved.flush()  # nothing left: no empty write
    assert [len(w) for w in writes] == [FLUSH_ANSWERS, FLUSH_ANSWERS, 50]
    assert [gid for w in writes for gid in w] == [f"group-{n}" for n in range(total)]  # each once, in order


def test_an_answer_older_than_flush_seconds_is_saved_when_checked() -> None:
    writes: list[int] = []
    unsaved = Unsaved(lambda changes: writes.append(len(changes)))
    unsaved.add(_change(1))
    unsaved.flush_due()
    assert writes == []  # young: still batched
    deadline = time.monotonic() + FLUSH_SECONDS
    while time.monotonic() < deadline:  # waits for the clock, not for another thread
        time.sleep(deadline - time.monotonic())
    unsaved.flush_due()
    assert writes == [1]
