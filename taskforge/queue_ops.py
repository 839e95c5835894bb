"""The operator actions on a queue that reach its jobs and workers: purge, delete, stats.

They live in ``taskforge/`` because they span apps: the queue row is ``queues``', its jobs are
``jobs``', the workers serving it are ``workers``', and only this package may import all
three. Each app keeps the mechanism over its own tables (queues.services.lock_queue,
jobs.services.queue_jobs, workers.services.count_online_workers); the order, the locks, the
refusals and the audit record are here. The API views are in taskforge/queue_api.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.db.models import Count, Min, Q
from django.db.models.functions import Extract, Now

from accounts.audit import SYSTEM, Actor, record_audit
from accounts.models import Project
from jobs.models import ExecutionStatus, Job, JobExecution, JobState
from jobs.services import queue_jobs
from queues import services as queue_services
from queues.models import Queue
from taskforge.lib.errors import Conflict
from workers import services as worker_services

# The stats windows: label -> minutes.
WINDOWS = {"1m": 1, "5m": 5, "60m": 60}
# An expired lease is a failed attempt too (docs/architecture.md#4-job-lifecycle).
FAILED_EXECUTIONS = (ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT)


class QueueNotEmpty(Conflict):
    pass


def purge_queue(queue: Queue, *, actor: Actor = SYSTEM) -> int:
    """Delete the queue's pending and scheduled jobs; return how many.

    Their waiting descendants, in this queue or others, are cancelled or released by each
    edge's policy, and batch callbacks left owed fire (jobs.services.queue_jobs). Processing
    jobs are left alone. One transaction: all of it, with its audit record, or nothing.
    """
    with transaction.atomic(durable=True):
        deleted = queue_jobs.purge_waiting_jobs(queue)
        record_audit(
            queue.organization_id,
            "queue.purged",
            actor=actor,
            project=queue.project,
            target_type="queue",
            target_id=queue.name,
            metadata={"deleted": deleted},
        )
    return deleted


def delete_queue(queue: Queue, *, force: bool = False, actor: Actor = SYSTEM) -> int:
    """Delete the queue with its jobs, schedules and worker assignments; return the jobs
    deleted.

    Refuse (QueueNotEmpty) while the queue has unfinished jobs, unless ``force``; and even
    with ``force`` while an unfinished job has a dependent job in another queue.
    """
    with transaction.atomic(durable=True):
        # Locked first: from here no job can join the queue (queues.services.lock_queue).
        locked = queue_services.lock_queue(queue)
        if not force:
            # A cheap refusal, before any job is locked; the check below is the exact one.
            _refuse_unfinished(locked, queue_jobs.unfinished_counts(locked))
        states = queue_jobs.take_queue_jobs(locked)
        unfinished = {s: n for s, n in states.items() if s in queue_jobs.UNFINISHED_STATES}
        if not force:
            _refuse_unfinished(locked, unfinished)
        # Deleting a parent would leave its waiting children in other queues blocked forever
        # (nothing would ever release or cancel them): refuse even with force.
        dependents = queue_jobs.jobs_with_dependents_elsewhere(locked) if unfinished else 0
        if dependents:
            raise QueueNotEmpty(
                f"{dependents} unfinished job(s) of queue {locked.name!r} have dependent jobs in "
                "other queues; cancel them first (POST /api/v1/jobs/bulk), then delete",
                details={"queue": locked.name, "jobs_with_dependents_elsewhere": dependents},
            )
        jobs = queue_jobs.delete_taken_jobs()
        queue_services.delete_locked_queue(locked)
        record_audit(
            queue.organization_id,
            "queue.deleted",
            actor=actor,
            project=queue.project,
            target_type="queue",
            target_id=queue.name,
            metadata={"queue_id": str(queue.pk), "force": force, "jobs_deleted": jobs},
        )
    return jobs


def _refuse_unfinished(queue: Queue, counts: dict[str, int]) -> None:
    unfinished = sum(counts.values())
    if unfinished:
        raise QueueNotEmpty(
            f"queue {queue.name!r} has {unfinished} unfinished job(s); "
            "cancel or purge them first, or delete with ?force=true",
            details={"queue": queue.name, "unfinished_jobs": counts},
        )


@dataclass(frozen=True, slots=True)
class QueueStats:
    queue: str
    paused: bool
    counts: dict[str, int]
    oldest_pending_age_seconds: float | None
    throughput: dict[str, int]
    failure_rate: dict[str, float | None]
    workers_online: int


def queue_stats(project: Project, queue: Queue) -> QueueStats:
    """Counts, oldest pending age, recent throughput and failure rate, online workers.

    Three aggregate queries whatever the queue's size: its jobs, its recent executions, and
    the workers serving it. Ages and windows use the database's now(), like every other time
    comparison in the engine, so a skewed web clock cannot distort them.
    """
    jobs = Job.objects.for_project(project).filter(queue=queue)
    job_row = jobs.aggregate(
        **{state: Count("pk", filter=Q(state=state)) for state in JobState.values},
        oldest_age=Extract(Now() - Min("run_at", filter=Q(state=JobState.PENDING)), "epoch"),
    )
    oldest = job_row.pop("oldest_age")
    executions = JobExecution.objects.for_project(project).filter(
        job__queue=queue, finished_at__gte=Now() - timedelta(minutes=max(WINDOWS.values()))
    )
    counts = {}
    for label, minutes in WINDOWS.items():
        recent = Q(finished_at__gte=Now() - timedelta(minutes=minutes))
        counts[f"{label}_ok"] = Count("pk", filter=recent & Q(status=ExecutionStatus.SUCCEEDED))
        counts[f"{label}_failed"] = Count("pk", filter=recent & Q(status__in=FAILED_EXECUTIONS))
        counts[f"{label}_all"] = Count("pk", filter=recent)
    execution_row = executions.aggregate(**counts)
    return QueueStats(
        queue=queue.name,
        paused=queue.paused,
        counts=job_row,
        oldest_pending_age_seconds=None if oldest is None else max(0.0, float(oldest)),
        throughput={label: execution_row[f"{label}_ok"] for label in WINDOWS},
        failure_rate={
            label: _ratio(execution_row[f"{label}_failed"], execution_row[f"{label}_all"])
            for label in WINDOWS
        },
        workers_online=worker_services.count_online_workers(project, queue),
    )


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
