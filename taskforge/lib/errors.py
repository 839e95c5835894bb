"""The base of every domain error: a machine-readable code and the HTTP status it maps to.

Services raise subclasses (defined in each app's exceptions.py); the API's exception handler
turns any of them into the error envelope of shared/API.md in one place.
"""

from __future__ import annotations

from typing import Any


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
