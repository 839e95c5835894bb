"""API rate limits from the organization's plan: requests per minute, per organization.

A fixed one-minute window counted with the default cache's atomic add + incr, so the count is
shared by every web process: in Redis when REDIS_URL is set, else in PostgreSQL
(taskforge/lib/dbcache.py). A limit of None (enterprise) means no limit.

One counter per organization, not one more per credential under the same limit: a
credential's requests are a subset of its organization's, so its own counter could refuse
nothing the organization's would not, and two counters race. Request A could count 20th for
the organization and 21st for its key while B counted 21st and 20th, and both were refused:
19 of a limit of 20 got through (tests/web/test_shared_rate_limits.py).
"""

from __future__ import annotations

import time
from typing import Any

from django.core.cache import cache, caches
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
    local = caches["local"]  # this process's memory: a shared cache would cost a round trip
    cached = local.get(key)
    if cached is None:
        value = load()
        local.set(key, -1 if value is None else value, LIMITS_CACHE_SECONDS)
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
        return _hit(f"throttle:org:{organization.pk}:{window}") <= limit

    def wait(self) -> float | None:
        return max(1.0, self._window_end - time.time())
