"""Typed accessors for TaskForge's own settings, read at call time (never at import time).

The values and their environment parsing live in settings.py; these functions are the one
place code reads them, so tests can override settings and see the change.
"""

from __future__ import annotations

from django.conf import settings


def max_payload_bytes() -> int:
    return int(settings.TASKFORGE_MAX_PAYLOAD_BYTES)


def lease_seconds() -> int:
    """How long a claimed job may go without a heartbeat before it counts as a failed attempt."""
    return int(settings.TASKFORGE_LEASE_SECONDS)


def worker_timeout_seconds() -> int:
    """How long a worker may stay silent before the dispatcher marks it offline."""
    return int(settings.TASKFORGE_WORKER_TIMEOUT_SECONDS)


def ack_timeout_seconds() -> int:
    """How long a delivered job keeps its lease before a heartbeat names it: the fetch answer
    may have gone to a process that died with its long-poll open."""
    return int(settings.TASKFORGE_ACK_TIMEOUT_SECONDS)


def web_restart_grace_seconds() -> int:
    """How long after the web tier comes back the dispatcher blames no worker for silence."""
    return int(settings.TASKFORGE_WEB_RESTART_GRACE_SECONDS)


def poll_interval() -> float:
    return float(settings.TASKFORGE_POLL_INTERVAL)


def batch_size() -> int:
    return int(settings.TASKFORGE_BATCH_SIZE)


def max_batch_jobs() -> int:
    return int(settings.TASKFORGE_MAX_BATCH_JOBS)


def maintenance_interval() -> float:
    return float(settings.TASKFORGE_MAINTENANCE_INTERVAL)


def signup_enabled() -> bool:
    return bool(settings.TASKFORGE_SIGNUP_ENABLED)


def dashboard_exact_count_limit() -> int:
    """Dashboard counters count exactly up to this many jobs, then show an estimate."""
    return int(settings.TASKFORGE_DASHBOARD_EXACT_COUNT_LIMIT)
