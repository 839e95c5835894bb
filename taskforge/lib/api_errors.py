"""One place that turns every API error into the envelope of shared/API.md:

    {"error": {"code": "<snake_case>", "message": "<human text>", "details": {...}}}

Domain errors (taskforge.lib.errors.TaskForgeError) carry their code and status; DRF's own
exceptions are mapped here; anything unexpected becomes a 500 with a request id and no trace.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from taskforge.lib.errors import TaskForgeError

logger = logging.getLogger("taskforge.api")

_DRF_CODES: dict[type[exceptions.APIException], tuple[str, str | None]] = {
    exceptions.ParseError: ("validation_error", "Malformed request body: expected valid JSON."),
    exceptions.ValidationError: ("validation_error", "The request is not valid."),
    exceptions.NotAuthenticated: ("not_authenticated", None),
    exceptions.AuthenticationFailed: ("not_authenticated", None),
    exceptions.PermissionDenied: ("permission_denied", None),
    exceptions.NotFound: ("not_found", None),
    exceptions.MethodNotAllowed: ("method_not_allowed", None),
    exceptions.NotAcceptable: ("not_acceptable", None),
    exceptions.UnsupportedMediaType: ("unsupported_media_type", None),
    exceptions.Throttled: ("rate_limited", None),
}


def envelope(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    if isinstance(exc, TaskForgeError):
        return Response(envelope(exc.code, exc.message, exc.details), status=exc.http_status)
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(
            envelope(
                "payload_too_large",
                f"The request body is over {limit} bytes.",
                {"limit_bytes": limit},
            ),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = drf_exception_handler(exc, context)
    if response is None:
        request_id = uuid.uuid4().hex
        logger.exception("unhandled API error (request id %s)", request_id)
        return Response(
            envelope(
                "internal_error", "Something went wrong on our side.", {"request_id": request_id}
            ),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    assert isinstance(exc, exceptions.APIException)
    code, message = _DRF_CODES.get(type(exc), ("error", None))
    details: dict[str, Any] = {}
    if isinstance(exc, exceptions.ValidationError):
        details = {"fields": exc.detail} if isinstance(exc.detail, dict) else {"errors": exc.detail}
        message = message or "The request is not valid."
        first = _first_error(exc.detail)
        if first:
            message = first
    elif isinstance(exc, exceptions.Throttled) and getattr(exc, "wait", None) is not None:
        details = {"retry_after_seconds": int(exc.wait) + 1}  # type: ignore[attr-defined]
    response.data = envelope(code, message or str(exc.detail), details)
    return response


def _first_error(detail: Any, path: str = "") -> str | None:
    """'field: message' for the first error in DRF's nested error structure."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            found = _first_error(value, f"{path}.{key}" if path else str(key))
            if found:
                return found
    elif isinstance(detail, list):
        for index, value in enumerate(detail):
            nested = path if not isinstance(value, dict | list) else f"{path}[{index}]"
            found = _first_error(value, nested)
            if found:
                return found
    elif detail:
        return f"{path}: {detail}" if path and path != "non_field_errors" else str(detail)
    return None


def json_404(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """Django's 404 for URLs no view matched, as the envelope (never HTML under /api/)."""
    if request.path.startswith("/api/"):
        return JsonResponse(envelope("not_found", "No such endpoint."), status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception or Http404())  # type: ignore[return-value]


def json_500(request: HttpRequest) -> JsonResponse:
    if request.path.startswith("/api/"):
        return JsonResponse(
            envelope("internal_error", "Something went wrong on our side."), status=500
        )
    from django.views.defaults import server_error

    return server_error(request)  # type: ignore[return-value]
