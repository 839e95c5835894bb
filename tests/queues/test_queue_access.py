"""Who may call each queue endpoint: the access trio on every route
(docs/conventions.md#tests-access-trio).

* unauthenticated -> 401; a key without queue scopes -> 403 (reads and writes);
* a read-only key or a viewer -> 403 on writes, reads work;
* an outsider (another organization, or another project's key) -> 404 with nothing changed.
"""

import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import AuditLog, Project, Role, User
from jobs import services as job_services
from jobs.models import Job
from jobs.specs import JobSpec
from queues.models import Queue

# This file is the access and cross-tenant half of every queue endpoint's trio (the happy
# paths are in the other files).
pytestmark = [
    pytest.mark.covers("queues:list", "access", "cross_tenant"),
    pytest.mark.covers("queues:detail", "access", "cross_tenant"),
    pytest.mark.covers("queues:pause", "access", "cross_tenant"),
    pytest.mark.covers("queues:resume", "access", "cross_tenant"),
    pytest.mark.covers("queues:purge", "access", "cross_tenant"),
    pytest.mark.covers("queues:stats", "access", "cross_tenant"),
]

# (method, path, body); {name} is the queue.
READS = [
    ("get", "/api/v1/queues", None),
    ("get", "/api/v1/queues/{name}", None),
    ("get", "/api/v1/queues/{name}/stats", None),
]
WRITES = [
    ("post", "/api/v1/queues", {"name": "fresh"}),
    ("patch", "/api/v1/queues/{name}", {"priority": 9}),
    ("delete", "/api/v1/queues/{name}?force=true", None),
    ("post", "/api/v1/queues/{name}/pause", None),
    ("post", "/api/v1/queues/{name}/resume", None),
    ("post", "/api/v1/queues/{name}/purge", None),
]
ROUTES = READS + WRITES
NAMED = [route for route in ROUTES if "{name}" in route[1]]


def call(client, route, name="ours"):
    method, path, body = route
    return getattr(client, method)(path.format(name=name), body, format="json")


def key_client(make_api_key, scopes, project=None):
    kwargs = {"project": project} if project is not None else {}
    _, raw = make_api_key(scopes=scopes, **kwargs)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def user_client(user, project):
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}",
        HTTP_X_TASKFORGE_PROJECT=str(project.id),
    )
    return client


def snapshot(project):
    """Everything a queue endpoint could change in the project."""
    return (
        list(Queue.objects.for_project(project).order_by("name").values()),
        sorted(Job.objects.for_project(project).values_list("pk", flat=True)),
        AuditLog.objects.for_org(project.organization).filter(action__startswith="queue.").count(),
    )


@pytest.fixture
def ours(project, make_queue):
    """A queue only our project has, holding a pending job."""
    queue = make_queue("ours", priority=3)
    job_services.submit_job(project, JobSpec(queue="ours", job_type="t"))
    return queue


def id_of(route):
    return f"{route[0]} {route[1]}"


@pytest.mark.django_db
@pytest.mark.parametrize("route", ROUTES, ids=id_of)
def test_it_requires_authentication(route, ours):
    response = call(APIClient(), route)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.django_db
@pytest.mark.parametrize("route", ROUTES, ids=id_of)
def test_a_key_without_queue_scopes_is_refused(route, ours, project, make_api_key):
    before = snapshot(project)
    response = call(key_client(make_api_key, ["jobs:read", "jobs:write", "workers"]), route)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert snapshot(project) == before


@pytest.mark.django_db
@pytest.mark.parametrize("route", WRITES, ids=id_of)
def test_a_read_only_key_may_not_write(route, ours, project, make_api_key):
    before = snapshot(project)
    response = call(key_client(make_api_key, ["queues:read"]), route)
    assert response.status_code == 403
    assert snapshot(project) == before


@pytest.mark.django_db
@pytest.mark.parametrize("route", WRITES, ids=id_of)
def test_a_viewer_may_not_write(route, ours, project, viewer):
    before = snapshot(project)
    response = call(user_client(viewer, project), route)
    assert response.status_code == 403
    assert snapshot(project) == before


@pytest.mark.django_db
@pytest.mark.parametrize("route", READS, ids=id_of)
def test_a_read_only_key_and_a_viewer_may_read(route, ours, project, viewer, make_api_key):
    assert call(key_client(make_api_key, ["queues:read"]), route).status_code == 200
    assert call(user_client(viewer, project), route).status_code == 200


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("route", WRITES, ids=id_of)
def test_a_member_may_write(route, ours, project, member):
    response = call(user_client(member, project), route)
    assert response.status_code in (200, 201, 204), response.content


@pytest.mark.django_db(transaction=True)
def test_a_queues_write_key_may_write(ours, make_api_key):
    client = key_client(make_api_key, ["queues:write"])
    assert call(client, WRITES[0]).status_code == 201
    assert call(client, ("post", "/api/v1/queues/{name}/pause", None)).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("route", NAMED, ids=id_of)
def test_an_outsider_key_gets_404_and_changes_nothing(
    route, ours, project, other_project, make_api_key
):
    before = snapshot(project)
    client = key_client(make_api_key, ["admin"], project=other_project)
    response = call(client, route)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert snapshot(project) == before


@pytest.mark.django_db
@pytest.mark.parametrize("route", NAMED, ids=id_of)
def test_a_key_of_another_project_in_the_org_gets_404(route, ours, project, make_api_key):
    second = Project.objects.create(organization=project.organization, name="second")
    before = snapshot(project)
    response = call(key_client(make_api_key, ["admin"], project=second), route)
    assert response.status_code == 404
    assert snapshot(project) == before


@pytest.mark.django_db
@pytest.mark.parametrize("route", ROUTES, ids=id_of)
def test_an_outsider_user_naming_our_project_gets_404(route, ours, project, other_org):
    outsider = User.objects.create_user(
        "admin@globex.example", "correct-horse-battery", organization=other_org, role=Role.ADMIN
    )
    before = snapshot(project)
    response = call(user_client(outsider, project), route)
    assert response.status_code == 404
    assert snapshot(project) == before


@pytest.mark.django_db
def test_an_outsider_does_not_see_our_queues_in_the_list(ours, other_project, make_api_key):
    client = key_client(make_api_key, ["admin"], project=other_project)
    names = [q["name"] for q in call(client, READS[0]).json()["results"]]
    assert names == ["default"]


@pytest.mark.django_db(transaction=True)
def test_an_outsider_creating_the_same_name_gets_its_own_queue(
    ours, project, other_project, make_api_key
):
    client = key_client(make_api_key, ["admin"], project=other_project)
    assert client.post("/api/v1/queues", {"name": "ours"}, format="json").status_code == 201
    assert Queue.objects.for_project(other_project).filter(name="ours").exists()
    assert Queue.objects.for_project(project).get(name="ours").pk == ours.pk
