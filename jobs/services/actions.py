"""An operator's actions on one job: cancel, retry (a queue's purge: queue_jobs.py).

Cancelling a running job cannot stop its handler: the worker learns of it from its next
heartbeat's answer. Until the worker reports the job gone (its result, refused, or heartbeats
that no longer name it), the job keeps its slot: state cancelled, lease_token NULL (its
result is refused), worker_id kept, lease_expires_at a lease ahead, which the worker's
heartbeats push back ("held": index job_worker_held_cancelled). The claim counts the worker
busy with it, so a worker does not get a new job while the cancelled one still runs.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from django.db import transaction
from django.db.models import Case, DateTimeField, Value, When
from django.db.models.functions import Now

from accounts.audit import SYSTEM, Actor, record_audit
from accounts.models import Project
from jobs import queries
from jobs.exceptions import JobNotCancellable, JobNotRetryable
from jobs.models import ExecutionStatus, Job, JobExecution, JobState
from jobs.services import graph, lookup
from taskforge import conf


def cancelled_lease() -> Case:
    """lease_expires_at for a cancel, whatever the job's state: a running job is held for a
    lease from now (the state read is the row's before the UPDATE); any other has none."""
    held = Now() + Value(timedelta(seconds=conf.lease_seconds()))
    return Case(
        When(state=JobState.PROCESSING, then=held), default=None, output_field=DateTimeField()
    )


# --- Operator actions --------------------------------------------------------------------------


def cancel_job(
    project: Project, job_id: UUID, *, actor: Actor = SYSTEM, reason: str = "cancelled by user"
) -> Job:
    """Cancel a job that has not finished; a running attempt's result will be refused (409),
    and the job holds its worker's slot until the worker reports it gone (module docstring)."""
    with transaction.atomic(durable=True):
        job = lookup.locked_job(project, job_id)
        if job.is_terminal:
            raise JobNotCancellable(f"job {job_id} already ended {job.state}")
        if job.state == JobState.PROCESSING:
            JobExecution.objects.for_project(project).filter(
                job=job, lease_token=job.lease_token
            ).update(status=ExecutionStatus.FAILED, error=reason, finished_at=Now())
        Job.objects.for_project(project).filter(pk=job.pk).update(
            state=JobState.CANCELLED,
            last_error=reason,
            finished_at=Now(),
            lease_token=None,
            lease_expires_at=cancelled_lease(),
        )
        graph.settle([(job.pk, f"cancelled: ancestor job {job.pk} was cancelled")], [job.batch_id])
        record_audit(
            project.organization_id,
            "job.cancelled",
            actor=actor,
            project=project,
            target_type="job",
            target_id=job.pk,
        )
    return lookup.get_job(project, job_id)


def retry_job(project: Project, job_id: UUID, *, actor: Actor = SYSTEM) -> Job:
    """Run a dead or cancelled job again from attempt 1 (blocked while parents are unfinished).

    Its blocked run-policy children wait for it again. A batch whose callbacks already fired
    does not fire them again when the retried job finishes.
    """
    with transaction.atomic(durable=True):
        job = lookup.locked_job(project, job_id)
        if job.state not in graph.FAILED_STATES:
            raise JobNotRetryable(
                f"job {job_id} is {job.state}; only dead or cancelled jobs can be retried"
            )
        queries.reblock_run_children([job.pk])
        waiting = graph.waited_for_edges(project, [job.pk]).filter(child=job).count()
        state = JobState.BLOCKED if waiting else JobState.PENDING
        Job.objects.for_project(project).filter(pk=job.pk).update(
            state=state,
            pending_parents=waiting,
            attempts=0,
            run_at=Now(),
            finished_at=None,
            worker_id=None,
            lease_token=None,
            lease_expires_at=None,
            delivered_at=None,
        )
        if state == JobState.PENDING:
            queries.notify_ready([job.queue_id])
        record_audit(
            project.organization_id,
            "job.retried",
            actor=actor,
            project=project,
            target_type="job",
            target_id=job.pk,
        )
    return lookup.get_job(project, job_id)
