"""Typed errors for Metronome and Suger calls.

Why: callers must tell "retry later" from "fix the request" from "Suger already has it" without
parsing strings, and every error must be safe to log — it names the method and path, never a token
or a full URL.
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = [
    "ApiError",
    "AuthError",
    "BadRequestError",
    "ConflictError",
    "MalformedResponseError",
    "NotFoundError",
    "RateLimitError",
    "SERVICE_NAMES",
    "ServerError",
    "Service",
    "TransportError",
    "error_class",
]

Service = Literal["metronome", "suger"]
SERVICE_NAMES: dict[str, str] = {"metronome": "Metronome", "suger": "Suger"}


class ApiError(Exception):
    """A failed call to Metronome or Suger. Safe to log: it never carries a token or a full URL.

    ``path`` has no query string; ``status`` is None when no HTTP response arrived; ``attempts`` is
    how many times the call was tried before giving up; ``body`` is the (redacted, truncated)
    response text.
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
        """Whether the retry policy may try again: 408, 429 and 5xx only (other 4xx never change on
        retry)."""
        return self.status is not None and (self.status in (408, 429) or self.status >= 500)

    def __str__(self) -> str:
        name = SERVICE_NAMES.get(self.service, self.service)
        outcome = str(self.status) if self.status is not None else "no response"
        text = f"{name} {self.method} {self.path} -> {outcome}: {self.message}"
        if self.attempts > 1:
            text += f" (gave up after {self.attempts} attempts)"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(service={self.service!r}, method={self.method!r}, "
            f"path={self.path!r}, status={self.status!r}, message={self.message!r}, "
            f"attempts={self.attempts!r})"
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
    """400/422: the request itself is wrong; retrying cannot help. ``message`` is the server's
    reason."""


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


def error_class(status: int) -> type[ApiError]:
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
