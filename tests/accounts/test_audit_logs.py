"""GET /api/v1/audit-logs (admin): newest first, filtered by action and actor."""

import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.audit import Actor, record_audit
from accounts.models import Role, User

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/audit-logs"


def as_user(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    return client


def error(response):
    return response.json()["error"]


def actions(response):
    return [row["action"] for row in response.json()["results"]]


@pytest.fixture
def history(org, project, admin, member, make_api_key):
    """Four events: by the admin, by the member, by an API key, by the system."""
    key, _ = make_api_key()
    record_audit(org, "member.added", actor=Actor(user=admin, ip_address="192.0.2.1"))
    record_audit(org, "project.created", actor=Actor(user=member), project=project)
    record_audit(org, "api_key.revoked", actor=Actor(api_key=key), target_type="api_key")
    record_audit(org, "member.removed", metadata={"email": "gone@acme.example"})
    return key


@pytest.mark.covers("accounts:audit-log-list", "happy")
def test_an_admin_reads_the_log_newest_first(admin, project, history):
    r = as_user(admin).get(URL)

    assert r.status_code == 200
    assert actions(r) == ["member.removed", "api_key.revoked", "project.created", "member.added"]
    oldest = r.json()["results"][-1]
    assert oldest["actor"] == {"type": "user", "id": str(admin.id), "email": admin.email}
    assert oldest["ip_address"] == "192.0.2.1"
    assert r.json()["results"][1]["actor"] == {
        "type": "api_key",
        "id": str(history.id),
        "prefix": history.prefix,
    }
    assert r.json()["results"][0]["actor"] == {"type": "system", "id": None}
    assert r.json()["results"][0]["metadata"] == {"email": "gone@acme.example"}
    assert r.json()["results"][2]["project"] == str(project.id)


def test_the_log_is_paginated_with_a_cursor(admin, history):
    first = as_user(admin).get(URL, {"limit": 3}).json()
    second = as_user(admin).get(first["next"]).json()

    assert [row["action"] for row in first["results"]] == [
        "member.removed",
        "api_key.revoked",
        "project.created",
    ]
    assert [row["action"] for row in second["results"]] == ["member.added"]
    assert second["next"] is None


def test_the_log_filters_by_action(admin, history):
    assert actions(as_user(admin).get(URL, {"action": "member.added"})) == ["member.added"]


def test_an_action_ending_in_a_dot_filters_by_prefix(admin, history):
    r = as_user(admin).get(URL, {"action": "member."})

    assert actions(r) == ["member.removed", "member.added"]


def test_the_log_filters_by_actor_email_or_key_prefix(admin, member, history):
    by_email = as_user(admin).get(URL, {"actor": member.email.upper()})
    by_prefix = as_user(admin).get(URL, {"actor": history.prefix})

    assert actions(by_email) == ["project.created"]
    assert actions(by_prefix) == ["api_key.revoked"]


def test_the_log_records_what_the_api_does(admin):
    client = as_user(admin)
    client.post("/api/v1/members", {"email": "new@acme.example"}, format="json")

    assert actions(client.get(URL, {"actor": admin.email})) == ["member.added"]


@pytest.mark.parametrize(
    "query", [{"limit": "0"}, {"limit": "x"}, {"cursor": "nope"}, {"action": "a\x00"}]
)
def test_bad_query_parameters_are_400(admin, history, query):
    r = as_user(admin).get(URL, query)

    assert r.status_code == 400
    assert error(r)["code"] == "validation_error"


@pytest.mark.covers("accounts:audit-log-list", "access")
@pytest.mark.parametrize("role", ["member", "viewer"])
def test_only_admins_read_the_log(request, history, role):
    r = as_user(request.getfixturevalue(role)).get(URL)

    assert r.status_code == 403
    assert error(r)["code"] == "permission_denied"


@pytest.mark.covers("accounts:audit-log-list", "access")
def test_a_key_needs_the_admin_scope(make_api_key, history):
    _, weak = make_api_key(scopes=["jobs:read", "queues:read", "schedules:read"])
    _, strong = make_api_key(scopes=["admin"])

    assert APIClient(HTTP_AUTHORIZATION=f"Bearer {weak}").get(URL).status_code == 403
    assert APIClient(HTTP_AUTHORIZATION=f"Bearer {strong}").get(URL).status_code == 200


def test_the_log_requires_authentication(history):
    assert APIClient().get(URL).status_code == 401


@pytest.mark.covers("accounts:audit-log-list", "cross_tenant")
def test_an_outsider_never_sees_our_log(history, other_org):
    outsider = User.objects.create_user(
        "boss@globex.example", "pw", organization=other_org, role=Role.ADMIN
    )
    record_audit(other_org, "organization.updated", actor=Actor(user=outsider))

    r = as_user(outsider).get(URL)

    assert actions(r) == ["organization.updated"]
    assert actions(as_user(outsider).get(URL, {"action": "member.added"})) == []
