"""GET POST /api/v1/members and PATCH DELETE /api/v1/members/{id} (admin only)."""

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import AuditLog, Role, User

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/members"


@pytest.fixture(autouse=True)
def fresh_throttle_counters():
    cache.clear()
    yield
    cache.clear()


def as_user(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    return client


def error(response):
    return response.json()["error"]


def can_log_in(email, password):
    r = APIClient().post(
        "/api/v1/auth/token", {"email": email, "password": password}, format="json"
    )
    return r.status_code == 200


@pytest.fixture
def outsider(other_org):
    return User.objects.create_user(
        "boss@globex.example", "pw", organization=other_org, role=Role.ADMIN
    )


def actions(org):
    return list(AuditLog.objects.for_org(org).values_list("action", flat=True))


# --- list


@pytest.mark.covers("accounts:member-list", "happy")
def test_an_admin_lists_the_members_newest_first(admin, member, viewer, outsider):
    r = as_user(admin).get(URL)

    assert r.status_code == 200
    rows = r.json()["results"]
    assert [row["email"] for row in rows] == [viewer.email, member.email, admin.email]
    assert rows[0] == {
        "id": str(viewer.id),
        "email": viewer.email,
        "role": "viewer",
        "is_active": True,
        "created_at": rows[0]["created_at"],
    }
    assert r.json()["next"] is None


def test_the_member_list_is_paginated(admin, member, viewer):
    first = as_user(admin).get(URL, {"limit": 2}).json()
    second = as_user(admin).get(first["next"]).json()

    assert [row["email"] for row in first["results"] + second["results"]] == [
        viewer.email,
        member.email,
        admin.email,
    ]
    assert second["next"] is None


@pytest.mark.covers("accounts:member-list", "access")
@pytest.mark.parametrize("role", ["member", "viewer"])
def test_only_admins_list_members(request, role):
    r = as_user(request.getfixturevalue(role)).get(URL)

    assert r.status_code == 403
    assert error(r)["code"] == "permission_denied"


def test_listing_members_requires_authentication(org):
    assert APIClient().get(URL).status_code == 401


def test_an_admin_scoped_key_may_manage_members_but_no_other_key(make_api_key, admin):
    _, admin_key = make_api_key(scopes=["admin"])
    _, jobs_key = make_api_key(scopes=["jobs:read", "jobs:write"])

    assert APIClient(HTTP_AUTHORIZATION=f"Bearer {admin_key}").get(URL).status_code == 200
    assert APIClient(HTTP_AUTHORIZATION=f"Bearer {jobs_key}").get(URL).status_code == 403


# --- add


@pytest.mark.covers("accounts:member-list", "happy")
def test_an_admin_adds_a_member_with_a_password(org, admin):
    r = as_user(admin).post(
        URL,
        {"email": "New@Acme.example", "password": "a fine passphrase", "role": "viewer"},
        format="json",
    )

    assert r.status_code == 201, r.content
    assert r.json()["email"] == "new@acme.example"
    assert r.json()["role"] == "viewer"
    assert "password" not in r.json()
    user = User.objects.for_org(org).get(email="new@acme.example")
    assert user.check_password("a fine passphrase")
    assert can_log_in("new@acme.example", "a fine passphrase")


def test_adding_a_member_without_a_password_returns_a_generated_one_once(org, admin):
    r = as_user(admin).post(URL, {"email": "gen@acme.example"}, format="json")

    assert r.status_code == 201
    password = r.json()["password"]
    assert r.json()["role"] == "member"
    assert len(password) >= 20
    assert can_log_in("gen@acme.example", password)
    assert "password" not in as_user(admin).get(URL).json()["results"][0]


def test_adding_a_member_is_audited(org, admin):
    r = as_user(admin).post(URL, {"email": "gen@acme.example", "role": "admin"}, format="json")

    log = AuditLog.objects.for_org(org).get(action="member.added")
    assert (log.actor_user, log.target_id) == (admin, r.json()["id"])
    assert log.metadata == {
        "email": "gen@acme.example",
        "role": "admin",
        "password_generated": True,
    }


def test_adding_an_email_already_registered_anywhere_is_a_conflict(org, admin, outsider):
    r = as_user(admin).post(URL, {"email": outsider.email.upper()}, format="json")

    assert r.status_code == 409
    assert error(r)["code"] == "conflict"
    assert User.objects.for_org(org).count() == 1


@pytest.mark.parametrize(
    "body, field",
    [
        ({"email": "x@acme.example", "password": "password"}, "password"),
        ({"email": "x@acme.example", "role": "owner"}, "role"),
        ({"email": "not an email"}, "email"),
        ({"email": "x@acme.example", "is_staff": True}, "is_staff"),
        ({"email": ["x@acme.example"]}, "email"),
        ({}, "email"),
    ],
)
def test_adding_a_member_refuses_bad_input_and_names_the_field(org, admin, body, field):
    r = as_user(admin).post(URL, body, format="json")

    assert r.status_code == 400
    assert error(r)["code"] == "validation_error"
    assert field in error(r)["message"]
    assert User.objects.for_org(org).count() == 1


def test_adding_a_member_refuses_a_body_that_is_not_json(org, admin):
    r = as_user(admin).post(URL, "{", content_type="application/json")

    assert r.status_code == 400
    assert User.objects.for_org(org).count() == 1


@pytest.mark.covers("accounts:member-list", "access")
@pytest.mark.parametrize("role", ["member", "viewer"])
def test_only_admins_add_members(request, org, role):
    r = as_user(request.getfixturevalue(role)).post(URL, {"email": "x@acme.example"}, format="json")

    assert r.status_code == 403
    assert not User.objects.filter(email="x@acme.example").exists()


# --- change role


@pytest.mark.covers("accounts:member-detail", "happy")
def test_an_admin_changes_a_members_role_and_it_is_audited(org, admin, member):
    r = as_user(admin).patch(f"{URL}/{member.id}", {"role": "viewer"}, format="json")

    assert r.status_code == 200, r.content
    assert r.json()["role"] == "viewer"
    member.refresh_from_db()
    assert member.role == Role.VIEWER
    log = AuditLog.objects.for_org(org).get(action="member.role_changed")
    assert log.metadata == {"email": member.email, "from": "member", "to": "viewer"}


def test_the_new_role_applies_to_the_members_next_request(org, admin, member):
    client = as_user(member)
    assert client.post("/api/v1/projects", {"name": "p1"}, format="json").status_code == 201

    as_user(admin).patch(f"{URL}/{member.id}", {"role": "viewer"}, format="json")

    assert client.post("/api/v1/projects", {"name": "p2"}, format="json").status_code == 403


def test_the_last_admin_cannot_be_demoted(org, admin, member):
    r = as_user(admin).patch(f"{URL}/{admin.id}", {"role": "member"}, format="json")

    assert r.status_code == 409
    assert error(r)["code"] == "conflict"
    assert "last admin" in error(r)["message"]
    admin.refresh_from_db()
    assert admin.role == Role.ADMIN


def test_an_admin_may_step_down_when_another_admin_remains(org, admin, member):
    as_user(admin).patch(f"{URL}/{member.id}", {"role": "admin"}, format="json")

    r = as_user(admin).patch(f"{URL}/{admin.id}", {"role": "viewer"}, format="json")

    assert r.status_code == 200
    assert set(User.objects.for_org(org).values_list("role", flat=True)) == {"admin", "viewer"}


@pytest.mark.parametrize("body", [{"role": "owner"}, {}, {"role": "viewer", "email": "x@y.z"}])
def test_changing_a_role_refuses_bad_input(admin, member, body):
    r = as_user(admin).patch(f"{URL}/{member.id}", body, format="json")

    assert r.status_code == 400
    member.refresh_from_db()
    assert member.role == Role.MEMBER


def test_changing_a_role_refuses_a_body_that_is_not_json(admin, member):
    r = as_user(admin).patch(f"{URL}/{member.id}", "{", content_type="application/json")

    assert r.status_code == 400


@pytest.mark.covers("accounts:member-detail", "access")
def test_a_member_cannot_promote_themselves(member):
    r = as_user(member).patch(f"{URL}/{member.id}", {"role": "admin"}, format="json")

    assert r.status_code == 403
    member.refresh_from_db()
    assert member.role == Role.MEMBER


def test_an_unknown_member_is_404(admin):
    r = as_user(admin).patch(f"{URL}/0190a4a6-0000-7000-8000-000000000000", {"role": "viewer"})

    assert r.status_code == 404
    assert error(r)["code"] == "not_found"


# --- remove


@pytest.mark.covers("accounts:member-detail", "happy")
def test_an_admin_removes_a_member_and_their_token_stops_working(org, admin, member):
    client = as_user(member)

    r = as_user(admin).delete(f"{URL}/{member.id}")

    assert r.status_code == 204
    assert not User.objects.filter(pk=member.pk).exists()
    assert client.get("/api/v1/organization").status_code == 401
    log = AuditLog.objects.for_org(org).get(action="member.removed")
    assert (log.actor_user, log.target_id, log.metadata) == (
        admin,
        str(member.id),
        {"email": member.email, "role": "member"},
    )


def test_the_last_admin_cannot_be_removed(org, admin):
    r = as_user(admin).delete(f"{URL}/{admin.id}")

    assert r.status_code == 409
    assert User.objects.filter(pk=admin.pk).exists()
    assert "member.removed" not in actions(org)


@pytest.mark.covers("accounts:member-detail", "access")
@pytest.mark.parametrize("role", ["member", "viewer"])
def test_only_admins_remove_members(request, admin, role):
    r = as_user(request.getfixturevalue(role)).delete(f"{URL}/{admin.id}")

    assert r.status_code == 403
    assert User.objects.filter(pk=admin.pk).exists()


def test_removing_requires_authentication(member):
    assert APIClient().delete(f"{URL}/{member.id}").status_code == 401
    assert User.objects.filter(pk=member.pk).exists()


# --- the outsider


@pytest.mark.covers("accounts:member-list", "cross_tenant")
def test_an_outsider_does_not_see_our_members(admin, member, outsider):
    emails = [row["email"] for row in as_user(outsider).get(URL).json()["results"]]

    assert emails == [outsider.email]


@pytest.mark.covers("accounts:member-detail", "cross_tenant")
def test_an_outsider_cannot_change_our_members_role(org, member, outsider, cross_tenant_denials):
    r = as_user(outsider).patch(f"{URL}/{member.id}", {"role": "admin"}, format="json")

    assert r.status_code == 404
    assert error(r)["code"] == "not_found"
    member.refresh_from_db()
    assert member.role == Role.MEMBER
    assert actions(org) == []
    assert cross_tenant_denials(outsider.organization) == [("user", str(member.id))]
    assert actions(outsider.organization) == []


@pytest.mark.covers("accounts:member-detail", "cross_tenant")
def test_an_outsider_cannot_remove_our_member(org, member, outsider):
    r = as_user(outsider).delete(f"{URL}/{member.id}")

    assert r.status_code == 404
    assert User.objects.filter(pk=member.pk).exists()
    assert actions(org) == []
