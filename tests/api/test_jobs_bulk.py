"""POST /api/v1/jobs/bulk: cancel, retry or delete by ids or by filter; audit; access."""

import json

import pytest

from accounts.models import AuditLog
from jobs.models import Job, JobState

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/jobs/bulk"


def bulk(client, action, **target):
    return client.post(URL, {"action": action, **target}, format="json")


def id_list(*jobs):
    return [str(job.pk) for job in jobs]


def states(project):
    return dict(Job.objects.for_project(project).values_list("pk", "state"))


def assert_affected(response, count):
    assert response.status_code == 200, response.content
    assert response.json() == {"affected": count}


def bulk_audit(org, action):
    return list(
        AuditLog.objects.for_org(org)
        .filter(action=f"jobs.bulk_{action}")
        .values_list("metadata", flat=True)
    )


# --- by ids -----------------------------------------------------------------------------------


@pytest.mark.covers("jobs:bulk", "happy")
def test_cancel_by_ids_cancels_those_jobs_only_and_audits(api, engine, org, project):
    first, second, untouched = engine.submit(), engine.submit(), engine.submit()
    assert_affected(bulk(api, "cancel", ids=id_list(first, second)), 2)
    assert states(project) == {
        first.pk: JobState.CANCELLED,
        second.pk: JobState.CANCELLED,
        untouched.pk: JobState.PENDING,
    }
    assert bulk_audit(org, "cancel") == [{"affected": 2, "by": "ids"}]


def test_cancel_by_ids_skips_finished_jobs(api, engine, project):
    pending, done = engine.submit(), engine.succeeded()
    assert_affected(bulk(api, "cancel", ids=id_list(pending, done)), 1)
    assert states(project)[done.pk] == JobState.SUCCEEDED


def test_retry_by_ids_retries_dead_and_cancelled_jobs_only(api, engine, org, project):
    dead, cancelled, pending = engine.dead(), engine.cancelled(), engine.submit()
    assert_affected(bulk(api, "retry", ids=id_list(dead, cancelled, pending)), 2)
    assert set(states(project).values()) == {JobState.PENDING}
    assert Job.objects.for_project(project).get(pk=dead.pk).attempts == 0
    assert bulk_audit(org, "retry") == [{"affected": 2, "by": "ids"}]


def test_delete_by_ids_removes_the_jobs_but_not_a_running_one(api, engine, org, project):
    pending, done, running = engine.submit(), engine.succeeded(), engine.processing()
    assert_affected(bulk(api, "delete", ids=id_list(pending, done, running)), 2)
    assert set(states(project)) == {running.pk}
    assert bulk_audit(org, "delete") == [{"affected": 2, "by": "ids"}]


@pytest.mark.covers("jobs:bulk", "cross_tenant")
def test_bulk_by_ids_ignores_another_projects_jobs(api, engine, other_engine, other_project):
    ours, theirs = engine.submit(), other_engine.submit()
    for action, expected in (("cancel", 1), ("retry", 1), ("delete", 1)):
        assert_affected(bulk(api, action, ids=id_list(ours, theirs)), expected)
    assert states(other_project) == {theirs.pk: JobState.PENDING}


def test_an_empty_id_list_affects_nothing(api, engine, project):
    engine.submit()
    assert_affected(bulk(api, "cancel", ids=[]), 0)
    assert set(states(project).values()) == {JobState.PENDING}


# --- by filter --------------------------------------------------------------------------------


def test_cancel_by_filter_cancels_the_matching_jobs(api, engine, org, project, make_queue):
    make_queue("reports")
    mail = [engine.submit(job_type="emails.send") for _ in range(2)]
    other = engine.submit(job_type="reports.build", queue="reports")
    assert_affected(bulk(api, "cancel", filter={"job_type": "emails.send"}), 2)
    current = states(project)
    assert {current[job.pk] for job in mail} == {JobState.CANCELLED}
    assert current[other.pk] == JobState.PENDING
    assert bulk_audit(org, "cancel") == [{"affected": 2, "by": "filter"}]
    assert_affected(bulk(api, "cancel", filter={"queue": "reports"}), 1)


def test_retry_by_filter_on_state_retries_the_dead_jobs(api, engine, project):
    dead = [engine.dead(), engine.dead()]
    cancelled = engine.cancelled()
    assert_affected(bulk(api, "retry", filter={"state": "dead"}), 2)
    current = states(project)
    assert {current[job.pk] for job in dead} == {JobState.PENDING}
    assert current[cancelled.pk] == JobState.CANCELLED


def test_delete_by_filter_on_tag_deletes_the_tagged_jobs(api, engine, org, project):
    old = [engine.submit(tags=["old"]), engine.succeeded(tags=["old", "x"])]
    kept = engine.submit(tags=["new"])
    assert_affected(bulk(api, "delete", filter={"tag": "old"}), len(old))
    assert set(states(project)) == {kept.pk}
    assert bulk_audit(org, "delete") == [{"affected": 2, "by": "filter"}]


@pytest.mark.covers("jobs:bulk", "cross_tenant")
def test_a_filter_never_reaches_another_project(api, engine, other_engine, other_project):
    engine.submit()
    theirs = other_engine.submit()
    assert_affected(bulk(api, "delete", filter={"state": "pending"}), 1)
    assert states(other_project) == {theirs.pk: JobState.PENDING}


# --- refused requests: 400 envelope, nothing changes, no audit --------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {"action": "cancel", "ids": [], "filter": {}},
        {"action": "cancel"},
        {"action": "explode", "ids": []},
        {"ids": []},
        {"action": "cancel", "ids": ["not-a-uuid"]},
        {"action": "cancel", "ids": "all"},
        {"action": "cancel", "filter": {"colour": "red"}},
        {"action": "cancel", "filter": {"state": "bogus"}},
        {"action": "cancel", "filter": "state=dead"},
        {"action": "cancel", "ids": [], "colour": "red"},
        ["cancel"],
    ],
    ids=[
        "ids-and-filter",
        "neither",
        "unknown-action",
        "no-action",
        "bad-id",
        "ids-not-a-list",
        "unknown-filter-field",
        "bad-state",
        "filter-not-an-object",
        "unknown-field",
        "not-an-object",
    ],
)
def test_a_bad_bulk_request_is_400_and_changes_nothing(api, engine, org, snapshot, refused, data):
    engine.submit()
    engine.dead()
    before = snapshot()
    response = api.post(URL, json.dumps(data), content_type="application/json")
    refused(response, 400, "validation_error")
    assert snapshot() == before
    assert not AuditLog.objects.for_org(org).filter(action__startswith="jobs.bulk_").exists()


def test_both_ids_and_filter_names_the_rule(api, refused):
    error = refused(bulk(api, "cancel", ids=[], filter={}), 400, "validation_error")
    assert "exactly one of ids or filter" in error["message"]


def test_an_unknown_action_names_the_field(api, refused):
    error = refused(bulk(api, "explode", ids=[]), 400, "validation_error")
    assert "action" in error["details"]["fields"]


def test_a_malformed_json_body_is_400(api, snapshot, refused):
    before = snapshot()
    refused(api.post(URL, "{", content_type="application/json"), 400, "validation_error")
    assert snapshot() == before


# --- access -----------------------------------------------------------------------------------


def test_it_refuses_anonymous_callers(call_for, access):
    access.refuses_anonymous(call_for("bulk"))


@pytest.mark.covers("jobs:bulk", "access")
def test_a_jobs_read_key_is_refused(call_for, access):
    access.checks_the_key_scope(call_for("bulk"))


@pytest.mark.covers("jobs:bulk", "access")
def test_a_viewer_is_refused(call_for, access):
    access.lets_a_viewer_only_read(call_for("bulk"))


def test_a_member_may_act_in_bulk(call_for, access, org):
    access.lets_a_member_in(call_for("bulk"))
    assert bulk_audit(org, "cancel") == [{"affected": 1, "by": "ids"}]


def test_a_user_must_name_the_project(call_for, access):
    access.needs_the_project_header(call_for("bulk"))


@pytest.mark.covers("jobs:bulk", "cross_tenant")
def test_a_user_cannot_name_another_organizations_project(call_for, access):
    access.hides_a_foreign_project(call_for("bulk"))


@pytest.mark.django_db(transaction=True)
def test_an_empty_filter_is_refused_rather_than_matching_every_job(make_api_key, queue):
    from rest_framework.test import APIClient

    from jobs.models import Job

    _, raw = make_api_key(scopes=["jobs:read", "jobs:write"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    client.post("/api/v1/jobs", {"queue": "default", "job_type": "t"}, format="json")
    response = client.post("/api/v1/jobs/bulk", {"action": "cancel", "filter": {}}, format="json")
    assert response.status_code == 400
    assert "filter" in response.json()["error"]["message"]
    assert Job.objects.all_tenants().filter(state="pending").count() == 1
