"""The statements of claiming at fetch (workers/sql/), executed only by workers/claiming.py.

Prepared statements, like the engine's in jobs/queries.py: they run on every long-poll.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from jobs.queries import AssignedJob, RateBucket
from taskforge.lib.sqlfiles import SqlFiles

_SQL = SqlFiles("workers")


def lock_worker(project_id: UUID, worker_id: UUID) -> tuple[int, str, list[str] | None] | None:
    """Lock the project's worker until the transaction ends: (capacity, status, job types),
    or None when it does not exist (deregistered)."""
    rows = _SQL.rows("lock_worker", {"project_id": project_id, "worker_id": worker_id})
    if not rows:
        return None
    capacity, status, job_types, _ = rows[0]
    return int(capacity), str(status), job_types


def worker_assignments(worker_id: UUID, *, cap: int) -> list[tuple[Any, ...]]:
    """(queue, weight, queue priority, max_concurrency, rate limited, organization, its plan's
    tier and limits as JSON text (None without a subscription), pending jobs of the queue (at
    most ``cap``, of any type), busy slots) for each of the worker's active assignments."""
    return _SQL.rows("worker_assignments", {"worker_id": worker_id, "cap": cap})


def claim_for_worker(
    worker_id: UUID,
    counts: Mapping[UUID, int],
    *,
    job_types: Sequence[str] | None,
    ack_seconds: int,
    buckets: Mapping[UUID, RateBucket],
) -> list[tuple[UUID, AssignedJob]]:
    """Claim up to ``counts[queue]`` jobs of each queue for the worker, delivered at once:
    (queue, job) pairs, in claim order. ``buckets`` (locked in this transaction) are spent."""
    if not counts:
        return []
    params = {
        "worker_id": worker_id,
        "queue_ids": list(counts),
        "counts": list(counts.values()),
        "job_types": list(job_types) if job_types is not None else None,
        "ack_seconds": ack_seconds,
        "rate_queue_ids": list(buckets),
        "rate_tokens": [b.tokens for b in buckets.values()],
        "rate_as_of": [b.as_of for b in buckets.values()],
    }
    return [
        (
            row[1],
            AssignedJob(
                id=row[0],
                job_type=row[2],
                # Django registers a text loader for jsonb; decode here, once.
                payload=json.loads(row[3]) if isinstance(row[3], str) else row[3],
                attempt=row[4],
                lease_token=row[5],
                lease_expires_at=row[6],
                timeout_seconds=row[7],
                queue=row[8],
                priority=row[9],
                sub_priority=row[10],
                created_at=row[11],
            ),
        )
        for row in _SQL.rows("claim_for_worker", params)
    ]
