"""Handler registration and the context a handler receives.

A handler is ``handler(ctx, payload) -> result``: ``ctx`` is a :class:`JobContext`, ``payload``
the job's JSON payload, and the result (anything JSON-serializable) is stored on the job.
Raising marks the attempt failed and retryable; raising :class:`PermanentError` fails the job
for good. ``async def`` handlers work too (each runs in its own event loop).

A job cancelled on the server while its handler runs: the worker hears of it from its next
heartbeat, then ``ctx.cancelled`` is true, and ``ctx.raise_if_cancelled()``, ``ctx.log()``
and ``ctx.sleep()`` raise :class:`~taskforge_client.errors.JobCancelled`. A long handler
should check now and then and return (or let JobCancelled out); until it does, the job keeps
its slot.

Modules given to ``taskforge-worker`` register their handlers on the module-level
:data:`registry`::

    from taskforge_client import handler

    @handler("emails.send_welcome")
    def send_welcome(ctx, payload):
        ctx.log("sending", user_id=payload["user_id"])
        return {"sent": True}
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from taskforge_client.errors import JobCancelled
from taskforge_client.jobs import parse_time

Handler = Callable[["JobContext", Any], Any]
H = TypeVar("H", bound=Handler)

job_logger = logging.getLogger("taskforge_client.job")

# ctx.log levels and what the server stores them as (it knows info, warn and error).
LOG_LEVELS = {
    "debug": ("info", logging.DEBUG),
    "info": ("info", logging.INFO),
    "warn": ("warn", logging.WARNING),
    "warning": ("warn", logging.WARNING),
    "error": ("error", logging.ERROR),
    "critical": ("error", logging.CRITICAL),
}


class PermanentError(Exception):
    """Raise from a handler to fail the job without retrying it (it goes dead at once)."""


def sendable(text: str) -> str:
    """``text`` as the server takes it: no NUL (refused), and a lone surrogate (from an
    exception's message, say: UTF-8 cannot send it) spelled out instead of failing the request."""
    return text.replace("\x00", "").encode("utf-8", "backslashreplace").decode("utf-8")


E = TypeVar("E", bound=BaseException)
_PERMANENT = "_taskforge_permanent"


def permanent(exc: E) -> E:
    """Mark ``exc`` so that, raised from a handler, it fails the job for good (as
    PermanentError does) while keeping its own class: ``raise permanent(ValueError("no such
    user"))``. Returns ``exc``."""
    setattr(exc, _PERMANENT, True)
    return exc


def is_permanent(exc: BaseException) -> bool:
    """Whether retrying cannot help: a PermanentError, or an exception marked permanent()."""
    return isinstance(exc, PermanentError) or getattr(exc, _PERMANENT, False) is True


class Registry:
    """Handlers by job type, and an optional fallback for job types without their own."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._fallback: Handler | None = None

    def handler(self, job_type: str) -> Callable[[H], H]:
        """Decorator: register the function as the handler of ``job_type``."""

        def register(func: H) -> H:
            self.add(job_type, func)
            return func

        return register

    def add(self, job_type: str, func: Handler) -> None:
        if not job_type:
            raise ValueError("job_type must not be empty")
        self._handlers[job_type] = func

    def fallback(self, func: H) -> H:
        """Decorator: handle every job type that has no handler of its own."""
        self._fallback = func
        return func

    def get(self, job_type: str) -> Handler | None:
        """The handler of ``job_type`` itself (not the fallback)."""
        return self._handlers.get(job_type)

    def get_fallback(self) -> Handler | None:
        return self._fallback

    def job_types(self) -> list[str]:
        return sorted(self._handlers)

    def clear(self) -> None:
        self._handlers.clear()
        self._fallback = None


registry = Registry()
"""The registry ``taskforge-worker`` runs: modules register on it with :func:`handler`."""

handler = registry.handler


@dataclass(frozen=True, slots=True, kw_only=True)
class AssignedJob:
    """A job the server handed to this worker (GET /workers/{id}/jobs)."""

    id: str
    job_type: str
    payload: Any
    attempt: int
    lease_token: str
    lease_expires_at: datetime | None
    timeout_seconds: int | None
    # Where and how it was submitted (absent from servers before they sent them).
    queue: str = ""
    priority: int = 5
    sub_priority: int = 0
    created_at: datetime | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AssignedJob:
        timeout = data.get("timeout_seconds")
        return cls(
            id=str(data["id"]),
            job_type=str(data["job_type"]),
            payload=data.get("payload"),
            attempt=int(data.get("attempt") or 1),
            lease_token=str(data["lease_token"]),
            lease_expires_at=parse_time(data.get("lease_expires_at")),
            timeout_seconds=int(timeout) if timeout else None,
            queue=str(data.get("queue") or ""),
            priority=int(data.get("priority", 5)),
            sub_priority=int(data.get("sub_priority") or 0),
            created_at=parse_time(data.get("created_at")),
        )


class JobContext:
    """What a handler knows about the job it runs, and its log."""

    def __init__(self, job: AssignedJob, *, worker_name: str, worker_id: str | None) -> None:
        self.job = job
        self.worker_name = worker_name
        self.worker_id = worker_id
        self._logs: list[dict[str, Any]] = []
        self._closed = False
        self._lock = threading.Lock()
        self._timed_out = threading.Event()
        self._cancelled = threading.Event()
        # Set by a timeout or a cancel: what ctx.sleep() waits on.
        self._wake = threading.Event()

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def job_type(self) -> str:
        return self.job.job_type

    @property
    def attempt(self) -> int:
        """1 on the first attempt, 2 on the first retry, …"""
        return self.job.attempt

    @property
    def queue(self) -> str:
        return self.job.queue

    @property
    def priority(self) -> int:
        """0-9, higher first; ``sub_priority`` (-100 to 100) orders jobs of one priority."""
        return self.job.priority

    @property
    def sub_priority(self) -> int:
        return self.job.sub_priority

    @property
    def created_at(self) -> datetime | None:
        """When the job was submitted."""
        return self.job.created_at

    @property
    def timeout_seconds(self) -> int | None:
        return self.job.timeout_seconds

    @property
    def timed_out(self) -> bool:
        """True once the job ran past its timeout and was reported failed.

        Threads cannot be killed, so a long handler should check this (or wait on
        :meth:`sleep`) and return early: whatever it returns afterwards is discarded.
        """
        return self._timed_out.is_set()

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled on the server (the worker hears of it from a
        heartbeat, so up to one heartbeat interval later). Its result will not be stored:
        a long handler should check this and return early."""
        return self._cancelled.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`~taskforge_client.errors.JobCancelled` if the job was cancelled."""
        if self._cancelled.is_set():
            raise JobCancelled(f"job {self.job_id} was cancelled")

    def sleep(self, seconds: float) -> bool:
        """Sleep ``seconds``, waking early if the job times out; return True if it did.

        Raises JobCancelled, at once or when it happens, if the job is cancelled."""
        self.raise_if_cancelled()
        self._wake.wait(seconds)
        self.raise_if_cancelled()
        return self._timed_out.is_set()

    def log(self, message: str, level: str = "info", **metadata: Any) -> None:
        """Add a line to the job's log on the server (sent before the job's result).

        ``level`` is debug, info, warn(ing), error or critical (the server keeps info, warn
        and error). ``metadata`` must be JSON-serializable; other values are stored as str().
        Raises JobCancelled if the job was cancelled (the server would refuse the line).
        """
        self.raise_if_cancelled()
        self._add_line(message, level, **metadata)

    def _add_line(self, message: str, level: str = "info", **metadata: Any) -> None:
        """ctx.log() without the cancellation check: the worker's own lines."""
        try:
            server_level, python_level = LOG_LEVELS[level.lower()]
        except KeyError:
            raise ValueError(
                f"unknown log level {level!r}; use one of {sorted(LOG_LEVELS)}"
            ) from None
        entry: dict[str, Any] = {"level": server_level, "message": sendable(str(message))}
        if metadata:
            entry["metadata"] = json.loads(json.dumps(metadata, default=str))
        job_logger.log(python_level, "[%s %s] %s", self.job_type, self.job_id, message)
        with self._lock:
            if not self._closed:
                self._logs.append(entry)

    def close_log(self) -> list[dict[str, Any]]:
        """Take the buffered lines; later ones are dropped (the result is on its way)."""
        with self._lock:
            self._closed = True
            entries, self._logs = self._logs, []
        return entries

    def mark_timed_out(self) -> None:
        self._timed_out.set()
        self._wake.set()

    def mark_cancelled(self) -> None:
        self._cancelled.set()
        self._wake.set()

    def __repr__(self) -> str:
        return f"<JobContext {self.job_type} {self.job_id} attempt {self.attempt}>"
