"""Login rate limits: failed sign-in attempts per client IP, and per account from one client IP.

Both sign-ins use them, the API's (POST /api/v1/auth/token) and the Django admin's
(taskforge/admin_site.py), and share the counters, so alternating between them buys no extra
guesses.

Counters live in Django's cache (Redis in production, the database cache otherwise) as fixed
one-minute windows. Every attempt first reserves a slot with an atomic ``add`` + ``incr``, so
concurrent attempts cannot all slip past a read-then-write check; a successful sign-in gives
its slot back. The effect is that only failures count: a user who signs in often is never
limited, while password guessing stops after the limit until the window ends (the cool-down:
at most a minute, which the 429's Retry-After states).

The account's counter is keyed by the (client IP, email) pair, not by the email alone: a
per-email lock would let anyone lock the owner out from everywhere by guessing wrong on
purpose, while a per-pair lock stops only the address doing the guessing.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from rest_framework.exceptions import Throttled

WINDOW_SECONDS = 60


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """The cache counters one sign-in attempt reserved; pass it back to ``release``."""

    keys: tuple[str, ...]


def reserve_login_attempt(*, ip_address: str, email: str) -> LoginAttempt:
    """Count an attempt against its IP and its (IP, email) pair; raise ``Throttled`` over either.

    Call before checking the password, so a locked-out client learns nothing from the answer.
    """
    now = time.time()
    window = int(now // WINDOW_SECONDS)
    ip_limit = int(settings.TASKFORGE_LOGIN_ATTEMPTS_PER_IP)
    account_limit = int(settings.TASKFORGE_LOGIN_ATTEMPTS_PER_ACCOUNT_AND_IP)
    # NUL cannot occur in an IP address, so no two (ip, email) pairs join to the same string.
    pair = f"{ip_address}\x00{email.strip().lower()}"
    limits = (
        (_key("ip", ip_address, window), ip_limit),
        (_key("account-ip", pair, window), account_limit),
    )
    over = False
    for key, limit in limits:
        over = _bump(key) > limit or over
    if over:
        raise Throttled(
            wait=math.ceil(WINDOW_SECONDS - now % WINDOW_SECONDS),  # whole seconds, >= 1
            detail="Too many sign-in attempts: wait a minute before trying again.",
        )
    return LoginAttempt(keys=tuple(key for key, _ in limits))


def release_login_attempt(attempt: LoginAttempt) -> None:
    """Give back the slots of a successful attempt: only failures count against the limits."""
    for key in attempt.keys:
        # ValueError: the window ended meanwhile, so there is nothing left to give back.
        with contextlib.suppress(ValueError):
            cache.decr(key)


def _key(kind: str, value: str, window: int) -> str:
    # Hashed: emails are personal data and IPv6 addresses contain ':' (bad in memcached keys).
    digest = hashlib.sha256(value.encode()).hexdigest()[:32]
    return f"login-attempts:{kind}:{digest}:{window}"


def _bump(key: str) -> int:
    """Atomically increment ``key``, creating it for one window (Redis and locmem alike)."""
    cache.add(key, 0, timeout=WINDOW_SECONDS + 5)
    try:
        return cache.incr(key)
    except ValueError:
        # The key expired between add and incr: this attempt opens a new window.
        cache.add(key, 1, timeout=WINDOW_SECONDS + 5)
        return 1
