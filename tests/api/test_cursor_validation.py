"""Pagination cursors are opaque and validated (docs/api.md#lists) on every paginated list:
anything the API did not issue is a 400 naming `cursor`, never a query PostgreSQL refuses.
A cursor the API did issue still leads to the next page."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.audit import record_audit
from accounts.models import Organization, Project
from jobs.schedules import services as scheduling
from tests.api.conftest import API, check_envelope
from workers import services as worker_services

pytestmark = pytest.mark.django_db

UUID_PK = "01890000-0000-7000-8000-000000000000"


def cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


# Cursors the API never issues; each once made a list answer 500 or silently mean something.
FORGED = {
    "offset +23:59": cursor(f"2026-01-01T00:00:00+23:59|{UUID_PK}"),
    "offset -23:59": cursor(f"2026-01-01T00:00:00-23:59|{UUID_PK}"),
    "year 1, offset +23:59": cursor(f"0001-01-01T00:00:00+23:59|{UUID_PK}"),
    "year 9999, offset -23:59, integer id": cursor("9999-12-31T23:59:59.999999-23:59|1"),
    "offset +01:00": cursor(f"2026-01-01T01:00:00+01:00|{UUID_PK}"),
    "naive time": cursor(f"2026-01-01T00:00:00|{UUID_PK}"),
    "date only": cursor(f"2026-01-01|{UUID_PK}"),
    "id out of bigint range": cursor("2026-01-01T00:00:00+00:00|99999999999999999999999"),
    "negative id": cursor("2026-01-01T00:00:00+00:00|-1"),
    "uuid without dashes": cursor("2026-01-01T00:00:00+00:00|" + UUID_PK.replace("-", "")),
    "no id": cursor("2026-01-01T00:00:00+00:00"),
    "two separators": cursor(f"2026-01-01T00:00:00+00:00|{UUID_PK}|x"),
    "not base64": "%%%not-a-cursor",
    "standard base64 alphabet": base64.b64encode(b"2026-01-01T00:00:00+00:00|\xfb\xff").decode(),
    "not utf-8": cursor("x")[:-4] + base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(),
    "huge": cursor("2026-01-01T00:00:00+00:00|" + "1" * 5000),
}


@pytest.fixture
def world(
    key_client: Callable[..., APIClient],
    engine: Any,
    make_queue: Callable[..., Any],
    make_api_key: Callable[..., Any],
    org: Organization,
    project: Project,
    admin: Any,
    member: Any,
) -> tuple[APIClient, list[str]]:
    """An admin key, and the path of every paginated list, each with at least two rows."""
    client = key_client("admin")
    engine.submit()
    engine.submit()
    make_queue("second")
    for name in ("w1", "w2"):
        worker_services.register_worker(
            project, name=name, queues=[worker_services.QueueWeight("default")]
        )
    schedules = [
        scheduling.create_schedule(
            project, {"name": name, "cron": "@daily", "queue": "default", "job_type": "t"}
        )
        for name in ("s1", "s2")
    ]
    scheduling.trigger_schedule(schedules[0])
    scheduling.trigger_schedule(schedules[0])
    Project.objects.create(organization=org, name="second")
    make_api_key(scopes=["jobs:read"])
    record_audit(org, "test.first")
    record_audit(org, "test.second")
    paths = [
        f"{API}/jobs",
        f"{API}/queues",
        f"{API}/workers",
        f"{API}/schedules",
        f"{API}/schedules/{schedules[0].pk}/runs",
        f"{API}/members",
        f"{API}/projects",
        f"{API}/projects/{project.pk}/api-keys",
        f"{API}/audit-logs",
    ]
    return client, paths


LISTS = ["jobs", "queues", "workers", "schedules", "runs", "members", "projects", "keys", "audit"]


@pytest.mark.parametrize("forged", list(FORGED))
@pytest.mark.parametrize("index", range(len(LISTS)), ids=LISTS)
def test_a_cursor_the_api_did_not_issue_is_a_400_naming_cursor(world, index, forged):
    client, paths = world
    response = client.get(paths[index], {"cursor": FORGED[forged]})
    error = check_envelope(response, 400, "validation_error")
    assert error["details"] == {"field": "cursor"}
    assert error["message"].startswith("cursor: ")


@pytest.mark.parametrize("index", range(len(LISTS)), ids=LISTS)
def test_the_cursor_of_next_leads_to_the_following_page(world, index):
    client, paths = world
    first = client.get(paths[index], {"limit": 1})
    assert first.status_code == 200, first.content
    assert first.json()["next"], first.json()
    second = client.get(first.json()["next"])
    assert second.status_code == 200, second.content
    assert second.json()["results"]
    assert second.json()["results"][0] != first.json()["results"][0]
