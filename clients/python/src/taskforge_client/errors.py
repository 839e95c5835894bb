"""Errors raised by the client: one class per error code of the TaskForge API.

Every API error body is ``{"error": {"code", "message", "details"}}``; the client raises the
subclass of :class:`TaskForgeError` for the code (or, failing that, the HTTP status) with those
three fields and the status attached.
"""

from __future__ import annotations

from typing import Any


class TaskForgeError(Exception):
    """Base of every error the client raises for an API call that did not succeed."""

    default_code = "error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details = details or {}
        # The HTTP status, or None when no response arrived (TransportError).
        self.status = status

    def __str__(self) -> str:
        where = f"HTTP {self.status}, " if self.status is not None else ""
        return f"{self.message} ({where}{self.code})"


class ValidationError(TaskForgeError):
    """400: the request is not valid; ``details`` names the field (and index in a batch)."""

    default_code = "validation_error"


class EncodingError(ValidationError):
    """The request body cannot be sent as JSON, so nothing was sent (``status`` is None).

    JSON goes out as UTF-8, which has no code for half of a UTF-16 surrogate pair (a lone
    ``"\\ud800"``); NaN and Infinity are not JSON, nor are sets, bytes or other objects; and a
    value nested too deep exhausts the encoder's stack.
    """

    default_code = "encoding_error"


class AuthenticationError(TaskForgeError):
    """401: the API key is missing, unknown, revoked or expired."""

    default_code = "not_authenticated"


class PermissionDenied(TaskForgeError):
    """403: the key lacks the scope (``workers``, ``jobs:write``, …) or the address is refused."""

    default_code = "permission_denied"


class QuotaExceeded(TaskForgeError):
    """402: the organization's plan limit is used up."""

    default_code = "quota_exceeded"


class NotFound(TaskForgeError):
    """404: no such job, worker or queue in this project."""

    default_code = "not_found"


class Conflict(TaskForgeError):
    """409: for example a result reported with a stale lease token."""

    default_code = "conflict"


class PayloadTooLarge(TaskForgeError):
    """413: the payload or the request body is over the server's limit."""

    default_code = "payload_too_large"


class RateLimited(TaskForgeError):
    """429: too many requests; ``retry_after`` is the server's Retry-After in seconds."""

    default_code = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        status: int | None = 429,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code, details=details, status=status)
        self.retry_after = retry_after


class ServerError(TaskForgeError):
    """5xx: the server (or a proxy in front of it) failed; retried for safe requests."""

    default_code = "internal_error"


class TransportError(TaskForgeError):
    """No response: the connection failed or timed out (after the client's retries)."""

    default_code = "transport_error"


class WaitTimeout(TaskForgeError, TimeoutError):
    """``TaskForge.wait()`` ran out of time before the job reached a terminal state."""

    default_code = "wait_timeout"


class JobCancelled(Exception):
    """The job a handler runs was cancelled on the server while it ran.

    Raised by :meth:`JobContext.raise_if_cancelled`, and by ``ctx.log()`` and ``ctx.sleep()``
    once the worker has heard of the cancel (heartbeats bring it). A handler that ends with it
    is not failed nor retried: the worker reports it, which frees its slot on the server.
    """


class JobFailed(Exception):
    """Stands for a job failure whose exception class is unknown (the Django backend's errors)."""


_BY_CODE: dict[str, type[TaskForgeError]] = {
    "validation_error": ValidationError,
    "not_authenticated": AuthenticationError,
    "permission_denied": PermissionDenied,
    "quota_exceeded": QuotaExceeded,
    "not_found": NotFound,
    "conflict": Conflict,
    "payload_too_large": PayloadTooLarge,
    "rate_limited": RateLimited,
}

_BY_STATUS: dict[int, type[TaskForgeError]] = {
    400: ValidationError,
    401: AuthenticationError,
    402: QuotaExceeded,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    429: RateLimited,
}


def error_class(status: int, code: str | None) -> type[TaskForgeError]:
    """The exception class for an error response: by its code, else by its status."""
    if code in _BY_CODE:
        return _BY_CODE[code]
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, TaskForgeError)
