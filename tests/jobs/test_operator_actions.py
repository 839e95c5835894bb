"""Operator actions: cancel, retry, purge, pause and resume, and their audit trail."""

from datetime import timedelta

import pytest
from django.db.models import F
from django.db.models.functions import Now

from accounts.models import AuditLog
from jobs import services
from jobs.exceptions import JobNotCancellable, JobNotRetryable, StaleLease
from jobs.models import ExecutionStatus, Job, JobExecution, JobState
from jobs.specs import JobSpec
from queues import services as queue_services
from taskforge import conf, queue_ops
from workers import claiming
from workers import services as worker_services
from workers.dispatcher import Dispatcher
from workers.models import Worker


def register(project, queues=("default",), name="w1", running=()):
    worker, _ = worker_services.register_worker(
        project,
        name=name,
        queues=[worker_services.QueueWeight(q) for q in queues],
        capacity=10,
        running=running,
    )
    return worker


def submit(project, queue="default", **fields):
    job, _ = services.submit_job(project, JobSpec(queue=queue, job_type="t", **fields))
    return job


def claim(project, worker):
    """Fetch as the worker does (the fetch claims): {job id: lease token}."""
    return {a.id: a.lease_token for a in claiming.claim(project, worker.pk, limit=100).jobs}


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


# --- a running job cancelled: its slot stays held until the worker reports it gone ------------


def held_for(job):
    """Seconds the job's hold on its worker's slot has left (None: not held)."""
    left = (
        Job.objects.all_tenants()
        .filter(pk=job.pk)
        .values_list(F("lease_expires_at") - Now(), flat=True)[0]
    )
    return None if left is None else left.total_seconds()


def assert_held(job, worker):
    job.refresh_from_db()
    assert (job.state, job.lease_token, job.worker_id) == (JobState.CANCELLED, None, worker.pk)
    assert conf.lease_seconds() - 5 < held_for(job) <= conf.lease_seconds()


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_running_job_keeps_its_worker_and_holds_the_slot_for_a_lease(project, queue):
    worker = register(project)
    job = submit(project)
    claim(project, worker)

    services.cancel_job(project, job.pk)

    assert_held(job, worker)
    assert JobExecution.objects.all_tenants().get(job=job).status == ExecutionStatus.FAILED


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_job_that_is_not_running_holds_nothing(project, queue):
    job = submit(project)
    services.cancel_job(project, job.pk)
    job.refresh_from_db()
    assert (job.state, job.worker_id, job.lease_expires_at) == (JobState.CANCELLED, None, None)


@pytest.mark.django_db(transaction=True)
def test_a_bulk_cancel_holds_the_running_jobs_only(project, queue):
    worker = register(project)
    running = [submit(project), submit(project)]
    claim(project, worker)
    waiting = submit(project)

    assert services.bulk_action(project, "cancel", ids=[*(j.pk for j in running), waiting.pk]) == 3

    for job in running:
        assert_held(job, worker)
    waiting.refresh_from_db()
    assert (waiting.state, waiting.lease_expires_at) == (JobState.CANCELLED, None)


@pytest.mark.django_db(transaction=True)
def test_the_result_of_a_held_job_is_refused_and_frees_the_slot(project, queue):
    worker = register(project)
    completed, failed = submit(project), submit(project)
    tokens = claim(project, worker)
    services.cancel_job(project, completed.pk)
    services.cancel_job(project, failed.pk)

    with pytest.raises(StaleLease):
        services.complete_job(project, completed.pk, lease_token=tokens[completed.pk], result=1)
    with pytest.raises(StaleLease):
        services.fail_job(project, failed.pk, lease_token=tokens[failed.pk], error="x")

    for job in (completed, failed):
        job.refresh_from_db()
        assert (job.state, job.result, job.lease_expires_at) == (JobState.CANCELLED, None, None)
        assert job.worker_id == worker.pk


@pytest.mark.django_db(transaction=True)
def test_a_batch_of_results_frees_the_slot_only_when_the_holding_worker_reports_it(project, queue):
    worker = register(project)
    other = register(project, name="w2")
    job = submit(project)
    token = claim(project, worker)[job.pk]
    services.cancel_job(project, job.pk)
    item = services.ResultItem(job.pk, token, True)

    assert services.report_results(project, [item], worker_id=other.pk) == {job.pk: None}
    assert_held(job, worker)
    assert services.report_results(project, [item], worker_id=worker.pk) == {job.pk: None}
    assert held_for(job) is None


@pytest.mark.django_db(transaction=True)
def test_a_deregistered_worker_no_longer_holds_its_cancelled_jobs(project, queue):
    worker = register(project)
    job = submit(project)
    claim(project, worker)
    services.cancel_job(project, job.pk)

    worker_services.deregister_worker(project, worker)

    job.refresh_from_db()
    assert (job.state, job.lease_expires_at) == (JobState.CANCELLED, None)


@pytest.mark.django_db(transaction=True)
def test_a_worker_marked_offline_no_longer_holds_its_cancelled_jobs(project, queue):
    worker = register(project)
    cancelled, running = submit(project), submit(project)
    claim(project, worker)
    services.cancel_job(project, cancelled.pk)
    Worker.objects.for_project(project).update(last_heartbeat=Now() - timedelta(hours=1))

    assert Dispatcher(batch_size=100).mark_silent_workers() == 1

    cancelled.refresh_from_db()
    running.refresh_from_db()
    assert (cancelled.state, cancelled.lease_expires_at) == (JobState.CANCELLED, None)
    # The running one's lease ends now, as before: lease expiry retries it.
    assert running.state == JobState.PROCESSING and held_for(running) <= 0


@pytest.mark.django_db(transaction=True)
def test_a_re_registration_keeps_only_the_held_jobs_its_new_process_still_runs(project, queue):
    worker = register(project)
    kept, gone = submit(project), submit(project)
    claim(project, worker)
    services.cancel_job(project, kept.pk)
    services.cancel_job(project, gone.pk)

    register(project, running=[kept.pk])

    assert_held(kept, worker)
    assert held_for(gone) is None


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
    worker = register(project)
    submit(project)
    queue_services.pause_queue(queue)
    assert claim(project, worker) == {}
    assert Job.objects.all_tenants().get().state == JobState.PENDING


@pytest.mark.django_db(transaction=True)
def test_it_assigns_again_from_a_resumed_queue(project, queue):
    worker = register(project)
    job = submit(project)
    queue_services.pause_queue(queue)
    assert claim(project, worker) == {}
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
