"""Shared HTTP machinery for the Metronome and Suger clients.

Why it exists: both APIs need the same things done right once — typed errors that never leak the token,
retries that respect ``Retry-After`` and stop at a time cap, money parsed as ``Decimal`` (never via float)
and Decimal request bodies serialised exactly.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
import pydantic
from pydantic import SecretStr
from tenacity import RetryCallState, Retrying, retry_if_exception

from metronome_suger.clients.types import format_date, format_rfc3339

__all__ = [
    "ApiError",
    "AuthError",
    "BadRequestError",
    "ConflictError",
    "DEFAULT_TIMEOUT",
    "JsonApiClient",
    "MalformedResponseError",
    "NotFoundError",
    "RateLimitError",
    "RetryPolicy",
    "ServerError",
    "Service",
    "TransportError",
    "decode_json",
    "encode_json",
    "map_bounded",
    "to_jsonable",
]

logger = logging.getLogger("metronome_suger.clients")

Service = Literal["metronome", "suger"]
_SERVICE_NAMES: dict[str, str] = {"metronome": "Metronome", "suger": "Suger"}

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
DEFAULT_USER_AGENT = "metronome-suger/0.1 (+https://github.com/; httpx)"

_MESSAGE_LIMIT = 500
_BODY_LIMIT = 10_000

T = TypeVar("T")
R = TypeVar("R")


# --------------------------------------------------------------------------------------------------- errors


class ApiError(Exception):
    """A failed call to Metronome or Suger. Safe to log: it never carries a token or a full URL.

    ``path`` has no query string; ``status`` is None when no HTTP response arrived; ``attempts`` is how
    many times the call was tried before giving up; ``body`` is the (redacted, truncated) response text.
    """

    def __init__(
        self,
        *,
        service: str,
        method: str,
        path: str,
        status: int | None,
        message: str,
        body: str | None = None,
        retry_after: float | None = None,
        attempts: int = 1,
    ) -> None:
        self.service = service
        self.method = method
        self.path = path
        self.status = status
        self.message = message
        self.body = body
        self.retry_after = retry_after
        self.attempts = attempts
        super().__init__(message)

    @property
    def retryable(self) -> bool:
        """Whether the retry policy may try again: 408, 429 and 5xx only (other 4xx never change on retry)."""
        return self.status is not None and (self.status in (408, 429) or self.status >= 500)

    def __str__(self) -> str:
        name = _SERVICE_NAMES.get(self.service, self.service)
        outcome = str(self.status) if self.status is not None else "no response"
        text = f"{name} {self.method} {self.path} -> {outcome}: {self.message}"
        if self.attempts > 1:
            text += f" (gave up after {self.attempts} attempts)"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(service={self.service!r}, method={self.method!r}, path={self.path!r}, "
            f"status={self.status!r}, message={self.message!r}, attempts={self.attempts!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only __init__ breaks default exception pickling (Dagster may pickle failures).
        return (_rebuild_error, (type(self), dict(self.__dict__)))


def _rebuild_error(cls: type[ApiError], state: dict[str, Any]) -> ApiError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, state.get("message", ""))
    exc.__dict__.update(state)
    return exc


class BadRequestError(ApiError):
    """400/422: the request itself is wrong; retrying cannot help. ``message`` is the server's reason."""


class AuthError(ApiError):
    """401/403: the token is missing, wrong, or lacks access."""


class NotFoundError(ApiError):
    """404: the customer, buyer, group or route does not exist."""


class ConflictError(ApiError):
    """409: duplicate (e.g. a Suger usage record group id already reported)."""


class RateLimitError(ApiError):
    """429: too many requests; retried with back-off / Retry-After until the policy gives up."""


class ServerError(ApiError):
    """5xx: the service failed; retried until the policy gives up."""


class TransportError(ApiError):
    """No usable HTTP response: connection refused, timeout, dropped connection."""

    def __init__(self, *, transient: bool = True, **kwargs: Any) -> None:
        self.transient = transient
        super().__init__(**kwargs)

    @property
    def retryable(self) -> bool:
        return self.transient


class MalformedResponseError(ApiError):
    """A 2xx answer whose body is not JSON or does not match the expected shape; never retried."""


def _error_class(status: int) -> type[ApiError]:
    if status in (400, 422):
        return BadRequestError
    if status in (401, 403):
        return AuthError
    if status == 404:
        return NotFoundError
    if status == 409:
        return ConflictError
    if status == 429:
        return RateLimitError
    if status >= 500:
        return ServerError
    return ApiError


# --------------------------------------------------------------------------------------------------- retries


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry transient failures (transport errors, 408, 429, 5xx).

    Waits: ``Retry-After`` / ``retry-after-ms`` when the server sends one (capped at ``max_wait``), else
    ``min(max_wait, initial_wait * 2**(attempt-1) + uniform(0, jitter))``. Gives up after ``max_attempts``
    tries or when the next wait would take the call past ``max_total_seconds``, whichever comes first.
    """

    max_attempts: int = 5
    initial_wait: float = 0.5
    max_wait: float = 8.0
    max_total_seconds: float = 60.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be >= 1")
        for name in ("initial_wait", "max_wait", "max_total_seconds", "jitter"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"RetryPolicy.{name} must be a finite number >= 0, got {value!r}")

    @classmethod
    def no_retry(cls) -> RetryPolicy:
        """One attempt only (useful for interactive commands and tests)."""
        return cls(max_attempts=1)

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Exponential back-off with additive jitter for the wait after failed attempt ``attempt`` (1-based)."""
        base = self.initial_wait * (2 ** max(attempt - 1, 0))
        extra = (rng or random).uniform(0, self.jitter) if self.jitter else 0.0
        return min(self.max_wait, base + extra)


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (delta-seconds or HTTP-date); None if absent/bad."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms) / 1000.0
            if math.isfinite(value):
                return max(value, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
        return max(value, 0.0) if math.isfinite(value) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = time.time() if now is None else now
    return max(when.timestamp() - current, 0.0)


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.retryable


# --------------------------------------------------------------------------------------------------- JSON


def to_jsonable(value: Any) -> Any:
    """Convert a request body to plain JSON types, keeping every Decimal exact.

    An integral Decimal becomes a JSON integer; another Decimal becomes a float only when that float's
    shortest text equals the Decimal (so the number on the wire *is* the Decimal); anything else raises
    ``ValueError`` rather than silently rounding money. Aware datetimes become RFC 3339 ``Z`` strings.
    """
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, Decimal):
        return _decimal_to_json(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot send non-finite number {value!r} as JSON")
        return value
    if isinstance(value, datetime):
        return format_rfc3339(value)
    if isinstance(value, date):
        return format_date(value)
    if isinstance(value, pydantic.BaseModel):
        return to_jsonable(value.model_dump(by_alias=True, exclude_none=True))
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"JSON object keys must be strings, got {key!r}")
            out[key] = to_jsonable(item)
        return out
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    raise ValueError(f"cannot serialise {type(value).__name__} as JSON")


def _decimal_to_json(value: Decimal) -> int | float:
    if not value.is_finite():
        raise ValueError(f"cannot send non-finite Decimal {value} as JSON")
    if value == value.to_integral_value():
        return int(value)
    as_float = float(value)
    if Decimal(repr(as_float)) != value:
        raise ValueError(
            f"Decimal {value} cannot be sent exactly as a JSON number (it has more precision than a "
            f"binary float round-trips; nearest is {as_float!r}); round it before sending"
        )
    return as_float


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON for a request body (see :func:`to_jsonable` for the Decimal rule)."""
    return json.dumps(to_jsonable(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def decode_json(content: bytes) -> Any:
    """Parse a response body with every fractional number as ``Decimal`` (never through float)."""
    return json.loads(content, parse_float=Decimal)


# --------------------------------------------------------------------------------------------------- helpers


class _Redactor:
    """Removes secret strings from any text that may end up in an exception or a log line."""

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def __repr__(self) -> str:
        return "<redactor>"


def _secret_value(value: str | SecretStr) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def _safe_base_url(base_url: str) -> tuple[str, str]:
    """Return (url for httpx, url for display) — the display form drops credentials, query and fragment."""
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("base_url must be an absolute http(s) URL")
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    display = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return base_url.strip().rstrip("/"), display


def _message_from_body(content: bytes, status: int | None) -> tuple[str, Any]:
    """The server's error message: JSON ``{"message"}`` (or ``error``), a JSON string, or a text excerpt."""
    decoded: Any = None
    try:
        decoded = json.loads(content) if content.strip() else None
    except ValueError:
        decoded = None
    if isinstance(decoded, Mapping):
        for key in ("message", "error", "detail"):
            if isinstance(decoded.get(key), str) and decoded[key].strip():
                return decoded[key].strip(), decoded
    if isinstance(decoded, str) and decoded.strip():
        return decoded.strip(), decoded
    text = " ".join(content.decode("utf-8", errors="replace").split())
    if not text:
        text = httpx.codes.get_reason_phrase(status) if status else "empty response"
        return text or "empty response", decoded
    return (text[:_MESSAGE_LIMIT] + "…") if len(text) > _MESSAGE_LIMIT else text, decoded


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_rfc3339(value)
    if isinstance(value, date):
        return format_date(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _clean_params(params: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """Query params without None values; bools as true/false, datetimes as RFC 3339, lists repeated."""
    out: list[tuple[str, str]] = []
    for key, value in (params or {}).items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            out.extend((key, _query_value(v)) for v in value)
        else:
            out.append((key, _query_value(value)))
    return out


def summarize_validation_error(err: pydantic.ValidationError, limit: int = 5, prefix: str = "") -> str:
    """A short, input-free description of what did not match (inputs may be large or sensitive)."""
    parts = []
    for item in err.errors(include_input=False, include_url=False)[:limit]:
        loc = ".".join(str(p) for p in (prefix, *item.get("loc", ())) if p != "") or "<root>"
        parts.append(f"{loc}: {item.get('msg', 'invalid')}")
    more = err.error_count() - limit
    if more > 0:
        parts.append(f"... and {more} more")
    return "; ".join(parts)


# --------------------------------------------------------------------------------------------------- client


class JsonApiClient:
    """One ``httpx.Client`` for one JSON API, with auth, timeouts, typed errors and retries.

    ``sleep`` and ``clock`` are injectable so tests can observe the waits without sleeping; ``transport``
    lets tests swap the network (only used for the one protocol violation the emulators never commit).
    """

    def __init__(
        self,
        base_url: str,
        auth_header_value: str | SecretStr,
        *,
        service: Service,
        timeout: httpx.Timeout | float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.BaseTransport | None = None,
        redact: Iterable[str] = (),
    ) -> None:
        auth_value = _secret_value(auth_header_value)
        if not auth_value.strip():
            raise ValueError(f"{_SERVICE_NAMES.get(service, service)} credentials are empty")
        httpx_url, self._display_url = _safe_base_url(base_url)
        self.service: Service = service
        self.retry_policy = retry or RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._rng = random.Random()
        scheme_split = auth_value.split(" ", 1)
        self._redact = _Redactor([auth_value, scheme_split[-1], *(_secret_value(s) for s in redact)])
        self._client = httpx.Client(
            base_url=httpx_url,
            timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
            headers={
                "Authorization": auth_value,
                "Accept": "application/json",
                "User-Agent": user_agent,
            },
            transport=transport,
            follow_redirects=False,
        )

    # -- lifecycle -------------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The base URL without credentials, query or fragment (safe to show)."""
        return self._display_url

    def close(self) -> None:
        self._client.close()

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._display_url!r}, service={self.service!r})"

    # -- calls -----------------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        """Send one call (retrying transient failures) and return the decoded JSON body, or None if empty.

        Raises the typed :class:`ApiError` subclass for the last failure once the policy gives up.
        """
        method = method.upper()
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/': {path!r}")
        query = _clean_params(params)
        content = encode_json(json) if json is not None else None
        started = self._clock()
        attempts = 0

        def attempt() -> Any:
            nonlocal attempts
            attempts += 1
            try:
                return self._send_once(method, path, query, content)
            except ApiError as exc:
                exc.attempts = attempts
                raise

        def stop(state: RetryCallState) -> bool:
            if state.attempt_number >= self.retry_policy.max_attempts:
                return True
            elapsed = self._clock() - started
            return elapsed + state.upcoming_sleep > self.retry_policy.max_total_seconds

        retrying = Retrying(
            retry=retry_if_exception(_is_retryable),
            wait=self._wait_seconds,
            stop=stop,
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except ApiError as exc:
            if exc.attempts > 1:
                logger.warning("%s; not retrying further", exc)
            raise

    def _send_once(
        self, method: str, path: str, query: list[tuple[str, str]], content: bytes | None
    ) -> Any:
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            response = self._client.request(method, path, params=query, content=content, headers=headers)
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise self._transport_error(method, path, exc, transient=True) from exc
        except httpx.HTTPError as exc:
            raise self._transport_error(method, path, exc, transient=False) from exc
        logger.debug(
            "%s %s %s -> %d", _SERVICE_NAMES[self.service], method, path, response.status_code
        )
        if 200 <= response.status_code < 300:
            return self._decode(method, path, response)
        raise self._status_error(method, path, response)

    def _decode(self, method: str, path: str, response: httpx.Response) -> Any:
        content = response.content
        if not content.strip():
            return None
        try:
            return decode_json(content)
        except ValueError as exc:
            excerpt = self._redact(content[:120].decode("utf-8", errors="replace"))
            detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise MalformedResponseError(
                service=self.service,
                method=method,
                path=path,
                status=response.status_code,
                message=f"response body is not valid JSON ({detail}); body starts with {excerpt!r}",
            ) from None

    def _status_error(self, method: str, path: str, response: httpx.Response) -> ApiError:
        status = response.status_code
        message, _ = _message_from_body(response.content, status)
        body = response.content[:_BODY_LIMIT].decode("utf-8", errors="replace")
        cls = _error_class(status)
        return cls(
            service=self.service,
            method=method,
            path=path,
            status=status,
            message=self._redact(message),
            body=self._redact(body),
            retry_after=parse_retry_after(response.headers),
        )

    def _transport_error(
        self, method: str, path: str, exc: httpx.HTTPError, *, transient: bool
    ) -> TransportError:
        detail = str(exc).strip()
        text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        return TransportError(
            service=self.service,
            method=method,
            path=path,
            status=None,
            message=self._redact(text),
            transient=transient,
        )

    def malformed(self, method: str, path: str, what: str, status: int | None = 200) -> MalformedResponseError:
        """Build the error for a 2xx body of the wrong shape (used by the typed clients' parsers)."""
        return MalformedResponseError(
            service=self.service, method=method, path=path, status=status, message=self._redact(what)
        )

    def parse_model(
        self,
        adapter: pydantic.TypeAdapter[T],
        data: Any,
        method: str,
        path: str,
        *,
        loc_prefix: str = "",
    ) -> T:
        """Validate decoded JSON against a model, turning a mismatch into :class:`MalformedResponseError`."""
        try:
            return adapter.validate_python(data)
        except pydantic.ValidationError as exc:
            what = summarize_validation_error(exc, prefix=loc_prefix)
            raise self.malformed(method, path, f"response does not match the expected shape: {what}") from None

    def _wait_seconds(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, ApiError) and exc.retry_after is not None:
            return min(exc.retry_after, self.retry_policy.max_wait)
        return self.retry_policy.backoff(state.attempt_number, self._rng)

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if not isinstance(exc, ApiError):  # pragma: no cover - only ApiErrors are retried
            return
        outcome = str(exc.status) if exc.status is not None else f"transport error ({exc.message})"
        logger.warning(
            "%s %s %s -> %s (attempt %d/%d); retrying in %.2fs",
            _SERVICE_NAMES.get(exc.service, exc.service),
            exc.method,
            exc.path,
            outcome,
            state.attempt_number,
            self.retry_policy.max_attempts,
            state.upcoming_sleep,
        )


# --------------------------------------------------------------------------------------------------- concurrency


def map_bounded(fn: Callable[[T], R], items: Iterable[T], *, max_workers: int = 8) -> list[R]:
    """``[fn(x) for x in items]`` on at most ``max_workers`` threads, results in input order.

    The first failure (in input order among those that finished) is raised after pending work is
    cancelled; calls already running are allowed to finish (httpx calls are bounded by their timeout).
    """
    seq: Sequence[T] = list(items)
    if max_workers < 1:
        raise ValueError("max_workers must be >= 1")
    if not seq:
        return []
    if max_workers == 1 or len(seq) == 1:
        return [fn(item) for item in seq]
    with ThreadPoolExecutor(max_workers=min(max_workers, len(seq)), thread_name_prefix="metronome-suger") as pool:
        futures = [pool.submit(fn, item) for item in seq]
        done, pending = wait_futures(futures, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()
        for future in futures:
            if future in done and not future.cancelled() and future.exception() is not None:
                error = future.exception()
                assert error is not None
                raise error
        return [future.result() for future in futures]
