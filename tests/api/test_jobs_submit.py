"""POST /api/v1/jobs: submission, idempotency, every refused input writes nothing."""

import json
import uuid

import pytest

from jobs import services
from jobs.models import Job, JobState

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/jobs"
JOB_FIELDS = {
    "id", "queue", "job_type", "payload", "state", "priority", "run_at", "attempts",
    "max_attempts", "idempotency_key", "tags", "result", "last_error", "worker", "created_at",
    "started_at", "finished_at", "batch_id",
}  # fmt: skip


def body(**fields):
    return {"queue": "default", "job_type": "emails.send", **fields}


def post(client, data):
    return client.post(URL, data, format="json")


def assert_refused(api, snapshot, refused, data, status=400, code="validation_error"):
    """Send ``data``; assert the error envelope and that no row changed; return the error."""
    before = snapshot()
    response = api.post(URL, json.dumps(data), content_type="application/json")
    error = refused(response, status, code)
    assert snapshot() == before
    return error


# --- happy path and idempotency -----------------------------------------------------------------


@pytest.mark.covers("jobs:list", "happy")
def test_it_creates_a_pending_job_with_the_documented_fields(api, project):
    response = post(api, body(payload={"user": 42}, priority=7, tags=["onboarding"]))
    assert response.status_code == 201, response.content
    job = response.json()
    assert set(job) >= JOB_FIELDS
    assert job["queue"] == "default"
    assert (job["job_type"], job["payload"], job["priority"]) == ("emails.send", {"user": 42}, 7)
    assert (job["state"], job["attempts"], job["tags"]) == ("pending", 0, ["onboarding"])
    assert job["batch_id"] is None
    stored = Job.objects.for_project(project).get(pk=job["id"])
    assert stored.payload == {"user": 42}


def test_it_schedules_a_job_with_delay_seconds(api):
    response = post(api, body(delay_seconds=3600))
    assert response.status_code == 201, response.content
    assert response.json()["state"] == JobState.SCHEDULED


def test_the_same_idempotency_key_in_the_body_returns_the_existing_job_with_200(api, project):
    first = post(api, body(idempotency_key="welcome-42"))
    assert first.status_code == 201, first.content
    again = post(api, body(idempotency_key="welcome-42", payload={"changed": True}))
    assert again.status_code == 200, again.content
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["payload"] == {}
    assert Job.objects.for_project(project).count() == 1


def test_the_idempotency_key_header_works_like_the_body_field(api, project):
    first = api.post(URL, body(), format="json", HTTP_IDEMPOTENCY_KEY="header-key")
    assert first.status_code == 201, first.content
    assert first.json()["idempotency_key"] == "header-key"
    again = api.post(URL, body(), format="json", HTTP_IDEMPOTENCY_KEY="header-key")
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
    in_body = post(api, body(idempotency_key="header-key"))
    assert (in_body.status_code, in_body.json()["id"]) == (200, first.json()["id"])
    assert Job.objects.for_project(project).count() == 1


def test_an_idempotent_repeat_shows_the_existing_jobs_queue(api, make_queue):
    make_queue("reports")
    first = post(api, body(idempotency_key="k"))
    again = post(api, body(idempotency_key="k", queue="reports"))
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
    assert again.json()["queue"] == "default"


def test_the_same_idempotency_key_in_another_project_is_another_job(api, outsider):
    ours = post(api, body(idempotency_key="k"))
    theirs = post(outsider, body(idempotency_key="k"))
    assert (ours.status_code, theirs.status_code) == (201, 201)
    assert ours.json()["id"] != theirs.json()["id"]


@pytest.mark.parametrize(
    "payload", [[1, "two", {"three": 3}], "just text", 42, 1.5, True, {"nested": {"a": [None]}}]
)
def test_it_accepts_any_json_value_as_the_payload(api, project, payload):
    response = post(api, body(payload=payload))
    assert response.status_code == 201, response.content
    assert response.json()["payload"] == payload
    assert Job.objects.for_project(project).get(pk=response.json()["id"]).payload == payload


def test_it_accepts_the_escaped_text_backslash_u0000_which_is_not_a_nul(api):
    response = post(api, body(payload={"s": "\\u0000"}))
    assert response.status_code == 201, response.content
    assert response.json()["payload"] == {"s": "\\u0000"}


def test_it_depends_on_a_job_of_its_own_project(api, engine):
    parent = engine.submit()
    response = post(api, body(depends_on=[str(parent.pk)]))
    assert response.status_code == 201, response.content
    assert response.json()["state"] == JobState.BLOCKED


def test_a_parent_named_twice_in_depends_on_still_releases_the_child(api, engine, project):
    parent, assigned = engine.start()
    response = post(api, body(depends_on=[str(parent.pk)] * 2))
    if response.status_code == 400:  # refusing the duplicate is fine too
        return
    assert response.status_code == 201, response.content
    services.complete_job(project, parent.pk, lease_token=assigned.lease_token)
    child = Job.objects.for_project(project).get(pk=response.json()["id"])
    assert (child.state, child.pending_parents) == (JobState.PENDING, 0)


# --- refused input: 400/413 envelope, nothing written -----------------------------------------


def test_it_refuses_a_body_that_is_not_json(api, snapshot, refused):
    before = snapshot()
    error = refused(api.post(URL, "{bad", content_type="application/json"), 400, "validation_error")
    assert "JSON" in error["message"]
    assert snapshot() == before


def test_it_refuses_a_json_body_that_is_not_an_object(api, snapshot, refused):
    assert_refused(api, snapshot, refused, [body()])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("priority", "high"),
        ("tags", "x"),
        ("depends_on", ["not-a-uuid"]),
        ("depends_on", "not-a-list"),
        ("queue", ["default"]),
        ("delay_seconds", "soon"),
        ("run_at", "tomorrow"),
        ("max_attempts", "many"),
    ],
)
def test_it_refuses_wrong_types_naming_the_field(api, snapshot, refused, field, value):
    error = assert_refused(api, snapshot, refused, body(**{field: value}))
    assert field in error["details"]["fields"]
    assert error["message"].startswith(field)


@pytest.mark.parametrize("missing", ["queue", "job_type"])
def test_it_refuses_a_job_without_a_required_field(api, snapshot, refused, missing):
    data = body()
    del data[missing]
    error = assert_refused(api, snapshot, refused, data)
    assert missing in error["details"]["fields"]


def test_it_refuses_an_unknown_field(api, snapshot, refused):
    error = assert_refused(api, snapshot, refused, body(colour="red"))
    assert error["details"]["fields"] == {"colour": ["Unknown field."]}


def test_it_refuses_an_unknown_queue(api, snapshot, refused):
    error = assert_refused(api, snapshot, refused, body(queue="nope"))
    assert error["details"]["field"] == "queue"


@pytest.mark.covers("jobs:list", "cross_tenant")
def test_it_refuses_the_queue_name_of_another_project(
    api, snapshot, refused, other_project, make_queue
):
    make_queue("reports", project=other_project)
    error = assert_refused(api, snapshot, refused, body(queue="reports"))
    assert error["details"]["field"] == "queue"
    assert not Job.objects.for_project(other_project).exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("priority", 12),
        ("priority", -1),
        ("max_attempts", 0),
        ("timeout_seconds", 0),
        ("delay_seconds", -5),
        ("tags", ["t"] * 21),
        ("tags", [""]),
        ("job_type", ""),
        ("idempotency_key", "k" * 256),
    ],
)
def test_it_refuses_values_out_of_range(api, snapshot, refused, field, value):
    error = assert_refused(api, snapshot, refused, body(**{field: value}))
    assert field in error["details"]["fields"]


def test_it_refuses_run_at_and_delay_seconds_together(api, snapshot, refused):
    data = body(run_at="2030-01-01T00:00:00Z", delay_seconds=10)
    error = assert_refused(api, snapshot, refused, data)
    assert "run_at" in error["message"]


def test_it_refuses_a_run_at_without_a_timezone(api, snapshot, refused):
    error = assert_refused(api, snapshot, refused, body(run_at="2030-01-01T00:00:00"))
    assert "run_at" in error["message"]


def test_it_refuses_a_nul_character_in_job_type(api, snapshot, refused):
    error = assert_refused(api, snapshot, refused, body(job_type="emails\u0000send"))
    assert "job_type" in error["details"]["fields"]


def test_it_refuses_a_nul_character_in_a_payload_string(api, snapshot, refused):
    before = snapshot()
    text = '{"queue": "default", "job_type": "t", "payload": {"s": "a\\u0000b"}}'
    response = api.post(URL, text, content_type="application/json")
    error = refused(response, 400, "validation_error")
    assert error["details"]["field"] == "payload"
    assert snapshot() == before


def test_it_refuses_a_nul_character_in_a_payload_key(api, snapshot, refused):
    before = snapshot()
    text = '{"queue": "default", "job_type": "t", "payload": {"a\\u0000": 1}}'
    refused(api.post(URL, text, content_type="application/json"), 400, "validation_error")
    assert snapshot() == before


def test_it_refuses_a_payload_over_the_cap_with_413(api, snapshot, refused, settings):
    settings.TASKFORGE_MAX_PAYLOAD_BYTES = 100
    assert post(api, body(payload={"s": "x" * 50})).status_code == 201
    error = assert_refused(
        api, snapshot, refused, body(payload={"s": "x" * 200}), 413, "payload_too_large"
    )
    assert error["details"]["limit_bytes"] == 100


def test_it_refuses_a_request_body_over_the_upload_limit_with_413(api, snapshot, refused, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    data = body(payload={"s": "x" * 5000})
    assert len(json.dumps(data)) > 5000
    error = assert_refused(api, snapshot, refused, data, 413, "payload_too_large")
    assert error["details"]["limit_bytes"] == 1000


@pytest.mark.covers("jobs:list", "cross_tenant")
def test_it_refuses_to_depend_on_a_job_of_another_project_like_a_missing_one(
    api, snapshot, refused, other_engine
):
    theirs = other_engine.submit(job_type="secret.type", payload={"secret": 1})
    missing = uuid.uuid4()
    foreign = assert_refused(api, snapshot, refused, body(depends_on=[str(theirs.pk)]))
    absent = assert_refused(api, snapshot, refused, body(depends_on=[str(missing)]))
    assert foreign["message"].replace(str(theirs.pk), "<id>") == absent["message"].replace(
        str(missing), "<id>"
    )
    assert foreign["details"] == absent["details"] == {"field": "depends_on"}
    assert "secret" not in json.dumps(foreign)


# --- access -----------------------------------------------------------------------------------


def test_it_refuses_anonymous_callers(call_for, access):
    access.refuses_anonymous(call_for("submit"))


@pytest.mark.covers("jobs:list", "access")
def test_it_refuses_a_key_without_jobs_write(call_for, access):
    access.checks_the_key_scope(call_for("submit"))


@pytest.mark.covers("jobs:list", "access")
def test_it_refuses_a_viewer(call_for, access):
    access.lets_a_viewer_only_read(call_for("submit"))


def test_a_member_submits_into_the_project_of_the_header(call_for, access, project):
    access.lets_a_member_in(call_for("submit"))
    assert Job.objects.for_project(project).count() == 1


def test_a_user_must_name_the_project(call_for, access):
    access.needs_the_project_header(call_for("submit"))


@pytest.mark.covers("jobs:list", "cross_tenant")
def test_a_user_cannot_name_another_organizations_project(call_for, access):
    access.hides_a_foreign_project(call_for("submit"))


@pytest.mark.covers("jobs:list", "cross_tenant")
def test_an_outsider_submits_into_its_own_project_only(outsider, project, other_project):
    response = post(outsider, body())
    assert response.status_code == 201, response.content
    assert Job.objects.for_project(other_project).filter(pk=response.json()["id"]).exists()
    assert not Job.objects.for_project(project).exists()
