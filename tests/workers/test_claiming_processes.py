"""Claiming in real web processes: long-polls served by gunicorn (deploy/gunicorn.conf.py, one
process per server here, so each server is one process) against the test database.

Each web process has its own notification hub and its own round-robin state; the database is
all they share. So what one process claims must hold against what another claims at the same
moment (the rate limit's token bucket), and a submit made anywhere must wake a long-poll
waiting in any of them (the NOTIFY).
"""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import datetime, timedelta

import httpx
import pytest
from django.db import connection

from jobs import services
from jobs.models import Job, JobState
from jobs.specs import JobSpec
from tests.processes import wait_until
from tests.web.support import gunicorn, server_env
from tests.workers.conftest import InThread
from workers import services as worker_services
from workers.api import RECHECK_SECONDS

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ONE_PROCESS = ("--workers", "1", "--access-logfile", "/dev/null")


def worker_client(server, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=40)


def database_now() -> datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]


def long_poll_listening() -> bool:
    """A web process's notification hub has LISTENed (a long-poll subscribed)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'taskforge-longpoll' AND query LIKE 'LISTEN %%'"
        )
        return cursor.fetchone()[0] > 0


def test_a_submit_from_elsewhere_wakes_a_long_poll_waiting_in_a_web_process(
    tmp_path, project, queue, make_api_key
):
    worker, _ = worker_services.register_worker(
        project, name="w", queues=[worker_services.QueueWeight("default")], capacity=5
    )
    _, key = make_api_key(scopes=["workers"])
    with gunicorn(tmp_path, server_env(), *ONE_PROCESS) as web, worker_client(web, key) as client:

        def poll() -> tuple[list, float]:
            response = client.get(f"/api/v1/workers/{worker.pk}/jobs", params={"wait": 30})
            assert response.status_code == 200, response.text
            return response.json()["jobs"], time.monotonic()

        poller = InThread(poll)
        poller.start()
        wait_until(long_poll_listening, timeout=30, message="the long-poll to LISTEN")
        job, _ = services.submit_job(project, JobSpec(queue="default", job_type="t"))
        submitted_at = time.monotonic()
        jobs, answered_at = poller.join_result(timeout=40)

    assert [j["id"] for j in jobs] == [str(job.pk)]
    stored = Job.objects.for_project(project).get(pk=job.pk)
    assert (stored.state, stored.worker_id) == (JobState.PROCESSING, worker.pk)
    # Woken by the submit's NOTIFY (this test's process, another connection), not by the
    # poll's periodic re-check nor the end of its wait.
    print(f"answered {answered_at - submitted_at:.3f}s after the submit")
    assert answered_at - submitted_at < RECHECK_SECONDS


def most_started_within(starts: list[datetime], span: timedelta) -> int:
    """The most jobs started in any window [s, s + span) that opens at a start s."""
    return max(sum(1 for t in starts if s <= t < s + span) for s in starts)


def test_two_web_processes_polling_at_once_start_a_rate_limited_queues_jobs_at_its_rate(
    tmp_path, project, make_queue, make_api_key
):
    rate, burst = 2, 2  # burst = max(rate, 1)
    make_queue("limited", rate_limit_per_second=rate)
    workers = [
        worker_services.register_worker(
            project,
            name=f"worker-{i}",
            queues=[worker_services.QueueWeight("limited")],
            capacity=50,
        )[0]
        for i in range(2)
    ]
    _, key = make_api_key(scopes=["workers"])
    services.submit_jobs(project, [JobSpec(queue="limited", job_type="noop")] * 20)
    second = timedelta(seconds=1)
    processing = Job.objects.for_project(project).filter(state=JobState.PROCESSING)
    stop = threading.Event()
    together = threading.Barrier(2)

    with contextlib.ExitStack() as stack:
        webs = [
            stack.enter_context(gunicorn(tmp_path, server_env(), *ONE_PROCESS)) for _ in workers
        ]

        def poll_until_stopped(web, worker) -> int:
            # One worker per web process, each long-polling back to back as a worker does: no
            # result is ever sent, so only the bucket (and the poll waking when its next token
            # is due) decides when a job starts.
            got = 0
            with worker_client(web, key) as client:
                together.wait(timeout=30)
                while not stop.is_set():
                    response = client.get(
                        f"/api/v1/workers/{worker.pk}/jobs", params={"wait": 2, "max": 50}
                    )
                    assert response.status_code == 200, response.text
                    got += len(response.json()["jobs"])
            return got

        pollers = [
            InThread(lambda web=web, worker=worker: poll_until_stopped(web, worker))
            for web, worker in zip(webs, workers, strict=True)
        ]
        for poller in pollers:
            poller.start()
        try:
            wait_until(processing.exists, timeout=30, message="the first start")
            first = processing.order_by("started_at").values_list("started_at", flat=True)[0]
            wait_until(
                lambda: database_now() >= first + 5.5 * second, timeout=30, message="5 s of starts"
            )
        finally:
            stop.set()
            per_poller = [poller.join_result(timeout=30) for poller in pollers]
        # Started = claimed: the job's started_at (the claim's database time).
        starts = sorted(processing.values_list("started_at", flat=True))

    assert sum(per_poller) == len(starts)
    in_window = [t for t in starts if t <= first + 5 * second]
    offsets = [round((t - first).total_seconds(), 3) for t in in_window]
    print(f"started at +{offsets} s; jobs per web process: {per_poller}")
    # A token bucket starts at most burst + rate * t jobs in any t seconds; "+ 1" forgives
    # the milliseconds between a claim's transaction start (started_at) and its token's time.
    assert most_started_within(in_window, second) <= burst + rate
    assert len(in_window) <= burst + rate * 5 + 1
    # Once the saved-up burst is spent, no second holds more than the rate (+ 1 as above).
    steady = [t for t in in_window if t >= first + second]
    assert most_started_within(steady, second) <= rate + 1
    # Not stuck: the waiting polls woke when each token was due, not at their re-check.
    assert len(in_window) >= 8
