"""POST /api/v1/jobs/batch and GET /api/v1/batches/{id}: DAGs by ref, all or nothing."""

import json
import uuid

import pytest

from accounts.models import AuditLog
from jobs import services
from jobs.models import Batch, Job, JobDependency, JobState
from tests.api.conftest import WORK_QUEUE

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/jobs/batch"


def item(**fields):
    return {"queue": "default", "job_type": "t", **fields}


def submit(client, jobs):
    return client.post(URL, {"jobs": jobs}, format="json")


def assert_refused(api, snapshot, refused, data, status=400, code="validation_error"):
    before = snapshot()
    response = api.post(URL, json.dumps(data), content_type="application/json")
    error = refused(response, status, code)
    assert snapshot() == before
    return error


def names_index_2(error):
    """The serializer says "jobs.2.field" with details.fields.jobs["2"]; the service says
    "jobs[2].field" with details.index 2. Either names the job."""
    details, message = error["details"], error["message"]
    if details.get("index") == 2 and message.startswith("jobs[2]."):
        return True
    return message.startswith("jobs.2.") and set(details["fields"]["jobs"]) == {"2"}


# --- happy path: a DAG by refs ------------------------------------------------------------------


@pytest.mark.covers("jobs:batch", "happy")
def test_refs_make_a_dag_whose_children_wait_for_their_parents(api, project):
    response = submit(
        api,
        [
            item(ref="extract", job_type="etl.extract"),
            item(ref="transform", depends_on_refs=["extract"]),
            item(ref="load", depends_on_refs=["extract", "transform"]),
        ],
    )
    assert response.status_code == 201, response.content
    data = response.json()
    extract, transform, load = (job["id"] for job in data["jobs"])
    assert [job["state"] for job in data["jobs"]] == ["pending", "blocked", "blocked"]
    assert {job["batch_id"] for job in data["jobs"]} == {data["batch_id"]}
    assert data["jobs"][0]["job_type"] == "etl.extract"
    assert Batch.objects.for_project(project).get().total == 3

    root = api.get(f"/api/v1/jobs/{extract}").json()
    assert (root["parents"], sorted(root["children"])) == ([], sorted([transform, load]))
    leaf = api.get(f"/api/v1/jobs/{load}").json()
    assert (sorted(leaf["parents"]), leaf["children"]) == (sorted([extract, transform]), [])
    assert JobDependency.objects.for_org(project.organization).count() == 3


def test_a_batch_job_may_depend_on_an_existing_job_by_id(api, engine):
    parent = engine.submit()
    response = submit(api, [item(depends_on=[str(parent.pk)]), item()])
    assert response.status_code == 201, response.content
    assert [job["state"] for job in response.json()["jobs"]] == ["blocked", "pending"]


def test_a_batch_can_be_as_large_as_the_limit(api, project, settings):
    settings.TASKFORGE_MAX_BATCH_JOBS = 5
    response = submit(api, [item() for _ in range(5)])
    assert response.status_code == 201, response.content
    assert Job.objects.for_project(project).count() == 5


def test_a_ref_named_twice_still_releases_the_child(api, engine, project):
    engine.ensure_worker()
    jobs = [item(ref="a", queue=WORK_QUEUE), item(depends_on_refs=["a", "a"])]
    response = submit(api, jobs)
    if response.status_code == 400:  # refusing the duplicate is fine too
        return
    parent, child = (uuid.UUID(job["id"]) for job in response.json()["jobs"])
    services.complete_job(project, parent, lease_token=engine.claim()[parent].lease_token)
    assert Job.objects.for_project(project).get(pk=child).state == JobState.PENDING


# --- refused batches: nothing written ---------------------------------------------------------


def test_a_cycle_is_refused_with_its_path(api, snapshot, refused):
    jobs = [
        item(ref="a", depends_on_refs=["c"]),
        item(ref="b", depends_on_refs=["a"]),
        item(ref="c", depends_on_refs=["b"]),
    ]
    error = assert_refused(api, snapshot, refused, {"jobs": jobs})
    cycle = error["details"]["cycle"]
    assert len(cycle) == 4 and cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}
    assert "cycle" in error["message"]


def test_a_job_depending_on_itself_is_refused(api, snapshot, refused):
    error = assert_refused(api, snapshot, refused, {"jobs": [item(ref="a", depends_on_refs=["a"])]})
    assert error["details"]["index"] == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"priority": 12},
        {"priority": "high"},
        {"colour": "red"},
        {"queue": "nope"},
        {"job_type": "a\u0000b"},
        {"depends_on_refs": ["missing"]},
        {"depends_on": [str(uuid.UUID(int=7))]},
        {"ref": "first"},
        {"run_at": "2030-01-01T00:00:00Z", "delay_seconds": 5},
    ],
    ids=lambda bad: ",".join(bad),
)
def test_an_invalid_third_job_refuses_the_batch_naming_index_2(api, snapshot, refused, bad):
    jobs = [item(ref="first"), item(), item(**bad), item()]
    error = assert_refused(api, snapshot, refused, {"jobs": jobs})
    assert names_index_2(error), error


def test_a_nul_in_the_third_jobs_payload_refuses_the_batch_naming_index_2(api, snapshot, refused):
    text = (
        '{"jobs": [{"queue": "default", "job_type": "t"}, {"queue": "default", "job_type": "t"},'
        ' {"queue": "default", "job_type": "t", "payload": ["\\u0000"]}]}'
    )
    before = snapshot()
    error = refused(api.post(URL, text, content_type="application/json"), 400, "validation_error")
    assert error["details"] == {"field": "payload", "index": 2}
    assert snapshot() == before


def test_an_oversized_third_payload_refuses_the_batch_with_413(api, snapshot, refused, settings):
    settings.TASKFORGE_MAX_PAYLOAD_BYTES = 100
    jobs = [item(), item(), item(payload="x" * 200)]
    error = assert_refused(api, snapshot, refused, {"jobs": jobs}, 413, "payload_too_large")
    assert error["details"]["index"] == 2


def test_a_batch_over_the_limit_is_refused(api, snapshot, refused, settings):
    settings.TASKFORGE_MAX_BATCH_JOBS = 5
    error = assert_refused(api, snapshot, refused, {"jobs": [item() for _ in range(6)]})
    assert error["details"]["limit"] == 5


@pytest.mark.parametrize("data", [{"jobs": []}, {}, {"jobs": "x"}, {"jobs": [1]}, [item()]])
def test_an_empty_or_malformed_batch_is_refused(api, snapshot, refused, data):
    assert_refused(api, snapshot, refused, data)


def test_the_same_idempotency_key_twice_in_a_batch_is_refused(api, snapshot, refused):
    jobs = [item(idempotency_key="k"), item(idempotency_key="k")]
    assert_refused(api, snapshot, refused, {"jobs": jobs})


@pytest.mark.covers("jobs:batch", "cross_tenant")
def test_a_batch_cannot_depend_on_another_projects_job(api, snapshot, refused, other_engine):
    theirs = other_engine.submit()
    error = assert_refused(api, snapshot, refused, {"jobs": [item(depends_on=[str(theirs.pk)])]})
    assert error["details"] == {"field": "depends_on", "index": 0}


def test_a_malformed_json_body_is_refused(api, snapshot, refused):
    before = snapshot()
    refused(api.post(URL, '{"jobs": [', content_type="application/json"), 400, "validation_error")
    assert snapshot() == before


# --- on_parent_failure and graph limits --------------------------------------------------------


def test_on_parent_failure_is_stored_on_the_edges_and_shown_in_the_job_detail(api):
    response = submit(
        api, [item(ref="a"), item(ref="b", depends_on_refs=["a"], on_parent_failure="run")]
    )
    assert response.status_code == 201, response.content
    a, b = (job["id"] for job in response.json()["jobs"])
    child = api.get(f"/api/v1/jobs/{b}").json()
    assert child["parents"] == [a]
    assert child["parent_edges"] == [{"job": a, "on_parent_failure": "run"}]
    parent = api.get(f"/api/v1/jobs/{a}").json()
    assert parent["children"] == [b]
    assert parent["child_edges"] == [{"job": b, "on_parent_failure": "run"}]


def test_a_single_job_takes_on_parent_failure_too(api, engine):
    parent = engine.submit()
    body = {**item(), "depends_on": [str(parent.pk)], "on_parent_failure": "run"}
    response = api.post("/api/v1/jobs", body, format="json")
    assert response.status_code == 201, response.content
    detail = api.get(f"/api/v1/jobs/{response.json()['id']}").json()
    assert detail["parent_edges"] == [{"job": str(parent.pk), "on_parent_failure": "run"}]


def test_an_unknown_on_parent_failure_is_refused_naming_the_field(api, snapshot, refused):
    error = assert_refused(
        api, snapshot, refused, {"jobs": [item(), item(), item(on_parent_failure="ignore")]}
    )
    assert names_index_2(error), error
    assert "on_parent_failure" in error["message"]


def test_a_job_with_more_than_100_parents_is_refused_naming_the_field(api, snapshot, refused):
    parents = [item(ref=f"p{i}") for i in range(101)]
    jobs = [*parents, item(depends_on_refs=[p["ref"] for p in parents])]
    error = assert_refused(api, snapshot, refused, {"jobs": jobs})
    assert error["details"] == {"field": "depends_on_refs", "index": 101}


def test_a_batch_with_more_than_10000_edges_is_refused(api, snapshot, refused):
    roots = [item(ref=f"r{i}") for i in range(200)]
    children = [item(depends_on_refs=[f"r{(i + k) % 200}" for k in range(100)]) for i in range(101)]
    error = assert_refused(api, snapshot, refused, {"jobs": [*roots, *children]})
    assert error["details"] == {"field": "jobs", "limit": 10_000}


# --- batch callbacks ----------------------------------------------------------------------------

CALLBACK = {"queue": "default", "job_type": "batch.done", "payload": {"to": "ops"}}


@pytest.mark.parametrize(
    ("callback", "field"),
    [
        ({"queue": "nope", "job_type": "t"}, "on_complete.queue"),
        ({"queue": "default", "job_type": "t", "payload": [1]}, "on_complete.payload"),
        ({"queue": "default", "job_type": "t", "payload": {"batch": 1}}, "on_complete.payload"),
    ],
)
def test_an_invalid_callback_is_refused_naming_the_field(api, snapshot, refused, callback, field):
    error = assert_refused(api, snapshot, refused, {"jobs": [item()], "on_complete": callback})
    assert error["details"]["field"] == field
    assert error["message"].startswith(field)


@pytest.mark.parametrize(
    "callback",
    [
        {"queue": "default", "job_type": "t", "colour": "red"},
        {"queue": "default", "job_type": "t", "depends_on": []},
        {"queue": "default", "job_type": "t", "run_at": "2030-01-01T00:00:00Z"},
        {"queue": "default", "job_type": "t", "priority": 10},
        {"job_type": "t"},
        "batch.done",
    ],
    ids=["unknown", "depends_on", "run_at", "priority", "no-queue", "not-an-object"],
)
def test_a_malformed_callback_is_refused_naming_the_field(api, snapshot, refused, callback):
    error = assert_refused(api, snapshot, refused, {"jobs": [item()], "on_success": callback})
    assert "on_success" in error["details"]["fields"], error
    assert error["message"].startswith("on_success"), error


@pytest.mark.covers("jobs:batch-detail", "happy")
def test_batch_detail_shows_the_callbacks_and_the_jobs_they_enqueued(api, engine, project):
    response = api.post(
        URL, {"jobs": [item(), item()], "on_complete": CALLBACK, "on_success": CALLBACK},
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    batch_id = response.json()["batch_id"]
    url = f"/api/v1/batches/{batch_id}"
    data = api.get(url).json()
    expected = {
        "queue": "default", "job_type": "batch.done", "payload": {"to": "ops"}, "priority": 5,
        "max_attempts": None, "timeout_seconds": None, "tags": [],
    }  # fmt: skip
    assert (data["on_complete"], data["on_success"]) == (expected, expected)
    assert (data["callback_enqueued_at"], data["on_complete_job_id"]) == (None, None)
    assert data["on_success_job_id"] is None

    first, second = (job["id"] for job in response.json()["jobs"])
    api.post(f"/api/v1/jobs/{first}/cancel")
    api.post(f"/api/v1/jobs/{second}/cancel")
    data = api.get(url).json()
    assert data["finished"] is True
    assert data["callback_enqueued_at"] is not None
    assert data["on_success_job_id"] is None  # a cancelled job: not every job succeeded
    callback = api.get(f"/api/v1/jobs/{data['on_complete_job_id']}").json()
    assert callback["job_type"] == "batch.done"
    assert callback["payload"] == {
        "to": "ops",
        "batch": {
            "id": batch_id,
            "total": 2,
            "counts": {state: 0 for state in JobState.values} | {"cancelled": 2},
            "succeeded": False,
        },
    }


# --- GET /batches/{id} --------------------------------------------------------------------------


@pytest.mark.covers("jobs:batch-detail", "happy")
def test_batch_progress_counts_jobs_by_state_and_finishes_when_all_are_terminal(api, engine):
    batch = submit(api, [item(), item()]).json()
    first, second = (job["id"] for job in batch["jobs"])
    url = f"/api/v1/batches/{batch['batch_id']}"

    progress = api.get(url)
    assert progress.status_code == 200, progress.content
    data = progress.json()
    assert (data["id"], data["total"], data["finished"]) == (batch["batch_id"], 2, False)
    assert data["counts"] == {state: 0 for state in JobState.values} | {"pending": 2}

    api.post(f"/api/v1/jobs/{first}/cancel")
    data = api.get(url).json()
    assert (data["counts"]["pending"], data["counts"]["cancelled"]) == (1, 1)
    assert data["finished"] is False

    api.post(f"/api/v1/jobs/{second}/cancel")
    data = api.get(url).json()
    assert (data["counts"]["cancelled"], data["finished"]) == (2, True)


def test_a_batch_finishes_only_when_its_last_job_ends(api, engine, project):
    engine.ensure_worker()
    batch = engine.batch(3, queue=WORK_QUEUE)
    done, dead, running = batch.ids
    leases = engine.claim()
    services.complete_job(project, done, lease_token=leases[done].lease_token)
    services.fail_job(
        project, dead, lease_token=leases[dead].lease_token, error="x", retryable=False
    )
    url = f"/api/v1/batches/{batch.batch_id}"
    data = api.get(url).json()
    assert {k: v for k, v in data["counts"].items() if v} == {
        "succeeded": 1,
        "dead": 1,
        "processing": 1,
    }
    assert data["finished"] is False
    services.complete_job(project, running, lease_token=leases[running].lease_token)
    data = api.get(url).json()
    assert (data["counts"]["succeeded"], data["finished"]) == (2, True)


@pytest.mark.parametrize("batch_id", ["9d72f23b-1b6d-4f3c-a09a-41b482e55b6c", "not-a-uuid"])
def test_an_unknown_batch_is_404(api, refused, batch_id):
    refused(api.get(f"/api/v1/batches/{batch_id}"), 404, "not_found")


@pytest.mark.covers("jobs:batch-detail", "cross_tenant")
def test_another_projects_batch_is_404_like_a_missing_one(api, refused, other_engine):
    theirs = other_engine.batch(1).batch_id
    foreign = refused(api.get(f"/api/v1/batches/{theirs}"), 404, "not_found")
    missing_id = uuid.uuid4()
    missing = refused(api.get(f"/api/v1/batches/{missing_id}"), 404, "not_found")
    assert foreign["message"].replace(str(theirs), "<id>") == missing["message"].replace(
        str(missing_id), "<id>"
    )


@pytest.mark.covers("jobs:batch-detail", "cross_tenant")
def test_another_projects_batch_is_logged_for_staff_as_a_cross_tenant_attempt(
    api, org, other_engine, cross_tenant_denials
):
    theirs = other_engine.batch(1).batch_id
    assert api.get(f"/api/v1/batches/{theirs}").status_code == 404
    assert cross_tenant_denials(org) == [("batch", str(theirs))]
    assert not AuditLog.objects.for_org(org).filter(action__startswith="access.").exists()


# --- access -----------------------------------------------------------------------------------

CALLS = ["batch", "batch-detail"]


@pytest.mark.parametrize("name", CALLS)
def test_it_refuses_anonymous_callers(name, call_for, access):
    access.refuses_anonymous(call_for(name))


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.covers("jobs:batch", "access")
@pytest.mark.covers("jobs:batch-detail", "access")
def test_a_jobs_read_key_may_only_read(name, call_for, access):
    access.checks_the_key_scope(call_for(name))


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.covers("jobs:batch", "access")
@pytest.mark.covers("jobs:batch-detail", "access")
def test_a_viewer_may_only_read(name, call_for, access):
    access.lets_a_viewer_only_read(call_for(name))


@pytest.mark.parametrize("name", CALLS)
def test_a_member_may_submit_and_read(name, call_for, access):
    access.lets_a_member_in(call_for(name))


@pytest.mark.parametrize("name", CALLS)
def test_a_user_must_name_the_project(name, call_for, access):
    access.needs_the_project_header(call_for(name))


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.covers("jobs:batch", "cross_tenant")
@pytest.mark.covers("jobs:batch-detail", "cross_tenant")
def test_a_user_cannot_name_another_organizations_project(name, call_for, access):
    access.hides_a_foreign_project(call_for(name))
