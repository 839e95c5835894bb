"""Operator actions: cancel, retry, purge, pause and resume, and their audit trail."""

from datetime import timedelta

import pytest

from accounts.models import AuditLog
from jobs import services
from jobs.exceptions import JobNotCancellable, JobNotRetryable, StaleLease
from jobs.models import ExecutionStatus, Job, JobExecution, JobState
from jobs.specs import JobSpec
from queues import services as queue_services
from taskforge import queue_ops
from workers import services as worker_services
from workers.dispatcher import Dispatcher


def register(project, queues=("default",)):
    worker, _ = worker_services.register_worker(
        project,
        name="w1",
        queues=[worker_services.QueueWeight(q) for q in queues],
        capacity=10,
    )
    return worker


def submit(project, queue="default", **fields):
    job, _ = services.submit_job(project, JobSpec(queue=queue, job_type="t", **fields))
    return job


def claim(project, worker):
    Dispatcher(batch_size=100).assign()
    return {a.id: a.lease_token for a in worker_services.fetch_jobs(project, worker, limit=100)}


def kill(project, worker, job):
    """Run the job to dead (a non-retryable failure)."""
    token = claim(project, worker)[job.pk]
    return services.fail_job(project, job.pk, lease_token=token, error="x", retryable=False)


def audit_actions(org):
    return list(AuditLog.objects.for_org(org).order_by("id").values_list("action", "target_id"))


@pytest.mark.django_db(transaction=True)
def test_it_cancels_a_pending_job(project, queue):
    job = submit(project)
    cancelled = services.cancel_job(project, job.pk, reason="not needed")
    assert cancelled.state == JobState.CANCELLED
    assert cancelled.last_error == "not needed"
    assert cancelled.finished_at is not None


@pytest.mark.django_db(transaction=True)
def test_it_cancels_the_blocked_descendants_of_a_cancelled_job(project, queue):
    parent = submit(project)
    child = submit(project, depends_on=[parent.pk])
    grandchild = submit(project, depends_on=[child.pk])
    services.cancel_job(project, parent.pk)
    reasons = dict(
        Job.objects.all_tenants()
        .filter(pk__in=[child.pk, grandchild.pk], state=JobState.CANCELLED)
        .values_list("pk", "last_error")
    )
    reason = f"cancelled: ancestor job {parent.pk} was cancelled"
    assert reasons == {child.pk: reason, grandchild.pk: reason}


@pytest.mark.django_db(transaction=True)
def test_it_refuses_the_result_of_a_job_cancelled_while_processing(project, queue):
    worker = register(project)
    job = submit(project)
    token = claim(project, worker)[job.pk]
    services.cancel_job(project, job.pk)

    with pytest.raises(StaleLease):
        services.complete_job(project, job.pk, lease_token=token, result={"late": True})

    job.refresh_from_db()
    assert job.state == JobState.CANCELLED
    assert job.result is None
    assert JobExecution.objects.all_tenants().get(job=job).status == ExecutionStatus.FAILED


@pytest.mark.parametrize("ending", ["succeeded", "dead", "cancelled"])
@pytest.mark.django_db(transaction=True)
def test_it_refuses_to_cancel_a_finished_job(project, queue, ending):
    worker = register(project)
    job = submit(project)
    if ending == "succeeded":
        services.complete_job(project, job.pk, lease_token=claim(project, worker)[job.pk])
    elif ending == "dead":
        kill(project, worker, job)
    else:
        services.cancel_job(project, job.pk)

    with pytest.raises(JobNotCancellable):
        services.cancel_job(project, job.pk)
    job.refresh_from_db()
    assert job.state == ending


@pytest.mark.django_db(transaction=True)
def test_it_retries_a_dead_job_from_attempt_zero(project, queue):
    worker = register(project)
    job = submit(project)
    assert kill(project, worker, job).attempts == 1

    retried = services.retry_job(project, job.pk)

    assert retried.state == JobState.PENDING
    assert retried.attempts == 0
    assert retried.finished_at is None
    assert retried.lease_token is None
    assert set(claim(project, worker)) == {job.pk}


@pytest.mark.django_db(transaction=True)
def test_it_refuses_to_retry_a_succeeded_job(project, queue):
    worker = register(project)
    job = submit(project)
    services.complete_job(project, job.pk, lease_token=claim(project, worker)[job.pk])

    with pytest.raises(JobNotRetryable):
        services.retry_job(project, job.pk)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED


@pytest.mark.django_db(transaction=True)
def test_it_purges_only_the_pending_and_scheduled_jobs_of_the_queue(project, queue, make_queue):
    worker = register(project)
    running = submit(project)
    claim(project, worker)
    done = submit(project)
    services.complete_job(project, done.pk, lease_token=claim(project, worker)[done.pk])
    doomed = [submit(project), submit(project), submit(project, delay_seconds=3600)]
    make_queue("elsewhere")
    elsewhere = submit(project, queue="elsewhere")

    assert queue_ops.purge_queue(queue) == 3

    left = dict(Job.objects.all_tenants().values_list("pk", "state"))
    assert left == {
        running.pk: JobState.PROCESSING,
        done.pk: JobState.SUCCEEDED,
        elsewhere.pk: JobState.PENDING,
    }
    assert not set(left) & {job.pk for job in doomed}


@pytest.mark.django_db(transaction=True)
def test_it_cancels_the_blocked_children_of_purged_jobs(project, queue):
    parent = submit(project)
    child = submit(project, depends_on=[parent.pk])
    assert queue_ops.purge_queue(queue) == 1
    child.refresh_from_db()
    assert child.state == JobState.CANCELLED
    assert child.last_error == f"cancelled: parent job {parent.pk} was purged"


@pytest.mark.django_db(transaction=True)
def test_it_assigns_nothing_from_a_paused_queue(project, queue):
    register(project)
    submit(project)
    queue_services.pause_queue(queue)
    assert Dispatcher(batch_size=100).assign() == 0
    assert Job.objects.all_tenants().get().state == JobState.PENDING


@pytest.mark.django_db(transaction=True)
def test_it_assigns_again_from_a_resumed_queue(project, queue):
    worker = register(project)
    job = submit(project)
    queue_services.pause_queue(queue)
    Dispatcher(batch_size=100).assign()
    queue_services.resume_queue(queue)
    assert set(claim(project, worker)) == {job.pk}


@pytest.mark.django_db(transaction=True)
def test_it_keeps_assigning_other_queues_while_one_is_paused(project, queue, make_queue):
    make_queue("other")
    worker = register(project, queues=("default", "other"))
    submit(project)
    other = submit(project, queue="other")
    queue_services.pause_queue(queue)
    assert set(claim(project, worker)) == {other.pk}


@pytest.mark.django_db(transaction=True)
def test_it_audits_cancel_and_retry(org, project, queue):
    job = submit(project)
    services.cancel_job(project, job.pk)
    services.retry_job(project, job.pk)
    assert audit_actions(org) == [("job.cancelled", str(job.pk)), ("job.retried", str(job.pk))]


@pytest.mark.django_db(transaction=True)
def test_it_audits_purge_pause_and_resume_with_the_purged_count(org, project, queue):
    submit(project)
    submit(project, delay_seconds=timedelta(hours=1).total_seconds())
    queue_ops.purge_queue(queue)
    queue_services.pause_queue(queue)
    queue_services.resume_queue(queue)
    assert audit_actions(org) == [
        ("queue.purged", "default"),
        ("queue.paused", "default"),
        ("queue.resumed", "default"),
    ]
    purge = AuditLog.objects.for_org(org).get(action="queue.purged")
    assert purge.metadata == {"deleted": 2}
    assert purge.project_id == project.pk
