"""Worker results through jobs.services: completion, failure and backoff, lease expiry, logs."""

import uuid
from datetime import timedelta

import pytest
from django.db.models.functions import Now

from jobs import services
from jobs.exceptions import StaleLease
from jobs.models import ExecutionLog, ExecutionStatus, Job, JobExecution, JobState
from jobs.specs import JobSpec
from workers import claiming
from workers import services as worker_services
from workers.dispatcher import Dispatcher


def register(project, name="w1", capacity=10, queues=("default",)):
    worker, _ = worker_services.register_worker(
        project,
        name=name,
        queues=[worker_services.QueueWeight(q) for q in queues],
        capacity=capacity,
    )
    return worker


def submit(project, queue="default", **fields):
    job, _ = services.submit_job(project, JobSpec(queue=queue, job_type="t", **fields))
    return job


def claim(project, worker):
    """The worker fetches (and so claims) what is pending: {job id: AssignedJob}."""
    return {a.id: a for a in claiming.claim(project, worker.pk, limit=100).jobs}


def jobs(*ids):
    return Job.objects.all_tenants().filter(pk__in=ids)


def expire(*ids):
    """Let the leases of these jobs run out and have the dispatcher notice."""
    jobs(*ids).update(lease_expires_at=Now() - timedelta(seconds=1))
    return Dispatcher(batch_size=100).expire_leases()


def make_due(*ids):
    """Bring a backing-off retry's run_at into the past and promote it."""
    jobs(*ids).update(run_at=Now() - timedelta(seconds=1))
    return Dispatcher(batch_size=100).promote_due()


def retry_delay(job_id, attempt):
    """Seconds between the failure and the retry's run_at, both by the database clock.

    The execution's finished_at and the job's run_at are set by one statement, so they share
    now(): the difference is exactly the backoff the engine chose.
    """
    job = Job.objects.all_tenants().get(pk=job_id)
    execution = JobExecution.objects.all_tenants().get(job_id=job_id, attempt=attempt)
    return (job.run_at - execution.finished_at).total_seconds()


@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_stale_token_after_the_lease_expired_and_the_job_was_reclaimed(project, queue):
    worker = register(project)
    job = submit(project)
    first = claim(project, worker)[job.pk]
    assert expire(job.pk) == 1
    make_due(job.pk)
    second = claim(project, worker)[job.pk]
    assert second.lease_token != first.lease_token

    with pytest.raises(StaleLease):
        services.complete_job(project, job.pk, lease_token=first.lease_token, result={"late": 1})

    job.refresh_from_db()
    assert job.state == JobState.PROCESSING
    assert job.lease_token == second.lease_token
    assert job.result is None
    statuses = JobExecution.objects.all_tenants().filter(job=job).values_list("attempt", "status")
    assert sorted(statuses) == [(1, ExecutionStatus.TIMED_OUT), (2, ExecutionStatus.STARTED)]


@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_second_completion_of_the_same_job(project, queue):
    worker = register(project)
    job = submit(project)
    token = claim(project, worker)[job.pk].lease_token
    services.complete_job(project, job.pk, lease_token=token, result={"n": 1})

    with pytest.raises(StaleLease):
        services.complete_job(project, job.pk, lease_token=token, result={"n": 2})

    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED
    assert job.result == {"n": 1}


@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_completion_from_another_project(project, queue, other_project):
    worker = register(project)
    job = submit(project)
    token = claim(project, worker)[job.pk].lease_token

    with pytest.raises(StaleLease):
        services.complete_job(other_project, job.pk, lease_token=token)

    job.refresh_from_db()
    assert job.state == JobState.PROCESSING


@pytest.mark.django_db(transaction=True)
def test_it_backs_off_base_then_base_times_multiplier_without_jitter(project, make_queue):
    make_queue("retry", backoff_base_seconds=10, backoff_multiplier=2, backoff_jitter="none")
    worker = register(project, queues=["retry"])
    job = submit(project, queue="retry")

    token = claim(project, worker)[job.pk].lease_token
    failed = services.fail_job(project, job.pk, lease_token=token, error="boom")
    assert failed.state == JobState.SCHEDULED
    assert retry_delay(job.pk, 1) == pytest.approx(10, abs=2)

    make_due(job.pk)
    token = claim(project, worker)[job.pk].lease_token
    services.fail_job(project, job.pk, lease_token=token, error="boom")
    assert retry_delay(job.pk, 2) == pytest.approx(20, abs=2)


@pytest.mark.django_db(transaction=True)
def test_it_caps_the_backoff_at_backoff_max_seconds(project, make_queue):
    make_queue(
        "retry",
        backoff_base_seconds=10,
        backoff_multiplier=2,
        backoff_max_seconds=15,
        backoff_jitter="none",
    )
    worker = register(project, queues=["retry"])
    job = submit(project, queue="retry")
    token = claim(project, worker)[job.pk].lease_token
    services.fail_job(project, job.pk, lease_token=token, error="boom")
    make_due(job.pk)
    token = claim(project, worker)[job.pk].lease_token
    services.fail_job(project, job.pk, lease_token=token, error="boom")
    assert retry_delay(job.pk, 2) == pytest.approx(15, abs=2)


@pytest.mark.parametrize(
    ("jitter", "low", "high"),
    [("full", 0.0, 10.0), ("equal", 5.0, 10.0)],
)
@pytest.mark.django_db(transaction=True)
def test_it_keeps_a_jittered_backoff_within_the_policy_bounds(
    project, make_queue, jitter, low, high
):
    make_queue("retry", backoff_base_seconds=10, backoff_multiplier=2, backoff_jitter=jitter)
    worker = register(project, queues=["retry"], capacity=20)
    specs = [JobSpec(queue="retry", job_type="t") for _ in range(20)]
    ids = [job.pk for job in services.submit_jobs(project, specs).jobs]
    claimed = claim(project, worker)
    items = [
        services.ResultItem(job_id, claimed[job_id].lease_token, False, error="boom")
        for job_id in ids
    ]
    outcomes = services.report_results(project, items)
    assert {outcome.state for outcome in outcomes.values()} == {JobState.SCHEDULED}

    delays = [retry_delay(job_id, 1) for job_id in ids]
    assert all(low <= delay <= high for delay in delays), delays
    # The jitter is random: twenty retries do not all land on the same instant.
    assert len(set(delays)) > 1


@pytest.mark.django_db(transaction=True)
def test_it_sends_a_non_retryable_failure_to_dead_at_once(project, queue):
    worker = register(project)
    job = submit(project)
    token = claim(project, worker)[job.pk].lease_token
    failed = services.fail_job(
        project, job.pk, lease_token=token, error="bad input", retryable=False
    )
    assert failed.state == JobState.DEAD
    assert failed.attempts == 1 < failed.max_attempts
    assert failed.last_error == "bad input"
    assert failed.finished_at is not None


@pytest.mark.django_db(transaction=True)
def test_it_sends_a_job_out_of_attempts_to_dead_with_its_last_error(project, queue):
    worker = register(project)
    job = submit(project, max_attempts=2)
    token = claim(project, worker)[job.pk].lease_token
    assert services.fail_job(project, job.pk, lease_token=token, error="first").state == (
        JobState.SCHEDULED
    )
    make_due(job.pk)
    token = claim(project, worker)[job.pk].lease_token
    dead = services.fail_job(project, job.pk, lease_token=token, error="second")
    assert dead.state == JobState.DEAD
    assert dead.attempts == 2
    assert dead.last_error == "second"
    assert dead.lease_token is None


@pytest.mark.django_db(transaction=True)
def test_it_retries_a_job_whose_lease_expired_as_a_timed_out_attempt(project, queue):
    worker = register(project)
    job = submit(project)
    claim(project, worker)
    assert expire(job.pk) == 1
    job.refresh_from_db()
    assert job.state == JobState.SCHEDULED
    assert job.attempts == 1
    assert job.lease_token is None
    assert "lease expired" in job.last_error
    execution = JobExecution.objects.all_tenants().get(job=job)
    assert execution.status == ExecutionStatus.TIMED_OUT
    assert execution.finished_at is not None


@pytest.mark.django_db(transaction=True)
def test_it_leaves_an_unexpired_lease_alone(project, queue):
    worker = register(project)
    job = submit(project)
    claim(project, worker)
    assert Dispatcher(batch_size=100).expire_leases() == 0
    job.refresh_from_db()
    assert job.state == JobState.PROCESSING


@pytest.mark.django_db(transaction=True)
def test_it_sends_a_job_to_dead_after_max_attempts_lease_expiries(project, queue):
    worker = register(project)
    job = submit(project, max_attempts=3)
    for _ in range(2):
        claim(project, worker)
        expire(job.pk)
        job.refresh_from_db()
        assert job.state == JobState.SCHEDULED
        make_due(job.pk)
    claim(project, worker)
    expire(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.DEAD
    assert job.attempts == 3
    statuses = JobExecution.objects.all_tenants().filter(job=job).values_list("status", flat=True)
    assert list(statuses) == [ExecutionStatus.TIMED_OUT] * 3


@pytest.mark.django_db(transaction=True)
def test_it_reports_a_batch_of_mixed_results_item_by_item(project, queue):
    worker = register(project)
    done, failed, stale = (submit(project) for _ in range(3))
    claimed = claim(project, worker)
    items = [
        services.ResultItem(done.pk, claimed[done.pk].lease_token, True, result={"ok": 1}),
        services.ResultItem(failed.pk, claimed[failed.pk].lease_token, False, error="boom"),
        services.ResultItem(stale.pk, uuid.uuid4(), True, result={"ok": 2}),
    ]
    outcomes = services.report_results(project, items)

    assert set(outcomes) == {done.pk, failed.pk, stale.pk}
    assert outcomes[done.pk].state == JobState.SUCCEEDED
    assert outcomes[failed.pk].state == JobState.SCHEDULED
    assert outcomes[failed.pk].run_at is not None
    assert outcomes[stale.pk] is None
    states = dict(jobs(done.pk, failed.pk, stale.pk).values_list("pk", "state"))
    assert states == {
        done.pk: JobState.SUCCEEDED,
        failed.pk: JobState.SCHEDULED,
        stale.pk: JobState.PROCESSING,
    }


@pytest.mark.django_db(transaction=True)
def test_it_extends_the_lease_on_heartbeat_only_for_the_workers_own_jobs(project, queue, settings):
    settings.TASKFORGE_LEASE_SECONDS = 600
    mine_worker = register(project, name="mine", capacity=1)
    mine = submit(project)
    claim(project, mine_worker)
    other_worker = register(project, name="other", capacity=1)
    theirs = submit(project)
    claim(project, other_worker)
    assert dict(jobs(mine.pk, theirs.pk).values_list("pk", "worker_id")) == {
        mine.pk: mine_worker.pk,
        theirs.pk: other_worker.pk,
    }
    jobs(mine.pk, theirs.pk).update(lease_expires_at=Now() + timedelta(seconds=5))
    before = dict(jobs(mine.pk, theirs.pk).values_list("pk", "lease_expires_at"))

    answer = worker_services.heartbeat(project, mine_worker, running=[mine.pk, theirs.pk])

    after = dict(jobs(mine.pk, theirs.pk).values_list("pk", "lease_expires_at"))
    assert (answer.status, answer.cancelled) == ("online", [])
    assert after[mine.pk] > before[mine.pk] + timedelta(seconds=500)
    assert after[theirs.pk] == before[theirs.pk]


@pytest.mark.django_db(transaction=True)
def test_it_stores_log_lines_for_the_current_execution(project, queue):
    worker = register(project)
    job = submit(project)
    token = claim(project, worker)[job.pk].lease_token
    entries = [
        {"message": "starting"},
        {"level": "error", "message": "disk full", "metadata": {"free": 0}},
    ]
    assert services.append_logs(project, job.pk, lease_token=token, entries=entries) == 2

    execution = JobExecution.objects.all_tenants().get(job=job)
    logs = ExecutionLog.objects.all_tenants().filter(job=job).order_by("id")
    assert [(log.level, log.message, log.metadata) for log in logs] == [
        ("info", "starting", {}),
        ("error", "disk full", {"free": 0}),
    ]
    assert {log.execution_id for log in logs} == {execution.pk}


@pytest.mark.django_db(transaction=True)
def test_it_refuses_log_lines_with_a_stale_token(project, queue):
    worker = register(project)
    job = submit(project)
    token = claim(project, worker)[job.pk].lease_token
    services.complete_job(project, job.pk, lease_token=token)

    with pytest.raises(StaleLease):
        services.append_logs(project, job.pk, lease_token=token, entries=[{"message": "late"}])
    with pytest.raises(StaleLease):
        services.append_logs(
            project, job.pk, lease_token=uuid.uuid4(), entries=[{"message": "forged"}]
        )
    assert ExecutionLog.objects.all_tenants().count() == 0
