"""The plan's max_concurrency (billing/models.py TIER_LIMITS, or the subscription's override):
at most that many of an organization's jobs are processing at once, across all its projects,
queues and workers, whichever fetches claim them at once (workers/claiming.py _plan_room)."""

import queue as queue_module
import random
import threading
import time
import uuid

import pytest
from django.db import connection, connections

from accounts.models import Project
from billing.models import Subscription, Tier
from jobs import services
from jobs.models import Job, JobExecution, JobState
from jobs.specs import JobSpec
from queues.models import Queue
from tests.workers.conftest import InThread, wait_until
from workers import claiming
from workers import services as worker_services
from workers.planning import Assignment, plan_slots


def register(project, name="w1", capacity=20, queues=("default",)):
    worker, _ = worker_services.register_worker(
        project,
        name=name,
        queues=[worker_services.QueueWeight(q) for q in queues],
        capacity=capacity,
    )
    return worker


def submit(project, count, queue="default"):
    specs = [JobSpec(queue=queue, job_type="t")] * count
    return services.submit_jobs(project, specs).ids


def set_plan(org, tier=Tier.STARTER, **limits):
    Subscription.objects.for_org(org).update(tier=tier, limits=limits)


def running(org):
    return Job.objects.for_org(org).filter(state=JobState.PROCESSING).count()


def claim(*workers):
    """Each worker fetches, and so claims, what it may: how many jobs they got in all."""
    return sum(len(claiming.claim(w.project, w.pk, limit=1000).jobs) for w in workers)


def complete(project, worker, count):
    held = Job.objects.for_project(project).filter(state=JobState.PROCESSING, worker_id=worker.pk)
    items = [
        services.ResultItem(job_id, token, True)
        for job_id, token in held.values_list("pk", "lease_token")[:count]
    ]
    outcomes = services.report_results(project, items)
    assert [outcome.state for outcome in outcomes.values() if outcome] == ["succeeded"] * count


# --- the planner (no database) ----------------------------------------------------------------

ORG, OTHER = uuid.uuid4(), uuid.uuid4()
W1, W2 = uuid.uuid4(), uuid.uuid4()
HIGH, LOW, THEIRS = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def plan(free, assignments, available, room):
    return plan_slots(
        free, assignments, available, budget=1000, state={}, plan_room=room, rng=random.Random(1)
    )


def test_the_planner_spends_an_organizations_room_on_its_highest_priority_queue_first():
    both = [Assignment(LOW, 1, 1, ORG), Assignment(HIGH, 1, 9, ORG)]
    slots = plan({W1: 10}, {W1: both}, {HIGH: 2, LOW: 10}, {ORG: 3})
    assert [s.queue_id for s in slots] == [HIGH, HIGH, LOW]


def test_the_planner_gives_the_room_to_a_queue_whose_worker_has_a_free_slot():
    # The high-priority queue has a backlog but its worker one free slot: the rest of the room
    # goes to the other queue, not to jobs that could not start this tick anyway.
    assignments = {W1: [Assignment(HIGH, 1, 9, ORG)], W2: [Assignment(LOW, 1, 1, ORG)]}
    for seed in range(10):
        slots = plan_slots(
            {W1: 1, W2: 10},
            assignments,
            {HIGH: 100, LOW: 100},
            budget=1000,
            state={},
            plan_room={ORG: 4},
            rng=random.Random(seed),
        )
        assert len(slots) == 4
        assert sum(s.queue_id == HIGH for s in slots) <= 1


def test_the_planner_leaves_an_organization_without_room_entry_uncapped():
    assignments = {W1: [Assignment(LOW, 1, 5, ORG), Assignment(THEIRS, 1, 5, OTHER)]}
    slots = plan({W1: 10}, assignments, {LOW: 10, THEIRS: 10}, {ORG: 0})
    assert {s.queue_id for s in slots} == {THEIRS}
    assert len(slots) == 10


# --- claims ---------------------------------------------------------------------------------------

# Claims open durable transactions of their own, and threads need committed rows.
transactional = pytest.mark.django_db(transaction=True)


@transactional
def test_a_limit_of_three_starts_three_of_ten_jobs_then_one_more_when_one_finishes(
    org, project, queue
):
    set_plan(org, max_concurrency=3)
    worker = register(project, capacity=20)
    submit(project, 10)

    assert claim(worker) == 3
    assert claim(worker) == 0
    complete(project, worker, 1)
    assert claim(worker) == 1
    assert running(org) == 3


@transactional
def test_the_limit_counts_every_project_queue_and_worker_of_the_organization(
    org, project, queue, make_queue
):
    set_plan(org, max_concurrency=5)
    make_queue("urgent", priority=9)
    second = Project.objects.create(organization=org, name="second")
    Queue.objects.create(organization=org, project=second, name="default")
    workers = [
        register(project, "a", capacity=10, queues=("default", "urgent")),
        register(project, "b", capacity=10, queues=("default",)),
        register(second, "c", capacity=10),
    ]
    for target, name in ((project, "default"), (project, "urgent"), (second, "default")):
        submit(target, 4, queue=name)

    assert claim(*workers) == 5
    assert claim(*workers) == 0
    assert running(org) == 5


@transactional
def test_another_organization_is_not_held_back_by_one_at_its_limit(
    org, project, queue, other_org, other_project, other_queue
):
    set_plan(org, max_concurrency=3)
    ours = register(project, capacity=20)
    theirs = register(other_project, capacity=20)
    submit(project, 10)
    submit(other_project, 10)

    assert claim(ours, theirs) == 13
    assert (running(org), running(other_org)) == (3, 10)


@transactional
def test_an_organization_over_a_lowered_limit_starts_nothing(org, project, queue):
    worker = register(project, capacity=20)
    submit(project, 10)
    assert claim(worker) == 10
    submit(project, 5)
    set_plan(org, max_concurrency=4)

    assert claim(worker) == 0
    assert running(org) == 10


@transactional
def test_the_starter_plan_runs_fifty_jobs_at_once(org, project, queue):
    worker = register(project, capacity=100)
    submit(project, 60)
    assert claim(worker) == 50


@transactional
def test_an_organization_without_a_subscription_is_capped_as_starter(org, project, queue):
    Subscription.objects.for_org(org).delete()
    worker = register(project, capacity=100)
    submit(project, 60)
    assert claim(worker) == 50


@transactional
def test_the_enterprise_plan_has_no_cap(org, project, queue):
    set_plan(org, tier=Tier.ENTERPRISE)
    worker = register(project, capacity=100)
    submit(project, 60)
    assert claim(worker) == 60


@transactional
def test_an_override_of_none_lifts_the_tiers_cap(org, project, queue):
    set_plan(org, max_concurrency=None)
    worker = register(project, capacity=100)
    submit(project, 60)
    assert claim(worker) == 60


def lock_waits():
    """The lock type each backend of the test database waits for (pg_locks.locktype)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT l.locktype FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid"
            " WHERE NOT l.granted AND a.datname = current_database() ORDER BY 1"
        )
        return [row[0] for row in cursor.fetchall()]


@transactional
def test_two_workers_fetching_at_once_never_run_more_than_the_limit(org, project, queue):
    set_plan(org, max_concurrency=3)
    w1 = register(project, "w1", capacity=10)
    w2 = register(project, "w2", capacity=10)
    submit(project, 10)
    # A barrier: every claim inserts JobExecution rows, so while this transaction holds SHARE
    # on that table the first fetch's claim waits there, after it counted the organization's
    # running jobs and holding the organization's lock.
    holder = connections.create_connection("default")
    try:
        holder.set_autocommit(False)
        with holder.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {JobExecution._meta.db_table} IN SHARE MODE")
        first = InThread(lambda: claim(w1))
        first.start()
        wait_until(lambda: lock_waits() == ["relation"], timeout=30)
        second = InThread(lambda: claim(w2))
        second.start()
        # Without the organization's lock it would count no running job, claim three of its
        # own and wait at the barrier too; with it, it waits for the first one's commit and
        # then counts its three.
        wait_until(lambda: lock_waits() == ["advisory", "relation"], timeout=30)
        holder.commit()
        claimed = first.join_result() + second.join_result()
    finally:
        holder.close()

    assert claimed == 3
    assert running(org) == 3


@transactional
def test_workers_fetching_in_threads_while_jobs_finish_never_exceed_the_limit(org, project, queue):
    set_plan(org, max_concurrency=4)
    workers = [register(project, f"w{i}", capacity=10) for i in range(4)]
    submit(project, 60)
    stop = threading.Event()
    peaks = []
    claimed: queue_module.SimpleQueue = queue_module.SimpleQueue()

    def fetch(mine):
        # Each thread fetches for two workers, as their long-polls would, and hands what it
        # claimed to the main thread, which reports the results.
        while not stop.is_set():
            for worker in mine:
                for job in claiming.claim(project, worker.pk, limit=1000).jobs:
                    claimed.put(job)
            peaks.append(running(org))

    threads = [InThread(lambda: fetch(workers[:2])), InThread(lambda: fetch(workers[2:]))]
    for thread in threads:
        thread.start()
    finished = 0
    deadline = time.monotonic() + 60
    try:
        while finished < 40:
            assert time.monotonic() < deadline, f"only {finished} jobs finished in time"
            job = claimed.get(timeout=max(0.0, deadline - time.monotonic()))
            [outcome] = services.report_results(
                project, [services.ResultItem(job.id, job.lease_token, True)]
            ).values()
            assert outcome is not None and outcome.state == JobState.SUCCEEDED
            finished += 1
            peaks.append(running(org))
    finally:
        stop.set()
        for thread in threads:
            thread.join_result()

    assert max(peaks) == 4
