"""Sign-up, sign-in, token refresh and sign-out (POST /api/v1/auth/...)."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.cache import cache
from rest_framework.test import APIClient

from accounts.models import AuditLog, Organization, Project, Role, User
from billing.models import Subscription, Tier
from queues.models import Queue

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct-horse-battery"  # the conftest users' password
SIGNUP = {
    "organization": "Initech",
    "email": "Peter@Initech.example",
    "password": "tps reports 4ever",
}


@pytest.fixture(autouse=True)
def fresh_throttle_counters():
    # Sign-in counters live in the (process-wide) cache: start and leave every test clean.
    cache.clear()
    yield
    cache.clear()


def post(path, body, client=None, **extra):
    return (client or APIClient()).post(f"/api/v1/auth/{path}", body, format="json", **extra)


def log_in(email, password=PASSWORD, **extra):
    return post("token", {"email": email, "password": password}, **extra)


def error(response):
    return response.json()["error"]


def bearer(token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


# --- signup


@pytest.mark.covers("accounts:signup", "happy")
def test_signup_creates_the_organization_its_admin_project_and_queue():
    r = post("signup", SIGNUP)

    assert r.status_code == 201, r.content
    body = r.json()
    org = Organization.objects.get(name="Initech")
    user = User.objects.get(email="peter@initech.example")
    project = Project.objects.for_org(org).get()
    assert body["organization"]["id"] == str(org.id)
    assert body["project"] == {
        "id": str(project.id),
        "name": "default",
        "created_at": body["project"]["created_at"],
    }
    assert (user.organization, user.role) == (org, Role.ADMIN)
    assert Subscription.objects.get(organization=org).tier == Tier.STARTER
    assert list(Queue.objects.for_project(project).values_list("name", flat=True)) == ["default"]
    assert org.apikey_set.count() == 0


def test_signup_returns_tokens_that_work():
    body = post("signup", SIGNUP).json()

    assert bearer(body["access"]).get("/api/v1/organization").json()["name"] == "Initech"
    assert post("token/refresh", {"refresh": body["refresh"]}).status_code == 200


def test_signup_audits_the_new_organization():
    post("signup", SIGNUP)

    org = Organization.objects.get(name="Initech")
    assert list(AuditLog.objects.for_org(org).values_list("action", flat=True)) == [
        "organization.created"
    ]


def test_signup_is_refused_with_a_clear_message_when_turned_off(settings):
    settings.TASKFORGE_SIGNUP_ENABLED = False

    r = post("signup", SIGNUP)

    assert r.status_code == 403
    assert error(r)["code"] == "permission_denied"
    assert "Sign-up is turned off" in error(r)["message"]
    assert not Organization.objects.exists()


def test_signup_refuses_an_email_already_registered(admin):
    r = post("signup", {**SIGNUP, "email": admin.email.upper()})

    assert r.status_code == 409
    assert error(r)["code"] == "conflict"
    assert Organization.objects.count() == 1


def test_signup_refuses_a_weak_password_and_names_the_field():
    r = post("signup", {**SIGNUP, "password": "12345678"})

    assert r.status_code == 400
    assert error(r)["code"] == "validation_error"
    assert "password" in error(r)["details"]
    assert "password" in error(r)["message"]
    assert not Organization.objects.exists()


@pytest.mark.parametrize(
    "body, field",
    [
        ({**SIGNUP, "plan": "enterprise"}, "plan"),
        ({**SIGNUP, "email": "not-an-email"}, "email"),
        ({**SIGNUP, "organization": ["Initech"]}, "organization"),
        ({"email": SIGNUP["email"], "password": SIGNUP["password"]}, "organization"),
    ],
)
def test_signup_refuses_bad_input_and_names_the_field(body, field):
    r = post("signup", body)

    assert r.status_code == 400
    assert error(r)["code"] == "validation_error"
    assert field in error(r)["details"]["fields"]
    assert not User.objects.exists()


def test_signup_refuses_a_body_that_is_not_json():
    r = APIClient().post("/api/v1/auth/signup", "{nope", content_type="application/json")

    assert r.status_code == 400
    assert error(r)["code"] == "validation_error"
    assert not Organization.objects.exists()


# --- token


@pytest.mark.covers("accounts:token", "happy")
def test_token_returns_an_access_and_a_refresh_token(member):
    r = log_in(member.email.upper())

    assert r.status_code == 200, r.content
    assert set(r.json()) == {"access", "refresh"}
    assert bearer(r.json()["access"]).get("/api/v1/organization").status_code == 200


def test_token_audits_a_successful_login_with_the_ip(member):
    log_in(member.email, REMOTE_ADDR="198.51.100.7")

    log = AuditLog.objects.for_org(member.organization).get()
    assert (log.action, log.actor_user, log.ip_address) == (
        "auth.login_succeeded",
        member,
        "198.51.100.7",
    )


def test_token_refuses_a_wrong_password_with_401_and_audits_it(member):
    r = log_in(member.email, "wrong password")

    assert r.status_code == 401
    assert error(r)["code"] == "not_authenticated"
    assert "access" not in r.json()
    log = AuditLog.objects.for_org(member.organization).get()
    assert (log.action, log.target_id, log.actor_user) == (
        "auth.login_failed",
        str(member.id),
        None,
    )


def test_token_refuses_an_unknown_email_without_auditing_anything(org):
    r = log_in("nobody@acme.example")

    assert r.status_code == 401
    assert not AuditLog.objects.for_org(org).exists()


def test_token_refuses_a_deactivated_user(member):
    member.is_active = False
    member.save(update_fields=["is_active"])

    assert log_in(member.email).status_code == 401


@pytest.mark.parametrize(
    "body",
    [{"email": "a@b.example"}, {"email": "a@b.example", "password": "x", "otp": "1"}, []],
)
def test_token_refuses_bad_input(body):
    r = post("token", body)

    assert r.status_code == 400
    assert error(r)["code"] == "validation_error"


# --- login throttle


def test_login_is_throttled_with_retry_after_after_too_many_failures(settings, member):
    settings.TASKFORGE_LOGIN_ATTEMPTS_PER_ACCOUNT_AND_IP = 3
    for _ in range(3):
        assert log_in(member.email, "guess").status_code == 401

    r = log_in(member.email)  # even the right password, once locked out

    assert r.status_code == 429
    assert error(r)["code"] == "rate_limited"
    assert 1 <= int(r["Retry-After"]) <= 60


# A fixed moment 5 s into a one-minute window: no window ends halfway through a test.
WINDOW_START = datetime(2026, 1, 15, 12, 0, 0, tzinfo=UTC)
ATTACKER, OWNER = "203.0.113.66", "198.51.100.7"


def test_hammering_an_account_locks_out_the_attackers_address_not_the_owner(member):
    with time_machine.travel(WINDOW_START + timedelta(seconds=5), tick=False):
        for _ in range(20):  # more than any default limit
            log_in(member.email, "guess", REMOTE_ADDR=ATTACKER)

        locked = log_in(member.email, REMOTE_ADDR=ATTACKER)  # even the right password
        owner = log_in(member.email, REMOTE_ADDR=OWNER)

    assert locked.status_code == 429
    assert error(locked)["code"] == "rate_limited"
    assert owner.status_code == 200, owner.content
    assert set(owner.json()) == {"access", "refresh"}


def test_the_account_limit_counts_per_address_and_account(settings, member, admin):
    settings.TASKFORGE_LOGIN_ATTEMPTS_PER_ACCOUNT_AND_IP = 2
    with time_machine.travel(WINDOW_START + timedelta(seconds=5), tick=False):
        log_in(member.email, "guess", REMOTE_ADDR=ATTACKER)
        log_in(member.email.upper(), "guess", REMOTE_ADDR=ATTACKER)

        assert log_in(member.email, REMOTE_ADDR=ATTACKER).status_code == 429
        assert log_in(admin.email, REMOTE_ADDR=ATTACKER).status_code == 200
        assert log_in(member.email, REMOTE_ADDR=OWNER).status_code == 200


def test_a_lockout_lasts_until_the_end_of_its_one_minute_window(settings, member):
    settings.TASKFORGE_LOGIN_ATTEMPTS_PER_ACCOUNT_AND_IP = 2
    with time_machine.travel(WINDOW_START + timedelta(seconds=5), tick=False) as clock:
        log_in(member.email, "guess", REMOTE_ADDR=ATTACKER)
        log_in(member.email, "guess", REMOTE_ADDR=ATTACKER)
        locked = log_in(member.email, REMOTE_ADDR=ATTACKER)
        assert locked.status_code == 429
        assert locked["Retry-After"] == "55"

        clock.move_to(WINDOW_START + timedelta(seconds=59))
        assert log_in(member.email, REMOTE_ADDR=ATTACKER).status_code == 429
        clock.move_to(WINDOW_START + timedelta(seconds=60))
        assert log_in(member.email, REMOTE_ADDR=ATTACKER).status_code == 200


def test_login_throttle_counts_per_ip_across_emails(settings, member, admin):
    settings.TASKFORGE_LOGIN_ATTEMPTS_PER_IP = 2
    log_in("a@acme.example", "guess")
    log_in("b@acme.example", "guess")

    assert log_in(admin.email).status_code == 429
    assert log_in(admin.email, REMOTE_ADDR="203.0.113.9").status_code == 200


def test_successful_logins_do_not_count_against_the_limit(settings, member):
    settings.TASKFORGE_LOGIN_ATTEMPTS_PER_ACCOUNT_AND_IP = 2
    settings.TASKFORGE_LOGIN_ATTEMPTS_PER_IP = 2

    assert [log_in(member.email).status_code for _ in range(5)] == [200] * 5


# --- refresh


@pytest.mark.covers("accounts:token-refresh", "happy")
def test_refresh_rotates_the_pair_and_the_old_refresh_token_stops_working(member):
    first = log_in(member.email).json()

    r = post("token/refresh", {"refresh": first["refresh"]})

    assert r.status_code == 200, r.content
    second = r.json()
    assert set(second) == {"access", "refresh"} and second["refresh"] != first["refresh"]
    assert bearer(second["access"]).get("/api/v1/organization").status_code == 200
    reuse = post("token/refresh", {"refresh": first["refresh"]})
    assert reuse.status_code == 401
    assert error(reuse)["code"] == "not_authenticated"
    assert post("token/refresh", {"refresh": second["refresh"]}).status_code == 200


def test_refresh_refuses_an_access_token_or_garbage(member):
    access = log_in(member.email).json()["access"]

    assert post("token/refresh", {"refresh": access}).status_code == 401
    assert post("token/refresh", {"refresh": "garbage"}).status_code == 401


def test_refresh_refuses_the_token_of_a_removed_member(member):
    refresh = log_in(member.email).json()["refresh"]
    member.delete()

    assert post("token/refresh", {"refresh": refresh}).status_code == 401


@pytest.mark.parametrize("body", [{}, {"refresh": "x", "access": "y"}, {"refresh": 5 * [1]}])
def test_refresh_refuses_bad_input(body):
    r = post("token/refresh", body)

    assert r.status_code == 400
    assert error(r)["code"] == "validation_error"


# --- logout


@pytest.mark.covers("accounts:logout", "happy")
def test_logout_answers_205_and_the_refresh_token_no_longer_works(member):
    tokens = log_in(member.email).json()

    r = post("logout", {"refresh": tokens["refresh"]})

    assert r.status_code == 205
    assert post("token/refresh", {"refresh": tokens["refresh"]}).status_code == 401


def test_logout_refuses_an_invalid_refresh_token():
    r = post("logout", {"refresh": "garbage"})

    assert r.status_code == 401
    assert error(r)["code"] == "not_authenticated"


def test_logout_refuses_bad_input():
    r = APIClient().post("/api/v1/auth/logout", "{", content_type="application/json")

    assert r.status_code == 400
    assert post("logout", {"token": "x"}).status_code == 400
