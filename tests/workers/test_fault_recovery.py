"""Faults the engine recovers from without waiting out a lease (tests/e2e/test_faults.py runs
the same cases in real processes):

* a job row locked by another transaction: results and heartbeats skip it, the results
  answer ``busy`` for it (503 ``busy`` on the single-job endpoints), nothing waits;
* a worker re-registered under its name: what its old process held is failed as
  "worker restarted" and its slots are free again, except the jobs it says it still runs;
* a delivery no heartbeat acknowledges: its lease is the acknowledgement timeout, and a
  heartbeat naming the job gives it the whole lease;
* a web tier that is down or has just come back (its processes' beacons, workers/webtier.py):
  the dispatcher neither ends leases nor marks workers offline for a silence it caused.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from django.db.models import F
from django.db.models.functions import Now

from jobs.models import ExecutionStatus, Job, JobExecution, JobState
from taskforge import conf
from tests.processes import child_database_url
from tests.workers.conftest import InThread, wait_until
from workers import webtier
from workers.dispatcher import Dispatcher
from workers.models import WebProcess, Worker, WorkerStatus

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/v1"


def post(client, path, body):
    return client.post(path, json.dumps(body), content_type="application/json")


def job_row(job_id):
    return Job.objects.all_tenants().get(pk=job_id)


def lease_left(job_id) -> float:
    """Seconds the job's lease has left, by the database clock."""
    left = Job.objects.all_tenants().filter(pk=job_id).annotate(left=F("lease_expires_at") - Now())
    return left.values_list("left", flat=True).get().total_seconds()


@contextlib.contextmanager
def row_lock(job_id: str) -> Iterator[None]:
    """Hold FOR UPDATE on one job row from another connection until the block ends."""
    with psycopg.connect(child_database_url()) as conn:
        conn.execute("SELECT 1 FROM jobs_job WHERE id = %s FOR UPDATE", [job_id])
        try:
            yield
        finally:
            conn.rollback()


def succeeded(job):
    return {"job_id": job["id"], "lease_token": job["lease_token"], "status": "succeeded"}


# --- a locked row ----------------------------------------------------------------------------


def test_results_skip_a_locked_job_answer_busy_for_it_and_apply_the_others_at_once(wapi, fleet):
    worker = fleet.register(capacity=3)
    locked, done, failed = fleet.running(worker, 3)
    items = [
        succeeded(locked),
        succeeded(done),
        {"job_id": failed["id"], "lease_token": failed["lease_token"], "status": "failed",
         "error": "boom", "retryable": False},
    ]  # fmt: skip
    with row_lock(locked["id"]):
        # In a thread: today the request waits for the lock, and the test must not hang.
        request = InThread(
            lambda: post(wapi, f"{API}/workers/{worker}/results", {"results": items})
        )
        request.start()
        request.join(5)
        assert not request.is_alive(), "the results request waited for the locked row"
        response = request.join_result()
    assert response.status_code == 200, response.content
    assert [(o["job_id"], o["outcome"]) for o in response.json()["results"]] == [
        (locked["id"], "busy"),
        (done["id"], "succeeded"),
        (failed["id"], "dead"),
    ]
    assert job_row(locked["id"]).state == JobState.PROCESSING
    # Sent again once the lock is gone, the busy result is applied.
    again = post(wapi, f"{API}/workers/{worker}/results", {"results": [succeeded(locked)]})
    assert again.json()["results"] == [{"job_id": locked["id"], "outcome": "succeeded"}]
    assert job_row(locked["id"]).state == JobState.SUCCEEDED


def test_completing_or_failing_a_locked_job_is_503_busy_and_changes_nothing(
    wapi, fleet, refused, snapshot
):
    worker = fleet.register()
    (job,) = fleet.running(worker)
    with row_lock(job["id"]):
        before = snapshot()
        for path, body in (
            ("complete", {"lease_token": job["lease_token"], "result": 1}),
            ("fail", {"lease_token": job["lease_token"], "error": "x"}),
        ):
            request = InThread(lambda p=path, b=body: post(wapi, f"{API}/jobs/{job['id']}/{p}", b))
            request.start()
            request.join(5)
            assert not request.is_alive(), f"{path} waited for the locked row"
            error = refused(request.join_result(), 503, "busy")
            assert error["details"] == {"job_id": job["id"]}
        assert snapshot() == before


def test_a_heartbeat_does_not_wait_for_a_locked_job(wapi, fleet, settings):
    settings.TASKFORGE_ACK_TIMEOUT_SECONDS = 5
    worker = fleet.register(capacity=2)
    locked, free = fleet.running(worker, 2)
    with row_lock(locked["id"]):
        running = [locked["id"], free["id"]]
        request = InThread(
            lambda: post(wapi, f"{API}/workers/{worker}/heartbeat", {"running": running})
        )
        request.start()
        request.join(5)
        assert not request.is_alive(), "the heartbeat waited for the locked row"
        assert request.join_result().status_code == 200
    assert lease_left(free["id"]) > conf.lease_seconds() - 5
    assert lease_left(locked["id"]) <= 5


# --- restart under the same name -------------------------------------------------------------


def register(client, name="w1", **fields):
    body = {"name": name, "capacity": 2, "queues": [{"name": "default"}], **fields}
    response = post(client, f"{API}/workers", body)
    assert response.status_code in (200, 201), response.content
    return response.json()


def test_re_registering_a_name_fails_what_the_old_process_held_and_frees_its_slots(
    wapi, fleet, project
):
    worker = fleet.register("phoenix", capacity=2)
    held = fleet.running(worker, 2)
    assert fleet.poll(worker, max=2).json() == {"jobs": []}  # both slots busy

    again = register(wapi, "phoenix")
    assert again["id"] == worker
    assert again["running"] == 0
    jobs = Job.objects.for_project(project).filter(pk__in=[job["id"] for job in held])
    assert set(jobs.values_list("state", "attempts")) == {(JobState.SCHEDULED, 1)}
    assert set(jobs.values_list("last_error", flat=True)) == {
        "worker restarted: its new process does not run this job"
    }
    executions = JobExecution.objects.for_project(project)
    assert list(executions.values_list("status", flat=True)) == [ExecutionStatus.FAILED] * 2
    # Its slots are free: its next fetch takes two new jobs at once.
    fresh = {fleet.submit(), fleet.submit()}
    assert {job["id"] for job in fleet.poll(worker, max=10).json()["jobs"]} == fresh
    # The dead process's late result is refused.
    late = post(
        wapi, f"{API}/jobs/{held[0]['id']}/complete", {"lease_token": held[0]["lease_token"]}
    )
    assert late.status_code == 409


def test_re_registering_keeps_the_jobs_the_new_registration_says_it_runs(wapi, fleet, project):
    worker = fleet.register("steady", capacity=2)
    kept, dropped = fleet.running(worker, 2)
    again = register(wapi, "steady", running=[kept["id"]])
    assert again["running"] == 1
    assert job_row(kept["id"]).state == JobState.PROCESSING
    assert job_row(dropped["id"]).state == JobState.SCHEDULED
    body = {"lease_token": kept["lease_token"]}
    assert post(wapi, f"{API}/jobs/{kept['id']}/complete", body).status_code == 200


def test_re_registering_fails_a_job_out_of_attempts_as_dead(wapi, fleet, project):
    worker = fleet.register("phoenix", capacity=1)
    (job,) = fleet.running(worker, max_attempts=1)
    register(wapi, "phoenix")
    assert job_row(job["id"]).state == JobState.DEAD


# --- acknowledgement of a delivery -----------------------------------------------------------


def test_a_delivered_job_keeps_only_the_ack_timeout_until_a_heartbeat_names_it(
    wapi, fleet, settings
):
    settings.TASKFORGE_ACK_TIMEOUT_SECONDS = 10
    settings.TASKFORGE_LEASE_SECONDS = 600
    worker = fleet.register()
    (job,) = fleet.running(worker)
    assert 5 < lease_left(job["id"]) <= 10
    # Claimed and delivered by the same fetch: the ack timeout runs from the delivery.
    row = job_row(job["id"])
    assert row.delivered_at is not None
    assert (row.lease_expires_at - row.delivered_at).total_seconds() == 10
    assert (
        post(wapi, f"{API}/workers/{worker}/heartbeat", {"running": [job["id"]]}).status_code == 200
    )
    assert lease_left(job["id"]) > 590


def test_an_unacknowledged_delivery_is_retried_after_the_ack_timeout(fleet, settings):
    settings.TASKFORGE_ACK_TIMEOUT_SECONDS = 1
    worker = fleet.register()
    (job,) = fleet.running(worker)
    dispatcher = Dispatcher(batch_size=100)
    expired: list[int] = []
    wait_until(lambda: expired.append(dispatcher.expire_leases()) or sum(expired) == 1, 5)
    row = job_row(job["id"])
    assert (row.state, row.attempts, row.lease_token) == (JobState.SCHEDULED, 1, None)
    assert JobExecution.objects.all_tenants().get().status == ExecutionStatus.TIMED_OUT


# --- the web tier's silence ------------------------------------------------------------------


def web_process(*, started_ago: float, seen_ago: float) -> WebProcess:
    return WebProcess.objects.create(
        hostname="web-1",
        pid=1,
        started_at=Now() - timedelta(seconds=started_ago),
        last_seen=Now() - timedelta(seconds=seen_ago),
    )


def silent_worker_with_an_expired_lease(fleet) -> tuple[str, str]:
    worker = fleet.register()
    (job,) = fleet.running(worker)
    Job.objects.all_tenants().update(lease_expires_at=Now() - timedelta(seconds=1))
    silence = timedelta(seconds=conf.worker_timeout_seconds() + 10)
    Worker.objects.all_tenants().update(last_heartbeat=Now() - silence)
    return worker, job["id"]


def test_nothing_is_blamed_on_workers_while_the_web_tier_is_down(fleet):
    worker, job_id = silent_worker_with_an_expired_lease(fleet)
    web_process(started_ago=3600, seen_ago=60)  # it stopped beaconing a minute ago
    dispatcher = Dispatcher(batch_size=100)
    assert (dispatcher.expire_leases(), dispatcher.mark_silent_workers()) == (0, 0)
    assert job_row(job_id).state == JobState.PROCESSING
    assert Worker.objects.all_tenants().get(pk=worker).status == WorkerStatus.ONLINE


def test_nothing_is_blamed_on_workers_within_the_grace_after_the_web_tier_came_back(
    fleet, settings
):
    settings.TASKFORGE_WEB_RESTART_GRACE_SECONDS = 30
    worker, job_id = silent_worker_with_an_expired_lease(fleet)
    web_process(started_ago=5, seen_ago=0)
    dispatcher = Dispatcher(batch_size=100)
    assert (dispatcher.expire_leases(), dispatcher.mark_silent_workers()) == (0, 0)
    assert job_row(job_id).state == JobState.PROCESSING
    assert Worker.objects.all_tenants().get(pk=worker).status == WorkerStatus.ONLINE


def test_silence_counts_again_once_the_web_tier_is_up_for_longer_than_the_grace(fleet, settings):
    settings.TASKFORGE_WEB_RESTART_GRACE_SECONDS = 30
    worker, job_id = silent_worker_with_an_expired_lease(fleet)
    web_process(started_ago=60, seen_ago=0)
    web_process(started_ago=2, seen_ago=0)  # a sibling restarted just now changes nothing
    dispatcher = Dispatcher(batch_size=100)
    assert dispatcher.mark_silent_workers() == 1
    assert Worker.objects.all_tenants().get(pk=worker).status == WorkerStatus.OFFLINE
    assert dispatcher.expire_leases() == 1
    assert job_row(job_id).state == JobState.SCHEDULED


def test_beacons_stale_for_longer_than_an_hour_are_not_trusted(fleet):
    _, job_id = silent_worker_with_an_expired_lease(fleet)
    web_process(started_ago=7200, seen_ago=2 * webtier.FORGET_AFTER_SECONDS)
    assert Dispatcher(batch_size=100).expire_leases() == 1
    assert job_row(job_id).state == JobState.SCHEDULED


def test_a_web_process_beacons_while_it_runs_and_the_tier_is_down_once_it_stops(settings):
    settings.TASKFORGE_WEB_RESTART_GRACE_SECONDS = 0
    beacon = webtier.Beacon(interval=0.05)
    beacon.start()
    try:
        wait_until(WebProcess.objects.exists)
        first = WebProcess.objects.get()
        wait_until(lambda: WebProcess.objects.get().last_seen > first.last_seen)
        assert not webtier.silence_excused()
    finally:
        beacon.stop()
    # Stopped, not gone: no web process beacons, so the tier is down.
    assert WebProcess.objects.get().pk == first.pk
    assert webtier.silence_excused()
