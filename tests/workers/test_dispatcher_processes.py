"""``manage.py rundispatcher`` as real processes: racing dispatchers, signals, LISTEN wake-up.

Each test starts dispatcher subprocesses against the test database (tests/processes.py) and
watches the jobs table with deadline polls; the children are always stopped on the way out.
"""

import io
import logging
import re
import signal
import subprocess
import time
from collections import Counter
from datetime import datetime, timedelta
from uuid import UUID

import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.db.models import QuerySet

from accounts.models import Project
from billing.models import Subscription, Tier
from jobs import services
from jobs.models import Job, JobExecution, JobState
from jobs.queries import DISPATCH_CHANNEL
from jobs.specs import JobSpec
from tests.processes import child_env, running, wait_until
from workers import services as worker_services
from workers.models import Worker

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TICK_LINE = re.compile(r"tick: promoted=\d+ fired=\d+ assigned=(\d+) ")


def unlimited_plan(project: Project) -> None:
    """These tests run hundreds of jobs at once: more than the starter plan's running-job cap
    (tests/workers/test_plan_concurrency.py tests that cap)."""
    Subscription.objects.for_org(project.organization).update(tier=Tier.ENTERPRISE)


def register_workers(project: Project, count: int, capacity: int) -> list[Worker]:
    return [
        worker_services.register_worker(
            project,
            name=f"worker-{i}",
            queues=[worker_services.QueueWeight("default")],
            capacity=capacity,
        )[0]
        for i in range(count)
    ]


def submit_pending(project: Project, count: int) -> list[UUID]:
    ids: list[UUID] = []
    for start in range(0, count, 1000):
        specs = [JobSpec(queue="default", job_type="noop") for _ in range(min(1000, count - start))]
        ids += [job.pk for job in services.submit_jobs(project, specs).jobs]
    return ids


def pending(project: Project) -> QuerySet[Job]:
    return Job.objects.for_project(project).filter(state=JobState.PENDING)


def processing(project: Project) -> QuerySet[Job]:
    return Job.objects.for_project(project).filter(state=JobState.PROCESSING)


def dispatchers_listening() -> int:
    """How many dispatchers on the test database have run LISTEN (their first tick is over)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE 'taskforge-dispatcher %%' AND query = %s",
            [f"LISTEN {DISPATCH_CHANNEL}"],
        )
        return cursor.fetchone()[0]


def dispatcher_listening() -> bool:
    return dispatchers_listening() > 0


def test_three_dispatchers_racing_over_5000_jobs_assign_each_job_exactly_once(
    project, queue, tmp_path
):
    unlimited_plan(project)
    workers = register_workers(project, 20, capacity=300)
    args = ("rundispatcher", "--poll-interval", "0.2", "--batch-size", "200")

    with running(args, args, args, log_dir=tmp_path) as children:
        # Submitting once all three are up makes them race: with the jobs already there, the
        # first process to boot drains all 5,000 in half a second before the others connect.
        wait_until(
            lambda: dispatchers_listening() == 3,
            message="three dispatchers to LISTEN",
            children=children,
        )
        submitted = submit_pending(project, 5000)
        wait_until(
            lambda: not pending(project).exists(), message="no pending job", children=children
        )

    jobs = Job.objects.for_project(project)
    assert jobs.count() == 5000
    assert processing(project).count() == 5000
    assert set(jobs.values_list("attempts", flat=True).distinct()) == {1}
    assigned = dict(jobs.values_list("pk", "worker_id"))
    assert set(assigned) == set(submitted)
    assert None not in assigned.values()
    executions = list(
        JobExecution.objects.for_project(project).values_list("job_id", "worker_id", "lease_token")
    )
    assert len(executions) == 5000
    assert {job_id for job_id, _, _ in executions} == set(submitted)
    tokens = dict(jobs.values_list("pk", "lease_token"))
    assert all(worker_id == assigned[job_id] for job_id, worker_id, _ in executions)
    assert all(token == tokens[job_id] for job_id, _, token in executions)
    per_worker = Counter(assigned.values())
    assert set(per_worker) <= {w.pk for w in workers}
    over = {str(w): n for w, n in per_worker.items() if n > 300}
    assert not over, f"workers over their capacity of 300: {over}"

    per_process = [sum(map(int, TICK_LINE.findall(child.log()))) for child in children]
    print(f"jobs assigned per dispatcher: {per_process}")
    assert sum(per_process) == 5000, per_process
    if sum(1 for n in per_process if n) < 2:
        print(f"NOTE: only one dispatcher assigned anything (timing): {per_process}")


DISPATCHER_APP = "taskforge-test-dispatcher"


def dispatcher_backends() -> list[tuple[int, str | None, str | None, datetime, datetime | None]]:
    """(pid, wait_event_type, state, state_change, xact_start) of the dispatchers' connections."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, wait_event_type, state, state_change, xact_start FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            [DISPATCHER_APP],
        )
        return cursor.fetchall()


def claims_held_at_barrier() -> list[int]:
    """Pids of dispatchers waiting to claim, once every other one has ticked past the barrier.

    Before the fix all three wait. With worker rows locked SKIP LOCKED only one does, and the
    others find no free worker: they count once they went idle after the waiter began.
    """
    rows = dispatcher_backends()
    waiters = [row for row in rows if row[1] == "Lock"]
    if len(rows) < 3 or not waiters:
        return []
    since = min(row[4] for row in waiters if row[4] is not None)
    if all(row[1] == "Lock" or (row[2] == "idle" and row[3] > since) for row in rows):
        return [row[0] for row in waiters]
    return []


def transactions_ended(pids: list[int], since: datetime) -> bool:
    """Each backend in ``pids`` has ended the transaction it had open at ``since``."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s) AND xact_start <= %s",
            [pids, since],
        )
        return cursor.fetchone()[0] == 0


def test_concurrent_dispatchers_never_fill_a_worker_past_its_capacity(project, queue, tmp_path):
    unlimited_plan(project)
    [worker] = register_workers(project, 1, capacity=300)
    submit_pending(project, 1000)
    args = ("rundispatcher", "--poll-interval", "0.2", "--batch-size", "200")
    # A barrier: every claim statement inserts JobExecution rows, so while this transaction
    # holds SHARE on that table each dispatcher's claim waits after planning its slots.
    # Without worker row locks all three plan the same 300 free slots and claim 600.
    holder = connections.create_connection("default")
    try:
        holder.set_autocommit(False)
        with holder.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {JobExecution._meta.db_table} IN SHARE MODE")
        env = child_env(TASKFORGE_APPLICATION_NAME=DISPATCHER_APP)
        with running(args, args, args, log_dir=tmp_path, env=env) as children:
            wait_until(
                claims_held_at_barrier,
                message="every dispatcher at the claim barrier",
                children=children,
            )
            waiting = claims_held_at_barrier() or [row[0] for row in dispatcher_backends()]
            with connection.cursor() as cursor:
                cursor.execute("SELECT clock_timestamp()")
                released_at = cursor.fetchone()[0]
            holder.commit()
            wait_until(
                lambda: transactions_ended(waiting, released_at),
                message="the waiting claims to finish",
                children=children,
            )
            wait_until(
                lambda: processing(project).count() >= 300,
                message="the worker to fill up",
                children=children,
            )
            assigned = processing(project).filter(worker_id=worker.pk).count()
    finally:
        holder.close()

    total = processing(project).count()
    assert (assigned, total) == (300, 300), f"{assigned} jobs on a worker of capacity 300"


def test_sigterm_stops_the_dispatcher_without_leaving_a_job_half_claimed(project, queue, tmp_path):
    register_workers(project, 2, capacity=10_000)
    submit_pending(project, 20_000)
    args = ("rundispatcher", "--poll-interval", "0.2", "--batch-size", "500")

    with running(args, log_dir=tmp_path) as children:
        wait_until(
            lambda: processing(project).exists(),
            interval=0.01,
            message="the first processing job",
            children=children,
        )
        children[0].send(signal.SIGTERM)
        assert children[0].wait(timeout=30) == 0
        assert "received SIGTERM" in children[0].log()

    jobs = Job.objects.for_project(project)
    running_jobs = processing(project)
    running_count, pending_count = running_jobs.count(), pending(project).count()
    assert running_count > 0
    assert running_count + pending_count == jobs.count() == 20_000
    if pending_count == 0:
        print("NOTE: the dispatcher assigned every job before SIGTERM arrived (timing)")
    assert not running_jobs.filter(worker_id=None).exists()
    assert not running_jobs.filter(lease_token=None).exists()
    assert not running_jobs.filter(lease_expires_at=None).exists()
    tokens = dict(running_jobs.values_list("pk", "lease_token"))
    executions = list(
        JobExecution.objects.for_project(project).values_list("job_id", "lease_token", "status")
    )
    assert len(executions) == running_count
    assert {job_id: token for job_id, token, _ in executions} == tokens
    assert {status for _, _, status in executions} == {"started"}
    stray = pending(project).exclude(worker_id=None, lease_token=None, lease_expires_at=None)
    assert not stray.exists()
    assert not pending(project).exclude(attempts=0).exists()


def test_a_second_signal_makes_the_dispatcher_exit_at_once_with_a_nonzero_code(
    project, queue, tmp_path
):
    args = ("rundispatcher", "--poll-interval", "30")

    with running(args, log_dir=tmp_path) as children:
        dispatcher = children[0]
        wait_until(dispatcher_listening, message="the dispatcher to LISTEN", children=children)
        dispatcher.send(signal.SIGTERM)
        dispatcher.send(signal.SIGINT)
        # Exit code 1, not the graceful 0: the second signal gave up at once.
        code = dispatcher.wait(timeout=5)

    assert code == 1
    assert "received SIG" in dispatcher.log()


def test_a_first_sigterm_stops_an_idle_dispatcher_promptly_with_exit_code_0(
    project, queue, tmp_path
):
    args = ("rundispatcher", "--poll-interval", "30")

    with running(args, log_dir=tmp_path) as children:
        dispatcher = children[0]
        wait_until(dispatcher_listening, message="the dispatcher to LISTEN", children=children)
        dispatcher.send(signal.SIGTERM)
        try:
            code = dispatcher.wait(timeout=3)
        except subprocess.TimeoutExpired:
            code = None

    assert code == 0, "the dispatcher was still waiting out its poll interval 3 s after SIGTERM"


def test_rundispatcher_once_assigns_the_pending_jobs_and_returns(project, queue):
    register_workers(project, 1, capacity=5)
    submitted = submit_pending(project, 3)
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    level = logging.getLogger("taskforge").level
    try:
        call_command("rundispatcher", "--once", stdout=io.StringIO(), stderr=io.StringIO())
    finally:
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
        logging.getLogger("taskforge").setLevel(level)

    assert set(processing(project).values_list("pk", flat=True)) == set(submitted)
    worker = Worker.objects.for_project(project).get()
    assert not processing(project).exclude(worker_id=worker.pk).exists()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--batch-size", "--batch-size must be at least 1"),
        ("--poll-interval", "--poll-interval must be positive"),
    ],
)
def test_rundispatcher_rejects_a_non_positive_option_with_exit_code_2(option, message, tmp_path):
    with running(("rundispatcher", option, "0"), log_dir=tmp_path) as children:
        assert children[0].wait(timeout=60) == 2
    assert message in children[0].log()


def test_a_submit_wakes_an_idle_dispatcher_through_notify(project, queue, tmp_path):
    register_workers(project, 1, capacity=5)
    args = ("rundispatcher", "--poll-interval", "30")

    with running(args, log_dir=tmp_path) as children:
        wait_until(dispatcher_listening, message="the dispatcher to LISTEN", children=children)
        job, _ = services.submit_job(project, JobSpec(queue="default", job_type="noop"))
        submitted_at = time.monotonic()
        # Well under the 30 s poll interval: only the NOTIFY can have woken it.
        wait_until(
            lambda: processing(project).filter(pk=job.pk).exists(),
            timeout=10,
            message="the job to be assigned",
            children=children,
        )
        print(f"assigned {time.monotonic() - submitted_at:.3f}s after submit")

    assert JobExecution.objects.for_project(project).filter(job=job).count() == 1


def database_now() -> datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]


def most_started_within(starts: list[datetime], span: timedelta) -> int:
    """The most jobs started in any window [s, s + span) that opens at a start s."""
    return max(sum(1 for t in starts if s <= t < s + span) for s in starts)


# 0.1 s: both dispatchers tick all the time and race for the workers and the bucket.
# 30 s: no worker process sends results and nothing else is submitted, so after the submit's
# NOTIFY only waking when the next token is due starts jobs within the 5 s (the dispatcher
# that holds the workers does; the other one finds none free and waits out its poll).
@pytest.mark.parametrize("poll_interval", ["0.1", "30"])
def test_two_dispatchers_start_a_rate_limited_queues_jobs_at_its_rate(
    project, make_queue, tmp_path, poll_interval
):
    rate, burst = 2, 2  # burst = max(rate, 1)
    make_queue("limited", rate_limit_per_second=rate)
    for i in range(2):
        worker_services.register_worker(
            project,
            name=f"worker-{i}",
            queues=[worker_services.QueueWeight("limited")],
            capacity=50,
        )
    args = ("rundispatcher", "--poll-interval", poll_interval)
    second = timedelta(seconds=1)

    with running(args, args, log_dir=tmp_path) as children:
        wait_until(
            lambda: dispatchers_listening() == 2,
            message="two dispatchers to LISTEN",
            children=children,
        )
        specs = [JobSpec(queue="limited", job_type="noop") for _ in range(20)]
        services.submit_jobs(project, specs)
        wait_until(
            lambda: processing(project).exists(), message="the first start", children=children
        )
        first = processing(project).order_by("started_at").values_list("started_at", flat=True)[0]
        wait_until(
            lambda: database_now() >= first + 5.5 * second,
            message="5 s of starts",
            children=children,
        )
        # Started = claimed: the job's started_at (the claim's database time).
        starts = sorted(
            t for t in processing(project).values_list("started_at", flat=True) if t is not None
        )

    in_window = [t for t in starts if t <= first + 5 * second]
    offsets = [round((t - first).total_seconds(), 3) for t in in_window]
    per_process = [sum(map(int, TICK_LINE.findall(child.log()))) for child in children]
    print(f"started at +{offsets} s; jobs assigned per dispatcher: {per_process}")
    # A token bucket starts at most burst + rate * t jobs in any t seconds; "+ 1" forgives
    # the milliseconds between a claim's transaction start (started_at) and its token's time.
    assert most_started_within(in_window, second) <= burst + rate
    assert len(in_window) <= burst + rate * 5 + 1
    # Once the saved-up burst is spent, no second holds more than the rate (+ 1 as above).
    steady = [t for t in in_window if t >= first + second]
    assert most_started_within(steady, second) <= rate + 1
    # Not stuck: with a 30 s poll, the dispatcher woke for each token.
    assert len(in_window) >= 8
