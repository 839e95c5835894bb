"""POST /api/v1/workers/{id}/heartbeat: leases of the named running jobs, status, revival,
the jobs cancelled while they ran (listed, held, released), all in one statement."""

import contextlib
import tempfile
import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.db.models import F
from django.db.models.functions import Now
from django.test.utils import CaptureQueriesContext

from jobs.models import Job, JobState
from taskforge import conf
from tests.workers.conftest import InThread
from workers import services
from workers.dispatcher import Dispatcher
from workers.models import Worker, WorkerStatus

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/workers"


def beat(client, worker_id, running=()):
    return client.post(f"{URL}/{worker_id}/heartbeat", {"running": list(running)}, format="json")


def leases():
    """{job id: seconds its lease has left}, read with the database's clock."""
    rows = Job.objects.all_tenants().annotate(left=F("lease_expires_at") - Now())
    return {str(pk): left.total_seconds() for pk, left in rows.values_list("pk", "left")}


@pytest.mark.covers("workers:heartbeat", "happy")
def test_it_extends_the_leases_of_the_named_running_jobs_only(wapi, fleet, make_queue):
    make_queue("other")
    worker = fleet.register("w1", queues=("default",))
    named, unnamed = (job["id"] for job in fleet.running(worker, 2))
    someone_else = fleet.register("w2", queues=("other",))
    (elsewhere,) = fleet.running(someone_else, queue="other")
    Job.objects.all_tenants().update(lease_expires_at=Now() + timedelta(seconds=5))

    response = beat(wapi, worker, [named, elsewhere["id"], "9d72f23b-1b6d-4f3c-a09a-41b482e55b6c"])
    assert (response.status_code, response.json()) == (200, {"status": "online", "cancelled": []})
    left = leases()
    assert conf.lease_seconds() - 5 < left[named] <= conf.lease_seconds()
    # Not named, or not this worker's: untouched.
    assert left[unnamed] <= 5 and left[elsewhere["id"]] <= 5


@pytest.mark.covers("workers:heartbeat", "happy")
def test_it_records_the_heartbeat_time(wapi, fleet, project):
    worker = fleet.register()
    Worker.objects.for_project(project).update(last_heartbeat=Now() - timedelta(hours=1))
    assert beat(wapi, worker).status_code == 200
    fresh = Worker.objects.for_project(project).filter(
        last_heartbeat__gt=Now() - timedelta(minutes=1)
    )
    assert fresh.exists()


def test_it_answers_draining_after_a_drain(wapi, fleet, project):
    worker = fleet.register()
    (job,) = fleet.running(worker)
    wapi.post(f"{URL}/{worker}/drain")
    response = beat(wapi, worker, [job["id"]])
    assert (response.status_code, response.json()) == (200, {"status": "draining", "cancelled": []})
    assert Worker.objects.for_project(project).get().status == WorkerStatus.DRAINING
    assert leases()[job["id"]] > conf.lease_seconds() - 5


def test_it_brings_a_worker_marked_offline_back_online(wapi, fleet, project):
    worker = fleet.register()
    Worker.objects.for_project(project).update(last_heartbeat=Now() - timedelta(hours=1))
    assert Dispatcher(batch_size=100).mark_silent_workers() == 1
    assert wapi.get(URL).json()["results"][0]["status"] == "offline"
    response = beat(wapi, worker)
    assert (response.status_code, response.json()) == (200, {"status": "online", "cancelled": []})
    assert wapi.get(URL).json()["results"][0]["status"] == "online"
    job = fleet.submit()
    assert [j["id"] for j in fleet.poll(worker).json()["jobs"]] == [job]


def test_a_bad_heartbeat_is_400_and_changes_nothing(wapi, fleet, refused, snapshot):
    worker = fleet.register()
    fleet.running(worker)
    before = snapshot()
    path = f"{URL}/{worker}/heartbeat"
    for body in ({"running": "all"}, {"running": ["not-a-uuid"]}, {"colour": "red"}, [1]):
        refused(wapi.post(path, body, format="json"), 400, "validation_error")
    refused(wapi.post(path, "{", content_type="application/json"), 400, "validation_error")
    refused(beat(wapi, "9d72f23b-1b6d-4f3c-a09a-41b482e55b6c"), 404, "not_found")
    assert snapshot() == before


@pytest.mark.covers("workers:heartbeat", "cross_tenant")
def test_an_outsiders_heartbeat_cannot_extend_our_leases(outsider, fleet, other_fleet):
    ours = fleet.register()
    (job,) = fleet.running(ours)
    Job.objects.all_tenants().update(lease_expires_at=Now() + timedelta(seconds=5))
    theirs = other_fleet.register()
    response = beat(outsider, theirs, [job["id"]])
    assert (response.status_code, response.json()) == (200, {"status": "online", "cancelled": []})
    assert leases()[job["id"]] <= 5


# --- jobs cancelled while they run -----------------------------------------------------------


def cancel(client, job_id):
    response = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.content


def row(job_id):
    return Job.objects.all_tenants().get(pk=job_id)


def held(job_id):
    """The job is cancelled and still holds its worker's slot."""
    job = row(job_id)
    return job.state == JobState.CANCELLED and job.lease_expires_at is not None


@pytest.mark.covers("workers:heartbeat", "happy")
def test_the_answer_lists_the_named_jobs_cancelled_while_they_ran_and_keeps_them_held(
    wapi, fleet, submitter
):
    worker = fleet.register(capacity=4)
    cancelled, running = (job["id"] for job in fleet.running(worker, 2))
    cancel(submitter, cancelled)
    assert held(cancelled) and str(row(cancelled).worker_id) == worker
    Job.objects.all_tenants().update(lease_expires_at=Now() + timedelta(seconds=5))

    response = beat(wapi, worker, [cancelled, running])

    assert response.status_code == 200, response.content
    assert response.json() == {"status": "online", "cancelled": [cancelled]}
    left = leases()
    # Both pushed back: the running job's lease, and the cancelled one's hold on the slot.
    assert conf.lease_seconds() - 5 < left[cancelled] <= conf.lease_seconds()
    assert conf.lease_seconds() - 5 < left[running] <= conf.lease_seconds()
    assert row(cancelled).state == JobState.CANCELLED and row(cancelled).lease_token is None


def test_a_heartbeat_that_no_longer_names_a_held_job_releases_it(wapi, fleet, submitter):
    worker = fleet.register(capacity=4)
    cancelled, running = (job["id"] for job in fleet.running(worker, 2))
    cancel(submitter, cancelled)

    response = beat(wapi, worker, [running])

    assert response.json() == {"status": "online", "cancelled": []}
    assert row(cancelled).lease_expires_at is None  # released: the slot counts free
    assert str(row(cancelled).worker_id) == worker  # still says where it ran
    assert row(running).state == JobState.PROCESSING and row(running).lease_expires_at

    # Named again (a worker that missed the first answer): told again, but no longer held.
    again = beat(wapi, worker, [cancelled, running])
    assert again.json() == {"status": "online", "cancelled": [cancelled]}
    assert row(cancelled).lease_expires_at is None


def test_an_empty_heartbeat_releases_every_held_job_of_this_worker_only(
    wapi, fleet, submitter, make_queue
):
    make_queue("other")
    worker = fleet.register("w1", capacity=4)
    mine = [job["id"] for job in fleet.running(worker, 2)]
    other = fleet.register("w2", queues=("other",))
    (theirs,) = fleet.running(other, queue="other")
    for job_id in [*mine, theirs["id"]]:
        cancel(submitter, job_id)

    assert beat(wapi, worker).json() == {"status": "online", "cancelled": []}

    assert not held(mine[0]) and not held(mine[1])
    assert held(theirs["id"])


def test_another_workers_cancelled_job_is_neither_listed_nor_held(
    wapi, fleet, submitter, make_queue
):
    make_queue("other")
    worker = fleet.register("w1")
    other = fleet.register("w2", queues=("other",))
    (theirs,) = fleet.running(other, queue="other")
    cancel(submitter, theirs["id"])
    Job.objects.all_tenants().update(lease_expires_at=Now() + timedelta(seconds=5))

    assert beat(wapi, worker, [theirs["id"]]).json() == {"status": "online", "cancelled": []}
    assert 0 < leases()[theirs["id"]] <= 5


def test_a_held_job_whose_row_is_locked_is_skipped_not_waited_for(wapi, fleet, submitter):
    # Another transaction holds the held job's row: the heartbeat neither waits for it nor
    # fails; the next heartbeat releases it.
    worker = fleet.register(capacity=2)
    (job,) = fleet.running(worker)
    cancel(submitter, job["id"])
    locked, release = threading.Event(), threading.Event()

    def hold_row():
        with transaction.atomic():
            Job.objects.all_tenants().select_for_update().get(pk=job["id"])
            locked.set()
            release.wait(10)

    holder = InThread(hold_row)
    holder.start()
    assert locked.wait(10)
    try:
        assert beat(wapi, worker).json() == {"status": "online", "cancelled": []}
        assert held(job["id"])
    finally:
        release.set()
        holder.join_result()
    beat(wapi, worker)
    assert not held(job["id"])


# --- one statement ---------------------------------------------------------------------------


@contextlib.contextmanager
def statements_sent():
    """Count the statements the server completes on Django's connection (libpq's protocol
    trace: one CommandComplete per statement, BEGIN and COMMIT included)."""
    connection.ensure_connection()
    pgconn = connection.connection.pgconn
    counted: list[int] = []
    with tempfile.TemporaryFile() as trace:
        pgconn.trace(trace.fileno())
        try:
            yield counted
        finally:
            pgconn.untrace()
        trace.seek(0)
        lines = trace.read().decode(errors="replace").splitlines()
    counted.append(sum(1 for line in lines if "\tCommandComplete\t" in line))


def test_a_heartbeat_is_one_statement(wapi, fleet, submitter, project):
    # The heartbeat service itself: the worker, the leases of the named jobs, the cancelled
    # ones and the release of the unnamed held ones, in one statement without a transaction
    # block. The request around it looks up its API key and the worker first (the tenant
    # checks every request makes), which are not counted here.
    worker_id = fleet.register(capacity=4)
    a, b, c = (job["id"] for job in fleet.running(worker_id, 3))
    cancel(submitter, a)
    cancel(submitter, b)
    worker = Worker.objects.for_project(project).get(pk=worker_id)

    with CaptureQueriesContext(connection) as orm, statements_sent() as sent:
        answer = services.heartbeat(project, worker, running=[uuid.UUID(a), uuid.UUID(c)])

    assert sent == [1]
    assert len(orm.captured_queries) == 0  # and none through Django's cursors
    assert (answer.status, [str(i) for i in answer.cancelled]) == ("online", [a])
    assert held(a) and not held(b)


def test_a_held_job_keeps_the_slot_busy_until_a_heartbeat_no_longer_names_it(
    wapi, fleet, submitter
):
    worker = fleet.register(capacity=1)
    (job,) = fleet.running(worker)
    cancel(submitter, job["id"])
    waiting = fleet.submit()

    assert beat(wapi, worker, [job["id"]]).json()["cancelled"] == [job["id"]]
    assert fleet.poll(worker).json()["jobs"] == []  # the slot is still taken
    assert beat(wapi, worker, []).json()["cancelled"] == []
    assert [j["id"] for j in fleet.poll(worker).json()["jobs"]] == [waiting]
