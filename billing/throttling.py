"""API rate limits from the organization's plan: per organization and per credential.

A fixed one-minute window counted with the cache's atomic add + incr, so the count is shared
by every web process when REDIS_URL is set (with the local-memory cache it is per process,
as the start-up log says). A limit of None (enterprise) means no limit.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.cache import cache
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from billing.plans import plan_limits

WINDOW_SECONDS = 60
# Plan limits change rarely; reading them once a minute per process is enough.
LIMITS_CACHE_SECONDS = 60


def requests_per_minute(organization_id: Any) -> int | None:
    def load() -> int | None:
        return plan_limits(organization_id).get("requests_per_minute")

    key = f"plan-rpm:{organization_id}"
    cached = cache.get(key)
    if cached is None:
        value = load()
        cache.set(key, -1 if value is None else value, LIMITS_CACHE_SECONDS)
        return value
    return None if cached == -1 else int(cached)


def _hit(key: str) -> int:
    """Count one request in the current window for ``key``; return the new count."""
    if cache.add(key, 1, WINDOW_SECONDS + 5):
        return 1
    try:
        return int(cache.incr(key))
    except ValueError:  # expired between add and incr
        cache.add(key, 1, WINDOW_SECONDS + 5)
        return 1


class PlanRateThrottle(BaseThrottle):
    """Refuse with 429 (and Retry-After) once the plan's requests per minute are used up."""

    def allow_request(self, request: Request, view: Any) -> bool:
        organization = getattr(request, "organization", None)
        if organization is None:
            return True  # not a tenant endpoint (auth has its own limits)
        limit = requests_per_minute(organization.pk)
        if limit is None:
            return True
        window = int(time.time()) // WINDOW_SECONDS
        self._window_end = (window + 1) * WINDOW_SECONDS
        credential = getattr(request, "api_key", None)
        who = f"key:{credential.pk}" if credential is not None else f"user:{request.user.pk}"
        org_count = _hit(f"throttle:org:{organization.pk}:{window}")
        who_count = _hit(f"throttle:{who}:{window}")
        return org_count <= limit and who_count <= limit

    def wait(self) -> float | None:
        return max(1.0, self._window_end - time.time())
