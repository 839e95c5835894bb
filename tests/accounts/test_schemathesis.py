"""Property-based tests of the Accounts API against its own OpenAPI schema (schemathesis).

Like tests/api/test_schemathesis.py, for the accounts paths: generated requests (schema
examples, boundary values, random valid and invalid input) go through the whole Django stack
with an admin-scope API key, and every answer must be documented (body and media type), never
a 5xx, and every 4xx the error envelope.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from django.core.cache import cache
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from accounts.models import Project
from taskforge.wsgi import application

schema = schemathesis.openapi.from_wsgi("/api/schema/", application).include(
    path_regex=r"^/api/v1/(auth|organization|members|projects|api-keys|audit-logs)(/|$)"
)


def error_envelope(ctx: Any, response: Any, case: Any) -> None:
    """A 4xx answer is ``{"error": {"code", "message", "details"}}`` in JSON, never HTML."""
    if not 400 <= response.status_code < 500:
        return
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), f"{response.status_code}: {content_type}"
    body = json.loads(response.content)
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert isinstance(body["error"]["details"], dict), body


CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance, error_envelope]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Give each generated test a unique node id (see tests/api/test_schemathesis.py: without
    parameters the items share one id and pytest-xdist runs only one of them)."""
    if "scopes" in metafunc.fixturenames:
        metafunc.parametrize("scopes", [["admin"]], ids=["admin-key"])


@dataclass(frozen=True)
class World:
    headers: dict[str, str]
    known: dict[str, list[str]]

    def use_real_ids(self, case: schemathesis.Case) -> None:
        """Swap half of the generated path ids for real ones, chosen by the string's hash (so
        Hypothesis replays and shrinks a case the same way), so operations run on real rows
        too, not only into 404s."""
        for name, value in (case.path_parameters or {}).items():
            known = self.known.get(name)
            if known and isinstance(value, str):
                digest = zlib.crc32(value.encode("utf-8", "surrogatepass"))
                if digest & 1:
                    case.path_parameters[name] = known[(digest >> 1) % len(known)]


@pytest.fixture
def world(make_api_key: Any, org: Any, admin: Any, member: Any, scopes: list[str]) -> World:
    """An organization with two users, a second project and two keys; the caller's key."""
    cache.clear()  # sign-in counters
    _, raw = make_api_key(scopes=scopes)
    second = Project.objects.create(organization=org, name="second")
    other_key, _ = make_api_key(scopes=["jobs:read"], project=second)
    return World(
        headers={"Authorization": f"Bearer {raw}"},
        known={
            "project_id": [str(second.pk)],
            "member_id": [str(member.pk), str(admin.pk)],
            "key_id": [str(other_key.pk)],
        },
    )


# transaction=True: schemathesis calls the real WSGI handler, which closes a connection it
# finds inside a transaction (see tests/api/test_schemathesis.py).
@pytest.mark.django_db(transaction=True)
@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_it_answers_generated_requests_as_documented_and_never_with_a_5xx(
    case: schemathesis.Case, world: World
) -> None:
    world.use_real_ids(case)
    case.call_and_validate(headers=world.headers, checks=CHECKS)
