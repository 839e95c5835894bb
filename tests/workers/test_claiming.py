"""Claiming at fetch (workers/claiming.py) against the database: what one worker's fetch claims,
within which limits, in which order, and what concurrent claimers never do.

Each test calls ``claiming.claim`` the way the long-poll does (GET /workers/{id}/jobs, whose
HTTP side is in test_protocol_longpoll.py). Claimers racing run in threads, each with its own
database connection (InThread closes it), so their transactions really overlap; a barrier (a
SHARE lock on the executions table, which every claim inserts into) holds a first claim at its
last statement while the others show which lock they wait on.
"""

import threading
import time
from collections import Counter

import psycopg
import pytest
from django.db import connection, connections

from billing.models import Subscription, Tier
from jobs import queries, services
from jobs.models import ExecutionStatus, Job, JobExecution, JobState
from jobs.specs import JobSpec
from queues.models import Queue
from taskforge import conf
from tests.workers.conftest import InThread, wait_until
from workers import claiming
from workers import services as worker_services
from workers.models import Worker, WorkerStatus

pytestmark = pytest.mark.django_db(transaction=True)


def register(project, name="w1", capacity=10, queues=(("default", 1),), job_types=None):
    worker, _ = worker_services.register_worker(
        project,
        name=name,
        queues=[worker_services.QueueWeight(q, weight) for q, weight in queues],
        capacity=capacity,
        job_types=job_types,
    )
    return worker


def submit_many(project, count, queue="default", job_type="t", **fields):
    ids = []
    for start in range(0, count, 1000):
        specs = [
            JobSpec(queue=queue, job_type=job_type, **fields)
            for _ in range(min(1000, count - start))
        ]
        ids += [job.pk for job in services.submit_jobs(project, specs).jobs]
    return ids


def claim(worker, limit=1000):
    """What the worker's fetch claims: its delivered jobs."""
    return claiming.claim(worker.project, worker.pk, limit=limit).jobs


def complete_all(project, claimed):
    items = [services.ResultItem(a.id, a.lease_token, True) for a in claimed]
    outcomes = services.report_results(project, items)
    assert all(outcome is not None for outcome in outcomes.values())


def processing():
    return Job.objects.all_tenants().filter(state=JobState.PROCESSING)


def no_plan_cap(project):
    """Lift the plan's running-job cap, whose per-organization lock would otherwise make every
    claimer of the organization wait for the others (test_plan_concurrency.py tests it)."""
    Subscription.objects.for_org(project.organization).update(tier=Tier.ENTERPRISE)


# --- one fetch ----------------------------------------------------------------------------------


def test_a_fetch_claims_and_delivers_its_jobs_in_one_step(project, queue, settings):
    settings.TASKFORGE_ACK_TIMEOUT_SECONDS = 30
    worker = register(project)
    submitted = submit_many(project, 3)

    claimed = claim(worker)

    assert sorted(a.id for a in claimed) == sorted(submitted)
    rows = {job.pk: job for job in Job.objects.all_tenants().filter(pk__in=submitted)}
    for a in claimed:
        row = rows[a.id]
        assert (row.state, row.worker_id, row.attempts) == (JobState.PROCESSING, worker.pk, 1)
        assert row.lease_token == a.lease_token
        assert row.delivered_at is not None and row.delivered_at == row.started_at
        # Delivered, not acknowledged: the lease is the acknowledgement timeout.
        lease = (row.lease_expires_at - row.delivered_at).total_seconds()
        assert lease == conf.ack_timeout_seconds()
    executions = JobExecution.objects.all_tenants().values_list("job_id", "lease_token", "status")
    assert sorted(executions) == sorted(
        (a.id, a.lease_token, ExecutionStatus.STARTED) for a in claimed
    )
    assert claim(worker) == []


def test_a_fetch_claims_no_more_than_its_limit_nor_the_workers_free_slots(project, queue):
    worker = register(project, capacity=5)
    submit_many(project, 10)
    assert len(claim(worker, limit=2)) == 2
    assert len(claim(worker, limit=100)) == 3
    assert claim(worker) == []
    assert processing().count() == 5


# --- the queue's and the worker's limits --------------------------------------------------------


def test_it_never_runs_more_than_a_queues_max_concurrency_across_workers(project, make_queue):
    make_queue("capped", max_concurrency=2)
    first = register(project, "w1", capacity=10, queues=[("capped", 1)])
    second = register(project, "w2", capacity=10, queues=[("capped", 1)])
    submit_many(project, 10, queue="capped")

    claimed = claim(first)
    assert len(claimed) == 2
    assert claim(first) == []
    assert claim(second) == []
    complete_all(project, claimed[:1])
    assert len(claim(second)) == 1
    assert processing().count() == 2


def test_it_splits_a_workers_slots_between_queues_by_weight(project, make_queue):
    make_queue("heavy")
    make_queue("light")
    worker = register(project, capacity=20, queues=[("heavy", 3), ("light", 1)])
    submit_many(project, 1500, queue="heavy")
    submit_many(project, 1500, queue="light")

    completed = 0
    for _ in range(200):
        if completed >= 2000:
            break
        claimed = claim(worker)
        assert claimed
        complete_all(project, claimed)
        completed += len(claimed)

    assert completed == 2000
    done = Counter(
        Job.objects.all_tenants()
        .filter(state=JobState.SUCCEEDED)
        .values_list("queue__name", flat=True)
    )
    assert 1350 <= done["heavy"] <= 1650
    assert 450 <= done["light"] <= 550


def test_a_worker_freeing_one_slot_at_a_time_still_gets_its_weights(project, make_queue):
    # Smooth weighted round robin whose state outlives each fetch (kept per web process): with
    # one slot per fetch, a state that restarted every time would always pick "heavy".
    make_queue("heavy")
    make_queue("light")
    worker = register(project, capacity=1, queues=[("heavy", 3), ("light", 1)])
    submit_many(project, 50, queue="heavy")
    submit_many(project, 50, queue="light")

    picked = Counter()
    for _ in range(40):
        (job,) = claim(worker)
        picked[Job.objects.all_tenants().get(pk=job.id).queue.name] += 1
        complete_all(project, [job])

    assert picked == {"heavy": 30, "light": 10}


def test_it_claims_the_highest_priority_job_of_a_queue_first(project, queue):
    worker = register(project, capacity=1)
    submit_many(project, 2, priority=1)
    [urgent] = submit_many(project, 1, priority=9)
    assert [a.id for a in claim(worker)] == [urgent]


def test_it_fills_free_slots_from_the_highest_priority_queue_first(project, make_queue):
    make_queue("urgent", priority=9)
    make_queue("routine", priority=1)
    worker = register(project, capacity=3, queues=[("routine", 100), ("urgent", 1)])
    submit_many(project, 5, queue="routine")
    urgent = submit_many(project, 2, queue="urgent")

    claimed = [a.id for a in claim(worker)]

    assert len(claimed) == 3
    assert set(urgent) <= set(claimed)


def test_it_claims_only_the_job_types_a_worker_declared(project, queue):
    worker = register(project, job_types=["emails.send"])
    emails = submit_many(project, 2, job_type="emails.send")
    others = submit_many(project, 2, job_type="reports.build")

    assert sorted(a.id for a in claim(worker)) == sorted(emails)
    states = dict(Job.objects.all_tenants().filter(pk__in=others).values_list("pk", "state"))
    assert states == dict.fromkeys(others, JobState.PENDING)
    anyone = register(project, "w2")
    assert sorted(a.id for a in claim(anyone)) == sorted(others)


def test_draining_deleted_and_other_projects_workers_get_nothing(
    project, queue, other_project, other_queue
):
    draining = register(project, name="draining")
    deleted = register(project, name="deleted")
    theirs = register(other_project, name="theirs")
    worker_services.drain_worker(project, draining)
    worker_services.deregister_worker(project, deleted)
    submit_many(project, 5)

    drained = claiming.claim(project, draining.pk, limit=10)
    assert (drained.jobs, drained.serving) == ([], False)
    assert claiming.claim(project, deleted.pk, limit=10) == claiming.Claim()
    # Another project's worker, named in a fetch of ours: as if it did not exist.
    assert claiming.claim(project, theirs.pk, limit=10) == claiming.Claim()
    assert Job.objects.all_tenants().filter(state=JobState.PENDING).count() == 5


def test_a_worker_marked_offline_that_fetches_is_online_again_and_claims(project, queue):
    offline = register(project, name="offline")
    Worker.objects.all_tenants().filter(pk=offline.pk).update(status=WorkerStatus.OFFLINE)
    submit_many(project, 2)
    claimed = claiming.claim(project, offline.pk, limit=10)
    assert (len(claimed.jobs), claimed.status) == (2, WorkerStatus.ONLINE)
    assert Worker.objects.all_tenants().get(pk=offline.pk).status == WorkerStatus.ONLINE


# --- notifications ------------------------------------------------------------------------------


def test_a_submit_notifies_the_jobs_channel_with_its_queues_id(project, queue, make_queue):
    other = make_queue("other")
    wanted = {"dbname", "user", "password", "host", "port"}
    params = {k: v for k, v in connection.get_connection_params().items() if k in wanted}
    with psycopg.connect(**params, autocommit=True) as listener:
        listener.execute(f"LISTEN {queries.JOBS_READY_CHANNEL}")

        services.submit_job(project, JobSpec(queue="other", job_type="t"))
        services.submit_jobs(project, [JobSpec(queue="default", job_type="t")] * 3)

        notifies = list(listener.notifies(timeout=5, stop_after=2))
    assert [(n.channel, n.payload) for n in notifies] == [
        (queries.JOBS_READY_CHANNEL, other.pk.hex),
        (queries.JOBS_READY_CHANNEL, queue.pk.hex),
    ]


# --- rate limits ----------------------------------------------------------------------------------


def test_two_back_to_back_claims_start_no_more_than_a_rate_limited_queues_burst(
    project, make_queue
):
    make_queue("limited", rate_limit_per_second=2)
    first_worker = register(project, "w1", capacity=50, queues=[("limited", 1)])
    second_worker = register(project, "w2", capacity=50, queues=[("limited", 1)])
    submit_many(project, 20, queue="limited")

    started = time.monotonic()
    first = claiming.claim(project, first_worker.pk, limit=50)
    second = claiming.claim(project, second_worker.pk, limit=50)
    elapsed = time.monotonic() - started

    # A full bucket holds the burst, max(rate, 1) = 2, and earns one token every 0.5 s: back to
    # back (well under 0.5 s), the second claim finds none left.
    assert len(first.jobs) == 2
    assert len(second.jobs) <= int(elapsed * 2), f"{second} more started {elapsed:.3f}s later"
    assert processing().count() == len(first.jobs) + len(second.jobs)
    # Jobs are left that only the limit holds back: the long-poll is told when to look again.
    assert second.retry_in is not None and 0 < second.retry_in <= 0.5


def test_a_rate_limited_queue_leaves_the_slots_it_cannot_fill_to_the_workers_other_queues(
    project, make_queue
):
    make_queue("limited", rate_limit_per_second=1)
    make_queue("free")
    worker = register(project, capacity=10, queues=[("limited", 1), ("free", 1)])
    submit_many(project, 20, queue="limited")
    submit_many(project, 20, queue="free")

    assert len(claim(worker)) == 10

    started = Counter(processing().values_list("queue__name", flat=True))
    assert started == {"limited": 1, "free": 9}
    buckets = dict(
        Queue.objects.all_tenants().values_list("name", "rate_tokens").filter(project=project)
    )
    # The claim spent the limited queue's one token and never touched the other queue's row.
    assert buckets["limited"] is not None and buckets["limited"] < 1
    assert buckets["free"] is None


# --- claimers racing ----------------------------------------------------------------------------


def lock_waits() -> list[str]:
    """The lock type each backend of the test database waits for (pg_locks.locktype)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT l.locktype FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid"
            " WHERE NOT l.granted AND a.datname = current_database() ORDER BY 1"
        )
        return [row[0] for row in cursor.fetchall()]


class Barrier:
    """Holds SHARE on the executions table, which every claim statement inserts into: a claim
    that reaches it waits there, holding every lock it took before (its worker, its org,
    the buckets, the job rows)."""

    def __enter__(self) -> "Barrier":
        self.holder = connections.create_connection("default")
        self.holder.set_autocommit(False)
        with self.holder.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {JobExecution._meta.db_table} IN SHARE MODE")
        return self

    def release(self) -> None:
        self.holder.commit()

    def __exit__(self, *exc: object) -> None:
        self.holder.close()


def test_two_claimers_racing_for_a_rate_limited_queue_spend_its_token_once(project, make_queue):
    no_plan_cap(project)
    # One token a hundred seconds: the bucket starts with one (the burst) and earns no other
    # while the test runs.
    make_queue("limited", rate_limit_per_second=0.01)
    w1 = register(project, name="w1", capacity=10, queues=[("limited", 1)])
    w2 = register(project, name="w2", capacity=10, queues=[("limited", 1)])
    submit_many(project, 10, queue="limited")
    with Barrier() as barrier:
        first = InThread(lambda: claim(w1))
        first.start()
        wait_until(lambda: lock_waits() == ["relation"], timeout=30)
        second = InThread(lambda: claim(w2))
        second.start()
        # Without the bucket's lock it would claim a job of its own and wait at the barrier
        # too; with it, it waits for the bucket's row and then finds it empty.
        wait_until(lambda: len(lock_waits()) == 2, timeout=30)
        assert "relation" in lock_waits() and "advisory" not in lock_waits()
        barrier.release()
        claimed = first.join_result() + second.join_result()

    assert len(claimed) == 1
    assert processing().count() == 1


def test_concurrent_fetches_of_one_worker_never_fill_it_past_its_capacity(project, queue):
    no_plan_cap(project)
    worker = register(project, capacity=300)
    submit_many(project, 1000)
    with Barrier() as barrier:
        fetches = [InThread(lambda: claim(worker, limit=300)) for _ in range(3)]
        fetches[0].start()
        wait_until(lambda: lock_waits() == ["relation"], timeout=30)
        for fetch in fetches[1:]:
            fetch.start()
        # The others wait for the worker's row (lock_worker.sql). Without that lock all three
        # would count the same 300 free slots and claim 900.
        wait_until(lambda: len(lock_waits()) == 3, timeout=30)
        assert "advisory" not in lock_waits()
        barrier.release()
        claimed = [job.id for fetch in fetches for job in fetch.join_result()]

    assert len(claimed) == len(set(claimed)) == 300
    assert processing().filter(worker_id=worker.pk).count() == processing().count() == 300


@pytest.mark.slow
def test_claimers_racing_over_5000_jobs_claim_each_job_exactly_once(project, queue):
    no_plan_cap(project)
    workers = [register(project, f"worker-{i}", capacity=300) for i in range(20)]
    submitted = submit_many(project, 5000)
    start = threading.Barrier(4)

    def claimer(offset: int) -> list:
        # Each thread walks the workers from another one, so several fetches of one worker and
        # of different workers run at once.
        order = workers[offset:] + workers[:offset]
        start.wait(timeout=30)
        mine = []
        while True:
            got = [job for worker in order for job in claim(worker, limit=50)]
            mine += got
            if not got:
                return mine

    threads = [InThread(lambda i=i: claimer(i * 5)) for i in range(4)]
    for thread in threads:
        thread.start()
    per_thread = [thread.join_result(timeout=120) for thread in threads]

    delivered = [job.id for jobs in per_thread for job in jobs]
    assert len(delivered) == len(set(delivered)) == 5000
    assert set(delivered) == set(submitted)
    jobs = Job.objects.for_project(project)
    assert processing().count() == 5000
    assert set(jobs.values_list("attempts", flat=True).distinct()) == {1}
    holder = dict(jobs.values_list("pk", "worker_id"))
    tokens = dict(jobs.values_list("pk", "lease_token"))
    assert {job.id: job.lease_token for jobs in per_thread for job in jobs} == tokens
    executions = list(
        JobExecution.objects.for_project(project).values_list("job_id", "worker_id", "lease_token")
    )
    assert len(executions) == 5000
    assert all((w, t) == (holder[j], tokens[j]) for j, w, t in executions)
    per_worker = Counter(holder.values())
    assert set(per_worker) <= {w.pk for w in workers}
    over = {str(w): n for w, n in per_worker.items() if n > 300}
    assert not over, f"workers over their capacity of 300: {over}"
    counts = [len(jobs) for jobs in per_thread]
    print(f"jobs claimed per thread: {counts}")
    if sum(1 for n in counts if n) < 2:
        print(f"NOTE: only one thread claimed anything (timing): {counts}")


# --- the round-robin state ----------------------------------------------------------------------


def test_it_forgets_the_round_robin_state_of_a_worker_gone_offline_but_not_of_a_full_one(
    project, make_queue, monkeypatch
):
    make_queue("a")
    make_queue("b")
    make_queue("c")
    gone = register(project, name="gone", capacity=1, queues=[("a", 3), ("b", 1)])
    full = register(project, name="full", capacity=1, queues=[("a", 3), ("b", 1)])
    # Forgetting runs in fetches that plan slots: this worker's, one job a fetch.
    bystander = register(project, name="bystander", capacity=1000, queues=[("c", 1)])
    submit_many(project, 10, queue="a")
    submit_many(project, 10, queue="b")
    submit_many(project, 1000, queue="c")
    ours = {gone.pk, full.pk}

    def workers_in_state() -> set:
        # The process's private state: the forgetting has no other visible effect.
        return {worker_id for worker_id, _ in claiming._round_robin} & ours

    assert len(claim(gone)) == len(claim(full)) == 1
    assert workers_in_state() == ours
    monkeypatch.setattr(claiming, "ROUND_ROBIN_KEEP_SECONDS", 0.3)
    monkeypatch.setattr(claiming, "_next_forget", 0.0)
    Worker.objects.all_tenants().filter(pk=gone.pk).update(status=WorkerStatus.OFFLINE)

    # "full" keeps fetching (its one slot taken, it gets nothing); "gone" fetches no more. A
    # fetch forgets, at most every 0.3 s here, the pairs not fetched for 0.3 s.
    def gone_forgotten() -> bool:
        assert claim(full) == []
        assert len(claim(bystander, limit=1)) == 1
        return gone.pk not in workers_in_state()

    wait_until(gone_forgotten, timeout=10)
    assert workers_in_state() == {full.pk}
    queues = Queue.objects.all_tenants().filter(project=project, name__in=["a", "b"])
    assert {key for key in claiming._round_robin_seen if key[0] in ours} == {
        (full.pk, q.pk) for q in queues
    }
