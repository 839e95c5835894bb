"""The dispatcher's steps against the database: assign, promote, expire, silent workers, NOTIFY."""

import time
from collections import Counter
from datetime import timedelta

import psycopg
import pytest
from django.db import connection, connections
from django.db.models.functions import Now

from jobs import queries, services
from jobs.models import ExecutionStatus, Job, JobExecution, JobState
from jobs.specs import JobSpec
from queues.models import Queue
from taskforge import conf
from tests.workers.conftest import InThread, wait_until
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


@pytest.mark.django_db(transaction=True)
def test_two_back_to_back_ticks_start_no_more_than_a_rate_limited_queues_burst(project, make_queue):
    make_queue("limited", rate_limit_per_second=2)
    register(project, capacity=50, queues=[("limited", 1)])
    submit_many(project, 20, queue="limited")

    started = time.monotonic()
    first = Dispatcher(batch_size=100).tick().assigned
    second = Dispatcher(batch_size=100).tick().assigned
    elapsed = time.monotonic() - started

    # A full bucket holds the burst, max(rate, 1) = 2, and earns one token every 0.5 s: back to
    # back (well under 0.5 s), the second dispatcher finds none left.
    assert first == 2
    assert second <= int(elapsed * 2), f"{second} more jobs started {elapsed:.3f}s later"
    assert processing().count() == first + second


@pytest.mark.django_db(transaction=True)
def test_a_rate_limited_queue_leaves_the_slots_it_cannot_fill_to_the_workers_other_queues(
    project, make_queue
):
    make_queue("limited", rate_limit_per_second=1)
    make_queue("free")
    register(project, capacity=10, queues=[("limited", 1), ("free", 1)])
    submit_many(project, 20, queue="limited")
    submit_many(project, 20, queue="free")

    assert Dispatcher(batch_size=100).assign() == 10

    started = Counter(processing().values_list("queue__name", flat=True))
    assert started == {"limited": 1, "free": 9}
    buckets = dict(
        Queue.objects.all_tenants().values_list("name", "rate_tokens").filter(project=project)
    )
    # The claim spent the limited queue's one token and never touched the other queue's row.
    assert buckets["limited"] is not None and buckets["limited"] < 1
    assert buckets["free"] is None


def backends_waiting_on_a_lock() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_two_dispatchers_racing_for_a_rate_limited_queue_spend_its_token_once(project, make_queue):
    # One token a hundred seconds: the bucket starts with one (the burst) and earns no other
    # while the test runs.
    make_queue("limited", rate_limit_per_second=0.01)
    register(project, name="w1", capacity=10, queues=[("limited", 1)])
    submit_many(project, 10, queue="limited")
    # A barrier: every claim inserts JobExecution rows, so while this transaction holds SHARE
    # on that table the first dispatcher's claim waits, holding its worker and the bucket.
    holder = connections.create_connection("default")
    try:
        holder.set_autocommit(False)
        with holder.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {JobExecution._meta.db_table} IN SHARE MODE")
        first = InThread(lambda: Dispatcher(batch_size=100).assign())
        first.start()
        wait_until(lambda: backends_waiting_on_a_lock() == 1, timeout=30)
        # A second worker, which only a second dispatcher can lock now (SKIP LOCKED).
        register(project, name="w2", capacity=10, queues=[("limited", 1)])
        second = InThread(lambda: Dispatcher(batch_size=100).assign())
        second.start()
        # Without the bucket's lock it would claim a job of its own and wait at the barrier
        # too; with it, it waits for the bucket and then finds it empty.
        wait_until(lambda: backends_waiting_on_a_lock() == 2, timeout=30)
        holder.commit()
        assigned = first.join_result() + second.join_result()
    finally:
        holder.close()

    assert assigned == 1
    assert processing().count() == 1


@pytest.mark.django_db(transaction=True)
def test_it_forgets_the_round_robin_state_of_a_worker_gone_offline_but_not_of_a_full_one(
    project, make_queue
):
    make_queue("a")
    make_queue("b")
    gone = register(project, name="gone", capacity=1, queues=[("a", 3), ("b", 1)])
    full = register(project, name="full", capacity=1, queues=[("a", 3), ("b", 1)])
    submit_many(project, 10, queue="a")
    submit_many(project, 10, queue="b")
    dispatcher = Dispatcher(batch_size=100)
    dispatcher.round_robin_keep_seconds = 0.3

    assert dispatcher.tick().assigned == 2
    workers_in_state = {worker_id for worker_id, _ in dispatcher._round_robin}
    assert workers_in_state == {gone.pk, full.pk}
    Worker.objects.all_tenants().filter(pk=gone.pk).update(status=WorkerStatus.OFFLINE)

    # Ticks keep seeing "full" (its one slot taken, nothing is assigned to it) but no longer
    # "gone"; each sweep (once a second) forgets what was not seen for 0.3 s.
    def forgotten() -> bool:
        dispatcher.tick()
        return {worker_id for worker_id, _ in dispatcher._round_robin} == {full.pk}

    wait_until(forgotten, timeout=10)
    # The dispatcher's private state: the pruning has no other visible effect.
    assert set(dispatcher._round_robin_seen) == {
        (full.pk, queue.pk) for queue in Queue.objects.all_tenants().filter(name__in=["a", "b"])
    }
