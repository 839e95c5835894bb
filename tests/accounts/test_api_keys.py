"""Project API keys: list, create and revoke them, and how a key authenticates."""

import datetime as dt

import pytest
import time_machine
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import ApiKey, AuditLog, Project, Role, User

pytestmark = pytest.mark.django_db(transaction=True)


def as_user(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    return client


def as_key(raw, **extra):
    return APIClient(HTTP_AUTHORIZATION=f"Bearer {raw}", **extra)


def keys_url(project):
    return f"/api/v1/projects/{project.id}/api-keys"


def error(response):
    return response.json()["error"]


@pytest.fixture
def outsider(other_org):
    return User.objects.create_user(
        "boss@globex.example", "pw", organization=other_org, role=Role.ADMIN
    )


# --- create


@pytest.mark.covers("accounts:project-api-keys", "happy")
def test_an_admin_creates_a_key_shown_once(project, admin):
    r = as_user(admin).post(
        keys_url(project), {"name": "workers", "scopes": ["workers", "jobs:read"]}, format="json"
    )

    assert r.status_code == 201, r.content
    body = r.json()
    key = ApiKey.objects.for_project(project).get()
    assert body["key"].startswith("tf_") and key.matches(body["key"])
    assert body == {
        "id": str(key.id),
        "project": str(project.id),
        "name": "workers",
        "prefix": body["key"][:12],
        "scopes": ["workers", "jobs:read"],
        "created_at": body["created_at"],
        "expires_at": None,
        "revoked_at": None,
        "last_used_at": None,
        "key": body["key"],
    }
    assert key.created_by == admin


def test_the_new_key_works_at_once(project, admin):
    raw = as_user(admin).post(
        keys_url(project), {"name": "ops", "scopes": ["admin"]}, format="json"
    )

    assert as_key(raw.json()["key"]).get("/api/v1/organization").status_code == 200


def test_a_key_may_expire(project, admin):
    r = as_user(admin).post(
        keys_url(project),
        {"name": "ci", "scopes": ["jobs:write"], "expires_at": "2099-01-01T00:00:00Z"},
        format="json",
    )

    assert r.status_code == 201
    assert r.json()["expires_at"] == "2099-01-01T00:00:00Z"


def test_creating_a_key_is_audited(org, project, admin):
    r = as_user(admin).post(
        keys_url(project), {"name": "ci", "scopes": ["jobs:read"]}, format="json"
    )

    log = AuditLog.objects.for_org(org).get(action="api_key.created")
    assert (log.actor_user, log.project, log.target_id) == (admin, project, r.json()["id"])
    assert log.metadata["prefix"] == r.json()["prefix"]
    assert r.json()["key"] not in str(log.metadata)


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": "ci", "scopes": ["jobs:delete"]}, "scopes"),
        ({"name": "ci", "scopes": []}, "scopes"),
        ({"name": "ci", "scopes": "admin"}, "scopes"),
        ({"name": "ci"}, "scopes"),
        ({"name": "", "scopes": ["admin"]}, "name"),
        ({"name": "ci", "scopes": ["admin"], "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "ci", "scopes": ["admin"], "expires_at": "tomorrow"}, "expires_at"),
        ({"name": "ci", "scopes": ["admin"], "key_hash": "0" * 64}, "key_hash"),
    ],
)
def test_creating_a_key_refuses_bad_input_and_names_the_field(project, admin, body, field):
    r = as_user(admin).post(keys_url(project), body, format="json")

    assert r.status_code == 400
    assert error(r)["code"] == "validation_error"
    assert field in error(r)["message"]
    assert not ApiKey.objects.for_project(project).exists()


def test_creating_a_key_refuses_a_body_that_is_not_json(project, admin):
    r = as_user(admin).post(keys_url(project), "{", content_type="application/json")

    assert r.status_code == 400
    assert not ApiKey.objects.for_project(project).exists()


@pytest.mark.covers("accounts:project-api-keys", "access")
@pytest.mark.parametrize("role", ["member", "viewer"])
def test_only_admins_create_keys(request, project, role):
    user = request.getfixturevalue(role)

    r = as_user(user).post(keys_url(project), {"name": "x", "scopes": ["admin"]}, format="json")

    assert r.status_code == 403
    assert not ApiKey.objects.for_project(project).exists()


@pytest.mark.covers("accounts:project-api-keys", "access")
def test_a_key_without_the_admin_scope_cannot_create_keys(project, make_api_key):
    _, raw = make_api_key(scopes=["jobs:read", "jobs:write", "workers"])

    r = as_key(raw).post(keys_url(project), {"name": "x", "scopes": ["admin"]}, format="json")

    assert r.status_code == 403
    assert ApiKey.objects.for_project(project).count() == 1


def test_creating_a_key_requires_authentication(project):
    r = APIClient().post(keys_url(project), {"name": "x", "scopes": ["admin"]}, format="json")

    assert r.status_code == 401


def test_an_unknown_project_is_404(admin):
    missing = Project(id="0190a4a6-0000-7000-8000-000000000000")

    assert as_user(admin).get(keys_url(missing)).status_code == 404


# --- list


@pytest.mark.covers("accounts:project-api-keys", "happy")
def test_the_list_never_shows_the_key_or_its_hash(project, admin, make_api_key):
    key, raw = make_api_key(scopes=["jobs:read"])

    r = as_user(admin).get(keys_url(project))

    assert r.status_code == 200
    (row,) = r.json()["results"]
    assert row["prefix"] == key.prefix and row["scopes"] == ["jobs:read"]
    assert "key" not in row and "key_hash" not in row
    assert raw not in r.content.decode() and key.key_hash not in r.content.decode()


def test_the_list_shows_only_this_projects_keys(org, project, admin, make_api_key):
    second = Project.objects.create(organization=org, name="second")
    mine, _ = make_api_key()
    make_api_key(project=second)

    ids = [row["id"] for row in as_user(admin).get(keys_url(project)).json()["results"]]

    assert ids == [str(mine.id)]


@pytest.mark.covers("accounts:project-api-keys", "access")
def test_only_admins_list_keys(project, member, viewer):
    assert as_user(member).get(keys_url(project)).status_code == 403
    assert as_user(viewer).get(keys_url(project)).status_code == 403


# --- revoke


@pytest.mark.covers("accounts:api-key-detail", "happy")
def test_revoking_a_key_stops_it_at_once(org, admin, make_api_key):
    key, raw = make_api_key(scopes=["admin"])
    assert as_key(raw).get("/api/v1/organization").status_code == 200

    r = as_user(admin).delete(f"/api/v1/api-keys/{key.id}")

    assert r.status_code == 204
    key.refresh_from_db()
    assert key.revoked_at is not None
    refused = as_key(raw).get("/api/v1/organization")
    assert refused.status_code == 401
    assert error(refused)["code"] == "not_authenticated"


def test_revoking_is_audited_once(org, admin, make_api_key):
    key, _ = make_api_key()

    as_user(admin).delete(f"/api/v1/api-keys/{key.id}")
    again = as_user(admin).delete(f"/api/v1/api-keys/{key.id}")

    assert again.status_code == 204
    log = AuditLog.objects.for_org(org).get(action="api_key.revoked")
    assert (log.actor_user, log.target_id) == (admin, str(key.id))


def test_a_key_may_revoke_itself(make_api_key):
    key, raw = make_api_key(scopes=["admin"])

    assert as_key(raw).delete(f"/api/v1/api-keys/{key.id}").status_code == 204
    assert as_key(raw).get("/api/v1/organization").status_code == 401


def test_a_revoked_key_still_shows_in_the_list(project, admin, make_api_key):
    key, _ = make_api_key()
    as_user(admin).delete(f"/api/v1/api-keys/{key.id}")

    (row,) = as_user(admin).get(keys_url(project)).json()["results"]

    assert row["revoked_at"] is not None


@pytest.mark.covers("accounts:api-key-detail", "access")
@pytest.mark.parametrize("role", ["member", "viewer"])
def test_only_admins_revoke_keys(request, make_api_key, role):
    key, raw = make_api_key(scopes=["admin"])

    r = as_user(request.getfixturevalue(role)).delete(f"/api/v1/api-keys/{key.id}")

    assert r.status_code == 403
    assert as_key(raw).get("/api/v1/organization").status_code == 200


def test_revoking_requires_authentication(make_api_key):
    key, _ = make_api_key()

    assert APIClient().delete(f"/api/v1/api-keys/{key.id}").status_code == 401


# --- how keys authenticate


def test_an_expired_key_is_refused(make_api_key):
    key, raw = make_api_key(scopes=["admin"])
    key.expires_at = timezone.now() - dt.timedelta(seconds=1)
    key.save(update_fields=["expires_at"])

    r = as_key(raw).get("/api/v1/organization")

    assert r.status_code == 401
    assert "expired" in error(r)["message"]


def test_a_wrong_key_with_a_real_prefix_is_refused(make_api_key):
    _, raw = make_api_key(scopes=["admin"])

    assert (
        as_key(raw[:-1] + ("A" if raw[-1] != "A" else "B")).get("/api/v1/organization").status_code
        == 401
    )


def test_the_x_api_key_header_works_too(make_api_key):
    _, raw = make_api_key(scopes=["admin"])

    assert APIClient(HTTP_X_API_KEY=raw).get("/api/v1/organization").status_code == 200


def test_a_key_from_an_address_outside_the_allowlist_is_refused(org, make_api_key):
    _, raw = make_api_key(scopes=["admin"])
    org.ip_allowlist = ["10.0.0.0/8"]
    org.save(update_fields=["ip_allowlist"])

    r = as_key(raw).get("/api/v1/organization")  # the test client comes from 127.0.0.1

    assert r.status_code == 403
    assert error(r)["code"] == "permission_denied"
    assert as_key(raw, REMOTE_ADDR="10.20.30.40").get("/api/v1/organization").status_code == 200


def test_the_allowlist_does_not_apply_to_users(org, admin):
    org.ip_allowlist = ["10.0.0.0/8"]
    org.save(update_fields=["ip_allowlist"])

    assert as_user(admin).get("/api/v1/organization").status_code == 200


def test_last_used_at_is_written_at_most_once_a_minute(make_api_key):
    key, raw = make_api_key(scopes=["admin"])
    start = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)

    with time_machine.travel(start, tick=False):
        as_key(raw).get("/api/v1/organization")
    key.refresh_from_db()
    assert key.last_used_at == start

    with time_machine.travel(start + dt.timedelta(seconds=59), tick=False):
        as_key(raw).get("/api/v1/organization")
    key.refresh_from_db()
    assert key.last_used_at == start

    with time_machine.travel(start + dt.timedelta(seconds=61), tick=False):
        as_key(raw).get("/api/v1/organization")
    key.refresh_from_db()
    assert key.last_used_at == start + dt.timedelta(seconds=61)


# --- the outsider


@pytest.mark.covers("accounts:project-api-keys", "cross_tenant")
def test_an_outsider_cannot_list_our_keys(project, outsider, make_api_key):
    make_api_key()

    r = as_user(outsider).get(keys_url(project))

    assert r.status_code == 404
    assert error(r)["code"] == "not_found"


@pytest.mark.covers("accounts:project-api-keys", "cross_tenant")
def test_an_outsider_cannot_create_a_key_in_our_project(project, outsider):
    r = as_user(outsider).post(keys_url(project), {"name": "x", "scopes": ["admin"]}, format="json")

    assert r.status_code == 404
    assert not ApiKey.objects.for_project(project).exists()


@pytest.mark.covers("accounts:api-key-detail", "cross_tenant")
def test_an_outsider_cannot_revoke_our_key(org, outsider, make_api_key, cross_tenant_denials):
    key, raw = make_api_key(scopes=["admin"])

    r = as_user(outsider).delete(f"/api/v1/api-keys/{key.id}")

    assert r.status_code == 404
    key.refresh_from_db()
    assert key.revoked_at is None
    assert as_key(raw).get("/api/v1/organization").status_code == 200
    assert not AuditLog.objects.for_org(org).filter(action="api_key.revoked").exists()
    assert cross_tenant_denials(outsider.organization) == [("apikey", str(key.id))]
    assert not AuditLog.objects.for_org(outsider.organization).exists()


@pytest.mark.covers("accounts:api-key-detail", "cross_tenant")
def test_an_outsiders_admin_key_cannot_revoke_our_key(make_api_key, other_project):
    key, _ = make_api_key()
    _, foreign = make_api_key(scopes=["admin"], project=other_project)

    assert as_key(foreign).delete(f"/api/v1/api-keys/{key.id}").status_code == 404
    key.refresh_from_db()
    assert key.revoked_at is None
