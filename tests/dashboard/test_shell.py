"""The dashboard's doors and shell: sign-in, sign-up, sign-out, the switcher, error pages."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import time_machine
from django.core.cache import cache
from django.test import Client

from accounts.dashboard import SESSION_PROJECT
from accounts.models import AuditLog, Organization, Project, Role, User
from tests.dashboard.conftest import post_form

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"


@pytest.fixture(autouse=True)
def fresh_throttle_counters():
    cache.clear()
    yield
    cache.clear()


def login(client: Client, email: str, password: str = PASSWORD, address: str = "198.51.100.7"):
    client.get("/login")
    return client.post(
        "/login",
        {
            "email": email,
            "password": password,
            "next": "/jobs",
            "csrfmiddlewaretoken": client.cookies["csrftoken"].value,
        },
        REMOTE_ADDR=address,
    )


@pytest.mark.covers("dashboard:overview", "access")
def test_the_root_sends_a_signed_out_visitor_to_the_sign_in_page(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/login?next=%2F"


def test_a_signed_out_poll_redirects_the_whole_page_not_the_region(client):
    response = client.get("/?partial=counters", headers={"HX-Request": "true"})
    assert response.status_code == 204
    assert response["HX-Redirect"].startswith("/login?next=")


@pytest.mark.covers("dashboard:login", "happy")
def test_sign_in_with_the_api_users_credentials_opens_the_next_page(member):
    client = Client(enforce_csrf_checks=True)
    page = client.get("/login?next=/jobs")
    assert b'name="csrfmiddlewaretoken"' in page.content
    response = login(client, member.email)
    assert response.status_code == 302
    assert response["Location"] == "/jobs"
    assert client.get("/").status_code == 200
    assert (
        AuditLog.objects.for_org(member.organization).filter(action="auth.login_succeeded").exists()
    )


def test_sign_in_refuses_a_wrong_password_and_an_open_redirect(member):
    client = Client(enforce_csrf_checks=True)
    response = login(client, member.email, "wrong")
    assert response.status_code == 400
    assert b"Wrong email or password." in response.content
    client.get("/login")
    response = client.post(
        "/login",
        {
            "email": member.email,
            "password": PASSWORD,
            "next": "https://evil.example/",
            "csrfmiddlewaretoken": client.cookies["csrftoken"].value,
        },
    )
    assert response["Location"] == "/"


def test_a_form_without_the_csrf_token_is_refused(member):
    client = Client(enforce_csrf_checks=True)
    response = client.post("/login", {"email": member.email, "password": PASSWORD})
    assert response.status_code == 403
    assert "_auth_user_id" not in client.session


def test_sign_in_is_rate_limited_with_the_apis_counters(member):
    with time_machine.travel(datetime(2026, 1, 15, 12, 0, 5, tzinfo=UTC), tick=False):
        client = Client()
        statuses = [login(client, member.email, "guess").status_code for _ in range(6)]
        assert statuses[:5] == [400] * 5
        assert statuses[5] == 429
        # Over the limit the right password is refused too, and the API shares the counter.
        blocked = login(client, member.email)
        assert blocked.status_code == 429
        assert int(blocked["Retry-After"]) >= 1
        api = Client().post(
            "/api/v1/auth/token",
            {"email": member.email, "password": PASSWORD},
            content_type="application/json",
            REMOTE_ADDR="198.51.100.7",
        )
        assert api.status_code == 429
    with time_machine.travel(datetime(2026, 1, 15, 12, 1, 5, tzinfo=UTC), tick=False):
        assert login(Client(), member.email).status_code == 302


@pytest.mark.covers("dashboard:logout", "happy")
def test_sign_out_ends_the_session(signed_in, member):
    client = signed_in(member)
    response = post_form(client, "/logout")
    assert response["Location"] == "/login"
    assert client.get("/")["Location"].startswith("/login")


@pytest.mark.covers("dashboard:signup", "happy")
def test_sign_up_creates_an_organization_and_signs_its_admin_in(db):
    client = Client(enforce_csrf_checks=True)
    client.get("/signup")
    response = client.post(
        "/signup",
        {
            "organization_name": "Initech",
            "email": "Bill@Initech.example",
            "password": "a-long-enough-passphrase",
            "csrfmiddlewaretoken": client.cookies["csrftoken"].value,
        },
    )
    assert response.status_code == 302
    user = User.objects.all_tenants().get(email="bill@initech.example")
    assert user.role == Role.ADMIN
    overview = client.get("/")
    assert overview.status_code == 200
    assert b"Initech" in overview.content


def test_sign_up_shows_errors_next_to_their_fields(member):
    client = Client()
    response = client.post(
        "/signup", {"organization_name": "X", "email": member.email, "password": "another-pass-9"}
    )
    assert response.status_code == 409
    assert b'id="email-error"' in response.content
    weak = client.post(
        "/signup", {"organization_name": "Y", "email": "y@y.example", "password": "123"}
    )
    assert weak.status_code == 400
    assert b'id="password-error"' in weak.content
    assert not Organization.objects.filter(name="Y").exists()


def test_sign_up_is_a_404_when_turned_off(client, settings):
    settings.TASKFORGE_SIGNUP_ENABLED = False
    assert client.get("/signup").status_code == 404
    assert b"Create an organization" not in client.get("/login").content


@pytest.mark.covers("dashboard:switch", "happy")
def test_the_project_switcher_changes_the_project_of_every_page(signed_in, member, org):
    second = Project.objects.create(organization=org, name="staging")
    client = signed_in(member)
    response = post_form(client, "/switch", {"project": str(second.pk), "next": "/jobs"})
    assert response["Location"] == "/jobs"
    assert client.session[SESSION_PROJECT] == str(second.pk)
    page = client.get("/")
    assert b"selected>staging</option>" in page.content


@pytest.mark.covers("dashboard:switch", "access")
def test_a_viewer_may_switch_projects_but_a_signed_out_visitor_may_not(signed_in, viewer, org):
    second = Project.objects.create(organization=org, name="staging")
    client = signed_in(viewer)
    assert post_form(client, "/switch", {"project": str(second.pk)}).status_code == 302
    anonymous = Client()
    assert anonymous.post("/switch", {"project": str(second.pk)}).status_code == 302
    assert SESSION_PROJECT not in anonymous.session


@pytest.mark.covers("dashboard:switch", "cross_tenant")
def test_switching_to_another_organizations_project_is_a_404(signed_in, member, other_project):
    client = signed_in(member)
    response = post_form(client, "/switch", {"project": str(other_project.pk)})
    assert response.status_code == 404
    assert client.session.get(SESSION_PROJECT) != str(other_project.pk)
    # So is naming it in a URL, and only staff may switch organization.
    assert client.get(f"/?project={other_project.pk}").status_code == 404
    org = other_project.organization
    assert post_form(client, "/switch", {"organization": str(org.pk)}).status_code == 404


def test_staff_visit_another_organization_read_only(signed_in, org, other_org, other_project):
    staff = User.objects.create_user(
        "ops@taskforge.example", PASSWORD, organization=org, role=Role.ADMIN, is_staff=True
    )
    client = signed_in(staff)
    post_form(client, "/switch", {"organization": str(other_org.pk)})
    page = client.get("/")
    assert b"Platform view" in page.content
    assert other_org.name.encode() in page.content
    # Read-only: a write is refused whatever the staff user's own role.
    assert post_form(client, "/queues", {"name": "sneaky"}).status_code == 403


def test_a_user_without_an_organization_gets_a_clear_page(signed_in, db):
    loner = User.objects.create_user("loner@example.com", PASSWORD)
    response = signed_in(loner).get("/")
    assert response.status_code == 403
    assert b"belongs to no organization" in response.content


def test_an_unknown_page_is_an_html_404_for_people_and_json_under_the_api(signed_in, member):
    client = signed_in(member)
    page = client.get("/no-such-page")
    assert page.status_code == 404
    assert page["Content-Type"].startswith("text/html")
    assert b"Not found" in page.content
    assert client.get("/api/v1/nothing-here").json()["error"]["code"] == "not_found"


def test_every_page_loads_only_our_own_static_files(signed_in, member):
    content = signed_in(member).get("/").content.decode()
    assert "/static/vendor/htmx-2.0.10.min.js" in content
    assert "/static/dashboard/taskforge.css" in content
    assert "http://" not in content.replace("http://testserver", "")
    assert "https://" not in content


def test_the_login_page_keeps_an_old_session_of_a_signed_in_user(signed_in, member):
    client = signed_in(member)
    response = client.get("/login?next=/workers")
    assert response["Location"] == "/workers"
