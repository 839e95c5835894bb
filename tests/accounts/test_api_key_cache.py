"""The API-key cache (accounts/authentication.py): a web process authenticates a known key
without reading it, and a change made elsewhere (another process, the admin, psql) still takes
effect within about a second, through the stamp the database triggers bump
(accounts/migrations/0003_auth_stamp.py).

"Elsewhere" is a connection of its own, in autocommit: this process's model signals never hear
of its changes, so only the stamp can tell. The tests poll for the change instead of sleeping:
speed is bench/submit.py's business.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.request import Request
from rest_framework.test import APIClient, APIRequestFactory

from accounts.authentication import ApiKeyAuthentication
from accounts.models import ApiKey

pytestmark = pytest.mark.django_db(transaction=True)

ORGANIZATION = "/api/v1/organization"


def as_key(raw: str, **extra: Any) -> APIClient:
    return APIClient(HTTP_AUTHORIZATION=f"Bearer {raw}", **extra)


@pytest.fixture
def elsewhere() -> Iterator[Callable[..., None]]:
    """``elsewhere(sql, params)``: run a statement as another process would, committed."""
    params = connection.get_connection_params()
    conn = psycopg.connect(
        dbname=connection.settings_dict["NAME"],
        autocommit=True,
        **{k: v for k, v in params.items() if k in ("user", "password", "host", "port")},
    )

    def run(statement: str, values: Any = ()) -> None:
        conn.execute(statement, values)

    yield run
    conn.close()


def until(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Poll ``predicate`` until it holds; False if it never did within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stamp() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT version FROM accounts_auth_stamp WHERE id = 1")
        (version,) = cursor.fetchone()
    return int(version)


def reads_the_key(raw: str) -> bool:
    """Whether a request with ``raw`` reads accounts_apikey (through the ORM)."""
    with CaptureQueriesContext(connection) as queries:
        assert as_key(raw).get(ORGANIZATION).status_code == 200
    return any('FROM "accounts_apikey"' in query["sql"] for query in queries)


def status(raw: str, path: str = ORGANIZATION, **extra: Any) -> int:
    return int(as_key(raw, **extra).get(path).status_code)


def test_a_known_key_authenticates_without_reading_it(make_api_key):
    _, raw = make_api_key(scopes=["admin"])
    assert status(raw) == 200
    # Within the second after the stamp was read, the cached key serves (a busier machine may
    # need a few tries to fit two requests in a second).
    assert until(lambda: not reads_the_key(raw))


def test_a_key_revoked_elsewhere_is_refused_within_a_second(make_api_key, elsewhere):
    key, raw = make_api_key(scopes=["admin"])
    assert status(raw) == 200
    assert until(lambda: not reads_the_key(raw))

    elsewhere("UPDATE accounts_apikey SET revoked_at = now() WHERE id = %s", [key.pk])

    assert until(lambda: status(raw) == 401)
    error = as_key(raw).get(ORGANIZATION).json()["error"]
    assert (error["code"], error["message"]) == (
        "not_authenticated",
        "This API key has been revoked.",
    )


def test_a_key_deleted_elsewhere_is_refused(make_api_key, elsewhere):
    key, raw = make_api_key(scopes=["admin"])
    assert status(raw) == 200

    elsewhere("DELETE FROM accounts_apikey WHERE id = %s", [key.pk])

    assert until(lambda: status(raw) == 401)
    assert as_key(raw).get(ORGANIZATION).json()["error"]["message"] == "Invalid API key."


def test_a_key_expired_elsewhere_is_refused(make_api_key, elsewhere):
    key, raw = make_api_key(scopes=["admin"])
    assert status(raw) == 200

    elsewhere(
        "UPDATE accounts_apikey SET expires_at = now() - interval '1 second' WHERE id = %s",
        [key.pk],
    )

    assert until(lambda: status(raw) == 401)
    assert "expired" in as_key(raw).get(ORGANIZATION).json()["error"]["message"]


def test_a_scope_taken_away_elsewhere_is_refused(make_api_key, elsewhere, queue):
    key, raw = make_api_key(scopes=["jobs:read"])
    assert status(raw, "/api/v1/jobs") == 200

    elsewhere("UPDATE accounts_apikey SET scopes = '{queues:read}' WHERE id = %s", [key.pk])

    assert until(lambda: status(raw, "/api/v1/jobs") == 403)
    assert status(raw, "/api/v1/queues") == 200


def test_an_allowlist_set_elsewhere_refuses_other_addresses(make_api_key, elsewhere, org):
    _, raw = make_api_key(scopes=["admin"])
    assert status(raw) == 200

    elsewhere(
        "UPDATE accounts_organization SET ip_allowlist = '{10.0.0.0/8}' WHERE id = %s", [org.pk]
    )

    assert until(lambda: status(raw) == 403)  # the test client comes from 127.0.0.1
    assert status(raw, REMOTE_ADDR="10.1.2.3") == 200


def test_a_key_expiring_by_the_clock_is_refused_at_once(make_api_key, elsewhere):
    key, raw = make_api_key(scopes=["admin"])
    elsewhere(
        "UPDATE accounts_apikey SET expires_at = now() + interval '2 seconds' WHERE id = %s",
        [key.pk],
    )
    assert until(lambda: status(raw) == 200)
    # No change to the row: the cached expiry is compared with the clock on every request.
    assert until(lambda: status(raw) == 401)


def test_last_used_at_leaves_the_stamp_and_a_revocation_bumps_it(make_api_key, elsewhere):
    key, raw = make_api_key(scopes=["admin"])
    before = stamp()

    assert status(raw) == 200  # writes last_used_at
    elsewhere("UPDATE accounts_apikey SET last_used_at = now() WHERE id = %s", [key.pk])
    ApiKey.objects.for_org(key.organization).filter(pk=key.pk).update(name="renamed")
    assert stamp() == before

    elsewhere("UPDATE accounts_apikey SET revoked_at = now() WHERE id = %s", [key.pk])
    assert stamp() > before


def test_every_request_gets_its_own_key_organization_and_project(make_api_key):
    _, raw = make_api_key(scopes=["admin"])
    factory = APIRequestFactory()
    authentication = ApiKeyAuthentication()

    def authenticate() -> ApiKey:
        request = Request(factory.get("/", HTTP_AUTHORIZATION=f"Bearer {raw}"))
        result = authentication.authenticate(request)
        assert result is not None
        return result[1]

    first = authenticate()
    first.organization.name = "changed by a view"
    first.project.name = "changed by a view"
    first.scopes.append("tampered")

    second = authenticate()
    assert second is not first and second.pk == first.pk
    assert second.organization is not first.organization
    assert second.organization.name != "changed by a view"
    assert second.project.name != "changed by a view"
    assert "tampered" not in second.scopes
