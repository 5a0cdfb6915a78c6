"""What the bad-input suites (``test_bad_input_*.py``) share; no tests here.

One sandbox and one DuckDB pipeline per test module (a Dagster run costs about a second: one world, one run per
case): Alice is metered 10 ``cpu_hours`` every hour and linked to an AWS entitlement; a baseline window is
reported when the world is built. Each case plays its bad input in a window of its own (``play``), which
returns what the run said and what Suger received for that window, after asserting what must hold whatever
the case: every armed fault was met (the bad input really reached the client over HTTP), and nothing already
computed elsewhere was lost or changed (the ledger, its lines and the usage of every other window, and the
groups Suger holds for them).
"""

import copy
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from metronome_suger.core.windows import iso, window_for_key
from metronome_suger.sandbox.server import Sandbox
from metronome_suger_tests.conftest import AWS_DIMS, NOW, Pipeline, failure_text, sent_groups
from metronome_suger_tests.figures import record

HOUR = timedelta(hours=1)
JSON = {"content-type": "application/json"}
HTML = {"content-type": "text/html; charset=utf-8"}
# Small retry settings: a retried call costs milliseconds, a persistent fault gives up after 3 tries.
HTTP = {"timeout_seconds": 2, "max_attempts": 3, "initial_wait_seconds": 0.01, "max_wait_seconds": 0.05,
        "max_total_seconds": 10}
PROXY_502 = "<html><body><h1>502 Bad Gateway</h1><hr><center>nginx/1.25.3</center></body></html>"


def hourly_keys(day: datetime, names: list[str]) -> dict[str, str]:
    """One hourly partition key per case, hours 01:00, 02:00... of ``day`` (00:00 is the baseline)."""
    if len(names) > 23:
        raise ValueError("at most 23 cases per day")
    return {name: f"{day + (i + 1) * HOUR:%Y-%m-%d-%H:%M}" for i, name in enumerate(names)}


@dataclass
class Played:
    """One run of a case's window: the run, its failure text, and what Suger holds for the window."""

    result: dg.ExecuteInProcessResult
    failure: str
    held: list[dict[str, Any]]
    posts: int  # usage record group POSTs (single or batch validate) during the run

    def check(self, name: str) -> dg.AssetCheckEvaluation:
        return next(e for e in self.result.get_asset_check_evaluations() if e.check_name == name)

    def ended_as(self, fails: tuple[str, ...], expand: Callable[[str], str]) -> None:
        """The run failed with every fragment of ``fails`` (names filled by ``expand``), or succeeded if none."""
        if not fails:
            assert self.result.success, self.failure
            return
        assert not self.result.success
        for fragment in fails:
            assert expand(fragment) in self.failure

    def metadata(self, asset: str) -> dict[str, Any]:
        [event] = self.result.asset_materializations_for_node(asset)
        return {k: v.value for k, v in event.metadata.items()}


@dataclass
class World:
    sandbox: Sandbox
    pipeline: Pipeline
    customer: str  # Alice
    entitlement: str  # Alice's AWS entitlement
    base: dict[str, Any]  # the settings every case starts from
    metric: str = ""  # quantity mode: the cpu_hours metric
    extra: dict[str, str] = field(default_factory=dict)  # ids a case creates, for its expected messages
    per_case: dict[str, dict[str, str]] = field(default_factory=dict)  # ids built for one case at set-up

    @property
    def post_path(self) -> str:
        return f"/org/{self.sandbox.org_id}/entitlement/{self.entitlement}/usageRecordGroup"

    def reset(self) -> None:
        """A case starts with no armed fault and the base settings."""
        self.sandbox.metronome_faults.clear()
        self.sandbox.suger_faults.clear()
        self.pipeline.settings = copy.deepcopy(self.base)
        self.extra.clear()

    def text(self, template: str, key: str) -> str:
        """An expected message with the world's names filled in: {customer}, {entitlement}, {org}, {post},
        {start}, {end}, {window} (as the product prints a window) and the case's own ids."""
        start = start_of(key)
        names = {"customer": self.customer, "entitlement": self.entitlement, "org": self.sandbox.org_id,
                 "post": self.post_path, "start": iso(start), "end": iso(start + HOUR),
                 "window": f"{iso(start)}..{iso(start + HOUR)}", **self.extra}
        return template.format(**names)

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        return self.pipeline.query(sql, params)

    def ledger(self, key: str) -> list[tuple[Any, ...]]:
        """(status, records, message) of the window's groups."""
        return self.query("SELECT status, records, message FROM report_ledger WHERE window_start = ? ORDER BY 1, 2",
                          [start_of(key)])

    def elsewhere(self, key: str) -> tuple[list[Any], ...]:
        """Everything computed or reported for the other windows."""
        start = start_of(key)
        ts = iso(start)
        held = [(g["id"], g["records"]) for g in sent_groups(self.sandbox) if g["metaInfo"]["timestamp"] != ts]
        queries = (
            "SELECT * FROM report_ledger WHERE window_start <> ? ORDER BY record_group_id",
            """SELECT l.* FROM report_lines l JOIN report_ledger g USING (record_group_id)
            WHERE g.window_start <> ? ORDER BY 1, 2""",
            "SELECT * FROM usage WHERE window_start <> ? ORDER BY 1, 3, 4",
            "SELECT * FROM invoice_high_water WHERE window_start <> ? ORDER BY 1, 3",
        )
        try:
            stored = [self.query(sql, [start]) for sql in queries]
        except duckdb.Error:  # before the first run there is nothing yet
            stored = [[] for _ in queries]
        return (*stored, held)

    def play(self, key: str, *, at: datetime | None = None) -> Played:
        """Run the case's window; assert every armed fault fired and no other window changed."""
        before = self.elsewhere(key)
        armed = self.sandbox.metronome_faults.pending() + self.sandbox.suger_faults.pending()
        posts = len(self.group_posts())
        result = self.pipeline.run(key, at=at)
        assert self.sandbox.metronome_faults.pending() == 0, "the bad Metronome answer was never requested"
        assert self.sandbox.suger_faults.pending() == 0, "the bad Suger answer was never requested"
        assert self.elsewhere(key) == before, "a run of one window changed what other windows hold"
        ts = iso(start_of(key))
        everything = sent_groups(self.sandbox)
        windows = [(g["entitlementID"], g["metaInfo"]["timestamp"]) for g in everything]
        duplicates = len(windows) - len(set(windows))  # no case sends a second revision: one group per window
        record("bad_input", runs=1, faults=armed, duplicates=duplicates)
        assert duplicates == 0, "Suger holds two groups for one entitlement and window"
        held = [g for g in everything if g["metaInfo"]["timestamp"] == ts]
        return Played(result, failure_text(result), held, len(self.group_posts()) - posts)

    def group_posts(self) -> list[Any]:
        return [e for e in self.sandbox.suger_log.find(method="POST")
                if e.path.endswith("/usageRecordGroup") or e.path.endswith("/batchValidateUsageRecordGroups")]


def start_of(key: str) -> datetime:
    return window_for_key(key, True).start


def json_body(value: Any) -> str:
    """JSON text; a string ``"raw:<text>"`` anywhere is written as the bare token ``<text>`` (NaN, 1e30,
    7.12345678905: numbers Python's float would not keep as written)."""
    text = json.dumps(value)
    while '"raw:' in text:
        head, _, rest = text.partition('"raw:')
        token, _, tail = rest.partition('"')
        text = head + token + tail
    return text


def usage_row(world: World, start: datetime, value: Any = 10, **fields: Any) -> dict[str, Any]:
    """One ``POST /v1/usage`` row as Metronome writes it (Alice, cpu_hours, the window's hour)."""
    row = {"customer_id": world.customer, "billable_metric_id": world.metric, "billable_metric_name": "cpu_hours",
           "start_timestamp": iso(start), "end_timestamp": iso(start + HOUR), "value": value}
    row.update(fields)
    return row


Arrange = Callable[[World, datetime], None]


def metronome_answers(path: str, body: Callable[[World, datetime], Any], *, method: str = "GET",
                      status: int = 200, headers: dict[str, str] | None = None) -> Arrange:
    """The next ``method path`` to Metronome is answered ``status`` with ``body(world, window start)`` (a
    value is written as JSON; a string is sent as is)."""
    def arrange(world: World, start: datetime) -> None:
        value = body(world, start)
        text = value if isinstance(value, str) else json_body(value)
        world.sandbox.metronome_faults.inject("respond", status=status, body=text, headers=headers or JSON,
                                              method=method, path_prefix=path)
    return arrange


def usage_answers(*rows: Callable[[World, datetime], dict[str, Any]]) -> Arrange:
    """``POST /v1/usage`` answers one page holding ``rows``."""
    return metronome_answers(
        "/v1/usage", lambda w, s: {"data": [row(w, s) for row in rows], "next_page": None}, method="POST")


@contextmanager
def quantity_world(tmp: Path, baseline_key: str) -> Iterator[World]:
    """Alice: 10 cpu_hours every hour, AWS, ``cpu_hours`` → ``cpu_hour``; ``baseline_key`` reported."""
    with Sandbox(customers=0, now=NOW) as sandbox, pytest.MonkeyPatch.context() as monkeypatch:
        metronome, suger = sandbox.metronome, sandbox.suger
        cpu = metronome.add_billable_metric("cpu_hours")["id"]
        alice = metronome.add_customer("Alice")["id"]
        metronome.set_usage_generator(alice, cpu, lambda hour: 10)
        buyer = suger.add_buyer("Alice AWS", partner="AWS", metronome_customer_id=alice)["id"]
        entitlement = suger.add_entitlement(buyer, partner="AWS", dimensions=AWS_DIMS)["id"]
        pipeline = Pipeline(sandbox, tmp, monkeypatch)
        pipeline.settings.update(http=HTTP, dimension_conversion={"AWS": {"cpu_hours": [{"dimension_key": "cpu_hour"}]}})
        world = World(sandbox, pipeline, alice, entitlement, copy.deepcopy(pipeline.settings), cpu)
        played = world.play(baseline_key)
        assert played.result.success, played.failure
        assert [g["records"] for g in played.held] == [{"cpu_hour": Decimal(10)}]
        yield world


def utc(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=timezone.utc)
