"""POST/GET /api/v1/workers, PUT /workers/{id}/queues, POST /drain, DELETE /workers/{id}.

Each test flushes the database (transaction=True: the services are durable transactions), so
the refused-input cases of one endpoint share a test and name the case in their assertions.
"""

import json
import threading
from datetime import timedelta

import pytest
from django.db.models.functions import Now

from jobs.models import ExecutionStatus, Job, JobExecution, JobState
from taskforge.lib.errors import ValidationFailed
from tests.conftest import bearer
from tests.workers.conftest import InThread
from workers import services
from workers.dispatcher import Dispatcher
from workers.models import QueueWorkerAssignment, Worker, WorkerStatus

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/workers"
WORKER_FIELDS = {
    "id", "name", "worker_type", "status", "capacity", "last_heartbeat", "endpoint_url",
    "metadata", "job_types", "queues", "running", "created_at",
}  # fmt: skip


def register(client, **fields):
    body = {"name": "w1", "queues": [{"name": "default"}], **fields}
    return client.post(URL, json.dumps(body), content_type="application/json")


def assignments(worker_id):
    rows = QueueWorkerAssignment.objects.all_tenants().filter(worker_id=worker_id)
    return sorted(rows.values_list("queue__name", "weight", "is_active"))


def by_name(queues):
    return sorted(queues, key=lambda q: q["name"])


# --- register --------------------------------------------------------------------------------


@pytest.mark.covers("workers:list", "happy")
def test_it_registers_a_worker_with_201_and_its_queues(wapi, project, make_queue):
    make_queue("reports")
    response = register(
        wapi,
        worker_type="specialized_io",
        capacity=8,
        queues=[{"name": "default", "weight": 3}, {"name": "reports", "active": False}],
        endpoint_url="https://worker.example/jobs",
        metadata={"host": "box-1"},
    )
    assert response.status_code == 201, response.content
    data = response.json()
    assert set(data) == WORKER_FIELDS
    assert (data["name"], data["worker_type"], data["capacity"]) == ("w1", "specialized_io", 8)
    assert (data["status"], data["running"], data["metadata"]) == ("online", 0, {"host": "box-1"})
    assert data["last_heartbeat"] is not None
    assert by_name(data["queues"]) == [
        {"name": "default", "weight": 3, "active": True},
        {"name": "reports", "weight": 1, "active": False},
    ]
    worker = Worker.objects.for_project(project).get()
    assert str(worker.pk) == data["id"]
    assert assignments(worker.pk) == [("default", 3, True), ("reports", 1, False)]


@pytest.mark.covers("workers:list", "happy")
def test_the_same_name_again_re_registers_with_200_the_same_id_and_online(
    wapi, project, make_queue
):
    make_queue("reports")
    first = register(wapi, capacity=2)
    wapi.post(f"{URL}/{first.json()['id']}/drain")
    again = register(wapi, capacity=6, queues=[{"name": "reports", "weight": 2}])
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert (again.json()["capacity"], again.json()["status"]) == (6, "online")
    assert Worker.objects.for_project(project).count() == 1
    assert assignments(first.json()["id"]) == [("reports", 2, True)]


def test_concurrent_registrations_of_one_name_get_one_worker(make_api_key, project, queue):
    _, raw = make_api_key(scopes=["workers"])
    start = threading.Barrier(4)

    def register_at_once():
        client = bearer(raw)
        start.wait(5)
        response = register(client)
        return response.status_code, response.json()["id"]

    threads = [InThread(register_at_once) for _ in range(4)]
    for thread in threads:
        thread.start()
    answers = [thread.join_result() for thread in threads]
    assert sorted(status for status, _ in answers) == [200, 200, 200, 201]
    assert len({worker_id for _, worker_id in answers}) == 1
    assert Worker.objects.for_project(project).count() == 1


def test_re_registering_and_put_queues_report_the_running_count(wapi, fleet):
    worker = fleet.register()
    held = fleet.running(worker, 2)
    # The new registration still runs both (tests/workers/test_fault_recovery.py: the jobs it
    # does not name are failed as lost with the old process).
    again = register(wapi, running=[job["id"] for job in held])
    assert again.json()["running"] == 2
    put = wapi.put(f"{URL}/{worker}/queues", [{"name": "default"}], format="json")
    assert put.json()["running"] == 2


def test_an_unknown_queue_is_400_naming_it_and_changes_nothing(
    wapi, fleet, refused, snapshot, project
):
    before = snapshot()
    error = refused(
        register(wapi, queues=[{"name": "default"}, {"name": "nope"}]), 400, "validation_error"
    )
    assert "nope" in error["message"]
    assert error["details"] == {"field": "queues", "index": 1}
    assert snapshot() == before
    # Re-registering an existing worker with an unknown queue keeps its settings too.
    worker = fleet.register(capacity=2)
    before = snapshot()
    refused(register(wapi, capacity=9, queues=[{"name": "nope"}]), 400, "validation_error")
    assert snapshot() == before
    assert assignments(worker) == [("default", 1, True)]


BAD_REGISTRATIONS = [
    ({"capacity": 0}, "capacity"),
    ({"capacity": -1}, "capacity"),
    ({"capacity": 10_001}, "capacity"),
    ({"capacity": "many"}, "capacity"),
    ({"worker_type": "gpu"}, "worker_type"),
    ({"worker_type": None}, "worker_type"),
    ({"colour": "red"}, "colour"),
    ({"queues": []}, "queues"),
    ({"queues": "default"}, "queues"),
    ({"queues": [{"name": "default", "weight": 0}]}, "queues"),
    ({"queues": [{"name": "default", "speed": 1}]}, "queues"),
    ({"queues": [{}]}, "queues"),
    ({"name": ""}, "name"),
    ({"name": "a\u0000b"}, "name"),
    ({"name": "n" * 201}, "name"),
    ({"metadata": "x"}, "metadata"),
    ({"endpoint_url": "not a url"}, "endpoint_url"),
]


def test_a_bad_registration_is_400_naming_the_field_and_writes_nothing(wapi, refused, snapshot):
    before = snapshot()
    for fields, field in BAD_REGISTRATIONS:
        error = refused(register(wapi, **fields), 400, "validation_error")
        assert field in error["details"]["fields"], (fields, error)
    for text in ("{bad", "[]", '"w1"', ""):
        refused(wapi.post(URL, text, content_type="application/json"), 400, "validation_error")
    missing_queues = wapi.post(URL, {"name": "w1"}, format="json")
    assert "queues" in refused(missing_queues, 400, "validation_error")["details"]["fields"]
    twice = register(wapi, queues=[{"name": "default"}] * 2)
    assert refused(twice, 400, "validation_error")["details"] == {"field": "queues"}
    assert snapshot() == before


@pytest.mark.covers("workers:list", "cross_tenant")
def test_an_outsider_registers_its_own_worker_and_cannot_serve_our_queues(
    wapi, outsider, refused, snapshot, make_queue, project, other_project
):
    make_queue("ours-only")
    ours = register(wapi)
    before = snapshot()
    error = refused(register(outsider, queues=[{"name": "ours-only"}]), 400, "validation_error")
    assert "ours-only" in error["message"]
    assert snapshot() == before
    theirs = register(outsider)
    assert theirs.status_code == 201, theirs.content
    assert theirs.json()["id"] != ours.json()["id"]
    assert [str(w.pk) for w in Worker.objects.for_project(project)] == [ours.json()["id"]]
    assert Worker.objects.for_project(other_project).get().name == "w1"
    assert assignments(ours.json()["id"]) == [("default", 1, True)]


# --- job types -------------------------------------------------------------------------------


def stored_job_types(project):
    return Worker.objects.for_project(project).get().job_types


@pytest.mark.covers("workers:list", "happy")
def test_it_stores_and_shows_the_job_types_and_registering_again_replaces_them(wapi, project):
    first = register(wapi, job_types=["emails.send", "reports.build"])
    assert first.status_code == 201, first.content
    assert first.json()["job_types"] == ["emails.send", "reports.build"]
    assert stored_job_types(project) == ["emails.send", "reports.build"]
    assert wapi.get(URL).json()["results"][0]["job_types"] == ["emails.send", "reports.build"]

    again = register(wapi, job_types=["images.resize"])
    assert (again.status_code, again.json()["job_types"]) == (200, ["images.resize"])
    assert stored_job_types(project) == ["images.resize"]

    # Null, or no job_types at all: any type.
    assert register(wapi, job_types=None).json()["job_types"] is None
    assert stored_job_types(project) is None
    register(wapi, job_types=["a"])
    assert register(wapi).json()["job_types"] is None
    assert stored_job_types(project) is None


def test_job_types_at_the_limits_are_accepted(wapi, project):
    longest = "t" * 200
    many = [f"type-{i}" for i in range(999)] + [longest]
    response = register(wapi, job_types=many)
    assert response.status_code == 201, response.content
    assert stored_job_types(project) == many
    # An empty list is a worker that takes no job at all (not "any").
    assert register(wapi, job_types=[]).json()["job_types"] == []
    assert stored_job_types(project) == []


BAD_JOB_TYPES = [
    "emails.send",  # a string, not a list
    {"emails.send": True},
    [1],
    [None],
    [["a"]],
    [""],
    ["   "],  # blank once trimmed, as a submitted job_type would be
    ["t" * 201],
    ["a\u0000b"],
    ["a", "b", "a"],
    [f"type-{i}" for i in range(1001)],
    True,
]


def test_bad_job_types_are_400_naming_the_field_and_change_nothing(wapi, refused, project):
    register(wapi, job_types=["kept"])
    for job_types in BAD_JOB_TYPES:
        response = register(wapi, job_types=job_types)
        error = refused(response, 400, "validation_error")
        assert "job_types" in error["details"]["fields"], (job_types, error)
        assert stored_job_types(project) == ["kept"], job_types


def test_the_service_refuses_bad_job_types_too(project, queue):
    for job_types in (["a", "a"], [""], ["t" * 201], ["a\x00"], [7], "abc"):
        with pytest.raises(ValidationFailed) as caught:
            services.register_worker(
                project, name="w1", queues=[services.QueueWeight("default")], job_types=job_types
            )
        assert caught.value.details["field"] == "job_types", job_types
    assert not Worker.objects.for_project(project).exists()


# --- list ------------------------------------------------------------------------------------


@pytest.mark.covers("workers:list", "happy")
def test_the_list_shows_status_heartbeat_running_counts_and_queues(wapi, fleet, make_queue):
    make_queue("reports")
    busy = fleet.register("busy", capacity=5, queues=("default", "reports"))
    fleet.running(busy, 2)
    idle = fleet.register("idle", capacity=1, queues=("reports",))
    wapi.post(f"{URL}/{idle}/drain")

    response = wapi.get(URL)
    assert response.status_code == 200, response.content
    listed = {w["name"]: w for w in response.json()["results"]}
    assert set(listed) == {"busy", "idle"}
    assert (listed["busy"]["running"], listed["busy"]["status"]) == (2, "online")
    assert (listed["idle"]["running"], listed["idle"]["status"]) == (0, "draining")
    assert [q["name"] for q in by_name(listed["busy"]["queues"])] == ["default", "reports"]
    assert listed["idle"]["queues"] == [{"name": "reports", "weight": 1, "active": True}]
    assert all(w["last_heartbeat"] for w in listed.values())


@pytest.mark.covers("workers:list", "cross_tenant")
def test_the_list_never_shows_another_organizations_workers(wapi, outsider, fleet, other_fleet):
    fleet.register("ours")
    other_fleet.register("theirs")
    assert [w["name"] for w in wapi.get(URL).json()["results"]] == ["ours"]
    assert [w["name"] for w in outsider.get(URL).json()["results"]] == ["theirs"]


# --- PUT /workers/{id}/queues ----------------------------------------------------------------


@pytest.mark.covers("workers:queues", "happy")
def test_put_queues_replaces_the_assignments_and_the_fetch_follows(wapi, fleet, make_queue):
    make_queue("reports")
    worker = fleet.register(queues=("default",))
    body = [{"name": "reports", "weight": 3}, {"name": "default", "weight": 2, "active": False}]
    response = wapi.put(f"{URL}/{worker}/queues", body, format="json")
    assert response.status_code == 200, response.content
    assert by_name(response.json()["queues"]) == [
        {"name": "default", "weight": 2, "active": False},
        {"name": "reports", "weight": 3, "active": True},
    ]
    assert assignments(worker) == [("default", 2, False), ("reports", 3, True)]

    stays, moves = fleet.submit("default"), fleet.submit("reports")
    assert [j["id"] for j in fleet.poll(worker, max=10).json()["jobs"]] == [moves]
    jobs = Job.objects.all_tenants()
    assert (jobs.get(pk=stays).state, jobs.get(pk=moves).state) == ("pending", "processing")


def test_put_queues_refuses_an_unknown_queue_or_a_malformed_body(wapi, fleet, refused, snapshot):
    worker = fleet.register()
    path = f"{URL}/{worker}/queues"
    before = snapshot()
    error = refused(
        wapi.put(path, [{"name": "default"}, {"name": "nope"}], format="json"),
        400,
        "validation_error",
    )
    assert "nope" in error["message"]
    for body in (
        {"name": "default"},
        [{"name": "default", "weight": 0}],
        [{"name": "default", "x": 1}],
        [{"name": "default"}, {"name": "default"}],
        "x",
    ):
        refused(wapi.put(path, body, format="json"), 400, "validation_error")
    refused(wapi.put(path, "[", content_type="application/json"), 400, "validation_error")
    assert snapshot() == before


@pytest.mark.covers("workers:queues", "cross_tenant")
def test_put_queues_cannot_name_another_organizations_queue(
    outsider, other_fleet, refused, snapshot, make_queue
):
    make_queue("ours-only")
    theirs = other_fleet.register()
    before = snapshot()
    body = [{"name": "ours-only"}]
    refused(outsider.put(f"{URL}/{theirs}/queues", body, format="json"), 400, "validation_error")
    assert snapshot() == before


# --- drain -----------------------------------------------------------------------------------


@pytest.mark.covers("workers:drain", "happy")
def test_a_drained_worker_gets_no_new_assignments(wapi, fleet, project):
    worker = fleet.register()
    response = wapi.post(f"{URL}/{worker}/drain")
    assert (response.status_code, response.json()) == (200, {"status": "draining"})
    job = fleet.submit()
    assert fleet.poll(worker).json()["jobs"] == []
    assert Job.objects.for_project(project).get(pk=job).state == JobState.PENDING
    assert Worker.objects.for_project(project).get(pk=worker).status == WorkerStatus.DRAINING


@pytest.mark.covers("workers:drain", "happy")
def test_a_drained_worker_still_finishes_the_jobs_it_holds(wapi, fleet, project):
    worker = fleet.register()
    (running,) = fleet.running(worker)
    waiting = fleet.submit()
    wapi.post(f"{URL}/{worker}/drain")
    assert fleet.poll(worker).json()["jobs"] == []
    assert Job.objects.for_project(project).get(pk=waiting).state == JobState.PENDING
    body = {"lease_token": running["lease_token"]}
    done = wapi.post(f"/api/v1/jobs/{running['id']}/complete", body, format="json")
    assert (done.status_code, done.json()["state"]) == (200, "succeeded")


# --- deregister ------------------------------------------------------------------------------


@pytest.mark.covers("workers:detail", "happy")
def test_deregistering_removes_the_worker_and_its_assignments(wapi, fleet, project, refused):
    worker = fleet.register()
    response = wapi.delete(f"{URL}/{worker}")
    assert response.status_code == 204, response.content
    assert not Worker.objects.for_project(project).exists()
    assert assignments(worker) == []
    assert wapi.get(URL).json()["results"] == []
    refused(wapi.delete(f"{URL}/{worker}"), 404, "not_found")
    refused(wapi.delete(f"{URL}/9d72f23b-1b6d-4f3c-a09a-41b482e55b6c"), 404, "not_found")


@pytest.mark.covers("workers:detail", "happy")
def test_the_jobs_a_deregistered_worker_held_are_retried_by_lease_expiry(wapi, fleet, project):
    worker = fleet.register("gone", capacity=3)
    fetched = fleet.running(worker, 3)
    jobs = Job.objects.for_project(project)
    assert jobs.filter(state=JobState.PROCESSING).count() == 3

    assert wapi.delete(f"{URL}/{worker}").status_code == 204
    assert jobs.filter(state=JobState.PROCESSING, lease_expires_at__lte=Now()).count() == 3
    assert Dispatcher(batch_size=100).expire_leases() == 3
    assert set(jobs.values_list("state", "attempts")) == {(JobState.SCHEDULED, 1)}
    assert set(jobs.values_list("last_error", flat=True)) == {
        "lease expired: the worker stopped heartbeating"
    }
    executions = JobExecution.objects.for_project(project)
    assert set(executions.values_list("status", flat=True)) == {ExecutionStatus.TIMED_OUT}

    # The old worker's late result is refused; the retry runs on another worker.
    body = {"lease_token": fetched[0]["lease_token"]}
    late = wapi.post(f"/api/v1/jobs/{fetched[0]['id']}/complete", body, format="json")
    assert late.status_code == 409, late.content
    jobs.update(run_at=Now() - timedelta(seconds=1))
    assert Dispatcher(batch_size=100).promote_due() == 3
    other = fleet.register("other", capacity=3)
    again = fleet.poll(other).json()["jobs"]
    assert {(j["id"], j["attempt"]) for j in again} >= {(fetched[0]["id"], 2)}
    assert len(again) == 3
