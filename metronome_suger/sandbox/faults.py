"""Fault injection and a request log, shared by both emulators.

`FaultMiddleware` wraps any ASGI app, so the emulators themselves stay fault-free: tests say
"the next two GETs under /v1/customers answer 429" and clients meet real HTTP failures.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import random
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from starlette.types import ASGIApp, Message, Receive, Scope, Send

FaultKind = Literal["429", "5xx", "latency", "drop", "drop_after", "malformed", "respond"]
FAULT_KINDS: tuple[str, ...] = ("429", "5xx", "latency", "drop", "drop_after", "malformed", "respond")
# What `Faults.chaos` draws from, each equally likely: the transient failures real APIs and proxies produce.
CHAOS_KINDS: tuple[str, ...] = (
    "429", "429_no_retry_after", "500", "502", "503", "timeout", "drop", "drop_after", "malformed", "slow",
)

# uvicorn logs one error line per deliberately dropped connection; that line is expected noise.
_DROP_LOG_MESSAGE = "ASGI callable returned without completing response."


class _DropLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _DROP_LOG_MESSAGE


def silence_drop_log() -> None:
    """Hide uvicorn's error line for connections dropped on purpose (idempotent)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DropLogFilter) for f in logger.filters):
        logger.addFilter(_DropLogFilter())


@dataclass
class _Fault:
    kind: str
    remaining: int
    method: str | None
    path_prefix: str | None
    status: int | None
    retry_after: float | None
    delay_seconds: float | None
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path_prefix is None or path.startswith(self.path_prefix)


class Faults:
    """Faults armed by tests; each fires `times` times for matching requests, then disappears.

    Pagination toggles (read by the Metronome emulator):
    - `empty_second_page` (default on): a listing with more than one page answers its second page
      request with `"data": []` and a cursor first, so clients always meet an empty page.
    - `empty_pages` (default off): every page that holds data is preceded by an empty page.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self.empty_pages = False
        self.empty_second_page = True
        self._chaos: _Chaos | None = None
        self.fired: Counter[str] = Counter()  # firings so far, by kind (chaos kinds by their chaos name)

    def chaos(
        self, rate: float, *, seed: int, timeout_seconds: float, slow_seconds: float = 0.05,
        kinds: Sequence[str] = CHAOS_KINDS, path_prefix: str | None = None,
    ) -> None:
        """From now on, each request (under ``path_prefix``) fails with probability ``rate``, the kind drawn
        from ``kinds`` by a generator seeded with ``seed``. ``timeout`` holds the answer ``timeout_seconds``
        (set it above the client's read timeout); ``slow`` holds it ``slow_seconds`` and then answers."""
        unknown = set(kinds) - set(CHAOS_KINDS)
        if unknown or not 0 <= rate <= 1:
            raise ValueError(f"chaos needs 0 <= rate <= 1 and kinds from {CHAOS_KINDS}; got {rate}, {sorted(unknown)}")
        with self._lock:
            self._chaos = _Chaos(rate, random.Random(seed), tuple(kinds), timeout_seconds, slow_seconds, path_prefix)

    def calm(self) -> None:
        """Stop the chaos (armed faults stay armed)."""
        with self._lock:
            self._chaos = None

    def inject(
        self,
        kind: FaultKind | str,
        *,
        times: int = 1,
        method: str | None = None,
        path_prefix: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        delay_seconds: float | None = None,
        body: bytes | str = b"",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Arm a fault. ``respond`` answers ``status`` with ``body`` and ``headers`` as given (an HTML page from a
        proxy, an empty 200, a 413...); ``drop_after`` lets the emulator do the work, then drops the answer."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        if times < 1:
            raise ValueError("times must be >= 1")
        if kind == "5xx" and status is not None and not 500 <= status <= 599:
            raise ValueError(f"5xx fault needs a 5xx status, got {status}")
        if kind == "latency" and (delay_seconds is None or delay_seconds < 0):
            raise ValueError("latency fault needs delay_seconds >= 0")
        if kind == "respond" and status is None:
            raise ValueError("respond fault needs a status")
        raw = body.encode() if isinstance(body, str) else body
        fault = _Fault(kind, times, method, path_prefix, status, retry_after, delay_seconds, raw,
                       tuple((headers or {}).items()))
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> int:
        """How many fault firings are still armed (all kinds)."""
        with self._lock:
            return sum(f.remaining for f in self._faults)

    def take(self, method: str, path: str) -> _Fault | None:
        """Consume one firing of the first armed fault matching this request, else maybe draw a chaos fault."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    self.fired[fault.kind] += 1
                    return fault
            drawn = self._chaos.draw(path) if self._chaos else None
            if drawn is not None:
                self.fired[drawn[0]] += 1
                return drawn[1]
        return None


@dataclass
class _Chaos:
    rate: float
    rng: random.Random
    kinds: tuple[str, ...]
    timeout_seconds: float
    slow_seconds: float
    path_prefix: str | None

    def draw(self, path: str) -> tuple[str, _Fault] | None:
        if self.path_prefix is not None and not path.startswith(self.path_prefix):
            return None
        if self.rng.random() >= self.rate:
            return None
        name = self.rng.choice(self.kinds)
        as_fault = {
            "429": ("429", None, 0.0, None), "429_no_retry_after": ("429", None, None, None),
            "500": ("5xx", 500, None, None), "502": ("5xx", 502, None, None), "503": ("5xx", 503, None, None),
            "timeout": ("latency", None, None, self.timeout_seconds),
            "slow": ("latency", None, None, self.slow_seconds),
        }.get(name, (name, None, None, None))
        kind, status, retry_after, delay = as_fault
        return name, _Fault(kind, 1, None, None, status, retry_after, delay)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the emulator saw it; secrets in `mask_header` are masked."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    status: int | None
    fault: str | None = None


@dataclass
class _Entry:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    status: int | None = None
    fault: str | None = None

    def freeze(self) -> RecordedRequest:
        return RecordedRequest(
            self.method,
            self.path,
            self.query,
            dict(self.headers),
            self.body,
            self.status,
            self.fault,
        )


class RequestLog:
    """Thread-safe log of requests, in arrival order, with the status actually returned."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[_Entry] = []

    def _append(self, entry: _Entry) -> None:
        with self._lock:
            self._entries.append(entry)

    def _set(self, entry: _Entry, *, status: int | None, fault: str | None = None) -> None:
        with self._lock:
            entry.status = status
            if fault is not None:
                entry.fault = fault

    def entries(self) -> list[RecordedRequest]:
        with self._lock:
            return [e.freeze() for e in self._entries]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def find(
        self, method: str | None = None, path_prefix: str | None = None
    ) -> list[RecordedRequest]:
        return [
            e
            for e in self.entries()
            if (method is None or e.method.upper() == method.upper())
            and (path_prefix is None or e.path.startswith(path_prefix))
        ]


def mask_secret(value: str) -> str:
    """Keep the auth scheme, hide the secret: 'Bearer abc' -> 'Bearer ***'."""
    scheme, sep, _secret = value.strip().partition(" ")
    return f"{scheme} ***" if sep else "***"


def _parse_body(raw: bytes, headers: dict[str, str]) -> Any:
    if headers.get("content-encoding", "").lower() == "gzip":
        try:
            raw = gzip.decompress(raw)
        except OSError:
            return raw.decode("latin-1")
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _json_message(
    status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None
) -> list[Message]:
    body = json.dumps({"message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return [
        {"type": "http.response.start", "status": status, "headers": headers + (extra or [])},
        {"type": "http.response.body", "body": body, "more_body": False},
    ]


def _retry_after_value(seconds: float) -> bytes:
    return (str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}").encode()


class FaultMiddleware:
    """Pure ASGI middleware: logs every HTTP request, then fires an armed fault or calls `app`."""

    def __init__(
        self, app: ASGIApp, faults: Faults, log: RequestLog, mask_header: str = "authorization"
    ) -> None:
        self.app = app
        self.faults = faults
        self.log = log
        self.mask_header = mask_header.lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_body, replay = await self._buffer(receive)
        headers: dict[str, str] = {}
        for name, value in scope.get("headers", []):
            key, text = name.decode("latin-1").lower(), value.decode("latin-1")
            headers[key] = mask_secret(text) if key == self.mask_header else text
        entry = _Entry(
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            body=_parse_body(raw_body, headers),
        )
        self.log._append(entry)
        fault = self.faults.take(scope["method"], scope["path"])
        if fault is not None and fault.kind == "drop_after":
            async def swallow(message: Message) -> None:
                if message["type"] == "http.response.start":
                    self.log._set(entry, status=int(message["status"]), fault="drop_after")

            await self.app(scope, replay, swallow)  # the work is done (a POST is stored), the answer is lost
            await _drop(send)
            return
        if fault is not None and fault.kind != "latency":
            await self._fire(fault, entry, send)
            return
        if fault is not None:
            self.log._set(entry, status=None, fault="latency")
            await asyncio.sleep(fault.delay_seconds or 0)

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.log._set(entry, status=int(message["status"]))
            await send(message)

        await self.app(scope, replay, recording_send)

    async def _buffer(self, receive: Receive) -> tuple[bytes, Receive]:
        """Read the whole request body so it can be logged, then replay it to the app."""
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunks.append(cast(bytes, message.get("body", b"")))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return body, replay

    async def _fire(self, fault: _Fault, entry: _Entry, send: Send) -> None:
        if fault.kind == "429":
            extra = (
                [(b"retry-after", _retry_after_value(fault.retry_after))]
                if fault.retry_after is not None
                else []
            )
            self.log._set(entry, status=429, fault="429")
            for message in _json_message(
                429, "Too many requests. Wait and try again later.", extra
            ):
                await send(message)
        elif fault.kind == "5xx":
            status = fault.status or 500
            self.log._set(entry, status=status, fault="5xx")
            for message in _json_message(status, "Injected server error."):
                await send(message)
        elif fault.kind == "malformed":
            body = b'{"data": [{"id": "truncated'
            self.log._set(entry, status=200, fault="malformed")
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body, "more_body": False})
        elif fault.kind == "respond":
            assert fault.status is not None
            self.log._set(entry, status=fault.status, fault="respond")
            headers = [(k.lower().encode(), v.encode()) for k, v in fault.headers]
            if not any(k == b"content-length" for k, _ in headers):
                headers.append((b"content-length", str(len(fault.body)).encode()))
            await send({"type": "http.response.start", "status": fault.status, "headers": headers})
            await send({"type": "http.response.body", "body": fault.body, "more_body": False})
        elif fault.kind == "drop":
            self.log._set(entry, status=None, fault="drop")
            await _drop(send)


async def _drop(send: Send) -> None:
    """Promise more bytes than we send and never finish: the server closes the connection mid-body, which an
    HTTP client reports as a transport (protocol) error."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"data": [', "more_body": True})


__all__ = [
    "CHAOS_KINDS",
    "FAULT_KINDS",
    "FaultKind",
    "FaultMiddleware",
    "Faults",
    "RecordedRequest",
    "RequestLog",
    "mask_secret",
    "silence_drop_log",
]
