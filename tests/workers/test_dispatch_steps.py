"""The dispatcher's steps against the database: assign, promote, expire, silent workers, NOTIFY."""

from collections import Counter
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.db.models.functions import Now

from jobs import queries, services
from jobs.models import ExecutionStatus, Job, JobExecution, JobState
from jobs.specs import JobSpec
from taskforge import conf
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
    ids = []
    for start in range(0, count, 1000):
        specs = [
            JobSpec(queue=queue, job_type="t", **fields) for _ in range(min(1000, count - start))
        ]
        ids += [job.pk for job in services.submit_jobs(project, specs).jobs]
    return ids


def fetch(project, worker):
    return worker_services.fetch_jobs(project, worker, limit=1000)


def complete_all(project, fetched):
    items = [services.ResultItem(a.id, a.lease_token, True) for a in fetched]
    outcomes = services.report_results(project, items)
    assert all(outcome is not None for outcome in outcomes.values())


def processing():
    return Job.objects.all_tenants().filter(state=JobState.PROCESSING)


@pytest.mark.django_db(transaction=True)
def test_it_never_runs_more_than_a_queues_max_concurrency(project, make_queue):
    make_queue("capped", max_concurrency=2)
    worker = register(project, capacity=10, queues=[("capped", 1)])
    submit_many(project, 10, queue="capped")
    dispatcher = Dispatcher(batch_size=100)

    assert dispatcher.assign() == 2
    assert dispatcher.assign() == 0
    fetched = fetch(project, worker)
    complete_all(project, fetched[:1])
    assert dispatcher.assign() == 1
    assert processing().count() == 2


@pytest.mark.django_db(transaction=True)
def test_it_splits_a_workers_slots_between_queues_by_weight(project, make_queue):
    make_queue("heavy")
    make_queue("light")
    worker = register(project, capacity=20, queues=[("heavy", 3), ("light", 1)])
    submit_many(project, 1500, queue="heavy")
    submit_many(project, 1500, queue="light")
    dispatcher = Dispatcher(batch_size=1000)

    completed = 0
    for _ in range(200):
        if completed >= 2000:
            break
        dispatcher.tick()
        fetched = fetch(project, worker)
        assert fetched
        complete_all(project, fetched)
        completed += len(fetched)

    assert completed == 2000
    done = Counter(
        Job.objects.all_tenants()
        .filter(state=JobState.SUCCEEDED)
        .values_list("queue__name", flat=True)
    )
    assert 1350 <= done["heavy"] <= 1650
    assert 450 <= done["light"] <= 550


@pytest.mark.django_db(transaction=True)
def test_it_assigns_the_highest_priority_job_of_a_queue_first(project, queue):
    worker = register(project, capacity=1)
    submit_many(project, 2, priority=1)
    [urgent] = submit_many(project, 1, priority=9)
    assert Dispatcher(batch_size=100).assign() == 1
    assert [a.id for a in fetch(project, worker)] == [urgent]


@pytest.mark.django_db(transaction=True)
def test_it_assigns_nothing_to_offline_or_draining_workers(project, queue):
    offline = register(project, name="offline")
    draining = register(project, name="draining")
    Worker.objects.all_tenants().filter(pk=offline.pk).update(status=WorkerStatus.OFFLINE)
    worker_services.drain_worker(project, draining)
    submit_many(project, 5)

    assert Dispatcher(batch_size=100).assign() == 0
    assert Job.objects.all_tenants().filter(state=JobState.PENDING).count() == 5


@pytest.mark.django_db(transaction=True)
def test_it_promotes_due_scheduled_jobs_only(project, queue):
    due, later = submit_many(project, 2, delay_seconds=3600)
    Job.objects.all_tenants().filter(pk=due).update(run_at=Now() - timedelta(seconds=1))

    assert Dispatcher(batch_size=100).promote_due() == 1

    states = dict(Job.objects.all_tenants().values_list("pk", "state"))
    assert states == {due: JobState.PENDING, later: JobState.SCHEDULED}


@pytest.mark.django_db(transaction=True)
def test_it_marks_a_silent_worker_offline_and_expires_its_jobs_next(project, queue):
    worker = register(project)
    [job_id] = submit_many(project, 1)
    dispatcher = Dispatcher(batch_size=100)
    dispatcher.assign()
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


@pytest.mark.django_db(transaction=True)
def test_it_notifies_the_worker_channel_when_it_assigns_jobs(project, queue):
    worker = register(project)
    submit_many(project, 1)
    wanted = {"dbname", "user", "password", "host", "port"}
    params = {k: v for k, v in connection.get_connection_params().items() if k in wanted}
    channel = queries.worker_channel(worker.pk)
    with psycopg.connect(**params, autocommit=True) as listener:
        listener.execute(f"LISTEN {channel}")

        assert Dispatcher(batch_size=100).tick().assigned == 1

        notifies = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.channel for n in notifies] == [channel]
