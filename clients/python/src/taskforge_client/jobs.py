"""The job as the client returns it: a small frozen dataclass over the API's JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

TERMINAL_STATES = frozenset({"succeeded", "dead", "cancelled"})


def parse_time(value: Any) -> datetime | None:
    """An ISO-8601 timestamp from the API (``…Z`` or an offset) as an aware datetime."""
    if not value:
        return None
    return _parse_time(str(value))


# The jobs of one answer share their timestamps (a batch is created at one now()), and
# datetimes are immutable: parse each distinct text once.
@lru_cache(maxsize=1024)
def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """A TaskForge job. ``raw`` is the API's whole representation, for fields not named here."""

    id: str
    queue: str
    job_type: str
    # blocked, scheduled, pending, processing, succeeded, dead or cancelled.
    state: str
    payload: Any = None
    priority: int = 5
    sub_priority: int = 0
    attempts: int = 0
    max_attempts: int | None = None
    result: Any = None
    last_error: str = ""
    idempotency_key: str | None = None
    tags: tuple[str, ...] = ()
    batch_id: str | None = None
    run_at: datetime | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # The attempts (``{id, attempt, status, worker, error, traceback, started_at,
    # finished_at}``), when asked for: ``TaskForge.get_job(id, executions=True)``.
    executions: tuple[dict[str, Any], ...] | None = field(default=None, compare=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        return cls(
            id=str(data["id"]),
            queue=str(data.get("queue", "")),
            job_type=str(data.get("job_type", "")),
            state=str(data["state"]),
            payload=data.get("payload"),
            priority=int(data.get("priority", 5)),
            sub_priority=int(data.get("sub_priority") or 0),
            attempts=int(data.get("attempts", 0)),
            max_attempts=data.get("max_attempts"),
            result=data.get("result"),
            last_error=data.get("last_error") or "",
            idempotency_key=data.get("idempotency_key"),
            tags=tuple(data.get("tags") or ()),
            batch_id=str(data["batch_id"]) if data.get("batch_id") else None,
            run_at=parse_time(data.get("run_at")),
            created_at=parse_time(data.get("created_at")),
            started_at=parse_time(data.get("started_at")),
            finished_at=parse_time(data.get("finished_at")),
            executions=tuple(data["executions"]) if "executions" in data else None,
            raw=data,
        )

    @property
    def is_terminal(self) -> bool:
        """The job will not run again by itself: succeeded, dead or cancelled."""
        return self.state in TERMINAL_STATES
