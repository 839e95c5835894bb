"""The access trio on every worker protocol path (docs/conventions.md#tests-access-trio).

Each test walks every path (tests/workers/conftest.py CALLS) in one database, so the whole
matrix costs a handful of flushes; a failure names the path.
"""

import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from tests.workers.conftest import CALLS, OBJECT_CALLS, WRITE_CALLS

pytestmark = pytest.mark.django_db(transaction=True)


def assert_refused_on(calls, call_for, client, snapshot, refused, status, code):
    for spec in calls:
        call = call_for(spec)
        before = snapshot()
        response = call.send(client)
        assert response.status_code == status, (spec, response.content)
        refused(response, status, code)
        assert snapshot() == before, spec


def test_anonymous_callers_get_401_on_every_path(call_for, snapshot, refused):
    assert_refused_on(CALLS, call_for, APIClient(), snapshot, refused, 401, "not_authenticated")


@pytest.mark.covers("workers:list", "access")
@pytest.mark.covers("workers:detail", "access")
@pytest.mark.covers("workers:heartbeat", "access")
@pytest.mark.covers("workers:jobs", "access")
@pytest.mark.covers("workers:results", "access")
@pytest.mark.covers("workers:drain", "access")
@pytest.mark.covers("workers:queues", "access")
@pytest.mark.covers("jobs:complete", "access")
@pytest.mark.covers("jobs:fail", "access")
@pytest.mark.covers("jobs:logs", "access")
def test_keys_without_the_workers_scope_get_403_on_every_path(
    call_for, reader, submitter, key_client, snapshot, refused
):
    for client in (reader, submitter, key_client("queues:read", "queues:write")):
        assert_refused_on(CALLS, call_for, client, snapshot, refused, 403, "permission_denied")


@pytest.mark.covers("workers:list", "access")
@pytest.mark.covers("workers:detail", "access")
@pytest.mark.covers("workers:heartbeat", "access")
@pytest.mark.covers("workers:results", "access")
@pytest.mark.covers("workers:drain", "access")
@pytest.mark.covers("workers:queues", "access")
@pytest.mark.covers("jobs:complete", "access")
@pytest.mark.covers("jobs:fail", "access")
@pytest.mark.covers("jobs:logs", "access")
def test_a_viewer_gets_403_on_every_write_and_may_list_workers(
    call_for, viewer_jwt, snapshot, refused
):
    assert_refused_on(
        WRITE_CALLS, call_for, viewer_jwt, snapshot, refused, 403, "permission_denied"
    )
    listed = call_for("workers:list GET").send(viewer_jwt)
    assert listed.status_code == 200, listed.content
    assert listed.json()["results"], listed.content


def test_a_member_may_use_every_path(call_for, member_jwt):
    for spec in CALLS:
        call = call_for(spec)
        response = call.send(member_jwt)
        assert response.status_code == call.ok, (spec, response.content)


def test_a_user_must_name_the_project(call_for, member, snapshot, refused):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(member).access_token}")
    assert_refused_on(CALLS, call_for, client, snapshot, refused, 400, "validation_error")


@pytest.mark.covers("workers:detail", "cross_tenant")
@pytest.mark.covers("workers:heartbeat", "cross_tenant")
@pytest.mark.covers("workers:jobs", "cross_tenant")
@pytest.mark.covers("workers:results", "cross_tenant")
@pytest.mark.covers("workers:drain", "cross_tenant")
@pytest.mark.covers("workers:queues", "cross_tenant")
@pytest.mark.covers("jobs:complete", "cross_tenant")
@pytest.mark.covers("jobs:fail", "cross_tenant")
@pytest.mark.covers("jobs:logs", "cross_tenant")
def test_an_outsider_gets_404_on_every_path_naming_our_objects_and_is_logged_for_staff(
    call_for, outsider, other_fleet, snapshot, refused, org, other_org, cross_tenant_denials
):
    other_fleet.register("theirs")  # the outsider is a real worker of its own project
    for spec in OBJECT_CALLS:
        call = call_for(spec)
        before = snapshot()
        response = call.send(outsider)
        assert response.status_code == 404, (spec, response.content)
        refused(response, 404, "not_found")
        assert snapshot() == before, spec
    # Logged for staff (accounts/api_base.py note_cross_tenant_attempt), not audited.
    denied = sorted(target_type for target_type, _ in cross_tenant_denials(other_org))
    job_paths = [c for c in OBJECT_CALLS if c.startswith("jobs:")]
    assert denied == ["job"] * len(job_paths) + ["worker"] * (len(OBJECT_CALLS) - len(job_paths))
    assert cross_tenant_denials(org) == []


def test_a_worker_id_that_is_not_a_uuid_is_404_on_every_worker_path(wapi, refused):
    path = "/api/v1/workers/not-a-uuid"
    for response in (
        wapi.delete(path),
        wapi.post(f"{path}/heartbeat", {"running": []}, format="json"),
        wapi.get(f"{path}/jobs?wait=0"),
        wapi.post(f"{path}/results", {"results": []}, format="json"),
        wapi.post(f"{path}/drain"),
        wapi.put(f"{path}/queues", [], format="json"),
    ):
        refused(response, 404, "not_found")


def test_a_job_id_that_is_not_a_uuid_is_404_on_every_job_path(wapi, refused):
    lease = "00000000-0000-0000-0000-000000000000"
    for suffix, body in (
        ("complete", {"lease_token": lease}),
        ("fail", {"lease_token": lease, "error": "x"}),
        ("logs", {"lease_token": lease, "entries": [{"message": "x"}]}),
    ):
        response = wapi.post(f"/api/v1/jobs/not-a-uuid/{suffix}", body, format="json")
        refused(response, 404, "not_found")
