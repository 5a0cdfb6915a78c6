"""Run both emulators on loopback: the harness behind the tests, the demo and
`metronome-suger sandbox`.

Each emulator gets its own uvicorn server in a daemon thread, on a socket we bind ourselves so
port 0 yields a known ephemeral port; several sandboxes can run side by side in one process.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from datetime import datetime
from types import TracebackType
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from metronome_suger.sandbox.clock import SandboxClock
from metronome_suger.sandbox.constants import (
    DEFAULT_HOST,
    METRONOME_PORT,
    METRONOME_TOKEN,
    ORG_ID,
    SUGER_API_KEY,
    SUGER_PORT,
)
from metronome_suger.sandbox.faults import FaultMiddleware, Faults, RequestLog, silence_drop_log
from metronome_suger.sandbox.metronome_app import create_metronome_app
from metronome_suger.sandbox.metronome_state import MetronomeState
from metronome_suger.sandbox.scenario import ScenarioInfo, build_scenario
from metronome_suger.sandbox.suger_app import create_suger_app
from metronome_suger.sandbox.suger_state import SugerState

STARTUP_TIMEOUT_SECONDS = 10.0


class _NotifyingServer(uvicorn.Server):
    """A uvicorn server that signals an event once it accepts connections (or failed trying)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        await super().startup(sockets)
        self.ready.set()

    async def main_loop(self) -> None:
        """uvicorn's 0.1 s tick loop, but woken at once by `request_exit` (fast, clean stops)."""
        assert self._wake is not None
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=0.1)
            except asyncio.TimeoutError:
                pass
            should_exit = await self.on_tick(counter)

    def request_exit(self) -> None:
        """Thread-safe: ask the server to shut down now."""
        self.should_exit = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # loop already closed
                pass

    def run_in_thread(self, sock: socket.socket) -> None:
        try:
            self.run(sockets=[sock])
        except BaseException as exc:  # reported to start(), which raises it in the caller's thread
            self.error = exc
        finally:
            self.ready.set()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.setblocking(False)
    return sock


class _Emulator:
    def __init__(self, name: str, app: ASGIApp, host: str, port: int) -> None:
        self.name, self.app, self.host, self.requested_port = name, app, host, port
        self.server: _NotifyingServer | None = None
        self.thread: threading.Thread | None = None
        self.sock: socket.socket | None = None
        self.port = port

    def start(self) -> None:
        self.sock = _bind(self.host, self.requested_port)
        self.port = int(self.sock.getsockname()[1])
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off")
        self.server = _NotifyingServer(config)
        self.thread = threading.Thread(
            target=self.server.run_in_thread,
            args=(self.sock,),
            name=f"sandbox-{self.name}-{self.port}",
            daemon=True,
        )
        self.thread.start()

    def wait_ready(self) -> None:
        assert self.server is not None
        if not self.server.ready.wait(STARTUP_TIMEOUT_SECONDS):
            raise RuntimeError(
                f"{self.name} emulator did not start within {STARTUP_TIMEOUT_SECONDS}s"
            )
        if self.server.error is not None or not self.server.started:
            raise RuntimeError(f"{self.name} emulator failed to start") from self.server.error

    def request_exit(self) -> None:
        if self.server is not None:
            self.server.request_exit()

    def stop(self) -> None:
        self.request_exit()
        if self.thread is not None:
            self.thread.join(timeout=STARTUP_TIMEOUT_SECONDS)
        if self.sock is not None:
            self.sock.close()
        self.server, self.thread, self.sock = None, None, None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class Sandbox:
    """Metronome + Suger emulators sharing one clock, seeded with `build_scenario` data."""

    def __init__(
        self,
        *,
        seed: int = 0,
        customers: int = 6,
        host: str = DEFAULT_HOST,
        metronome_port: int = 0,
        suger_port: int = 0,
        now: datetime | None = None,
        metronome_token: str = METRONOME_TOKEN,
        suger_api_key: str = SUGER_API_KEY,
        org_id: str = ORG_ID,
    ) -> None:
        self.host = host
        self.metronome_token = metronome_token
        self.suger_api_key = suger_api_key
        self.org_id = org_id
        self.clock = SandboxClock(now)
        self.metronome = MetronomeState(self.clock, seed=seed)
        self.suger = SugerState(org_id, self.clock)
        self.scenario: ScenarioInfo = build_scenario(
            self.metronome, self.suger, seed=seed, customers=customers, now=self.clock.now()
        )
        self.metronome_faults = Faults()
        self.suger_faults = Faults()
        self.metronome_log = RequestLog()
        self.suger_log = RequestLog()
        metronome_app = create_metronome_app(
            self.metronome, token=metronome_token, faults=self.metronome_faults
        )
        suger_app = create_suger_app(self.suger, api_key=suger_api_key)
        self._emulators = [
            _Emulator(
                "metronome",
                FaultMiddleware(metronome_app, self.metronome_faults, self.metronome_log),
                host,
                metronome_port,
            ),
            _Emulator(
                "suger",
                FaultMiddleware(suger_app, self.suger_faults, self.suger_log),
                host,
                suger_port,
            ),
        ]
        self._running = False

    @property
    def metronome_url(self) -> str:
        return self._emulators[0].url

    @property
    def suger_url(self) -> str:
        return self._emulators[1].url

    def start(self) -> Sandbox:
        """Start both servers; returns once both accept connections."""
        if self._running:
            return self
        silence_drop_log()
        try:
            for emulator in self._emulators:
                emulator.start()
            for emulator in self._emulators:
                emulator.wait_ready()
        except BaseException:
            self.stop()
            raise
        self._running = True
        return self

    def stop(self) -> None:
        for emulator in self._emulators:
            emulator.request_exit()
        for emulator in self._emulators:
            emulator.stop()
        self._running = False

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """The environment the plugin needs to reach this sandbox."""
        return {"METRONOME_API_TOKEN": self.metronome_token, "SUGER_API_KEY": self.suger_api_key}


def serve_forever(**kwargs: Any) -> None:
    """Run a sandbox in the foreground (default ports 8701/8702) until Ctrl-C."""
    kwargs.setdefault("metronome_port", METRONOME_PORT)
    kwargs.setdefault("suger_port", SUGER_PORT)
    sandbox = Sandbox(**kwargs)
    sandbox.start()
    try:
        print(f"Metronome emulator: {sandbox.metronome_url}", flush=True)
        print(f"Suger emulator:     {sandbox.suger_url}", flush=True)
        print(f"org id: {sandbox.org_id}", flush=True)
        print("Export this environment to point the plugin at the sandbox:", flush=True)
        for name, value in sandbox.env().items():
            print(f"export {name}={value}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        # A timed wait, not a bare one: the kernel may deliver SIGINT to a server thread, and Python runs
        # the handler (KeyboardInterrupt) only when the main thread wakes up to run bytecode.
        idle = threading.Event()
        while not idle.wait(timeout=0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()
