"""Worker lifecycle services: register, heartbeat, drain, deregister, queue assignments."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models.functions import Now

from accounts.audit import SYSTEM, Actor, record_audit
from accounts.models import Project
from jobs import queries
from jobs import services as job_services
from jobs.limits import JOB_TYPE_MAX_LENGTH
from queues.models import Queue
from taskforge import conf
from taskforge.lib.errors import ValidationFailed
from taskforge.lib.jsonlimits import storable_json
from workers import protocol_sql
from workers.exceptions import WorkerNotFound, WorkerOffline
from workers.models import QueueWorkerAssignment, Worker, WorkerStatus, WorkerType

# last_error of the jobs a worker's old process held when the worker registered again.
RESTARTED = "worker restarted: its new process does not run this job"
# The most job types one worker may declare (its handlers).
MAX_JOB_TYPES = 1000


@dataclass(frozen=True, slots=True)
class QueueWeight:
    """A queue a worker serves, and its share of the worker's slots."""

    name: str
    weight: int = 1
    active: bool = True


def get_worker(project: Project, worker_id: UUID | str) -> Worker:
    """The project's worker; missing and foreign workers both raise WorkerNotFound."""
    try:
        return Worker.objects.for_project(project).get(pk=worker_id)
    except (Worker.DoesNotExist, ValueError, ValidationError):
        raise WorkerNotFound(f"worker {worker_id} not found") from None


def register_worker(
    project: Project,
    *,
    name: str,
    queues: Sequence[QueueWeight],
    capacity: int = 1,
    worker_type: str = WorkerType.GENERAL,
    endpoint_url: str = "",
    metadata: dict[str, Any] | None = None,
    running: Sequence[UUID] = (),
    job_types: Sequence[str] | None = None,
) -> tuple[Worker, bool]:
    """Register a worker, or re-register the one of this name (same id); say if it is new.

    A registration speaks for a new process: it runs the jobs in ``running`` (none, for a
    process that just started) and nothing else. Whatever else the worker holds went with its
    old process (killed, crashed, restarted), so it is failed at once as a lost attempt
    ("worker restarted": retried after the queue's backoff, or dead when out of attempts), in
    the same transaction, and the worker's slots are free for new work immediately instead of
    after a whole lease. A late result from the old process is then refused as stale.

    ``job_types`` are the types the worker has handlers for: its fetches claim only those.
    None: any type. Registering again replaces them.
    """
    if worker_type not in WorkerType.values:
        raise ValidationFailed(
            f"worker_type: must be one of {WorkerType.values}", details={"field": "worker_type"}
        )
    if isinstance(capacity, bool) or not isinstance(capacity, int) or not 1 <= capacity <= 10_000:
        raise ValidationFailed("capacity: must be 1 to 10000", details={"field": "capacity"})
    # Checked like a job's payload: NUL, a lone surrogate or NaN would fail the UPDATE.
    storable_json(metadata or {}, field="metadata")
    types = _checked_job_types(job_types)
    with transaction.atomic(durable=True):
        worker, created = (
            Worker.objects.for_project(project)
            .select_for_update()
            .get_or_create(
                name=name,
                defaults={"organization_id": project.organization_id, "project": project},
            )
        )
        worker.worker_type = worker_type
        worker.capacity = capacity
        worker.endpoint_url = endpoint_url
        worker.metadata = metadata or {}
        worker.job_types = types
        worker.status = WorkerStatus.ONLINE
        worker.last_heartbeat = Now()
        worker.save()
        _replace_assignments(project, worker, queues)
        if not created:
            job_services.fail_worker_jobs_in_transaction(
                project, worker.pk, keep=running, error=RESTARTED
            )
    worker.refresh_from_db(fields=["last_heartbeat"])
    return worker, created


def _checked_job_types(job_types: Sequence[str] | None) -> list[str] | None:
    """The declared job types as stored (None: any type); ValidationFailed names the bad one."""
    if job_types is None:
        return None
    if isinstance(job_types, str) or len(job_types) > MAX_JOB_TYPES:
        raise ValidationFailed(
            f"job_types: must be a list of at most {MAX_JOB_TYPES} job types, or null",
            details={"field": "job_types"},
        )
    for index, job_type in enumerate(job_types):
        if not isinstance(job_type, str) or not 1 <= len(job_type) <= JOB_TYPE_MAX_LENGTH:
            raise ValidationFailed(
                f"job_types[{index}]: must be a string of 1 to {JOB_TYPE_MAX_LENGTH} characters",
                details={"field": "job_types", "index": index},
            )
        if "\x00" in job_type:
            raise ValidationFailed(
                f"job_types[{index}]: must not contain NUL characters",
                details={"field": "job_types", "index": index},
            )
    if len(set(job_types)) != len(job_types):
        raise ValidationFailed(
            "job_types: a job type is named twice", details={"field": "job_types"}
        )
    return list(job_types)


def set_queue_assignments(project: Project, worker: Worker, queues: Sequence[QueueWeight]) -> None:
    """Replace the worker's queue assignments."""
    with transaction.atomic(durable=True):
        _replace_assignments(project, worker, queues)
        # A long-poll of this worker waits on its old queues' notifications: it claims again.
        queries.notify([queries.worker_channel(worker.pk)])


def _replace_assignments(project: Project, worker: Worker, queues: Sequence[QueueWeight]) -> None:
    names = [q.name for q in queues]
    if len(names) != len(set(names)):
        raise ValidationFailed("queues: a queue is named twice", details={"field": "queues"})
    found = {q.name: q for q in Queue.objects.for_project(project).filter(name__in=names)}
    for index, wanted in enumerate(queues):
        if wanted.name not in found:
            raise ValidationFailed(
                f"queues[{index}].name: no queue named {wanted.name!r}",
                details={"field": "queues", "index": index},
            )
        if isinstance(wanted.weight, bool) or not 1 <= wanted.weight <= 1000:
            raise ValidationFailed(
                f"queues[{index}].weight: must be 1 to 1000",
                details={"field": "queues", "index": index},
            )
    QueueWorkerAssignment.objects.for_org(project.organization).filter(worker=worker).delete()
    QueueWorkerAssignment.objects.bulk_create(
        QueueWorkerAssignment(
            organization_id=project.organization_id,
            queue=found[q.name],
            worker=worker,
            weight=q.weight,
            is_active=q.active,
        )
        for q in queues
    )


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A heartbeat's answer: the worker's status, and the jobs it named that were cancelled."""

    status: str
    cancelled: list[UUID]


def heartbeat(project: Project, worker: Worker, *, running: Sequence[UUID]) -> Heartbeat:
    """Record that the worker is alive and what it runs, in one statement (heartbeat.sql).

    The worker comes back online unless it drains; the leases of the named jobs it holds are
    pushed back (naming a delivered job acknowledges its delivery), and so is the hold of the
    named ones an operator cancelled while they ran, which the answer lists so the worker can
    stop them; held cancelled jobs it no longer names are released (their slots count free).
    WorkerNotFound when the worker was deleted meanwhile.
    """
    answer = protocol_sql.heartbeat(
        project.pk, worker.pk, running=running, lease_seconds=conf.lease_seconds()
    )
    if answer is None:
        raise WorkerNotFound(f"worker {worker.pk} not found")
    worker.status = answer.status
    return Heartbeat(answer.status, answer.cancelled)


def drain_worker(project: Project, worker: Worker, *, actor: Actor = SYSTEM) -> Worker:
    """Stop assigning new jobs to the worker; what it holds it may finish.

    Only an online worker drains (and is audited as drained); draining a draining worker
    changes nothing, and an offline one is refused: it holds nothing and gets nothing already.
    """
    with transaction.atomic(durable=True):
        drained = (
            Worker.objects.for_project(project)
            .filter(pk=worker.pk, status=WorkerStatus.ONLINE)
            .update(status=WorkerStatus.DRAINING)
        )
        if drained:
            # Wake its long-poll, which then returns instead of waiting out its time.
            queries.notify([queries.worker_channel(worker.pk)])
            record_audit(
                project.organization_id,
                "worker.drained",
                actor=actor,
                project=project,
                target_type="worker",
                target_id=worker.pk,
                metadata={"name": worker.name},
            )
    worker.refresh_from_db(fields=["status"])
    if worker.status == WorkerStatus.OFFLINE:
        raise WorkerOffline(f"worker {worker.name} is offline: it has nothing to drain")
    return worker


def count_online_workers(project: Project, queue: Queue) -> int:
    """How many of the project's online workers actively serve ``queue`` (draining and
    offline workers, and inactive assignments, left out). One query; assignment_unique
    (queue_id, worker_id) finds the queue's assignments, one per worker."""
    return (
        Worker.objects.for_project(project)
        .online()
        .filter(assignments__queue=queue, assignments__is_active=True)
        .count()
    )


def deregister_worker(project: Project, worker: Worker) -> None:
    """Remove the worker; jobs it still holds are retried at once as failed attempts, and
    those cancelled while they ran there no longer keep a slot (expire_worker_leases.sql)."""
    with transaction.atomic(durable=True):
        queries.expire_worker_leases([worker.pk])
        Worker.objects.for_project(project).filter(pk=worker.pk).delete()
        queries.notify([queries.worker_channel(worker.pk)])
