"""GET /api/v1/workers/{id}/jobs?wait=&max=: the long-poll, which claims its jobs, and its
NOTIFY wake-up."""

import time

import pytest

from jobs.models import Job
from tests.conftest import bearer
from tests.workers.conftest import InThread, long_polls_waiting, wait_until
from workers import services as worker_services
from workers.api import RECHECK_SECONDS
from workers.models import Worker

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/workers"
JOB_FIELDS = {
    "id", "job_type", "payload", "attempt", "lease_token", "lease_expires_at", "timeout_seconds",
    "queue", "priority", "sub_priority", "created_at",
}  # fmt: skip


def timed(call):
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


@pytest.mark.covers("workers:jobs", "happy")
def test_wait_0_answers_at_once_with_no_jobs(fleet):
    worker = fleet.register()
    response, took = timed(lambda: fleet.poll(worker, wait=0))
    assert (response.status_code, response.json()) == (200, {"jobs": []})
    assert took < 1


@pytest.mark.covers("workers:jobs", "happy")
def test_it_answers_at_once_with_the_jobs_already_pending(fleet, project):
    worker = fleet.register()
    job = fleet.submit(job_type="emails.send", payload={"to": "a@b.c"}, timeout_seconds=90)
    response, took = timed(lambda: fleet.poll(worker, wait=20))
    assert took < 2
    assert response.status_code == 200, response.content
    (delivered,) = response.json()["jobs"]
    assert set(delivered) == JOB_FIELDS
    stored = Job.objects.for_project(project).get(pk=job)
    assert delivered["id"] == job
    assert (delivered["job_type"], delivered["payload"]) == ("emails.send", {"to": "a@b.c"})
    assert (delivered["attempt"], delivered["timeout_seconds"]) == (1, 90)
    assert (delivered["queue"], delivered["priority"], delivered["sub_priority"]) == (
        "default", stored.priority, stored.sub_priority,
    )  # fmt: skip
    assert delivered["created_at"] == stored.created_at.isoformat().replace("+00:00", "Z")
    assert delivered["lease_token"] == str(stored.lease_token)
    assert delivered["lease_expires_at"].endswith("Z")
    assert (stored.state, str(stored.worker_id), stored.attempts) == ("processing", worker, 1)
    # Delivered once: the next poll does not hand it over again.
    assert fleet.poll(worker, wait=0).json() == {"jobs": []}
    assert Job.objects.for_project(project).filter(delivered_at__isnull=False).count() == 1


@pytest.mark.covers("workers:jobs", "happy")
def test_a_submit_wakes_the_long_poll_well_before_wait_ends(fleet):
    worker = fleet.register()
    submitted_at = []

    def submit_once_the_poll_sleeps():
        wait_until(lambda: long_polls_waiting(worker) == 1)
        job = fleet.submit()
        submitted_at.append(time.monotonic())
        return job

    submitter = InThread(submit_once_the_poll_sleeps)
    submitter.start()
    response = fleet.poll(worker, wait=10)
    answered_at = time.monotonic()
    job = submitter.join_result()
    assert [j["id"] for j in response.json()["jobs"]] == [job]
    # Woken by the submit's NOTIFY, not by the periodic re-check nor the end of the wait.
    assert answered_at - submitted_at[0] < min(2.0, RECHECK_SECONDS / 2)


def test_a_submit_to_another_queue_does_not_hand_its_job_to_the_waiting_poll(fleet, project):
    from queues.models import Queue

    Queue.objects.create(organization=project.organization, project=project, name="other")
    worker = fleet.register(queues=("default",))

    def submit_elsewhere_once_the_poll_sleeps():
        wait_until(lambda: long_polls_waiting(worker) == 1)
        return fleet.submit("other")

    submitter = InThread(submit_elsewhere_once_the_poll_sleeps)
    submitter.start()
    assert fleet.poll(worker, wait=1).json() == {"jobs": []}
    job = submitter.join_result()
    assert Job.objects.for_project(project).get(pk=job).state == "pending"


def test_a_registered_worker_that_stops_polling_gets_no_new_jobs(fleet, project):
    """A poll is proof of life: jobs go to the worker that asks, never to one registered and
    heartbeating but not asking (a hung fetch loop, a process paused in a debugger)."""
    idle = fleet.register("idle", capacity=10)
    asking = fleet.register("asking", capacity=10)
    submitted = {fleet.submit() for _ in range(6)}
    jobs = fleet.poll(asking, max=10).json()["jobs"]
    assert {j["id"] for j in jobs} == submitted
    rows = Job.objects.for_project(project).filter(pk__in=submitted)
    assert {str(w) for w in rows.values_list("worker_id", flat=True)} == {asking}
    assert not Job.objects.for_project(project).filter(worker_id=idle).exists()


@pytest.mark.covers("workers:jobs", "happy")
def test_it_answers_no_jobs_once_wait_runs_out(fleet):
    worker = fleet.register()
    response, took = timed(lambda: fleet.poll(worker, wait=1))
    assert (response.status_code, response.json()) == (200, {"jobs": []})
    assert 1 <= took < 3


def test_bad_wait_or_max_is_400_naming_the_parameter(fleet, refused, snapshot):
    worker = fleet.register()
    fleet.submit()
    before = snapshot()
    for params in (
        {"wait": "31"},
        {"wait": "-1"},
        {"wait": "abc"},
        {"wait": "1.5"},
        {"wait": ""},
        {"max": "0"},
        {"max": "1001"},
        {"max": "x"},
        {"wait": "\u00b2"},
    ):
        response = fleet.workers.get(f"{URL}/{worker}/jobs", params)
        error = refused(response, 400, "validation_error")
        (name,) = params
        assert error["details"] == {"field": name}, params
        assert error["message"].startswith(name)
    assert snapshot() == before


def test_max_limits_how_many_jobs_one_poll_takes(fleet):
    worker = fleet.register(capacity=5)
    submitted = {fleet.submit() for _ in range(3)}
    first = fleet.poll(worker, max=2).json()["jobs"]
    second = fleet.poll(worker, max=2).json()["jobs"]
    assert (len(first), len(second)) == (2, 1)
    assert {j["id"] for j in first + second} == submitted


def test_without_max_a_poll_takes_up_to_the_workers_capacity(fleet):
    worker = fleet.register(capacity=2)
    for _ in range(3):
        fleet.submit()
    assert len(fleet.poll(worker).json()["jobs"]) == 2
    # Its two slots are busy: nothing more until one frees.
    assert fleet.poll(worker, max=5).json() == {"jobs": []}


def test_two_concurrent_long_polls_of_one_worker_get_each_job_once(fleet, make_api_key):
    worker = fleet.register(capacity=3)
    _, raw = make_api_key(scopes=["workers"])

    def poll():
        # One client per thread: each request runs on its thread's own connection.
        return bearer(raw).get(f"{URL}/{worker}/jobs", {"wait": 2}).json()["jobs"]

    polls = [InThread(poll), InThread(poll)]
    for thread in polls:
        thread.start()
    wait_until(lambda: long_polls_waiting(worker) == 2)
    submitted = {fleet.submit() for _ in range(5)}
    delivered = [job["id"] for thread in polls for job in thread.join_result()]
    # Each job once (each poll answers as soon as it has claimed one), and never more than
    # the worker's capacity between the two polls.
    assert len(delivered) == len(set(delivered))
    assert 2 <= len(delivered) <= 3
    assert set(delivered) <= submitted
    assert Job.objects.all_tenants().filter(state="processing").count() == len(delivered)


def test_a_draining_worker_gets_no_jobs(fleet, wapi):
    worker = fleet.register()
    wapi.post(f"{URL}/{worker}/drain")
    fleet.submit()
    assert fleet.poll(worker, wait=0).json() == {"jobs": []}
    assert Job.objects.all_tenants().get().state == "pending"


def test_a_poll_brings_a_worker_marked_offline_back_online(fleet):
    """A poll is proof of life, like a heartbeat: a worker the dispatcher marked offline for
    silence that polls is online again and gets jobs (answering nothing would make it poll
    again at once, in a loop, until its next heartbeat)."""
    worker = fleet.register()
    Worker.objects.all_tenants().filter(pk=worker).update(status="offline")
    job = fleet.submit()
    assert [j["id"] for j in fleet.poll(worker, wait=0).json()["jobs"]] == [job]
    assert Worker.objects.all_tenants().get(pk=worker).status == "online"


def test_a_viewer_cannot_take_a_workers_jobs_with_a_long_poll(fleet, viewer_jwt, refused):
    worker = fleet.register()
    job = fleet.submit()
    refused(fleet.poll(worker, client=viewer_jwt), 403, "permission_denied")
    assert [j["id"] for j in fleet.poll(worker).json()["jobs"]] == [job]


@pytest.mark.django_db(transaction=True)
def test_draining_wakes_a_waiting_long_poll_which_returns_at_once(make_api_key, queue):
    import threading

    from django.db import connections
    from rest_framework.test import APIClient

    _, raw = make_api_key(scopes=["workers"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    worker_id = client.post(
        "/api/v1/workers", {"name": "w", "queues": [{"name": "default"}]}, format="json"
    ).json()["id"]
    answered: list[float] = []

    def poll() -> None:
        started = time.monotonic()
        client.get(f"/api/v1/workers/{worker_id}/jobs?wait=20")
        answered.append(time.monotonic() - started)
        connections.close_all()

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.5)  # let the poll reach its wait
    worker = worker_services.get_worker(queue.project, worker_id)
    worker_services.drain_worker(queue.project, worker)
    thread.join(timeout=15)
    assert answered and answered[0] < 10
    # A draining worker's poll does not wait at all.
    started = time.monotonic()
    assert client.get(f"/api/v1/workers/{worker_id}/jobs?wait=20").json() == {"jobs": []}
    assert time.monotonic() - started < 5
