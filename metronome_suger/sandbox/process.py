"""One emulator per process, with injected latency and request counters: what `make bench` runs.

In-process emulators (`server.Sandbox`) share the GIL and the cores with the pipeline they serve, so
their CPU time is charged to the plugin's wall time. Here each emulator is its own Python process:

    python -m metronome_suger.sandbox.process --emulator metronome --world bench \\
        --customers 10000 --metrics 20 --mode quantity --latency 0.02 \\
        --now 2026-11-25T14:05:00Z --port 0 --host 127.0.0.1

builds the whole deterministic world (the Suger process builds the Metronome half too, so both agree
on every id), serves only its own emulator, prints one JSON line ``{"url": ..., "pid": ...}`` once it
accepts connections, and runs until SIGTERM (or, with ``--exit-on-stdin-eof``, until its parent goes).

Each request first waits ``--latency`` seconds with ``asyncio.sleep`` (concurrent requests overlap
their waits, as on a network), then is handled. Admin routes, outside auth and latency:
``GET /_sandbox/stats`` (requests per route template, e.g. ``GET /v1/customers/{id}/invoices`` or
``POST /org/{org}/entitlement/{id}/usageRecordGroup``; CPU seconds; RSS), ``POST /_sandbox/stats/reset``
and ``POST /_sandbox/clock`` ``{"now": "<RFC 3339>"}`` (Suger's hourly job catches up right then, not
in the next request). `emulator_processes` is the Python API: both children started, reaped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from metronome_suger.sandbox.bench_world import MODES, populate_bench
from metronome_suger.sandbox.clock import SandboxClock
from metronome_suger.sandbox.constants import DEFAULT_HOST, METRONOME_TOKEN, ORG_ID, SUGER_API_KEY
from metronome_suger.sandbox.faults import Faults
from metronome_suger.sandbox.metronome_app import create_metronome_app
from metronome_suger.sandbox.metronome_state import MetronomeState
from metronome_suger.sandbox.procstats import cpu_seconds, peak_rss_bytes, reset_peak_rss, rss_bytes
from metronome_suger.sandbox.scenario import build_scenario
from metronome_suger.sandbox.suger_app import create_suger_app
from metronome_suger.sandbox.suger_state import SugerState
from metronome_suger.sandbox.wire import fmt, parse_rfc3339

EMULATORS = ("metronome", "suger")
WORLDS = ("bench", "scenario")
STARTUP_TIMEOUT_SECONDS = 120.0  # a 10,000 × 20 world takes a few seconds per process to build
STOP_TIMEOUT_SECONDS = 10.0
_TEMPLATE_CACHE_SIZE = 65_536
_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


# ------------------------------------------------------------------------------ the middleware
def route_template(path: str) -> str:
    """A route's path with its parameters named ``{org}`` (the org id) or ``{id}``."""
    return _PARAM.sub(lambda m: "{org}" if m.group(1) == "orgId" else "{id}", path)


class EmulatorMiddleware:
    """Outermost ASGI layer of an emulator process: the admin routes, then (for every other request)
    a count by route template and the injected latency, then the emulator with its own auth."""

    def __init__(self, app: Starlette, *, name: str, clock: SandboxClock, latency: float,
                 on_clock: Callable[[], object] | None = None) -> None:
        if latency < 0:
            raise ValueError("latency must be >= 0")
        self.app: ASGIApp = app
        self.routes = list(app.routes)
        self.name, self.clock, self.latency, self.on_clock = name, clock, latency, on_clock
        self.counts: Counter[str] = Counter()
        self._templates: dict[tuple[str, str], str] = {}
        self._cpu_at_reset = cpu_seconds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"].startswith("/_sandbox/"):
            await self._admin(scope, receive, send)
            return
        # Counted on arrival, so a stats call made after an answer always includes it.
        self.counts[self._template(scope)] += 1
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        await self.app(scope, receive, send)

    def _template(self, scope: Scope) -> str:
        """``METHOD /route/template``; cached per raw path (ids repeat across windows)."""
        key = (scope["method"], scope["path"])
        found = self._templates.get(key)
        if found is None:
            partial = None
            for route in self.routes:
                match, _ = route.matches(scope)
                if match is Match.FULL:
                    found = route_template(getattr(route, "path", "?"))
                    break
                if match is Match.PARTIAL and partial is None:
                    partial = route_template(getattr(route, "path", "?"))
            found = f"{scope['method']} {found or partial or '<unrouted>'}"
            if len(self._templates) >= _TEMPLATE_CACHE_SIZE:
                self._templates.clear()
            self._templates[key] = found
        return found

    def stats(self) -> dict[str, Any]:
        cpu = cpu_seconds()
        return {
            "emulator": self.name,
            "requests": dict(sorted(self.counts.items())),
            "total": sum(self.counts.values()),
            "cpu_seconds": cpu,
            "cpu_seconds_since_reset": cpu - self._cpu_at_reset,
            "rss_peak_bytes": peak_rss_bytes(),
            "rss_bytes": rss_bytes(),
            "latency": self.latency,
            "now": fmt(self.clock.now()),
        }

    async def _admin(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        body: dict[str, Any] | None = None
        if method == "GET" and path == "/_sandbox/stats":
            response = JSONResponse(self.stats())
        elif method == "POST" and path == "/_sandbox/stats/reset":
            self.counts.clear()
            self._cpu_at_reset = cpu_seconds()
            reset_peak_rss()
            response = JSONResponse(self.stats())
        elif method == "POST" and path == "/_sandbox/clock":
            try:
                body = json.loads(await _read_body(receive) or b"null")
                self.clock.set(parse_rfc3339(body["now"]))  # type: ignore[index]
                if self.on_clock is not None:
                    self.on_clock()  # catch up now, not in the next (timed) request
                response = JSONResponse({"now": fmt(self.clock.now())})
            except (ValueError, TypeError, KeyError):
                response = JSONResponse({"message": 'expected {"now": "<RFC 3339 with offset>"}'}, 400)
        else:
            response = JSONResponse({"message": f"no admin route {method} {path}"}, 404)
        await response(scope, receive, send)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body", False):
            return b"".join(chunks)


# --------------------------------------------------------------------------------- the child
def build_world(args: argparse.Namespace) -> tuple[SandboxClock, MetronomeState, SugerState]:
    """Both states of the requested world, clock frozen at ``--now``."""
    clock = SandboxClock(parse_rfc3339(args.now))
    metronome = MetronomeState(clock, seed=args.seed)
    suger = SugerState(args.org_id, clock)
    if args.world == "bench":
        populate_bench(metronome, suger, customers=args.customers, metrics=args.metrics,
                       mode=args.mode)
    else:
        build_scenario(metronome, suger, seed=args.seed, customers=args.customers, now=clock.now())
    return clock, metronome, suger


def build_app(args: argparse.Namespace) -> EmulatorMiddleware:
    clock, metronome, suger = build_world(args)
    on_clock: Callable[[], object] | None = None
    if args.emulator == "metronome":
        faults = None
        if args.empty_second_page:
            faults = Faults()  # its default: the second page of a listing is first served empty
        app = create_metronome_app(metronome, token=args.token or METRONOME_TOKEN, faults=faults)
    else:
        app = create_suger_app(suger, api_key=args.token or SUGER_API_KEY)
        # Suger's hourly job runs when the clock moves; the entitlements' JSON is made once now.
        on_clock = suger.tick
        suger.entitlements_json(suger.entitlement_ids())
    # The world lives as long as the process: keep the collector from rescanning it on every
    # full collection while serving.
    gc.collect()
    gc.freeze()
    return EmulatorMiddleware(app, name=args.emulator, clock=clock, latency=args.latency,
                              on_clock=on_clock)


class _ReadyServer(uvicorn.Server):
    """Prints the ready line once the socket accepts connections."""

    def __init__(self, config: uvicorn.Config, url: str) -> None:
        super().__init__(config)
        self.url = url

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(json.dumps({"url": self.url, "pid": os.getpid()}), flush=True)


def _watch_stdin(server: uvicorn.Server) -> None:
    """The parent holds our stdin open: EOF means it is gone, so stop (no orphans)."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError):
        pass
    server.should_exit = True


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m metronome_suger.sandbox.process",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--emulator", choices=EMULATORS, required=True)
    p.add_argument("--world", choices=WORLDS, default="bench")
    p.add_argument("--customers", type=int, required=True)
    p.add_argument("--metrics", type=int, default=3, help="bench world: billable metrics")
    p.add_argument("--mode", choices=MODES, default="quantity", help="bench world")
    p.add_argument("--seed", type=int, default=0, help="scenario world: its seed")
    p.add_argument("--latency", type=float, default=0.0, help="seconds before each request")
    p.add_argument("--now", required=True, help="the frozen clock, RFC 3339 with offset")
    p.add_argument("--host", default=DEFAULT_HOST)
    p.add_argument("--port", type=int, default=0, help="0: an ephemeral port")
    p.add_argument("--org-id", default=ORG_ID)
    p.add_argument("--token", default=None, help="bearer token / API key (default: the public one)")
    p.add_argument("--empty-second-page", action="store_true",
                   help="Metronome: each listing's second page is first served empty")
    p.add_argument("--exit-on-stdin-eof", action="store_true",
                   help="stop when stdin closes (set by emulator_processes)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.customers < 0 or args.metrics < 1 or args.latency < 0:
        parser().error("--customers >= 0, --metrics >= 1 and --latency >= 0 are required")
    app = build_app(args)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    host = f"[{args.host}]" if ":" in args.host else args.host
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_keep_alive=75, timeout_graceful_shutdown=2)
    server = _ReadyServer(config, f"http://{host}:{sock.getsockname()[1]}")
    if args.exit_on_stdin_eof:
        threading.Thread(target=_watch_stdin, args=(server,), daemon=True).start()
    server.run(sockets=[sock])
    return 0


# ------------------------------------------------------------------------------ the parent API
@dataclass
class ProcessSandbox:
    """Both emulator processes as the caller sees them (URLs, credentials, admin calls)."""

    metronome_url: str
    suger_url: str
    org_id: str
    pids: dict[str, int]
    metronome_token: str = METRONOME_TOKEN
    suger_api_key: str = SUGER_API_KEY
    _admin: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30), repr=False)

    def url(self, name: str) -> str:
        if name not in EMULATORS:
            raise ValueError(f"emulator must be one of {EMULATORS}, got {name!r}")
        return self.metronome_url if name == "metronome" else self.suger_url

    def env(self) -> dict[str, str]:
        """The environment the plugin needs to reach these emulators (as `Sandbox.env`)."""
        return {"METRONOME_API_TOKEN": self.metronome_token, "SUGER_API_KEY": self.suger_api_key}

    def stats(self, name: str) -> dict[str, Any]:
        """``GET /_sandbox/stats`` of one emulator."""
        response = self._admin.get(f"{self.url(name)}/_sandbox/stats")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def reset_stats(self) -> None:
        for name in EMULATORS:
            self._admin.post(f"{self.url(name)}/_sandbox/stats/reset").raise_for_status()

    def set_clock(self, now: datetime) -> None:
        """Move both frozen clocks to ``now`` (timezone-aware)."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        for name in EMULATORS:
            self._admin.post(f"{self.url(name)}/_sandbox/clock",
                             json={"now": now.isoformat()}).raise_for_status()

    def close(self) -> None:
        self._admin.close()


def _command(name: str, *, world: str, customers: int, metrics: int, mode: str, latency: float,
             now: datetime, seed: int, host: str, org_id: str) -> list[str]:
    return [sys.executable, "-m", "metronome_suger.sandbox.process", "--emulator", name,
            "--world", world, "--customers", str(customers), "--metrics", str(metrics),
            "--mode", mode, "--seed", str(seed), "--latency", repr(latency),
            "--now", now.isoformat(), "--host", host, "--port", "0", "--org-id", org_id,
            "--exit-on-stdin-eof"]


def _read_ready(proc: subprocess.Popen[bytes], stderr: IO[bytes], name: str,
                deadline: float) -> dict[str, Any]:
    """The child's one JSON line, or RuntimeError (with its stderr) on exit or timeout."""
    assert proc.stdout is not None
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"{name} emulator process was not ready in time"
                                   f"{_stderr_tail(stderr)}")
            if not selector.select(remaining):
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                proc.wait(timeout=STOP_TIMEOUT_SECONDS)
                raise RuntimeError(f"{name} emulator process exited ({proc.returncode}) before "
                                   f"it was ready{_stderr_tail(stderr)}")
            buffer += chunk
    ready: dict[str, Any] = json.loads(buffer.split(b"\n", 1)[0])
    return ready


def _stderr_tail(stderr: IO[bytes]) -> str:
    stderr.seek(0)
    text = stderr.read().decode("utf-8", "replace").strip()
    return f"; its stderr ends:\n{text[-2000:]}" if text else ""


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to all, then SIGKILL to any that lingers; every one reaped."""
    for proc in procs:
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def emulator_processes(*, world: str = "bench", customers: int, metrics: int = 3,
                       mode: str = "quantity", latency: float = 0.0, now: datetime, seed: int = 0,
                       host: str = DEFAULT_HOST, org_id: str = ORG_ID,
                       startup_timeout: float = STARTUP_TIMEOUT_SECONDS) -> Iterator[ProcessSandbox]:
    """Start the Metronome and Suger emulator processes (both build their world at once) and yield
    them once both accept connections; on exit (or any error) both are stopped and reaped."""
    if world not in WORLDS:
        raise ValueError(f"world must be one of {WORLDS}, got {world!r}")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    with ExitStack() as stack:
        procs: dict[str, subprocess.Popen[bytes]] = {}
        errs: dict[str, IO[bytes]] = {}
        for name in EMULATORS:
            errs[name] = stack.enter_context(tempfile.TemporaryFile())
        stack.callback(lambda: _stop(list(procs.values())))
        for name in EMULATORS:
            command = _command(name, world=world, customers=customers, metrics=metrics, mode=mode,
                               latency=latency, now=now, seed=seed, host=host, org_id=org_id)
            procs[name] = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=errs[name], bufsize=0)
        deadline = time.monotonic() + startup_timeout
        ready = {name: _read_ready(procs[name], errs[name], name, deadline) for name in EMULATORS}
        sandbox = ProcessSandbox(
            metronome_url=ready["metronome"]["url"], suger_url=ready["suger"]["url"],
            org_id=org_id, pids={name: int(ready[name]["pid"]) for name in EMULATORS},
        )
        stack.callback(sandbox.close)
        yield sandbox


if __name__ == "__main__":
    sys.exit(main())
