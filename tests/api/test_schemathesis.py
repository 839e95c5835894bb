"""Property-based tests of the Jobs and Queues API against its own OpenAPI schema (schemathesis).

The schema is the one ``/api/schema/`` serves (drf-spectacular), loaded from the WSGI
application in-process: no server runs. schemathesis generates requests for every operation
under ``/api/v1/jobs``, ``/api/v1/batches`` and ``/api/v1/queues`` (schema examples, boundary
values, then up to 25 random valid and invalid inputs per operation), and each one goes through
the whole Django stack with an API key that has every scope. Half of the generated ids and queue
names are swapped for real ones, so the operations run on existing jobs, batches and queues too,
not only into 404s.

What is checked:
* ``not_a_server_error``: never a 5xx, whatever the input;
* ``status_code_conformance``: every status is documented (the error statuses are added to
  every operation by taskforge.openapi.add_error_responses);
* ``response_schema_conformance`` and ``content_type_conformance``: the body and media type
  are the documented ones;
* ``error_envelope`` (here): every 4xx is the error envelope (docs/api.md#errors).
Two inputs that once made 500s are also pinned by plain tests at the end.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from rest_framework.test import APIClient
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from taskforge.wsgi import application

schema = schemathesis.openapi.from_wsgi("/api/schema/", application).include(
    path_regex=r"^/api/v1/(jobs|batches|queues)(/|$)"
)

TIME_FILTERS = ("created_after", "created_before")


def error_envelope(ctx: Any, response: Any, case: Any) -> None:
    """A 4xx answer is ``{"error": {"code", "message", "details"}}`` in JSON, never HTML."""
    if not 400 <= response.status_code < 500:
        return
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), f"{response.status_code}: {content_type}"
    body = json.loads(response.content)
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, body
    assert isinstance(error["code"], str) and error["code"], body
    assert isinstance(error["message"], str) and error["message"], body
    assert isinstance(error["details"], dict), body


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
    error_envelope,
]


@dataclass(frozen=True)
class World:
    """The rows a test runs against, by parameter name, and the headers of its API key."""

    headers: dict[str, str]
    known: dict[str, list[str]]
    leases: dict[str, str]  # job id -> lease token, for the jobs a worker is running

    def use_real_rows(self, case: schemathesis.Case) -> None:
        """Swap about half of the generated ids and queue names for real ones."""
        if case.path_parameters:
            case.path_parameters = {
                name: _maybe(value, self.known.get(name, []))
                for name, value in case.path_parameters.items()
            }
        body = case.body
        if not isinstance(body, dict):
            return
        jobs = body.get("jobs")
        for spec in [body, body.get("filter"), *(jobs if isinstance(jobs, list) else [])]:
            if isinstance(spec, dict) and "queue" in spec:
                spec["queue"] = _maybe(spec["queue"], self.known["name"])
        # A running job gets its own lease token (when the generated one is a string), so the
        # worker calls get past the token check; other jobs still answer 409 for any token.
        lease = self.leases.get(str((case.path_parameters or {}).get("job_id")))
        if lease and isinstance(body.get("lease_token"), str):
            body["lease_token"] = lease


def _maybe(generated: Any, known: list[str]) -> Any:
    """Half of the generated strings become a known value, chosen by the string's hash.

    A hash rather than a random draw, so a case maps the same way every time Hypothesis
    replays or shrinks it, in every phase (examples, boundary values and random inputs).
    """
    if not known or not isinstance(generated, str):
        return generated
    digest = zlib.crc32(generated.encode("utf-8", "surrogatepass"))
    return known[(digest >> 1) % len(known)] if digest & 1 else generated


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize the tests that use ``world`` with the scopes of the key they call with.

    It also gives each generated test a unique node id: pytest 9.2 builds an item's id from
    its ``originalname`` and parameters, and schemathesis 4.32 puts the operation only in the
    item's name, so without parameters its items share one id and pytest-xdist (CI runs
    ``-n 2``) runs a single one of them.
    """
    if "scopes" in metafunc.fixturenames:
        metafunc.parametrize("scopes", [["admin"]], ids=["admin-key"])


@pytest.fixture
def world(engine: Any, make_queue: Any, make_api_key: Any, scopes: list[str]) -> World:
    """Jobs in every reachable state, a batch, three queues, and an all-scopes API key."""
    running = [engine.start()[1] for _ in range(3)]
    jobs = [
        engine.submit(),
        engine.submit(job_type="emails.send", tags=["a"], idempotency_key="k-1"),
        engine.dead(),
        engine.succeeded(result={"ok": True}, logs=("hello",)),
        engine.cancelled(),
    ]
    batch = engine.batch(count=3)
    make_queue("paused", paused=True)
    _, raw = make_api_key(scopes=scopes)
    return World(
        headers={"Authorization": f"Bearer {raw}"},
        known={
            "job_id": [str(job.id) for job in [*running, *jobs, *batch.jobs]],
            "batch_id": [str(batch.batch_id)],
            "name": ["default", "work", "paused"],
        },
        leases={str(job.id): str(job.lease_token) for job in running},
    )


# transaction=True, not plain django_db: schemathesis calls the real WSGI handler, which (unlike
# Django's test client) runs close_old_connections around every request, and that closes a
# connection it finds inside a transaction: the test's own ("the connection is closed").
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
    world.use_real_rows(case)
    case.call_and_validate(headers=world.headers, checks=CHECKS)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("method", "suffix"),
    [("get", ""), ("patch", ""), ("delete", ""), ("get", "/stats")]
    + [("post", f"/{action}") for action in ("pause", "resume", "purge")],
)
def test_a_queue_name_with_a_nul_character_is_not_a_server_error(
    method: str, suffix: str, world: World
) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=world.headers["Authorization"])
    url = f"/api/v1/queues/default%00{suffix}"
    if method in ("post", "patch"):
        response = getattr(client, method)(url, {}, format="json")
    else:
        response = getattr(client, method)(url)
    assert response.status_code in (400, 404), response.content


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", TIME_FILTERS)
@pytest.mark.parametrize("offset", ["+16:00", "-17:41", "+23:59"])
def test_the_job_list_takes_any_utc_offset_python_parses(
    name: str, offset: str, world: World
) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=world.headers["Authorization"])
    response = client.get("/api/v1/jobs", {name: f"2026-01-01T00:00:00{offset}"})
    assert response.status_code in (200, 400), response.content
