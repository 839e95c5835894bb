"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from taskforge.lib.api_errors import (
    UNAVAILABLE_RETRY_AFTER_SECONDS,
    database_unavailable,
    log_outage_once,
    outage_reason,
)


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """The process is alive (liveness); says nothing about its dependencies, and never touches
    them: a database outage must not get live processes restarted."""
    return JsonResponse({"status": "ok"})


@require_GET
def ready(request: HttpRequest) -> JsonResponse:
    """The database and the cache answer; 503 (with Retry-After) names whichever does not.

    A database that cannot be reached reads ``"database": "unavailable: <reason>"``. The
    failure is logged as one line per probe, without a traceback: it is an outage, not a bug.
    """
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = _failed(exc)
    try:
        cache.set("taskforge:ready", "1", timeout=5)
        checks["cache"] = "ok" if cache.get("taskforge:ready") == "1" else "error: no round trip"
    except Exception as exc:
        checks["cache"] = _failed(exc)
    if all(value == "ok" for value in checks.values()):
        return JsonResponse({"status": "ok", **checks})
    response = JsonResponse(
        {"status": "unavailable", **checks},
        status=503,
        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)},
    )
    failed = ", ".join(f"{name} {value}" for name, value in checks.items() if value != "ok")
    log_outage_once(request, response, f"not ready ({failed})")
    return response


def _failed(exc: Exception) -> str:
    if database_unavailable(exc):
        return f"unavailable: {outage_reason(exc)}"
    return f"error: {type(exc).__name__}"
