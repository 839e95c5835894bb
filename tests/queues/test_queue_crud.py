"""GET/POST /queues and GET/PATCH/DELETE /queues/{name}: shapes, validation, conflicts, audit."""

import pytest
from rest_framework.test import APIClient

from accounts.models import AuditLog, Project
from jobs import services as job_services
from jobs.models import Job, JobState
from jobs.specs import JobSpec
from queues.models import Queue
from workers import claiming
from workers import services as worker_services

pytestmark = pytest.mark.django_db(transaction=True)

DEFAULTS = {
    "priority": 5,
    "paused": False,
    "max_concurrency": None,
    "max_attempts": 5,
    "backoff": {"base_seconds": 1.0, "max_seconds": 3600.0, "multiplier": 2.0, "jitter": "full"},
    "timeout_seconds": 300,
    "rate_limit_per_second": None,
    "retention_days": 7,
}
FULL = {
    "name": "emails",
    "priority": 7,
    "max_concurrency": 20,
    "max_attempts": 8,
    "backoff": {"base_seconds": 2.0, "max_seconds": 600.0, "multiplier": 3.0, "jitter": "equal"},
    "timeout_seconds": 60,
    "rate_limit_per_second": 12.5,
    "retention_days": 14,
}
BAD_BODIES = [
    {},
    {"name": ""},
    {"name": "a/b"},
    {"name": "x" * 101},
    {"name": "émails"},
    {"name": " emails"},
    {"name": "emails\n"},
    {"name": ".."},
    {"name": 5},
    {"name": ["emails"]},
    {"name": None},
    {"name": "ok\x00"},
    {"name": "ok", "priority": 10},
    {"name": "ok", "priority": -1},
    {"name": "ok", "priority": "high"},
    {"name": "ok", "priority": True},
    {"name": "ok", "max_concurrency": 0},
    {"name": "ok", "max_attempts": 0},
    {"name": "ok", "max_attempts": 2.5},
    {"name": "ok", "backoff": "fast"},
    {"name": "ok", "backoff": None},
    {"name": "ok", "backoff": {"jitter": "random"}},
    {"name": "ok", "backoff": {"multiplier": 0.5}},
    {"name": "ok", "backoff": {"base_seconds": True}},
    {"name": "ok", "backoff": {"base_seconds": -1}},
    {"name": "ok", "backoff": {"speed": 1}},
    {"name": "ok", "backoff": {"base_seconds": 10, "max_seconds": 5}},
    {"name": "ok", "timeout_seconds": 0},
    {"name": "ok", "rate_limit_per_second": 0},
    {"name": "ok", "rate_limit_per_second": "fast"},
    {"name": "ok", "retention_days": 0},
    {"name": "ok", "paused": True},
    {"name": "ok", "colour": "red"},
]


@pytest.fixture
def api(make_api_key):
    _, raw = make_api_key(scopes=["queues:read", "queues:write"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def audit(org, action):
    return list(AuditLog.objects.for_org(org).filter(action=action))


def submit(project, queue="default", **fields):
    job, _ = job_services.submit_job(project, JobSpec(queue=queue, job_type="t", **fields))
    return job


def assert_refused(response, status=400, code="validation_error"):
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code


# --- create ------------------------------------------------------------------------------------


@pytest.mark.covers("queues:list", "happy")
def test_it_creates_a_queue_with_defaults(api, project):
    response = api.post("/api/v1/queues", {"name": "emails"}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert body.pop("created_at")
    assert body == {"name": "emails", **DEFAULTS}
    assert Queue.objects.for_project(project).filter(name="emails").exists()


def test_it_creates_a_queue_with_every_setting(api, project):
    response = api.post("/api/v1/queues", FULL, format="json")
    assert response.status_code == 201
    body = response.json()
    del body["created_at"]
    assert body == {**FULL, "paused": False}
    queue = Queue.objects.for_project(project).get(name="emails")
    assert (queue.backoff_base_seconds, queue.backoff_max_seconds) == (2.0, 600.0)
    assert (queue.backoff_multiplier, queue.backoff_jitter) == (3.0, "equal")


def test_it_takes_a_partial_backoff_on_create(api, project):
    response = api.post(
        "/api/v1/queues", {"name": "q", "backoff": {"max_seconds": 60}}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["backoff"] == {**DEFAULTS["backoff"], "max_seconds": 60.0}


def test_it_accepts_every_allowed_name_character(api):
    response = api.post("/api/v1/queues", {"name": "Az09_.:-x"}, format="json")
    assert response.status_code == 201
    assert api.get("/api/v1/queues/Az09_.:-x").json()["name"] == "Az09_.:-x"


def test_it_audits_a_created_queue(api, org, make_api_key):
    api.post("/api/v1/queues", FULL, format="json")
    [row] = audit(org, "queue.created")
    assert row.target_type == "queue"
    assert row.target_id == "emails"
    assert row.actor_api_key is not None
    assert row.metadata["settings"]["priority"] == 7
    assert row.metadata["settings"]["backoff_jitter"] == "equal"


def test_it_refuses_a_duplicate_name_with_409(api, org, project):
    response = api.post("/api/v1/queues", {"name": "default", "priority": 9}, format="json")
    assert_refused(response, 409, "conflict")
    assert response.json()["error"]["details"] == {"field": "name"}
    assert Queue.objects.for_project(project).get(name="default").priority == 5
    assert audit(org, "queue.created") == []


def test_a_name_used_in_another_project_is_free_here(api, project, make_queue):
    second = Project.objects.create(organization=project.organization, name="second")
    make_queue("emails", project=second)
    response = api.post("/api/v1/queues", {"name": "emails"}, format="json")
    assert response.status_code == 201


@pytest.mark.parametrize("body", BAD_BODIES)
def test_it_refuses_bad_input_on_create_and_writes_nothing(api, org, project, body):
    response = api.post("/api/v1/queues", body, format="json")
    assert_refused(response)
    assert list(Queue.objects.for_project(project).values_list("name", flat=True)) == ["default"]
    assert audit(org, "queue.created") == []


@pytest.mark.parametrize("raw", ["{not json", "[]", '"emails"', "null"])
def test_it_refuses_a_body_that_is_not_a_json_object(api, project, raw):
    response = api.post("/api/v1/queues", raw, content_type="application/json")
    assert_refused(response)
    assert Queue.objects.for_project(project).count() == 1


def test_validation_errors_name_the_field(api):
    response = api.post("/api/v1/queues", {"name": "ok", "priority": 10}, format="json")
    error = response.json()["error"]
    assert error["message"].startswith("priority:")
    assert "priority" in error["details"]["fields"]


# --- list and detail ---------------------------------------------------------------------------


@pytest.mark.covers("queues:list", "happy")
def test_it_lists_the_projects_queues_newest_first(api, make_queue):
    make_queue("a")
    make_queue("b")
    response = api.get("/api/v1/queues")
    assert response.status_code == 200
    body = response.json()
    assert [q["name"] for q in body["results"]] == ["b", "a", "default"]
    assert body["next"] is None
    assert set(body["results"][0]) == {"name", "created_at", *DEFAULTS}


def test_it_pages_the_queue_list(api, make_queue):
    make_queue("a")
    make_queue("b")
    first = api.get("/api/v1/queues?limit=2").json()
    assert [q["name"] for q in first["results"]] == ["b", "a"]
    second = api.get(first["next"]).json()
    assert [q["name"] for q in second["results"]] == ["default"]
    assert second["next"] is None


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=x", "cursor=nonsense"])
def test_it_refuses_bad_list_parameters(api, query):
    assert_refused(api.get(f"/api/v1/queues?{query}"))


def test_it_lists_only_this_projects_queues(api, project, other_queue, make_queue):
    second = Project.objects.create(organization=project.organization, name="second")
    make_queue("elsewhere", project=second)
    names = [q["name"] for q in api.get("/api/v1/queues").json()["results"]]
    assert names == ["default"]


@pytest.mark.covers("queues:detail", "happy")
def test_it_shows_one_queue(api, queue):
    response = api.get("/api/v1/queues/default")
    assert response.status_code == 200
    assert response.json()["name"] == "default"
    assert response.json()["backoff"] == DEFAULTS["backoff"]


def test_it_answers_404_for_a_missing_queue(api):
    response = api.get("/api/v1/queues/nope")
    assert_refused(response, 404, "not_found")


# --- update ------------------------------------------------------------------------------------


@pytest.mark.covers("queues:detail", "happy")
def test_it_updates_only_the_fields_sent(api, queue):
    body = {"priority": 8, "backoff": {"max_seconds": 60}, "max_concurrency": 3}
    response = api.patch("/api/v1/queues/default", body, format="json")
    assert response.status_code == 200
    assert response.json()["priority"] == 8
    assert response.json()["max_concurrency"] == 3
    assert response.json()["backoff"] == {**DEFAULTS["backoff"], "max_seconds": 60.0}
    queue.refresh_from_db()
    assert (queue.priority, queue.backoff_max_seconds, queue.backoff_base_seconds) == (8, 60, 1)


def test_it_clears_a_nullable_setting(api, make_queue):
    make_queue("capped", max_concurrency=4, rate_limit_per_second=2.0)
    body = {"max_concurrency": None, "rate_limit_per_second": None}
    response = api.patch("/api/v1/queues/capped", body, format="json")
    assert response.json()["max_concurrency"] is None
    assert response.json()["rate_limit_per_second"] is None


def test_it_audits_what_an_update_changed(api, org, queue):
    api.patch("/api/v1/queues/default", {"priority": 8, "max_attempts": 5}, format="json")
    [row] = audit(org, "queue.updated")
    assert row.target_id == "default"
    assert row.metadata["changes"] == {"priority": [5, 8]}
    assert row.metadata["queue_id"] == str(queue.pk)


def test_an_update_that_changes_nothing_writes_no_audit_row(api, org, queue):
    response = api.patch("/api/v1/queues/default", {"priority": 5}, format="json")
    assert response.status_code == 200
    assert audit(org, "queue.updated") == []


def test_it_renames_a_queue_and_keeps_its_jobs(api, project, queue):
    job = submit(project)
    response = api.patch("/api/v1/queues/default", {"name": "main"}, format="json")
    assert response.status_code == 200
    assert api.get("/api/v1/queues/default").status_code == 404
    assert api.get("/api/v1/queues/main").status_code == 200
    assert Job.objects.for_project(project).get(pk=job.pk).queue_id == queue.pk


def test_it_refuses_a_rename_onto_an_existing_name_with_409(api, org, queue, make_queue):
    make_queue("taken")
    response = api.patch("/api/v1/queues/default", {"name": "taken"}, format="json")
    assert_refused(response, 409, "conflict")
    queue.refresh_from_db()
    assert queue.name == "default"
    assert audit(org, "queue.updated") == []


def test_it_checks_the_backoff_against_the_stored_values(api, queue):
    # max_seconds is 3600 already: a base above it is refused though the body alone is fine.
    response = api.patch(
        "/api/v1/queues/default", {"backoff": {"base_seconds": 5000}}, format="json"
    )
    assert_refused(response)
    assert response.json()["error"]["details"] == {"field": "backoff.max_seconds"}
    queue.refresh_from_db()
    assert queue.backoff_base_seconds == 1.0


@pytest.mark.parametrize("body", [b for b in BAD_BODIES if b])
def test_it_refuses_bad_input_on_update_and_changes_nothing(api, org, queue, body):
    before = Queue.objects.for_project(queue.project).values().get(pk=queue.pk)
    response = api.patch("/api/v1/queues/default", body, format="json")
    assert_refused(response)
    assert Queue.objects.for_project(queue.project).values().get(pk=queue.pk) == before
    assert audit(org, "queue.updated") == []


def test_it_refuses_invalid_json_on_update(api, queue):
    response = api.patch("/api/v1/queues/default", "{", content_type="application/json")
    assert_refused(response)


def test_it_answers_404_when_updating_a_missing_queue(api):
    assert_refused(
        api.patch("/api/v1/queues/nope", {"priority": 1}, format="json"), 404, "not_found"
    )


# --- delete ------------------------------------------------------------------------------------


@pytest.mark.covers("queues:detail", "happy")
def test_it_deletes_an_empty_queue(api, org, project, make_queue):
    made = make_queue("old")
    response = api.delete("/api/v1/queues/old")
    assert response.status_code == 204
    assert not Queue.objects.for_project(project).filter(name="old").exists()
    [row] = audit(org, "queue.deleted")
    assert row.target_id == "old"
    assert row.metadata == {"queue_id": str(made.pk), "force": False, "jobs_deleted": 0}


@pytest.mark.parametrize("fields", [{}, {"delay_seconds": 3600}])
def test_it_refuses_to_delete_a_queue_with_unfinished_jobs(api, org, project, queue, fields):
    job = submit(project, **fields)
    response = api.delete("/api/v1/queues/default")
    assert_refused(response, 409, "conflict")
    assert response.json()["error"]["details"]["unfinished_jobs"] == {job.state: 1}
    assert Queue.objects.for_project(project).filter(pk=queue.pk).exists()
    assert Job.objects.for_project(project).filter(pk=job.pk).exists()
    assert audit(org, "queue.deleted") == []


def test_it_refuses_to_delete_a_queue_with_a_processing_job(api, project, queue):
    worker, _ = worker_services.register_worker(
        project, name="w", queues=[worker_services.QueueWeight("default")]
    )
    submit(project)
    assert len(claiming.claim(project, worker.pk, limit=10).jobs) == 1
    response = api.delete("/api/v1/queues/default")
    assert_refused(response, 409, "conflict")
    assert response.json()["error"]["details"]["unfinished_jobs"] == {JobState.PROCESSING: 1}


def test_it_force_deletes_a_queue_with_its_jobs(api, org, project, queue):
    jobs = [submit(project), submit(project)]
    response = api.delete("/api/v1/queues/default?force=true")
    assert response.status_code == 204
    assert not Queue.objects.for_project(project).filter(pk=queue.pk).exists()
    assert not Job.objects.for_project(project).filter(pk__in=[j.pk for j in jobs]).exists()
    [row] = audit(org, "queue.deleted")
    assert row.metadata["force"] is True
    assert row.metadata["jobs_deleted"] == 2


def test_it_deletes_a_queue_whose_jobs_all_finished(api, project, queue):
    job = submit(project)
    job_services.cancel_job(project, job.pk)
    assert api.delete("/api/v1/queues/default").status_code == 204
    assert not Job.objects.for_project(project).filter(pk=job.pk).exists()


def test_it_refuses_a_bad_force_value(api, project, queue):
    assert_refused(api.delete("/api/v1/queues/default?force=maybe"))
    assert Queue.objects.for_project(project).filter(pk=queue.pk).exists()


def test_it_answers_404_when_deleting_a_missing_queue(api):
    assert_refused(api.delete("/api/v1/queues/nope"), 404, "not_found")


@pytest.mark.django_db(transaction=True)
def test_force_delete_refuses_while_unfinished_jobs_have_children_in_other_queues(
    project, queue, make_queue
):
    from jobs import services as job_services
    from jobs.specs import JobSpec
    from taskforge.queue_ops import QueueNotEmpty, delete_queue

    make_queue("other")
    parent, _ = job_services.submit_job(project, JobSpec(queue="default", job_type="p"))
    job_services.submit_job(project, JobSpec(queue="other", job_type="c", depends_on=[parent.pk]))
    with pytest.raises(QueueNotEmpty) as refused:
        delete_queue(queue, force=True)
    assert refused.value.details["jobs_with_dependents_elsewhere"] == 1
    assert type(queue).objects.for_project(project).filter(pk=queue.pk).exists()
