"""Hostile JSON through the whole HTTP stack (docs/api.md#requests): bodies nested deeper than
the parser takes, stored values nested deeper than MAX_VALUE_DEPTH, and the NUL characters and
lone surrogates PostgreSQL's jsonb refuses. Each is a 400 in the envelope that names the place,
and nothing is written.

Bodies are sent as raw bytes: the test client's renderer would encode a lone surrogate as
UTF-8, which Python refuses, so the JSON escape (what an attacker sends) is written by hand.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from jobs import services
from jobs.models import Batch, ExecutionLog, Job, JobExecution, Schedule
from jobs.specs import JobSpec
from taskforge.lib.errors import ValidationFailed
from taskforge.lib.jsonlimits import MAX_BODY_DEPTH, MAX_VALUE_DEPTH
from tests.api.conftest import API, check_envelope
from workers.models import Worker

pytestmark = pytest.mark.django_db

# Far past Python's recursion limit (about 1,000): json.loads raised RecursionError, a 500.
HOSTILE_DEPTH = 5000


def nested(depth: int, leaf: str = "1") -> str:
    """JSON text of ``depth`` nested arrays around ``leaf``."""
    return "[" * depth + leaf + "]" * depth


def send(client: APIClient, method: str, path: str, text: str) -> Any:
    return client.generic(method, path, text.encode(), content_type="application/json")


@pytest.fixture
def admin_key(key_client: Callable[..., APIClient]) -> APIClient:
    return key_client("admin")


@pytest.fixture
def rows(db: Any) -> Callable[[], dict[str, Any]]:
    """Every row these requests could write, across tenants."""

    def take() -> dict[str, Any]:
        return {
            "jobs": sorted(
                Job.objects.all_tenants().values_list("pk", "state", "attempts", "result")
            ),
            "batches": Batch.objects.all_tenants().count(),
            "executions": sorted(JobExecution.objects.all_tenants().values_list("pk", "status")),
            "logs": ExecutionLog.objects.all_tenants().count(),
            "workers": sorted(Worker.objects.all_tenants().values_list("name", "metadata")),
            "schedules": sorted(Schedule.objects.all_tenants().values_list("name", "payload")),
        }

    return take


# A placeholder for raw JSON text in a body built from Python values (see ``body``).
RAW = "<raw>"


def body(shape: Any, raw: str) -> str:
    """JSON text of ``shape`` with the string RAW replaced by the JSON text ``raw``."""
    return json.dumps(shape).replace(json.dumps(RAW), raw)


def job(payload: Any = RAW) -> dict[str, Any]:
    return {"queue": "default", "job_type": "t", "payload": payload}


def job_body(payload: str) -> str:
    return body(job(), payload)


# --- nesting -----------------------------------------------------------------------------------


def deep_bodies(engine: Any) -> dict[str, tuple[str, str, str]]:
    """method, path and a hostile body for every kind of endpoint that takes JSON."""
    running, assigned = engine.start()
    worker = engine.worker
    lease = str(assigned.lease_token)
    item = {"job_id": str(running.pk), "lease_token": lease}
    deep = nested(HOSTILE_DEPTH)
    schedule = {"name": "s", "cron": "@daily", "queue": "default", "job_type": "t"}
    shapes: dict[str, tuple[str, str, Any]] = {
        "submit": ("POST", f"{API}/jobs", job()),
        "batch": ("POST", f"{API}/jobs/batch", {"jobs": [job()]}),
        "results": (
            "POST",
            f"{API}/workers/{worker.pk}/results",
            {"results": [{**item, "status": "succeeded", "result": RAW}]},
        ),
        "complete": (
            "POST",
            f"{API}/jobs/{running.pk}/complete",
            {"lease_token": lease, "result": RAW},
        ),
        "logs": (
            "POST",
            f"{API}/jobs/{running.pk}/logs",
            {"lease_token": lease, "entries": [{"message": "m", "metadata": {"m": RAW}}]},
        ),
        "schedule": ("POST", f"{API}/schedules", {**schedule, "payload": RAW}),
        "register": (
            "POST",
            f"{API}/workers",
            {"name": "w", "queues": [{"name": "default"}], "metadata": {"m": RAW}},
        ),
        "queue": ("POST", f"{API}/queues", {"name": RAW}),
        "bulk": ("POST", f"{API}/jobs/bulk", {"action": "cancel", "ids": RAW}),
        "queue-assignments": ("PUT", f"{API}/workers/{worker.pk}/queues", RAW),
        "signup": ("POST", f"{API}/auth/signup", RAW),
        "token": ("POST", f"{API}/auth/token", {"email": RAW}),
    }
    return {
        name: (method, path, body(shape, deep)) for name, (method, path, shape) in shapes.items()
    }


DEEP_ENDPOINTS = [
    "submit", "batch", "results", "complete", "logs", "schedule", "register", "queue", "bulk",
    "queue-assignments", "signup", "token",
]  # fmt: skip


@pytest.mark.parametrize("endpoint", DEEP_ENDPOINTS)
def test_a_body_nested_thousands_of_levels_deep_is_refused_on_every_endpoint(
    endpoint, admin_key, engine, rows
):
    method, path, text = deep_bodies(engine)[endpoint]
    before = rows()
    response = send(admin_key, method, path, text)
    error = check_envelope(response, 400, "validation_error")
    assert error["message"] == f"body: JSON nested deeper than {MAX_BODY_DEPTH} levels"
    assert error["details"] == {"field": "body", "limit": MAX_BODY_DEPTH}
    assert rows() == before


def test_a_body_just_past_the_limit_is_refused_and_one_at_it_is_parsed(admin_key, rows):
    before = rows()
    # The body's object is one level, the payload's arrays the rest.
    too_deep = send(admin_key, "POST", f"{API}/jobs", job_body(nested(MAX_BODY_DEPTH)))
    error = check_envelope(too_deep, 400, "validation_error")
    assert error["details"] == {"field": "body", "limit": MAX_BODY_DEPTH}
    at_limit = send(admin_key, "POST", f"{API}/jobs", job_body(nested(MAX_BODY_DEPTH - 1)))
    # Parsed: refused by the payload's own, lower limit, which names the field.
    error = check_envelope(at_limit, 400, "validation_error")
    assert error["message"] == f"payload: JSON nested deeper than {MAX_VALUE_DEPTH} levels"
    assert error["details"] == {"field": "payload", "limit": MAX_VALUE_DEPTH}
    assert rows() == before


def test_brackets_inside_strings_do_not_count_as_nesting(admin_key):
    payload = json.dumps({"text": "[{" * 10_000 + '\\"[' * 100})
    response = send(admin_key, "POST", f"{API}/jobs", job_body(payload))
    assert response.status_code == 201, response.content
    assert response.json()["payload"] == json.loads(payload)


def test_a_payload_at_the_value_limit_is_stored_and_one_level_more_is_refused(admin_key, rows):
    ok = send(admin_key, "POST", f"{API}/jobs", job_body(nested(MAX_VALUE_DEPTH)))
    assert ok.status_code == 201, ok.content
    assert Job.objects.all_tenants().get(pk=ok.json()["id"]).payload == json.loads(
        nested(MAX_VALUE_DEPTH)
    )
    before = rows()
    deeper = send(admin_key, "POST", f"{API}/jobs", job_body(nested(MAX_VALUE_DEPTH + 1)))
    error = check_envelope(deeper, 400, "validation_error")
    assert error["message"] == f"payload: JSON nested deeper than {MAX_VALUE_DEPTH} levels"
    assert rows() == before


def test_engine_producers_cannot_store_a_payload_nested_too_deep(project, queue, rows):
    payload: Any = 1
    for _ in range(HOSTILE_DEPTH):
        payload = [payload]
    before = rows()
    with pytest.raises(ValidationFailed) as refused:
        services.submit_job(project, JobSpec(queue="default", job_type="t", payload=payload))
    assert refused.value.message == f"payload: JSON nested deeper than {MAX_VALUE_DEPTH} levels"
    assert rows() == before


# --- NUL and lone surrogates -------------------------------------------------------------------

# (name, JSON text) of values PostgreSQL's jsonb cannot store; as the body's JSON escapes.
UNSTORABLE = {
    "high surrogate": ('{"a": "x\\ud800"}', "\\ud800"),
    "low surrogate": ('{"a": ["\\udfff"]}', "\\udfff"),
    "reversed pair": ('{"a": "\\udc00\\ud800"}', "\\udc00"),
    "surrogate key": ('{"\\udbff": 1}', "\\udbff"),
    "nul value": ('{"a": "\\u0000"}', "\\u0000"),
    "nul key": ('{"\\u0000": 1}', "\\u0000"),
}


def storing_requests(engine: Any, value: str) -> dict[str, tuple[str, str, str, str]]:
    """method, path, body and the field the error must name, for every place that stores
    client JSON."""
    running, assigned = engine.start()
    worker = engine.worker
    lease = str(assigned.lease_token)
    item = {"job_id": str(running.pk), "lease_token": lease}
    schedule = services_schedule(engine)
    shapes: dict[str, tuple[str, str, Any, str]] = {
        "submit": ("POST", f"{API}/jobs", job(), "payload"),
        "batch": ("POST", f"{API}/jobs/batch", {"jobs": [job({}), job()]}, "jobs[1].payload"),
        "batch callback": (
            "POST",
            f"{API}/jobs/batch",
            {"jobs": [job({})], "on_complete": {**job(), "job_type": "cb"}},
            "on_complete.payload",
        ),
        "complete": (
            "POST",
            f"{API}/jobs/{running.pk}/complete",
            {"lease_token": lease, "result": RAW},
            "result",
        ),
        "results": (
            "POST",
            f"{API}/workers/{worker.pk}/results",
            {"results": [{**item, "status": "succeeded", "result": RAW}]},
            "result",
        ),
        "log metadata": (
            "POST",
            f"{API}/jobs/{running.pk}/logs",
            {
                "lease_token": lease,
                "entries": [{"message": "ok"}, {"message": "m", "metadata": RAW}],
            },
            "entries[1].metadata",
        ),
        "schedule create": (
            "POST",
            f"{API}/schedules",
            {"name": "s2", "cron": "@daily", "queue": "default", "job_type": "t", "payload": RAW},
            "payload",
        ),
        "schedule change": ("PATCH", f"{API}/schedules/{schedule.pk}", {"payload": RAW}, "payload"),
        "worker metadata": (
            "POST",
            f"{API}/workers",
            {"name": "w2", "queues": [{"name": "default"}], "metadata": RAW},
            "metadata",
        ),
    }
    return {
        name: (method, path, body(shape, value), field)
        for name, (method, path, shape, field) in shapes.items()
    }


def services_schedule(engine: Any) -> Schedule:
    from jobs.schedules import services as scheduling

    return scheduling.create_schedule(
        engine.project,
        {"name": "s1", "cron": "@daily", "queue": "default", "job_type": "t", "payload": {}},
    )


STORING = [
    "submit", "batch", "batch callback", "complete", "results", "log metadata",
    "schedule create", "schedule change", "worker metadata",
]  # fmt: skip


@pytest.mark.parametrize("case", list(UNSTORABLE))
@pytest.mark.parametrize("place", STORING)
def test_json_that_postgresql_cannot_store_is_refused_naming_the_field(
    place, case, admin_key, engine, rows
):
    value, escape = UNSTORABLE[case]
    method, path, text, field = storing_requests(engine, value)[place]
    before = rows()
    response = send(admin_key, method, path, text)
    error = check_envelope(response, 400, "validation_error")
    assert error["message"].startswith(f"{field}: "), error
    assert escape in error["message"], error
    assert rows() == before


def test_a_surrogate_pair_is_stored_as_the_character_it_encodes(admin_key):
    response = send(admin_key, "POST", f"{API}/jobs", job_body('{"a": "\\ud83d\\ude00"}'))
    assert response.status_code == 201, response.content
    assert Job.objects.all_tenants().get(pk=response.json()["id"]).payload == {"a": "\U0001f600"}


def test_an_escaped_backslash_before_u0000_is_ordinary_text(admin_key):
    # The JSON text \\u0000 is a backslash followed by "u0000", not a NUL character.
    response = send(admin_key, "POST", f"{API}/jobs", job_body('{"a": "\\\\u0000\\\\ud800"}'))
    assert response.status_code == 201, response.content
    stored = Job.objects.all_tenants().get(pk=response.json()["id"]).payload
    assert stored == {"a": "\\u0000\\ud800"}


def test_engine_producers_cannot_store_a_lone_surrogate(project, queue, rows):
    before = rows()
    with pytest.raises(ValidationFailed) as refused:
        services.submit_job(
            project, JobSpec(queue="default", job_type="t", payload={"a": "\ud800"})
        )
    assert refused.value.message.startswith("payload: must not contain a lone surrogate")
    assert rows() == before
