"""The dispatcher's steps against the database: promotion (and its NOTIFY), silent workers,
lease expiry. It hands no job to a worker: what a worker's fetch claims is in
test_claiming.py."""

from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.db.models.functions import Now

from jobs import queries, services
from jobs.models import ExecutionStatus, Job, JobExecution, JobState
from jobs.specs import JobSpec
from taskforge import conf
from workers import claiming
from workers import services as worker_services
from workers.dispatcher import Dispatcher
from workers.models import Worker, WorkerStatus


def register(project, name="w1", capacity=10, queues=(("default", 1),)):
    worker, _ = worker_services.register_worker(
        project,
        name=name,
        queues=[worker_services.QueueWeight(q, weight) for q, weight in queues],
        capacity=capacity,
    )
    return worker


def submit_many(project, count, queue="default", **fields):
    specs = [JobSpec(queue=queue, job_type="t", **fields) for _ in range(count)]
    return [job.pk for job in services.submit_jobs(project, specs).jobs]


def listener_params():
    wanted = {"dbname", "user", "password", "host", "port"}
    return {k: v for k, v in connection.get_connection_params().items() if k in wanted}


@pytest.mark.django_db(transaction=True)
def test_it_promotes_due_scheduled_jobs_only(project, queue):
    due, later = submit_many(project, 2, delay_seconds=3600)
    Job.objects.all_tenants().filter(pk=due).update(run_at=Now() - timedelta(seconds=1))

    assert Dispatcher(batch_size=100).promote_due() == 1

    states = dict(Job.objects.all_tenants().values_list("pk", "state"))
    assert states == {due: JobState.PENDING, later: JobState.SCHEDULED}


@pytest.mark.django_db(transaction=True)
def test_promotion_notifies_each_queue_it_made_jobs_pending_in_once(project, queue, make_queue):
    other = make_queue("other")
    idle = make_queue("idle")
    due = submit_many(project, 3, delay_seconds=3600) + submit_many(
        project, 2, queue="other", delay_seconds=3600
    )
    submit_many(project, 1, queue="idle", delay_seconds=3600)  # not due: no NOTIFY for it
    Job.objects.all_tenants().filter(pk__in=due).update(run_at=Now() - timedelta(seconds=1))
    with psycopg.connect(**listener_params(), autocommit=True) as listener:
        listener.execute(f"LISTEN {queries.JOBS_READY_CHANNEL}")

        assert Dispatcher(batch_size=100).promote_due() == 5

        notifies = list(listener.notifies(timeout=2))
    # The payload names the queue (workers/notifications.py wakes only its workers' polls).
    assert sorted(n.payload for n in notifies) == sorted([queue.pk.hex, other.pk.hex])
    assert {n.channel for n in notifies} == {queries.JOBS_READY_CHANNEL}
    assert idle.pk.hex not in {n.payload for n in notifies}


@pytest.mark.django_db(transaction=True)
def test_a_tick_promotes_but_hands_no_job_to_a_worker(project, queue):
    worker = register(project)
    waiting = submit_many(project, 2)
    [due] = submit_many(project, 1, delay_seconds=3600)
    Job.objects.all_tenants().filter(pk=due).update(run_at=Now() - timedelta(seconds=1))

    result = Dispatcher(batch_size=100).tick()

    assert (result.promoted, result.expired, result.offline) == (1, 0, 0)
    states = dict(Job.objects.all_tenants().values_list("pk", "state"))
    assert states == dict.fromkeys([*waiting, due], JobState.PENDING)
    # The worker gets them when it asks.
    fetched = claiming.claim(project, worker.pk, limit=10).jobs
    assert sorted(a.id for a in fetched) == sorted([*waiting, due])


@pytest.mark.django_db(transaction=True)
def test_it_marks_a_silent_worker_offline_and_expires_its_jobs_next(project, queue):
    worker = register(project)
    [job_id] = submit_many(project, 1)
    dispatcher = Dispatcher(batch_size=100)
    assert [a.id for a in claiming.claim(project, worker.pk, limit=10).jobs] == [job_id]
    silence = timedelta(seconds=conf.worker_timeout_seconds() + 10)
    Worker.objects.all_tenants().filter(pk=worker.pk).update(last_heartbeat=Now() - silence)

    assert dispatcher.mark_silent_workers() == 1
    worker.refresh_from_db()
    assert worker.status == WorkerStatus.OFFLINE

    assert dispatcher.expire_leases() == 1
    job = Job.objects.all_tenants().get(pk=job_id)
    assert job.state == JobState.SCHEDULED
    assert job.attempts == 1
    assert JobExecution.objects.all_tenants().get(job=job).status == ExecutionStatus.TIMED_OUT


@pytest.mark.django_db(transaction=True)
def test_it_leaves_a_heartbeating_worker_online(project, queue):
    worker = register(project)
    assert Dispatcher(batch_size=100).mark_silent_workers() == 0
    worker.refresh_from_db()
    assert worker.status == WorkerStatus.ONLINE
