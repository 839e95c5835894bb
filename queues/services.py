"""Queue operator actions on the queue row: create, update, pause, resume; lock and delete.

Purge, stats and deletion work on the queue's jobs too, which sit in a higher app: they live
in taskforge/queue_ops.py, which calls lock_queue() and delete_locked_queue() from here. This
module knows nothing of jobs or workers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from django.db import IntegrityError, transaction

from accounts.audit import SYSTEM, Actor, record_audit
from accounts.models import Project
from queues.models import Queue
from taskforge.lib import channels
from taskforge.lib.errors import Conflict, NotFound, ValidationFailed

# ASCII only, no "/", and never "." or ".." (clients normalise those away in a URL path).
NAME_RE = re.compile(r"\A[A-Za-z0-9_.:-]{1,100}\Z")
# The model fields the API may set; everything else (paused, created_at…) has its own action.
EDITABLE_FIELDS = frozenset(
    {
        "name",
        "priority",
        "max_concurrency",
        "max_attempts",
        "backoff_base_seconds",
        "backoff_max_seconds",
        "backoff_multiplier",
        "backoff_jitter",
        "timeout_seconds",
        "rate_limit_per_second",
        "retention_days",
    }
)


class QueueNotFound(NotFound):
    pass


class QueueNameTaken(Conflict):
    pass


def get_queue(project: Project, name: str) -> Queue:
    """The project's queue of this name; a missing and a foreign queue both raise QueueNotFound."""
    queue = Queue.objects.for_project(project).select_related("project").filter(name=name).first()
    if queue is None:
        raise QueueNotFound(f"queue {name!r} not found", details={"queue": name})
    return queue


def create_queue(
    project: Project, *, name: str, actor: Actor = SYSTEM, settings: Mapping[str, Any] | None = None
) -> Queue:
    """Create a queue; fields missing from ``settings`` take the model's defaults."""
    fields = {**(settings or {}), "name": name}
    _check_fields(fields)
    queue = Queue(organization_id=project.organization_id, project=project, **fields)
    _check_policy(queue)
    try:
        with transaction.atomic(durable=True):
            queue.save(force_insert=True)
            record_audit(
                project.organization_id,
                "queue.created",
                actor=actor,
                project=project,
                target_type="queue",
                target_id=queue.name,
                metadata={"queue_id": str(queue.pk), "settings": _snapshot(queue, EDITABLE_FIELDS)},
            )
    except IntegrityError as exc:
        if _is_name_clash(exc):
            raise _name_taken(name) from None
        raise
    return queue


def update_queue(queue: Queue, *, changes: Mapping[str, Any], actor: Actor = SYSTEM) -> Queue:
    """Apply ``changes`` (model field names) to the queue; audit what actually changed."""
    _check_fields(changes)
    try:
        with transaction.atomic(durable=True):
            # Lock the row: two PATCHes must not each validate against the other's old values.
            locked = lock_queue(queue)
            before = _snapshot(locked, changes)
            for field, value in changes.items():
                setattr(locked, field, value)
            _check_policy(locked)
            changed = {
                f: [before[f], v] for f, v in _snapshot(locked, changes).items() if before[f] != v
            }
            if changed:
                locked.save(update_fields=list(changed))
                record_audit(
                    locked.organization_id,
                    "queue.updated",
                    actor=actor,
                    project=locked.project,
                    target_type="queue",
                    target_id=locked.name,
                    metadata={"queue_id": str(locked.pk), "changes": changed},
                )
                if changed.keys() & {"max_concurrency", "rate_limit_per_second", "priority"}:
                    # Limits lifted or priorities changed: waiting long-polls claim again now.
                    channels.wake_every_long_poll()
    except IntegrityError as exc:
        if _is_name_clash(exc):
            raise _name_taken(str(changes.get("name"))) from None
        raise
    return locked


def lock_queue(queue: Queue) -> Queue:
    """The queue's row read again and locked FOR UPDATE until the caller's transaction ends;
    QueueNotFound if it was deleted since the caller read it.

    FOR UPDATE conflicts with the FOR KEY SHARE lock that inserting a row pointing at the
    queue (a job, say) takes on it: while it is held nothing joins the queue, and an insert
    racing the lock either commits first or waits and then fails its foreign-key check.
    """
    try:
        return (
            Queue.objects.for_project(queue.project)
            .select_related("project")
            .select_for_update(of=("self",))
            .get(pk=queue.pk)
        )
    except Queue.DoesNotExist:  # deleted since the caller read it
        raise QueueNotFound(
            f"queue {queue.name!r} not found", details={"queue": queue.name}
        ) from None


def delete_locked_queue(locked: Queue) -> None:
    """Delete the queue's row, locked by lock_queue() in the caller's transaction, once the
    caller has deleted what must not go silently (its jobs: taskforge/queue_ops.py).

    What else points at the row goes with it by its foreign key's CASCADE, through Django's
    collector: its schedules (their run history in one statement) and worker assignments.
    The collector, and the foreign-key check at commit, also look for jobs still in the queue
    (there are none left by then); with no index on jobs_job.queue_id alone (its indexes are
    partial, by state), each of those looks is a scan of the jobs table.
    """
    locked.delete()


def pause_queue(queue: Queue, *, actor: Actor = SYSTEM) -> Queue:
    """Stop handing the queue's jobs to workers; running jobs finish, submissions are still
    accepted."""
    return _set_paused(queue, paused=True, actor=actor)


def resume_queue(queue: Queue, *, actor: Actor = SYSTEM) -> Queue:
    """Hand the queue's jobs to workers again: the waiting long-polls are woken to claim."""
    return _set_paused(queue, paused=False, actor=actor)


def _set_paused(queue: Queue, *, paused: bool, actor: Actor) -> Queue:
    with transaction.atomic(durable=True):
        queue.paused = paused
        queue.save(update_fields=["paused"])
        if not paused:
            channels.wake_every_long_poll()
        record_audit(
            queue.organization_id,
            "queue.paused" if paused else "queue.resumed",
            actor=actor,
            project=queue.project,
            target_type="queue",
            target_id=queue.name,
        )
    return queue


# --- helpers ---------------------------------------------------------------------------------


def _check_fields(fields: Mapping[str, Any]) -> None:
    unknown = set(fields) - EDITABLE_FIELDS
    if unknown:  # a caller's bug, not bad input: the API's serializers never pass these
        raise TypeError(f"not editable queue fields: {sorted(unknown)}")
    name = fields.get("name")
    if name is not None and (not NAME_RE.fullmatch(name) or set(name) == {"."}):
        raise ValidationFailed(
            "name: 1-100 characters of A-Z a-z 0-9 _ . : - (and not only dots)",
            details={"field": "name"},
        )


def _check_policy(queue: Queue) -> None:
    """Rules across fields, checked on the merged values (a PATCH may send only one side)."""
    if queue.backoff_max_seconds < queue.backoff_base_seconds:
        raise ValidationFailed(
            "backoff.max_seconds: must be at least backoff.base_seconds "
            f"({queue.backoff_base_seconds})",
            details={"field": "backoff.max_seconds"},
        )


def _snapshot(queue: Queue, fields: Iterable[str]) -> dict[str, Any]:
    return {field: getattr(queue, field) for field in sorted(fields)}


def _is_name_clash(exc: IntegrityError) -> bool:
    """Did the unique (project, name) constraint refuse the row? Other errors are bugs."""
    diag = getattr(exc.__cause__, "diag", None)
    return getattr(diag, "constraint_name", None) == "queue_name_unique"


def _name_taken(name: str) -> QueueNameTaken:
    return QueueNameTaken(
        f"a queue named {name!r} already exists in this project", details={"field": "name"}
    )
