"""One place that turns every API error into the error envelope (docs/api.md#errors):

    {"error": {"code": "<snake_case>", "message": "<human text>", "details": {...}}}

Domain errors (taskforge.lib.errors.TaskForgeError) carry their code and status; DRF's own
exceptions are mapped here; anything unexpected becomes a 500 with a request id and no trace.
An unreachable database is not a bug but an outage: 503 ``unavailable`` with Retry-After, and
one log line per request instead of a traceback (``unavailable_response``).
"""

from __future__ import annotations

import logging
import math
import sys
import uuid
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponsePermanentRedirect,
    JsonResponse,
)
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt
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


# What a 503 `unavailable` asks clients to wait before they retry (docs/api.md#errors).
UNAVAILABLE_RETRY_AFTER_SECONDS = 5
# SQLSTATEs that say the server serves no one right now, rather than that this statement
# failed: class 08 (connection exceptions), 57P01-57P03 (shutting down, crashed, starting up)
# and 53300 (too many connections). A query cancelled or a deadlock is not an outage.
_OUTAGE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})


def envelope(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means PostgreSQL cannot be reached (or will not serve), not a bad query.

    libpq's own failures (connection refused, server closed the connection, timeouts) carry no
    SQLSTATE; Django raises InterfaceError for a connection that already broke.
    """
    if isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    sqlstate = getattr(exc.__cause__, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in _OUTAGE_SQLSTATES


def outage_reason(exc: BaseException) -> str:
    """``Type: first line of the message``: libpq's messages run over several lines."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def log_outage_once(request: HttpRequest, response: HttpResponse, what: str) -> None:
    """Log the outage as one line, and keep Django from logging the response again.

    Django's log_response (django.request) would add "Service Unavailable: <path>", and for
    an exception that reached handler500 its whole traceback, unless the response says it has
    been logged: ``_has_been_logged`` is the flag Django itself sets for that.
    """
    logger.error("%s %s answered %d: %s", request.method, request.path, response.status_code, what)
    response._has_been_logged = True  # type: ignore[attr-defined]


def unavailable_response(request: HttpRequest, exc: BaseException) -> JsonResponse:
    """503 ``unavailable`` with Retry-After for a request the database outage failed, logged
    once. A plain JsonResponse serves DRF's exception handler and handler500 alike: the
    admin's pages cannot render without the database either."""
    seconds = UNAVAILABLE_RETRY_AFTER_SECONDS
    response = JsonResponse(
        envelope(
            "unavailable",
            "The service is temporarily unavailable: its database does not answer. "
            f"Retry in {seconds} seconds.",
            {"retry_after_seconds": seconds},
        ),
        status=503,
        headers={"Retry-After": str(seconds)},
    )
    log_outage_once(request, response, f"database unavailable ({outage_reason(exc)})")
    return response


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | HttpResponse:
    if database_unavailable(exc):
        return unavailable_response(context["request"], exc)
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
    # By the nearest mapped class: libraries subclass DRF's exceptions (simplejwt's InvalidToken
    # is an AuthenticationFailed).
    code, message = next(
        (_DRF_CODES[cls] for cls in type(exc).__mro__ if cls in _DRF_CODES), ("error", None)
    )
    details: dict[str, Any] = {}
    if isinstance(exc.detail, dict) and not isinstance(exc, exceptions.ValidationError):
        message, details = _detail_dict(exc.detail)
    elif isinstance(exc, exceptions.ValidationError):
        details = {"fields": exc.detail} if isinstance(exc.detail, dict) else {"errors": exc.detail}
        message = message or "The request is not valid."
        first = _first_error(exc.detail)
        if first:
            message = first
    elif isinstance(exc, exceptions.Throttled) and getattr(exc, "wait", None) is not None:
        # Whole seconds, rounded up, in the header and the body alike.
        wait = math.ceil(exc.wait)  # type: ignore[attr-defined]
        response["Retry-After"] = str(wait)
        details = {"retry_after_seconds": wait}
    response.data = envelope(code, message or str(exc.detail), details)
    return response


def _detail_dict(detail: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Message and details of simplejwt's detail dicts, which str() would show as a repr:

    {"detail": "Given token not valid for any token type", "code": "token_not_valid",
     "messages": [{"token_class": "AccessToken", "token_type": "access",
                   "message": "Token is expired"}]}
    """
    message = str(detail.get("detail") or "Authentication failed.")
    if detail.get("code") == "token_not_valid":
        reasons = [str(m["message"]) for m in detail.get("messages", []) if isinstance(m, dict)]
        reason = (reasons or [message])[0]
        message = f"The bearer token is not a valid API key or access token: {reason}."
    details = {"reason": str(detail["code"])} if detail.get("code") else {}
    return message, details


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


# API clients send no CSRF token: without this a mistyped POST would get Django's HTML 403.
@csrf_exempt
def api_not_found(request: HttpRequest) -> HttpResponse:
    """Every /api/ path no route matched: the envelope, even with DEBUG on.

    Django answers unmatched URLs with its HTML debug page while DEBUG is on and only calls
    handler404 (json_404) with it off, so the last /api/ route leads here instead. Routing
    here also bypasses APPEND_SLASH, so its redirect (for /api/docs) is done here too.
    """
    path = request.path_info
    other = path.rstrip("/") if path.endswith("/") else path + "/"
    if _routed(other) and not path.endswith("/") and request.method in ("GET", "HEAD"):
        return HttpResponsePermanentRedirect(request.get_full_path(force_append_slash=True))
    message = f"No such endpoint: {request.method} {request.path}."
    if _routed(other):
        message += f" Did you mean {other}?"
        if path.endswith("/"):
            message += " The API's paths end without a slash."
    message += " The API reference is at /api/docs/."
    return JsonResponse(envelope("not_found", message), status=404)


def _routed(path: str) -> bool:
    try:
        return resolve(path).func is not api_not_found
    except Resolver404:
        return False


def json_404(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """Django's 404 for URLs no view matched, as the envelope (never HTML under /api/)."""
    if request.path.startswith("/api/"):
        return JsonResponse(envelope("not_found", "No such endpoint."), status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception or Http404())  # type: ignore[return-value]


def json_500(request: HttpRequest) -> HttpResponse:
    """handler500: the envelope under /api/, Django's page elsewhere; 503 for a database outage.

    Django calls it inside the ``except`` that caught the view's (or a middleware's) exception,
    so sys.exc_info() is that exception.
    """
    exc = sys.exc_info()[1]
    if exc is not None and database_unavailable(exc):
        return unavailable_response(request, exc)
    if request.path.startswith("/api/"):
        return JsonResponse(
            envelope("internal_error", "Something went wrong on our side."), status=500
        )
    from django.views.defaults import server_error

    return server_error(request)
