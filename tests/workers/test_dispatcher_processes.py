"""``manage.py rundispatcher`` as real processes: racing promotions, signals, ``--once``.

The dispatcher hands no job to a worker (a worker's fetch claims its jobs: test_claiming.py,
test_claiming_processes.py); it promotes due jobs, fires schedules and sweeps leases and
silent workers. Each test starts dispatcher subprocesses against the test database
(tests/processes.py) and watches the jobs table with deadline polls; the children are always
stopped on the way out.
"""

import io
import logging
import re
import signal
import subprocess
from datetime import timedelta
from uuid import UUID

import pytest
from django.core.management import call_command
from django.db.models import QuerySet
from django.db.models.functions import Now

from accounts.models import Project
from jobs import services
from jobs.models import Job, JobExecution, JobState
from jobs.specs import JobSpec
from tests.processes import Child, running, wait_until
from workers import services as worker_services

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TICK_LINE = re.compile(r"tick: promoted=(\d+) ")


def submit_scheduled(project: Project, count: int) -> list[UUID]:
    """``count`` jobs delayed by an hour: make_due() makes them due at once."""
    ids: list[UUID] = []
    for start in range(0, count, 1000):
        specs = [
            JobSpec(queue="default", job_type="noop", delay_seconds=3600)
            for _ in range(min(1000, count - start))
        ]
        ids += [job.pk for job in services.submit_jobs(project, specs).jobs]
    return ids


def make_due(project: Project) -> int:
    return (
        Job.objects.for_project(project)
        .filter(state=JobState.SCHEDULED)
        .update(run_at=Now() - timedelta(seconds=1))
    )


def pending(project: Project) -> QuerySet[Job]:
    return Job.objects.for_project(project).filter(state=JobState.PENDING)


def scheduled(project: Project) -> QuerySet[Job]:
    return Job.objects.for_project(project).filter(state=JobState.SCHEDULED)


def started(child: Child) -> bool:
    """The dispatcher's loop runs: its signal handlers are installed and it logged its start."""
    return " started (poll " in child.log()


def test_three_dispatchers_racing_over_5000_due_jobs_promote_each_exactly_once(
    project, queue, tmp_path
):
    worker_services.register_worker(
        project, name="idle", queues=[worker_services.QueueWeight("default")], capacity=100
    )
    submitted = submit_scheduled(project, 5000)
    args = ("rundispatcher", "--poll-interval", "0.2", "--batch-size", "200")

    with running(args, args, args, log_dir=tmp_path) as children:
        # Due once all three are up, so they race: with the jobs due already, the first
        # process to boot promotes all 5,000 before the others connect.
        wait_until(
            lambda: all(started(child) for child in children),
            message="three dispatchers to start",
            children=children,
        )
        assert make_due(project) == 5000
        wait_until(
            lambda: not scheduled(project).exists(), message="no scheduled job", children=children
        )

    jobs = Job.objects.for_project(project)
    assert set(jobs.values_list("pk", flat=True)) == set(submitted)
    assert pending(project).count() == 5000
    # Promoted, and nothing more: no worker asked, so none holds a job.
    assert not jobs.exclude(worker_id=None, lease_token=None, attempts=0).exists()
    assert not JobExecution.objects.for_project(project).exists()
    # Each job promoted by one dispatcher only: the counts the three logged add up to 5,000.
    per_process = [sum(map(int, TICK_LINE.findall(child.log()))) for child in children]
    print(f"jobs promoted per dispatcher: {per_process}")
    assert sum(per_process) == 5000, per_process
    if sum(1 for n in per_process if n) < 2:
        print(f"NOTE: only one dispatcher promoted anything (timing): {per_process}")


def test_sigterm_stops_the_dispatcher_without_leaving_a_job_half_promoted(project, queue, tmp_path):
    submit_scheduled(project, 20_000)
    args = ("rundispatcher", "--poll-interval", "0.2", "--batch-size", "500")

    with running(args, log_dir=tmp_path) as children:
        wait_until(
            lambda: started(children[0]), message="the dispatcher to start", children=children
        )
        assert make_due(project) == 20_000
        wait_until(
            lambda: pending(project).exists(),
            interval=0.01,
            message="the first pending job",
            children=children,
        )
        children[0].send(signal.SIGTERM)
        assert children[0].wait(timeout=30) == 0
        log = children[0].log()
        assert "received SIGTERM" in log
        assert " stopped" in log

    pending_count, scheduled_count = pending(project).count(), scheduled(project).count()
    assert pending_count > 0
    assert pending_count + scheduled_count == Job.objects.for_project(project).count() == 20_000
    if scheduled_count == 0:
        print("NOTE: the dispatcher promoted every job before SIGTERM arrived (timing)")
    # Each promotion is one statement of at most 500 rows, and the stop waits for the step
    # under way: whole batches only, all of them in the log.
    assert pending_count % 500 == 0, pending_count
    assert sum(map(int, TICK_LINE.findall(log))) == pending_count
    assert not Job.objects.for_project(project).exclude(attempts=0, worker_id=None).exists()


def test_a_second_signal_makes_the_dispatcher_exit_at_once_with_a_nonzero_code(
    project, queue, tmp_path
):
    args = ("rundispatcher", "--poll-interval", "30")

    with running(args, log_dir=tmp_path) as children:
        dispatcher = children[0]
        wait_until(
            lambda: started(dispatcher), message="the dispatcher to start", children=children
        )
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
        wait_until(
            lambda: started(dispatcher), message="the dispatcher to start", children=children
        )
        dispatcher.send(signal.SIGTERM)
        try:
            code = dispatcher.wait(timeout=3)
        except subprocess.TimeoutExpired:
            code = None

    assert code == 0, "the dispatcher was still waiting out its poll interval 3 s after SIGTERM"


def test_rundispatcher_once_promotes_the_due_jobs_hands_none_out_and_returns(project, queue):
    worker, _ = worker_services.register_worker(
        project, name="w", queues=[worker_services.QueueWeight("default")], capacity=5
    )
    due = submit_scheduled(project, 3)
    make_due(project)
    [later] = submit_scheduled(project, 1)
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    level = logging.getLogger("taskforge").level
    try:
        call_command("rundispatcher", "--once", stdout=io.StringIO(), stderr=io.StringIO())
    finally:
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
        logging.getLogger("taskforge").setLevel(level)

    assert set(pending(project).values_list("pk", flat=True)) == set(due)
    assert list(scheduled(project).values_list("pk", flat=True)) == [later]
    # The online worker gets nothing until it asks.
    assert not Job.objects.for_project(project).filter(worker_id=worker.pk).exists()


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
