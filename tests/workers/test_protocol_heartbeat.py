"""POST /api/v1/workers/{id}/heartbeat: leases of the named running jobs, status, revival."""

from datetime import timedelta

import pytest
from django.db.models import F
from django.db.models.functions import Now

from jobs.models import Job
from taskforge import conf
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
    assert (response.status_code, response.json()) == (200, {"status": "online"})
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
    assert (response.status_code, response.json()) == (200, {"status": "draining"})
    assert Worker.objects.for_project(project).get().status == WorkerStatus.DRAINING
    assert leases()[job["id"]] > conf.lease_seconds() - 5


def test_it_brings_a_worker_marked_offline_back_online(wapi, fleet, project):
    worker = fleet.register()
    Worker.objects.for_project(project).update(last_heartbeat=Now() - timedelta(hours=1))
    assert Dispatcher(batch_size=100).mark_silent_workers() == 1
    assert wapi.get(URL).json()["results"][0]["status"] == "offline"
    response = beat(wapi, worker)
    assert (response.status_code, response.json()) == (200, {"status": "online"})
    assert wapi.get(URL).json()["results"][0]["status"] == "online"
    job = fleet.submit()
    assert fleet.assign() == 1
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
    assert (response.status_code, response.json()) == (200, {"status": "online"})
    assert leases()[job["id"]] <= 5
