"""GET POST /api/v1/projects and GET PATCH DELETE /api/v1/projects/{id}."""

import uuid

import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import ApiKey, AuditLog, Project, Role, User
from jobs.models import Job, JobState
from queues.models import Queue

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/projects"


def as_user(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    return client


def error(response):
    return response.json()["error"]


def add_job(queue, state):
    lease = {"worker_id": uuid.uuid4(), "lease_token": uuid.uuid4()}
    return Job.objects.create(
        organization_id=queue.organization_id,
        project_id=queue.project_id,
        queue=queue,
        job_type="t",
        state=state,
        **(lease if state == JobState.PROCESSING else {}),
    )


@pytest.fixture
def outsider(other_org):
    return User.objects.create_user(
        "boss@globex.example", "pw", organization=other_org, role=Role.ADMIN
    )


# --- list and read


@pytest.mark.covers("accounts:project-list", "happy")
def test_a_viewer_lists_the_organizations_projects(project, other_project, viewer):
    r = as_user(viewer).get(URL)

    assert r.status_code == 200
    assert r.json() == {
        "results": [
            {
                "id": str(project.id),
                "name": "default",
                "created_at": r.json()["results"][0]["created_at"],
            }
        ],
        "next": None,
    }


@pytest.mark.covers("accounts:project-detail", "happy")
def test_a_viewer_reads_one_project(project, viewer):
    r = as_user(viewer).get(f"{URL}/{project.id}")

    assert r.status_code == 200
    assert r.json()["id"] == str(project.id)


def test_projects_require_authentication(project):
    assert APIClient().get(URL).status_code == 401
    assert APIClient().get(f"{URL}/{project.id}").status_code == 401


@pytest.mark.covers("accounts:project-list", "access")
def test_a_key_needs_the_admin_scope_for_projects(make_api_key, project):
    _, weak = make_api_key(scopes=["queues:read", "queues:write"])
    _, strong = make_api_key(scopes=["admin"])

    assert APIClient(HTTP_AUTHORIZATION=f"Bearer {weak}").get(URL).status_code == 403
    assert APIClient(HTTP_AUTHORIZATION=f"Bearer {strong}").get(URL).status_code == 200


# --- create


@pytest.mark.covers("accounts:project-list", "happy")
def test_a_member_creates_a_project_with_a_default_queue(org, member):
    r = as_user(member).post(URL, {"name": "billing-jobs"}, format="json")

    assert r.status_code == 201, r.content
    project = Project.objects.for_org(org).get(pk=r.json()["id"])
    assert project.name == "billing-jobs"
    assert list(Queue.objects.for_project(project).values_list("name", flat=True)) == ["default"]


def test_creating_a_project_is_audited(org, member):
    r = as_user(member).post(URL, {"name": "billing-jobs"}, format="json")

    log = AuditLog.objects.for_org(org).get(action="project.created")
    assert (log.actor_user, log.target_id, str(log.project_id)) == (
        member,
        r.json()["id"],
        r.json()["id"],
    )


def test_a_project_name_is_unique_in_the_organization(org, project, member, other_org):
    r = as_user(member).post(URL, {"name": "default"}, format="json")

    assert r.status_code == 409
    assert error(r)["code"] == "conflict"
    assert Project.objects.for_org(org).count() == 1
    assert Project.objects.for_org(other_org).count() == 1  # the same name is fine elsewhere


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "  "},
        {"name": "x" * 101},
        {"name": 7 * [1]},
        {"name": "a", "org": "b"},
    ],
)
def test_creating_a_project_refuses_bad_input(org, project, member, body):
    r = as_user(member).post(URL, body, format="json")

    assert r.status_code == 400
    assert error(r)["code"] == "validation_error"
    assert Project.objects.for_org(org).count() == 1


def test_creating_a_project_refuses_a_body_that_is_not_json(org, project, member):
    r = as_user(member).post(URL, "{", content_type="application/json")

    assert r.status_code == 400
    assert Project.objects.for_org(org).count() == 1


@pytest.mark.covers("accounts:project-list", "access")
def test_a_viewer_cannot_create_a_project(org, project, viewer):
    r = as_user(viewer).post(URL, {"name": "mine"}, format="json")

    assert r.status_code == 403
    assert Project.objects.for_org(org).count() == 1


# --- rename


@pytest.mark.covers("accounts:project-detail", "happy")
def test_a_member_renames_a_project_and_it_is_audited(org, project, member):
    r = as_user(member).patch(f"{URL}/{project.id}", {"name": "main"}, format="json")

    assert r.status_code == 200
    assert r.json()["name"] == "main"
    project.refresh_from_db()
    assert project.name == "main"
    log = AuditLog.objects.for_org(org).get(action="project.updated")
    assert log.metadata == {"changes": {"name": {"from": "default", "to": "main"}}}


def test_renaming_to_a_taken_name_is_a_conflict(org, project, member):
    as_user(member).post(URL, {"name": "other"}, format="json")

    r = as_user(member).patch(f"{URL}/{project.id}", {"name": "other"}, format="json")

    assert r.status_code == 409
    project.refresh_from_db()
    assert project.name == "default"


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": "x", "id": "y"}])
def test_renaming_refuses_bad_input(project, member, body):
    assert as_user(member).patch(f"{URL}/{project.id}", body, format="json").status_code == 400
    project.refresh_from_db()
    assert project.name == "default"


@pytest.mark.covers("accounts:project-detail", "access")
def test_a_viewer_cannot_rename_a_project(project, viewer):
    assert (
        as_user(viewer).patch(f"{URL}/{project.id}", {"name": "x"}, format="json").status_code
        == 403
    )
    project.refresh_from_db()
    assert project.name == "default"


# --- delete


@pytest.mark.covers("accounts:project-detail", "happy")
def test_an_admin_deletes_a_project_with_everything_in_it(org, project, queue, admin, make_api_key):
    make_api_key(scopes=["jobs:read"])
    add_job(queue, JobState.SUCCEEDED)

    r = as_user(admin).delete(f"{URL}/{project.id}")

    assert r.status_code == 204
    assert not Project.objects.for_org(org).exists()
    assert not Queue.objects.for_org(org).exists()
    assert not Job.objects.for_org(org).exists()
    assert not ApiKey.objects.for_org(org).exists()
    log = AuditLog.objects.for_org(org).get(action="project.deleted")
    assert (log.target_id, log.metadata) == (
        str(project.id),
        {"name": "default", "forced": False, "live_jobs": 0},
    )


@pytest.mark.parametrize("state", [JobState.PENDING, JobState.PROCESSING])
def test_deleting_a_project_with_live_jobs_is_refused(org, project, queue, admin, state):
    add_job(queue, state)

    r = as_user(admin).delete(f"{URL}/{project.id}")

    assert r.status_code == 409
    assert error(r)["code"] == "conflict"
    assert error(r)["details"] == {"live_jobs": 1}
    assert "force=true" in error(r)["message"]
    assert Job.objects.for_project(project).count() == 1


def test_force_deletes_a_project_with_live_jobs(org, project, queue, admin):
    add_job(queue, JobState.PENDING)

    r = as_user(admin).delete(f"{URL}/{project.id}?force=true")

    assert r.status_code == 204
    assert not Job.objects.for_org(org).exists()
    log = AuditLog.objects.for_org(org).get(action="project.deleted")
    assert log.metadata["forced"] is True and log.metadata["live_jobs"] == 1


def test_force_must_be_a_boolean(project, admin):
    r = as_user(admin).delete(f"{URL}/{project.id}?force=please")

    assert r.status_code == 400
    assert Project.objects.filter(pk=project.pk).exists()


@pytest.mark.covers("accounts:project-detail", "access")
def test_a_viewer_cannot_delete_a_project(project, viewer):
    assert as_user(viewer).delete(f"{URL}/{project.id}").status_code == 403
    assert Project.objects.filter(pk=project.pk).exists()


@pytest.mark.covers("accounts:project-detail", "access")
def test_a_member_cannot_force_delete_a_project_and_its_admin_key_keeps_working(
    org, project, queue, member, make_api_key
):
    # The reported attack: a member's forced delete answered 204 and took the admin key with it.
    _, raw = make_api_key(scopes=["admin"])
    add_job(queue, JobState.PENDING)

    r = as_user(member).delete(f"{URL}/{project.id}?force=true")

    assert r.status_code == 403
    assert error(r)["code"] == "permission_denied"
    assert Job.objects.for_project(project).count() == 1
    assert not AuditLog.objects.for_org(org).filter(action="project.deleted").exists()
    key_client = APIClient(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert key_client.get(f"{URL}/{project.id}").status_code == 200


def test_a_key_without_the_admin_scope_cannot_delete_a_project(project, make_api_key):
    _, raw = make_api_key(scopes=["jobs:read", "jobs:write", "queues:read", "queues:write"])

    r = APIClient(HTTP_AUTHORIZATION=f"Bearer {raw}").delete(f"{URL}/{project.id}")

    assert r.status_code == 403
    assert Project.objects.filter(pk=project.pk).exists()


def test_deleting_requires_authentication(project):
    assert APIClient().delete(f"{URL}/{project.id}").status_code == 401
    assert Project.objects.filter(pk=project.pk).exists()


# --- the outsider


@pytest.mark.covers("accounts:project-list", "cross_tenant")
def test_an_outsider_does_not_list_our_projects(project, other_project, outsider):
    ids = [row["id"] for row in as_user(outsider).get(URL).json()["results"]]

    assert ids == [str(other_project.id)]


@pytest.mark.covers("accounts:project-detail", "cross_tenant")
def test_an_outsider_cannot_read_our_project(project, outsider, cross_tenant_denials):
    r = as_user(outsider).get(f"{URL}/{project.id}")

    assert r.status_code == 404
    assert error(r) == {"code": "not_found", "message": "project not found", "details": {}}
    assert cross_tenant_denials(outsider.organization) == [("project", str(project.id))]
    assert not AuditLog.objects.for_org(outsider.organization).exists()


@pytest.mark.covers("accounts:project-detail", "cross_tenant")
def test_an_outsider_cannot_rename_our_project(project, outsider):
    r = as_user(outsider).patch(f"{URL}/{project.id}", {"name": "owned"}, format="json")

    assert r.status_code == 404
    project.refresh_from_db()
    assert project.name == "default"


@pytest.mark.covers("accounts:project-detail", "cross_tenant")
def test_an_outsider_cannot_delete_our_project(project, outsider):
    r = as_user(outsider).delete(f"{URL}/{project.id}?force=true")

    assert r.status_code == 404
    assert Project.objects.filter(pk=project.pk).exists()
