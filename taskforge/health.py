"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """The process is alive; says nothing about its dependencies."""
    return JsonResponse({"status": "ok"})


@require_GET
def ready(request: HttpRequest) -> JsonResponse:
    """The database and the cache answer; 503 names whichever does not."""
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        cache.set("taskforge:ready", "1", timeout=5)
        checks["cache"] = "ok" if cache.get("taskforge:ready") == "1" else "error: no round trip"
    except Exception as exc:
        checks["cache"] = f"error: {type(exc).__name__}"
    ok = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ok" if ok else "unavailable", **checks}, status=200 if ok else 503
    )
