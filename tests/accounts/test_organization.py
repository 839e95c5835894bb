"""GET and PATCH /api/v1/organization."""

import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import AuditLog, Organization, Role, User

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/organization"


def as_user(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    return client


def as_key(raw):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def error(response):
    return response.json()["error"]


@pytest.mark.covers("accounts:organization", "happy")
def test_any_member_reads_the_organization(org, viewer):
    r = as_user(viewer).get(URL)

    assert r.status_code == 200
    assert r.json() == {
        "id": str(org.id),
        "name": "Acme",
        "slug": "acme",
        "ip_allowlist": [],
        "created_at": r.json()["created_at"],
    }


@pytest.mark.covers("accounts:organization", "cross_tenant")
def test_each_user_sees_only_their_own_organization(org, viewer, other_org):
    outsider = User.objects.create_user("x@globex.example", "pw", organization=other_org)

    assert as_user(outsider).get(URL).json()["id"] == str(other_org.id)
    assert as_user(viewer).get(URL).json()["id"] == str(org.id)


def test_an_admin_scoped_key_reads_the_organization(make_api_key):
    _, raw = make_api_key(scopes=["admin"])

    assert as_key(raw).get(URL).status_code == 200


@pytest.mark.covers("accounts:organization", "access")
def test_a_key_without_the_admin_scope_is_refused(make_api_key):
    _, raw = make_api_key(scopes=["jobs:read", "jobs:write", "queues:read"])

    r = as_key(raw).get(URL)

    assert r.status_code == 403
    assert error(r)["code"] == "permission_denied"


def test_it_requires_authentication(org):
    r = APIClient().get(URL)

    assert r.status_code == 401
    assert error(r)["code"] == "not_authenticated"


def test_a_user_without_an_organization_is_refused(db):
    staff = User.objects.create_user("ops@taskforge.example", "pw", is_staff=True)

    assert as_user(staff).get(URL).status_code == 403


@pytest.mark.covers("accounts:organization", "happy")
def test_an_admin_renames_the_organization_and_sets_a_normalised_allowlist(org, admin):
    r = as_user(admin).patch(
        URL,
        {"name": " Acme Ltd ", "ip_allowlist": ["10.1.2.3/8", "192.0.2.1", "10.0.0.0/8"]},
        format="json",
    )

    assert r.status_code == 200, r.content
    assert r.json()["ip_allowlist"] == ["10.0.0.0/8", "192.0.2.1/32"]
    org.refresh_from_db()
    assert (org.name, org.ip_allowlist) == ("Acme Ltd", ["10.0.0.0/8", "192.0.2.1/32"])


def test_patch_audits_what_changed(org, admin):
    as_user(admin).patch(URL, {"ip_allowlist": ["2001:db8::/32"]}, format="json")

    log = AuditLog.objects.for_org(org).get(action="organization.updated")
    assert log.actor_user == admin
    assert log.metadata == {"changes": {"ip_allowlist": {"from": [], "to": ["2001:db8::/32"]}}}


def test_patch_without_changes_audits_nothing(org, admin):
    r = as_user(admin).patch(URL, {"name": "Acme"}, format="json")

    assert r.status_code == 200
    assert not AuditLog.objects.for_org(org).filter(action="organization.updated").exists()


def test_patch_names_the_entry_that_is_not_a_network(org, admin):
    r = as_user(admin).patch(URL, {"ip_allowlist": ["10.0.0.0/8", "10.0.0.0/33"]}, format="json")

    assert r.status_code == 400
    assert error(r)["code"] == "validation_error"
    assert "ip_allowlist[1]" in error(r)["message"]
    assert error(r)["details"]["value"] == "10.0.0.0/33"
    org.refresh_from_db()
    assert org.ip_allowlist == []


@pytest.mark.parametrize(
    "body",
    [
        {"ip_allowlist": "10.0.0.0/8"},
        {"name": ""},
        {"name": "   "},
        {"name": ["x"]},
        {"slug": "hijack"},
    ],
)
def test_patch_refuses_bad_input(org, admin, body):
    r = as_user(admin).patch(URL, body, format="json")

    assert r.status_code == 400
    assert error(r)["code"] == "validation_error"
    assert Organization.objects.get(pk=org.pk).name == "Acme"
    assert Organization.objects.get(pk=org.pk).slug == "acme"


def test_patch_refuses_a_body_that_is_not_json(org, admin):
    r = as_user(admin).patch(URL, "{", content_type="application/json")

    assert r.status_code == 400
    assert error(r)["code"] == "validation_error"


@pytest.mark.covers("accounts:organization", "access")
@pytest.mark.parametrize("role", [Role.MEMBER, Role.VIEWER])
def test_only_admins_may_patch(org, role):
    user = User.objects.create_user(f"{role}@acme.example", "pw", organization=org, role=role)

    r = as_user(user).patch(URL, {"name": "Pwned"}, format="json")

    assert r.status_code == 403
    org.refresh_from_db()
    assert org.name == "Acme"


@pytest.mark.covers("accounts:organization", "cross_tenant")
def test_an_outsider_admin_changes_only_their_own_organization(org, other_org):
    outsider = User.objects.create_user(
        "boss@globex.example", "pw", organization=other_org, role=Role.ADMIN
    )

    as_user(outsider).patch(URL, {"name": "Globex Two"}, format="json")

    assert Organization.objects.get(pk=org.pk).name == "Acme"
    assert Organization.objects.get(pk=other_org.pk).name == "Globex Two"
