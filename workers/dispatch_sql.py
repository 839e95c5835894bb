"""The dispatcher's own statements over the workers tables (workers/sql/), executed only here.

Prepared statements, like the engine's in jobs/queries.py: they run on every tick, and a
submit waits for one tick before its job is assigned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from taskforge.lib.sqlfiles import SqlFiles

_SQL = SqlFiles("workers")


def lock_online_workers() -> dict[UUID, int]:
    """Lock the online workers no other dispatcher holds; return {id: capacity}."""
    return {worker_id: capacity for worker_id, capacity in _SQL.rows("lock_online_workers", {})}


def worker_assignments(worker_ids: Sequence[UUID]) -> list[tuple[Any, ...]]:
    """(worker, queue, weight, queue priority, max_concurrency, rate limited, organization,
    its plan's tier and limits as JSON text (None without a subscription), running) for each
    assignment."""
    return _SQL.rows("worker_assignments", {"worker_ids": list(worker_ids)})
