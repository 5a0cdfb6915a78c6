"""Shared HTTP machinery for the Metronome and Suger clients.

Why it exists: both APIs need the same things done right once — one ``httpx.Client`` with auth and
timeouts, typed errors that never leak the token, retries that respect ``Retry-After`` and stop at a
time cap, responses parsed with ``Decimal`` — plus a bounded thread pool for fan-out calls. Errors,
the retry policy, the JSON codec and the page loop live in ``errors``, ``retry``, ``jsonio`` and
``paging``; import them from there (this module uses them but does not re-export them).
"""

from __future__ import annotations

import functools
import json
import logging
import random
import ssl
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import (
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    Future,
    ThreadPoolExecutor,
)
from concurrent.futures import wait as wait_futures
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import certifi
import httpx
import pydantic
from pydantic import SecretStr
from tenacity import RetryCallState, Retrying, retry_if_exception

from metronome_suger.clients.errors import (
    SERVICE_NAMES,
    ApiError,
    MalformedResponseError,
    Service,
    TransportError,
    error_class,
)
from metronome_suger.clients.jsonio import (
    decode_json,
    encode_json,
    message_from_body,
    summarize_validation_error,
)
from metronome_suger.clients.paging import PageShape, paginate
from metronome_suger.clients.retry import RetryPolicy, is_retryable, parse_retry_after
from metronome_suger.clients.types import format_date, format_rfc3339

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_USER_AGENT",
    "JsonApiClient",
    "auth_header",
    "check_paging",
    "iter_bounded",
    "map_bounded",
    "path_segment",
]

logger = logging.getLogger("metronome_suger.clients")

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
DEFAULT_USER_AGENT = "metronome-suger/0.1 (httpx)"


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context per process, shared by every client: loading the CA bundle costs ~25 ms per client
    otherwise, and a run builds several."""
    return ssl.create_default_context(cafile=certifi.where())

_BODY_LIMIT = 10_000

T = TypeVar("T")
R = TypeVar("R")
QueryItems = list[tuple[str, "str | int | float | bool | None"]]

# -- helpers ---------------------------------------------------------------------------------------


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


def auth_header(scheme: str, token: str | SecretStr, what: str) -> SecretStr:
    """``<scheme> <token>`` kept secret; an empty token is refused here rather than sent as a 401."""
    raw = _secret_value(token).strip()
    if not raw:
        raise ValueError(f"{what} is empty")
    return SecretStr(f"{scheme} {raw}")


def path_segment(value: str) -> str:
    """One URL path segment, percent-encoded so an id can never change the route."""
    if not value:
        raise ValueError("an id used in a URL path must be non-empty")
    return quote(value, safe="")


def check_paging(page_limit: int, max_page_limit: int, max_workers: int) -> None:
    if not 1 <= page_limit <= max_page_limit:
        raise ValueError(f"page_limit must be between 1 and {max_page_limit}, got {page_limit}")
    if max_workers < 1:
        raise ValueError("max_workers must be >= 1")


def _secret_value(value: str | SecretStr) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def _safe_base_url(base_url: str) -> tuple[str, str]:
    """Return (url for httpx, url for display) — the display form drops credentials, query and
    fragment."""
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("base_url must be an absolute http(s) URL")
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    display = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return base_url.strip().rstrip("/"), display


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


def _clean_params(params: Mapping[str, Any] | None) -> QueryItems:
    """Query params minus Nones; bools as true/false, datetimes as RFC 3339, lists repeated."""
    out: QueryItems = []
    for key, value in (params or {}).items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            out.extend((key, _query_value(v)) for v in value)
        else:
            out.append((key, _query_value(value)))
    return out


# -- client ----------------------------------------------------------------------------------------


class JsonApiClient:
    """One ``httpx.Client`` for one JSON API, with auth, timeouts, typed errors and retries.

    ``sleep`` and ``clock`` are injectable so tests can observe the waits without sleeping;
    ``transport`` lets tests swap the network (only used for the one protocol violation the
    emulators never commit).
    """

    def __init__(
        self,
        base_url: str,
        auth_header_value: str | SecretStr,
        *,
        service: Service,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.BaseTransport | None = None,
        redact: Iterable[str] = (),
    ) -> None:
        if timeout is None or (
            isinstance(timeout, httpx.Timeout) and None in (timeout.connect, timeout.read)
        ):
            raise ValueError(
                "a connect and read timeout is required: a hung call must not hang a run"
            )
        auth_value = _secret_value(auth_header_value)
        if not auth_value.strip():
            raise ValueError(f"{SERVICE_NAMES.get(service, service)} credentials are empty")
        httpx_url, self._display_url = _safe_base_url(base_url)
        self.service: Service = service
        self.retry_policy = retry or RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._rng = random.Random()
        scheme_split = auth_value.split(" ", 1)
        self._redact = _Redactor(
            [auth_value, scheme_split[-1], *(_secret_value(s) for s in redact)]
        )
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
            verify=_tls_context(),
        )

    # -- lifecycle ---------------------------------------------------------------------------------

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

    # -- calls -------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        """Send one call (retrying transient failures) and return the decoded JSON body, or None if
        empty.

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
            retry=retry_if_exception(is_retryable),
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

    def _send_once(self, method: str, path: str, query: QueryItems, content: bytes | None) -> Any:
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            response = self._client.request(
                method, path, params=query, content=content, headers=headers
            )
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise self._transport_error(method, path, exc, transient=True) from exc
        except httpx.HTTPError as exc:
            raise self._transport_error(method, path, exc, transient=False) from exc
        logger.debug(
            "%s %s %s -> %d", SERVICE_NAMES[self.service], method, path, response.status_code
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
        message, _ = message_from_body(response.content, status)
        body = response.content[:_BODY_LIMIT].decode("utf-8", errors="replace")
        cls = error_class(status)
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

    def malformed(
        self, method: str, path: str, what: str, status: int | None = 200
    ) -> MalformedResponseError:
        """The error for a 2xx body of the wrong shape (used by the typed clients' parsers)."""
        return MalformedResponseError(
            service=self.service,
            method=method,
            path=path,
            status=status,
            message=self._redact(what),
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
        """Validate decoded JSON against a model, turning a mismatch into
        :class:`MalformedResponseError`."""
        try:
            return adapter.validate_python(data)
        except pydantic.ValidationError as exc:
            what = summarize_validation_error(exc, prefix=loc_prefix)
            raise self.malformed(
                method, path, f"response does not match the expected shape: {what}"
            ) from None

    def iter_pages(
        self,
        method: str,
        path: str,
        shape: PageShape[Any],
        adapter: pydantic.TypeAdapter[list[T]],
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Iterator[T]:
        """Yield the validated items of a paged list call, page by page (see ``paging``): each page
        is ``params`` plus the page position from ``shape``, with the same ``json`` body."""
        base = dict(params or {})

        def fetch(position: dict[str, Any]) -> Any:
            return self.request(method, path, params={**base, **position}, json=json)

        def fail(what: str) -> MalformedResponseError:
            return self.malformed(method, path, what)

        for items in paginate(shape, fetch, fail):
            yield from self.parse_model(adapter, items, method, path, loc_prefix=shape.items_at)

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
            SERVICE_NAMES.get(exc.service, exc.service),
            exc.method,
            exc.path,
            outcome,
            state.attempt_number,
            self.retry_policy.max_attempts,
            state.upcoming_sleep,
        )


# -- concurrency -----------------------------------------------------------------------------------


def _bounded_pool(max_workers: int) -> ThreadPoolExecutor:
    """The pool both fan-out helpers run on (threads start on demand, never more than asked)."""
    return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="metronome-suger")


def _check_workers(max_workers: int) -> None:
    if max_workers < 1:
        raise ValueError("max_workers must be >= 1")


def map_bounded(fn: Callable[[T], R], items: Iterable[T], *, max_workers: int = 8) -> list[R]:
    """``[fn(x) for x in items]`` on at most ``max_workers`` threads, results in input order.

    The first failure (in input order among those that finished) is raised after pending work is
    cancelled; calls already running are allowed to finish (httpx calls are bounded by their
    timeout). :func:`iter_bounded` is the streaming sibling.
    """
    _check_workers(max_workers)
    seq: Sequence[T] = list(items)
    if max_workers == 1 or len(seq) <= 1:
        return [fn(item) for item in seq]
    with _bounded_pool(min(max_workers, len(seq))) as pool:
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


def iter_bounded(
    fn: Callable[[T], R], items: Iterable[T], *, max_workers: int,
    on_idle: tuple[float, Callable[[], None]] | None = None,
) -> Generator[tuple[T, R | BaseException], None, None]:
    """Run ``fn`` over ``items`` on at most ``max_workers`` threads and yield ``(item, result)`` as
    each call completes (completion order), so the caller can act on each answer as it arrives.

    A call that raises yields ``(item, exception)`` instead: the exception is returned, not raised,
    so one failure loses none of the other answers. ``items`` is read lazily and at most
    ``max_workers`` calls are in flight. Closing the iterator early starts no further calls and
    waits for the ones already running. ``on_idle`` = (seconds, callback): the callback runs (in the
    consumer's thread) each time that long passes with no call completing, so a caller holding
    unsaved answers can save them while a slow call (a long backoff) is still out.
    """
    _check_workers(max_workers)  # now, not at the first next()
    return _as_completed(fn, iter(items), max_workers, on_idle)


def _as_completed(
    fn: Callable[[T], R], todo: Iterator[T], max_workers: int,
    on_idle: tuple[float, Callable[[], None]] | None,
) -> Generator[tuple[T, R | BaseException], None, None]:
    idle, callback = on_idle if on_idle else (None, None)
    running: dict[Future[R], T] = {}
    with _bounded_pool(max_workers) as pool:
        try:
            while True:
                for item in todo:
                    running[pool.submit(fn, item)] = item
                    if len(running) >= max_workers:
                        break
                if not running:
                    return
                done, _ = wait_futures(running, timeout=idle, return_when=FIRST_COMPLETED)
                if not done and callback is not None:
                    callback()
                for future in done:
                    item = running.pop(future)
                    error = future.exception()
                    yield item, (error if error is not None else future.result())
        finally:
            for future in running:
                future.cancel()
