"""The worker protocol's own statements (workers/sql/), executed only here.

Prepared statements, like the engine's in jobs/queries.py: every worker sends a heartbeat
every few seconds, so each is one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from taskforge.lib.sqlfiles import SqlFiles

_SQL = SqlFiles("workers")


@dataclass(frozen=True, slots=True)
class HeartbeatAnswer:
    status: str
    # The named jobs an operator cancelled while they ran on this worker.
    cancelled: list[UUID]
    # How many named jobs got their lease (or their hold) pushed back.
    extended: int
    # How many held cancelled jobs, no longer named, were released.
    released: int


def heartbeat(
    project_id: UUID, worker_id: UUID, *, running: Sequence[UUID], lease_seconds: int
) -> HeartbeatAnswer | None:
    """Run heartbeat.sql for the project's worker; None when no such worker exists."""
    params = {
        "project_id": project_id,
        "worker_id": worker_id,
        "ids": sorted(set(running)),
        "lease_seconds": lease_seconds,
    }
    rows = _SQL.rows("heartbeat", params)
    if not rows:
        return None
    status, cancelled, extended, released, _notified = rows[0]
    return HeartbeatAnswer(str(status), list(cancelled), int(extended), int(released))
