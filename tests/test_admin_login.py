"""The Django admin login has the API's brute-force limit (taskforge/admin_site.py).

Failed password checks at /admin/login/ count against the same per-address and
per-(address, account) limits as POST /api/v1/auth/token (accounts/throttling.py), on the same
counters. Over a limit the login page answers 429 with Retry-After, even for the right
password, until the one-minute window ends; another address is not affected.
"""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.cache import cache
from django.test import Client

from accounts.models import User

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/"
EMAIL, PASSWORD = "root@taskforge.example", "correct-horse-battery"
ATTACKER, OWNER = "203.0.113.66", "198.51.100.7"
# 5 s into a one-minute window, frozen: no window ends halfway through a test.
WINDOW_START = datetime(2026, 1, 15, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def fresh_throttle_counters():
    # Sign-in counters live in the (process-wide) cache: start and leave every test clean.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def superuser(db):
    return User.objects.create_superuser(EMAIL, PASSWORD)


@pytest.fixture
def frozen():
    with time_machine.travel(WINDOW_START + timedelta(seconds=5), tick=False) as clock:
        yield clock


def admin_login(password, address, email=EMAIL, client=None):
    client = client or Client()
    body = {"username": email, "password": password, "next": "/admin/"}
    return client.post(LOGIN, body, REMOTE_ADDR=address)


def signed_in(client):
    return client.get("/admin/").status_code == 200


def hammer(address, times=20, email=EMAIL):
    """Wrong passwords, more than any default limit allows."""
    return [admin_login("guess", address, email).status_code for _ in range(times)]


def test_the_admin_login_answers_429_with_retry_after_after_too_many_failures(superuser, frozen):
    statuses = hammer(ATTACKER)
    client = Client()

    r = admin_login(PASSWORD, ATTACKER, client=client)  # even the right password

    assert statuses[0] == 200  # the form again, with its error
    assert statuses[-1] == 429
    assert r.status_code == 429
    assert r["Retry-After"] == "55"
    assert "Too many sign-in attempts" in r.content.decode()
    assert not signed_in(client)


def test_the_admin_lockout_leaves_the_owner_in_from_another_address(superuser, frozen):
    hammer(ATTACKER)
    client = Client()

    r = admin_login(PASSWORD, OWNER, client=client)

    assert r.status_code == 302, r.content
    assert signed_in(client)


def test_the_admin_lockout_ends_with_its_one_minute_window(superuser, frozen):
    hammer(ATTACKER)
    frozen.move_to(WINDOW_START + timedelta(seconds=60))
    client = Client()

    assert admin_login(PASSWORD, ATTACKER, client=client).status_code == 302
    assert signed_in(client)


def test_failures_at_the_api_count_against_the_admin_login(superuser, frozen):
    api = Client()
    for _ in range(20):
        api.post(
            "/api/v1/auth/token",
            {"email": EMAIL, "password": "guess"},
            content_type="application/json",
            REMOTE_ADDR=ATTACKER,
        )

    assert admin_login(PASSWORD, ATTACKER).status_code == 429


def test_successful_admin_logins_do_not_count_against_the_limit(superuser, frozen):
    statuses = [admin_login(PASSWORD, OWNER).status_code for _ in range(20)]

    assert statuses == [302] * 20


def test_a_non_staff_user_is_refused_and_counted_as_a_failure(org, member, frozen):
    statuses = hammer(ATTACKER, email=member.email)

    assert statuses[0] == 200
    assert statuses[-1] == 429
