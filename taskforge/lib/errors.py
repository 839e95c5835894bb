"""The base of every domain error: a machine-readable code and the HTTP status it maps to.

Services raise subclasses (defined in each app's exceptions.py); the API's exception handler
turns any of them into the API's error envelope (docs/api.md) in one place.
"""

from __future__ import annotations

from typing import Any, TypeVar


class TaskForgeError(Exception):
    code = "error"
    http_status = 400

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class ValidationFailed(TaskForgeError):
    code = "validation_error"
    http_status = 400


class NotFound(TaskForgeError):
    code = "not_found"
    http_status = 404


class Conflict(TaskForgeError):
    code = "conflict"
    http_status = 409


class PayloadTooLarge(TaskForgeError):
    code = "payload_too_large"
    http_status = 413


class QuotaExceeded(TaskForgeError):
    code = "quota_exceeded"
    http_status = 402


E = TypeVar("E", bound=TaskForgeError)


def field_error(
    field: str,
    message: str,
    *,
    index: int | None = None,
    items: str = "jobs",
    error: type[E] = ValidationFailed,  # type: ignore[assignment]
    **details: Any,
) -> E:
    """An error about one field, in the shape every input error has: the message starts with
    where the field is (``priority``, or ``jobs[3].priority`` for the fourth item of a list
    called ``items``), and details name the field (and the item's index)."""
    where = field if index is None else f"{items}[{index}].{field}"
    located: dict[str, Any] = {"field": field, **({} if index is None else {"index": index})}
    return error(f"{where}: {message}", details={**located, **details})
