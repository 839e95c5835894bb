"""Batches: their progress, and their callbacks (on_complete, on_success), enqueued exactly
once when the last job of a batch finishes, in the transaction that finished it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q
from django.db.models.functions import Now

from accounts.models import Project
from jobs.models import TERMINAL_STATES, Batch, Job, JobState
from jobs.services import submit
from jobs.specs import CALLBACK_FIELDS, JobSpec, callback_payload
from taskforge.lib.errors import NotFound, TaskForgeError

logger = logging.getLogger("taskforge.jobs")

# A batch's callbacks, by name: on_complete fires whatever the outcome, on_success only when
# every job of the batch succeeded.
CALLBACK_NAMES = ("on_complete", "on_success")


@dataclass(frozen=True, slots=True)
class BatchStatus:
    id: UUID
    total: int
    counts: dict[str, int]
    finished: bool
    created_at: datetime
    on_complete: dict[str, Any] | None = None
    on_success: dict[str, Any] | None = None
    callback_enqueued_at: datetime | None = None
    on_complete_job_id: UUID | None = None
    on_success_job_id: UUID | None = None


def batch_status(project: Project, batch_id: UUID | str) -> BatchStatus:
    """Progress of a batch: its jobs counted by state, and its callbacks."""
    try:
        batch = Batch.objects.for_project(project).get(pk=batch_id)
    except (Batch.DoesNotExist, ValueError, ValidationError):
        raise NotFound(f"batch {batch_id} not found") from None
    counts = _batch_counts([batch.pk])[batch.pk]
    unfinished = sum(n for state, n in counts.items() if state not in TERMINAL_STATES)
    return BatchStatus(
        batch.pk,
        batch.total,
        counts,
        unfinished == 0,
        batch.created_at,
        on_complete=batch.on_complete,
        on_success=batch.on_success,
        callback_enqueued_at=batch.callback_enqueued_at,
        on_complete_job_id=batch.on_complete_job_id,
        on_success_job_id=batch.on_success_job_id,
    )


def _batch_counts(batch_ids: Sequence[UUID]) -> dict[UUID, dict[str, int]]:
    """Each batch's jobs counted by state (every state present, 0 when none)."""
    counts = {batch_id: dict.fromkeys(JobState.values, 0) for batch_id in batch_ids}
    rows = (
        Job.objects.all_tenants()
        .filter(batch_id__in=list(batch_ids))
        .order_by()
        .values("batch_id", "state")
        .annotate(n=Count("*"))
        .values_list("batch_id", "state", "n")
    )
    for batch_id, state, n in rows:
        counts[batch_id][state] = n
    return counts


# --- Batch callbacks ---------------------------------------------------------------------------

# Batches whose callbacks are still owed: the condition of the partial index batch_callback_owed.
_OWES_CALLBACKS = Q(callback_enqueued_at__isnull=True) & (
    Q(on_complete__isnull=False) | Q(on_success__isnull=False)
)


def stored_callback(spec: JobSpec) -> dict[str, Any]:
    """A callback spec as kept on the Batch (the job fields a callback may set)."""
    return {
        "queue": spec.queue,
        "job_type": spec.job_type,
        "payload": spec.payload,
        "priority": spec.priority,
        "max_attempts": spec.max_attempts,
        "timeout_seconds": spec.timeout_seconds,
        "tags": list(spec.tags),
    }


def fire_batch_callbacks(batch_ids: Iterable[UUID | None]) -> int:
    """Enqueue the callbacks of the batches among ``batch_ids`` whose every job has finished;
    return how many batches fired. Runs in the transaction that finished the jobs, after the
    job updates.

    Exactly once, however many transactions finish a batch's last jobs at the same time: the
    owed batches are locked first (FOR NO KEY UPDATE, in id order so that two callers never
    deadlock) and only then are their unfinished jobs counted. Under READ COMMITTED that count
    is a new snapshot, taken after any wait for the lock, so it sees the completions of every
    transaction that held the lock before: whichever transaction locks a batch last sees its
    last job finished. The one that fires sets callback_enqueued_at, which the lock's WHERE
    re-checks after a wait, so no later transaction fires the batch again. Batches without
    callbacks, or whose callbacks were enqueued already, are filtered out before any lock.
    """
    ids = sorted({batch_id for batch_id in batch_ids if batch_id is not None})
    if not ids:
        return 0
    locked = list(
        Batch.objects.all_tenants()
        .filter(_OWES_CALLBACKS, pk__in=ids)
        .select_related("project")
        .order_by("pk")
        .select_for_update(no_key=True, of=("self",))
    )
    return _fire_finished(locked)


def _fire_finished(batches: Sequence[Batch]) -> int:
    """Fire the locked ``batches`` that have no unfinished job; return how many fired."""
    if not batches:
        return 0
    unfinished = Job.objects.all_tenants().filter(batch=OuterRef("pk"))
    finished_ids = set(
        Batch.objects.all_tenants()
        .filter(pk__in=[b.pk for b in batches])
        .exclude(Exists(unfinished.exclude(state__in=TERMINAL_STATES)))
        .values_list("pk", flat=True)
    )
    finished = [b for b in batches if b.pk in finished_ids]
    if not finished:
        return 0
    counts = _batch_counts([b.pk for b in finished])
    for batch in finished:
        _fire(batch, counts[batch.pk])
    return len(finished)


def _fire(batch: Batch, counts: dict[str, int]) -> None:
    """Enqueue a finished batch's callbacks and mark them enqueued (the exactly-once guard)."""
    succeeded = counts[JobState.SUCCEEDED] == batch.total
    job_ids: dict[str, UUID | None] = {}
    for name in CALLBACK_NAMES:
        stored = getattr(batch, name)
        if stored is None or (name == "on_success" and not succeeded):
            continue
        fields = {key: stored[key] for key in CALLBACK_FIELDS if key in stored}
        fields["payload"] = callback_payload(
            fields.get("payload") or {}, batch_id=batch.pk, total=batch.total, counts=counts
        )
        job_ids[f"{name}_job_id"] = _enqueue_callback(batch, name, JobSpec(**fields))
    Batch.objects.all_tenants().filter(pk=batch.pk).update(callback_enqueued_at=Now(), **job_ids)


def _enqueue_callback(batch: Batch, name: str, spec: JobSpec) -> UUID | None:
    """Enqueue one callback job; None (logged) when the engine refuses it.

    The spec was checked at submit, but its queue may have been deleted since. Refusing the
    callback must not refuse the worker's result that finished the batch, so the attempt runs
    in a savepoint and a refusal is logged instead of raised.
    """
    try:
        with transaction.atomic():
            return submit.enqueue_in_transaction(batch.project, [spec]).ids[0]
    except TaskForgeError as exc:
        logger.warning("batch %s: %s callback not enqueued: %s", batch.pk, name, exc.message)
        return None


def fire_owed_batch_callbacks(*, limit: int) -> int:
    """Safety sweep: fire up to ``limit`` finished batches whose callbacks are still owed;
    return how many fired.

    Callbacks normally fire in the transaction that finishes a batch; this catches a batch
    finished some other way (a queue deleted with its jobs, say). SKIP LOCKED: a batch being
    fired right now is left to the transaction that holds it, and the count after the lock
    (in _fire_finished) is the authoritative one. Index: batch_callback_owed.
    """
    with transaction.atomic(durable=True):
        unfinished = (
            Job.objects.all_tenants()
            .filter(batch=OuterRef("pk"))
            .exclude(state__in=TERMINAL_STATES)
        )
        batches = list(
            Batch.objects.all_tenants()
            .filter(_OWES_CALLBACKS)
            .exclude(Exists(unfinished))
            .select_related("project")
            .order_by("created_at")
            .select_for_update(no_key=True, skip_locked=True, of=("self",))[:limit]
        )
        return _fire_finished(batches)
