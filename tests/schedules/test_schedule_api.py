"""The Schedules REST API (docs/schedules.md) through the whole HTTP stack, on a frozen
database clock: create (representation, defaults, first fire time), bad input naming the field,
name conflicts and the plan's schedule count, list, detail, change, delete, preview, trigger and
the run history; then the access trio of every endpoint.

Expected fire times are worked out by hand, not with jobs/schedules/cron.py. Berlin is UTC+1
(CET) in winter and UTC+2 (CEST) from 2026-03-29 02:00, when 02:00-03:00 local does not exist.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import AuditLog, Project, User
from billing.models import Subscription, Tier
from jobs.models import Job, Schedule, ScheduleRun
from jobs.schedules import services as scheduling
from tests.api.conftest import check_envelope
from tests.schedules.conftest import utc

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/v1/schedules"
# A Thursday, 13:07 in Berlin (CET).
NOW = utc(2026, 1, 15, 12, 7)
MINIMAL = {"name": "often", "cron": "*/5 * * * *", "queue": "default", "job_type": "sync.run"}
FULL = {
    "name": "nightly-report",
    "cron": "30 2 * * *",
    "timezone": "Europe/Berlin",
    "queue": "reports",
    "job_type": "reports.nightly",
    "payload": {"format": "pdf", "pages": [1, 2], "draft": None},
    "priority": 7,
    "enabled": True,
    "overlap": "skip",
    "catch_up": "all",
    "catch_up_max": 10,
}
REPRESENTATION = {
    "id", "name", "cron", "timezone", "queue", "job_type", "payload", "priority", "enabled",
    "overlap", "catch_up", "catch_up_max", "next_run_at", "last_run_at", "last_job_id",
    "created_at",
}  # fmt: skip


class _Missing:
    """A field left out of the request body (with a stable repr for the test ids)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


# --- helpers -----------------------------------------------------------------------------------


def at(text: str | None) -> datetime | None:
    """An API timestamp as an aware datetime (None stays None)."""
    return None if text is None else datetime.fromisoformat(text)


def bearer(raw: str, **headers: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}", **headers)
    return client


def user_client(user: User, project: Project) -> APIClient:
    token = str(RefreshToken.for_user(user).access_token)
    return bearer(token, HTTP_X_TASKFORGE_PROJECT=str(project.pk))


def create(client: APIClient, **fields: Any) -> Any:
    body = {**MINIMAL, **fields}
    return client.post(API, {k: v for k, v in body.items() if v is not MISSING}, format="json")


def created(client: APIClient, **fields: Any) -> dict[str, Any]:
    response = create(client, **fields)
    assert response.status_code == 201, response.content
    body: dict[str, Any] = response.json()
    return body


def named_fields(error: dict[str, Any]) -> set[str]:
    """The fields a 400 names: the services' checks say ``details.field``, the input
    serializer ``details.fields`` (one key per field), as in the rest of the API."""
    details = error["details"]
    return {details["field"]} if "field" in details else set(details.get("fields", {}))


def refused(response: Any, field: str) -> None:
    error = check_envelope(response, 400, "validation_error")
    assert named_fields(error) == {field}, error


def snapshot() -> tuple[Any, ...]:
    """Everything a schedule endpoint could write, across tenants."""
    return (
        list(Schedule.objects.all_tenants().order_by("pk").values()),
        sorted(ScheduleRun.objects.all_tenants().values_list("pk", flat=True)),
        sorted(Job.objects.all_tenants().values_list("pk", flat=True)),
        AuditLog.objects.all_tenants().filter(action__startswith="schedule.").count(),
    )


@pytest.fixture
def api(clock: Callable[[datetime], None], key_client: Callable[..., APIClient]) -> APIClient:
    """A schedules:read + schedules:write key of ``project``, with the clock frozen at NOW."""
    clock(NOW)
    return key_client("schedules:read", "schedules:write")


@pytest.fixture
def reports(make_queue: Callable[..., Any]) -> Any:
    return make_queue("reports")


def set_limits(org: Any, **limits: Any) -> None:
    Subscription.objects.all_tenants().filter(organization=org).update(limits=limits)


# --- create ------------------------------------------------------------------------------------


@pytest.mark.covers("jobs:schedules", "happy")
def test_it_creates_a_schedule_with_every_field(api, reports, project):
    response = api.post(API, FULL, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == REPRESENTATION
    schedule = Schedule.objects.for_project(project).get()
    assert body["id"] == str(schedule.pk)
    assert {k: body[k] for k in FULL} == FULL
    # 13:07 CET on the 15th: the next 02:30 Berlin is the 16th, 01:30 UTC.
    assert at(body["next_run_at"]) == utc(2026, 1, 16, 1, 30)
    assert body["last_run_at"] is None and body["last_job_id"] is None
    assert at(body["created_at"]) is not None
    assert schedule.queue == reports and schedule.next_run_at == utc(2026, 1, 16, 1, 30)
    assert (
        AuditLog.objects.for_org(project.organization)
        .filter(action="schedule.created", target_id=str(schedule.pk))
        .exists()
    )


@pytest.mark.covers("jobs:schedules", "happy")
def test_a_minimal_schedule_gets_the_defaults(api):
    body = created(api)
    assert {k: body[k] for k in MINIMAL} == MINIMAL
    assert body["timezone"] == "UTC"
    assert body["enabled"] is True
    assert body["overlap"] == "allow"
    assert body["catch_up"] == "latest"
    assert body["catch_up_max"] == 100
    assert body["payload"] == {}
    assert body["priority"] == 5
    # The first five-minute mark after 12:07 UTC.
    assert at(body["next_run_at"]) == utc(2026, 1, 15, 12, 10)


@pytest.mark.covers("jobs:schedules", "happy")
@pytest.mark.parametrize(
    ("cron", "timezone", "first"),
    [
        ("@hourly", "UTC", utc(2026, 1, 15, 13)),
        # Midnight Berlin (CET) is 23:00 UTC the day before.
        ("@daily", "Europe/Berlin", utc(2026, 1, 15, 23)),
        ("@DAILY", "UTC", utc(2026, 1, 16)),
        # Weekdays at 09:00 Berlin: Friday the 16th, 08:00 UTC.
        ("0 9 * * 1-5", "Europe/Berlin", utc(2026, 1, 16, 8)),
        ("0 0 29 2 *", "UTC", utc(2028, 2, 29)),
    ],
)
def test_the_first_fire_time_is_the_first_one_after_the_clock(api, cron, timezone, first):
    body = created(api, cron=cron, timezone=timezone)
    assert at(body["next_run_at"]) == first


@pytest.mark.covers("jobs:schedules", "happy")
def test_the_first_fire_time_in_berlin_summer_uses_cest(api, clock):
    clock(utc(2026, 7, 1))  # a Wednesday, 02:00 CEST
    body = created(api, cron="0 9 * * 1-5", timezone="Europe/Berlin")
    assert at(body["next_run_at"]) == utc(2026, 7, 1, 7)


@pytest.mark.covers("jobs:schedules", "happy")
def test_a_disabled_schedule_has_no_next_run(api):
    body = created(api, enabled=False)
    assert body["enabled"] is False and body["next_run_at"] is None


@pytest.mark.covers("jobs:schedules", "happy")
def test_the_pro_plan_allows_every_minute(api, pro_plan):
    body = created(api, cron="* * * * *")
    assert at(body["next_run_at"]) == utc(2026, 1, 15, 12, 8)


@pytest.mark.covers("jobs:schedules", "happy")
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"cron": "not a cron"}, "cron"),
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * * * * *"}, "cron"),
        ({"cron": "@reboot"}, "cron"),
        ({"cron": "0 0 30 2 *"}, "cron"),
        ({"cron": "0 0 31 4 *"}, "cron"),
        ({"cron": "* * * * *"}, "cron"),  # every minute: starter allows every 5 minutes
        ({"cron": "*/2 * * * *", "timezone": "Europe/Berlin"}, "cron"),
        ({"cron": ""}, "cron"),
        ({"cron": 5}, "cron"),
        ({"timezone": "Mars/Base"}, "timezone"),
        ({"timezone": ""}, "timezone"),
        ({"timezone": 5}, "timezone"),
        ({"timezone": None}, "timezone"),
        ({"queue": "nope"}, "queue"),
        ({"priority": 10}, "priority"),
        ({"priority": -1}, "priority"),
        ({"priority": "high"}, "priority"),
        ({"overlap": "sometimes"}, "overlap"),
        ({"catch_up": "maybe"}, "catch_up"),
        ({"catch_up_max": 0}, "catch_up_max"),
        ({"catch_up_max": 1001}, "catch_up_max"),
        ({"colour": "red"}, "colour"),
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": 5}, "name"),
        ({"job_type": ["a"]}, "job_type"),
        ({"payload": None}, "payload"),
        ({"payload": {"text": "nul \u0000"}}, "payload"),
        ({"enabled": "yes"}, "enabled"),
        ({"enabled": None}, "enabled"),
        ({"name": MISSING}, "name"),
        ({"cron": MISSING}, "cron"),
        ({"queue": MISSING}, "queue"),
        ({"job_type": MISSING}, "job_type"),
    ],
    ids=repr,
)
def test_bad_input_is_refused_naming_the_field_and_writes_nothing(api, changes, field):
    before = snapshot()
    refused(create(api, **changes), field)
    assert Schedule.objects.all_tenants().count() == 0
    assert snapshot() == before


@pytest.mark.covers("jobs:schedules", "happy")
def test_a_body_that_is_not_an_object_is_refused(api):
    for body in ([MINIMAL], "often", 5):
        response = api.post(API, body, format="json")
        check_envelope(response, 400, "validation_error")
    assert Schedule.objects.all_tenants().count() == 0


@pytest.mark.covers("jobs:schedules", "happy")
def test_a_name_is_unique_in_its_project_only(api, key_client, project, make_queue):
    created(api, name="nightly")
    error = check_envelope(create(api, name="nightly", cron="@daily"), 409, "conflict")
    assert error["details"] == {"field": "name"}
    assert Schedule.objects.for_project(project).count() == 1
    second = Project.objects.create(organization=project.organization, name="second")
    make_queue("default", project=second)
    body = created(key_client("schedules:write", project=second), name="nightly")
    assert body["name"] == "nightly"
    assert Schedule.objects.for_project(second).count() == 1


@pytest.mark.covers("jobs:schedules", "happy")
def test_the_plan_caps_the_number_of_schedules(api, org, project):
    set_limits(org, max_schedules=2)
    created(api, name="one")
    created(api, name="two")
    error = check_envelope(create(api, name="three"), 402, "quota_exceeded")
    assert error["details"]["limit"] == 2
    assert sorted(Schedule.objects.for_project(project).values_list("name", flat=True)) == [
        "one",
        "two",
    ]


# --- list and detail ---------------------------------------------------------------------------


@pytest.mark.covers("jobs:schedules", "happy")
def test_the_list_is_paginated_newest_first(api):
    ids = [created(api, name=name)["id"] for name in ("a", "b", "c")]
    first = api.get(f"{API}?limit=2")
    assert first.status_code == 200, first.content
    page = first.json()
    assert set(page) == {"results", "next"}
    assert [s["id"] for s in page["results"]] == ids[:0:-1]
    assert set(page["results"][0]) == REPRESENTATION
    assert page["next"]
    rest = api.get(page["next"]).json()
    assert [s["id"] for s in rest["results"]] == ids[:1]
    assert rest["next"] is None
    assert api.get(f"{API}?limit=0").status_code == 400


@pytest.mark.covers("jobs:schedule-detail", "happy")
def test_the_detail_is_the_created_representation(api, reports):
    body = api.post(API, FULL, format="json").json()
    response = api.get(f"{API}/{body['id']}")
    assert response.status_code == 200, response.content
    assert response.json() == body


# --- change ------------------------------------------------------------------------------------


@pytest.mark.covers("jobs:schedule-detail", "happy")
def test_a_new_cron_or_timezone_recomputes_the_next_run(api):
    schedule = created(api)
    url = f"{API}/{schedule['id']}"
    response = api.patch(url, {"cron": "0 */2 * * *"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["cron"] == "0 */2 * * *"
    assert at(response.json()["next_run_at"]) == utc(2026, 1, 15, 14)
    # 14:00 in Berlin is 13:00 UTC.
    body = api.patch(url, {"timezone": "Europe/Berlin"}, format="json").json()
    assert body["timezone"] == "Europe/Berlin"
    assert at(body["next_run_at"]) == utc(2026, 1, 15, 13)
    assert api.get(url).json() == body


@pytest.mark.covers("jobs:schedule-detail", "happy")
def test_other_changes_keep_the_next_run(api, reports):
    schedule = created(api)
    changes = {
        "name": "renamed", "queue": "reports", "job_type": "other", "payload": {"a": 1},
        "priority": 9, "overlap": "skip", "catch_up": "all", "catch_up_max": 3,
    }  # fmt: skip
    response = api.patch(f"{API}/{schedule['id']}", changes, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert {k: body[k] for k in changes} == changes
    assert body["next_run_at"] == schedule["next_run_at"]
    assert body["cron"] == schedule["cron"] and body["created_at"] == schedule["created_at"]


@pytest.mark.covers("jobs:schedule-detail", "happy")
def test_disabling_clears_the_next_run_and_re_enabling_does_not_catch_up(api, clock, project):
    schedule = created(api)
    url = f"{API}/{schedule['id']}"
    body = api.patch(url, {"enabled": False}, format="json").json()
    assert body["enabled"] is False and body["next_run_at"] is None
    assert api.get(url).json()["next_run_at"] is None
    # Three hours later (36 missed five-minute marks), enabled again.
    clock(NOW + timedelta(hours=3))
    body = api.patch(url, {"enabled": True}, format="json").json()
    assert body["enabled"] is True
    assert at(body["next_run_at"]) == utc(2026, 1, 15, 15, 10)
    assert scheduling.fire_due_schedules(limit=10).enqueued == 0
    assert not ScheduleRun.objects.all_tenants().exists()


@pytest.mark.covers("jobs:schedule-detail", "happy")
def test_enabling_an_enabled_schedule_keeps_its_next_run(api, clock):
    schedule = created(api)
    clock(NOW + timedelta(minutes=1))
    body = api.patch(f"{API}/{schedule['id']}", {"enabled": True}, format="json").json()
    assert body["next_run_at"] == schedule["next_run_at"]


@pytest.mark.covers("jobs:schedule-detail", "happy")
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"cron": "not a cron"}, "cron"),
        ({"cron": "0 0 30 2 *"}, "cron"),
        ({"cron": "* * * * *"}, "cron"),
        ({"timezone": "Mars/Base"}, "timezone"),
        ({"queue": "nope"}, "queue"),
        ({"priority": 10}, "priority"),
        ({"enabled": None}, "enabled"),
        ({"name": ""}, "name"),
        ({"colour": "red"}, "colour"),
    ],
    ids=repr,
)
def test_a_bad_change_is_refused_and_leaves_the_schedule_unchanged(api, changes, field, project):
    schedule = created(api)
    before = snapshot()
    refused(api.patch(f"{API}/{schedule['id']}", changes, format="json"), field)
    assert snapshot() == before
    assert api.get(f"{API}/{schedule['id']}").json() == schedule


@pytest.mark.covers("jobs:schedule-detail", "happy")
def test_renaming_onto_a_taken_name_is_a_conflict(api, project):
    created(api, name="one")
    two = created(api, name="two")
    response = api.patch(f"{API}/{two['id']}", {"name": "one"}, format="json")
    assert check_envelope(response, 409, "conflict")["details"] == {"field": "name"}
    assert api.get(f"{API}/{two['id']}").json()["name"] == "two"


@pytest.mark.covers("jobs:schedule-detail", "happy")
def test_a_schedule_too_frequent_for_a_downgraded_plan_can_still_be_disabled(api, org):
    Subscription.objects.all_tenants().filter(organization=org).update(tier=Tier.PRO)
    schedule = created(api, cron="* * * * *")
    Subscription.objects.all_tenants().filter(organization=org).update(tier=Tier.STARTER)
    response = api.patch(f"{API}/{schedule['id']}", {"enabled": False}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["next_run_at"] is None


# --- delete ------------------------------------------------------------------------------------


@pytest.mark.covers("jobs:schedule-detail", "happy")
def test_delete_removes_the_schedule_and_its_runs_but_keeps_its_jobs(api, project):
    schedule = created(api)
    url = f"{API}/{schedule['id']}"
    job = api.post(f"{url}/trigger", format="json").json()
    response = api.delete(url)
    assert response.status_code == 204, response.content
    check_envelope(api.get(url), 404, "not_found")
    check_envelope(api.delete(url), 404, "not_found")
    assert not Schedule.objects.all_tenants().exists()
    assert not ScheduleRun.objects.all_tenants().exists()
    assert Job.objects.for_project(project).filter(pk=job["id"]).exists()
    assert (
        AuditLog.objects.for_org(project.organization)
        .filter(action="schedule.deleted", target_id=schedule["id"])
        .exists()
    )


# --- preview -----------------------------------------------------------------------------------


@pytest.mark.covers("jobs:schedule-preview", "happy")
def test_preview_across_the_berlin_spring_forward(api, clock):
    clock(utc(2026, 3, 28, 12))
    schedule = created(api, cron="30 2 * * *", timezone="Europe/Berlin")
    # 02:30 does not exist on the 29th: it fires at 03:30 CEST, the instant 02:30 CET would be.
    assert at(schedule["next_run_at"]) == utc(2026, 3, 29, 1, 30)
    response = api.get(f"{API}/{schedule['id']}/preview?n=3")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["timezone"] == "Europe/Berlin"
    assert [at(t) for t in body["fire_times"]] == [
        utc(2026, 3, 29, 1, 30),
        utc(2026, 3, 30, 0, 30),
        utc(2026, 3, 31, 0, 30),
    ]
    assert all(t.endswith(("Z", "+00:00")) for t in body["fire_times"])
    assert body["local_times"] == [
        "2026-03-29T03:30:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]


@pytest.mark.covers("jobs:schedule-preview", "happy")
def test_preview_of_a_leap_day_schedule(api):
    schedule = created(api, cron="0 0 29 2 *")
    body = api.get(f"{API}/{schedule['id']}/preview?n=2").json()
    assert [at(t) for t in body["fire_times"]] == [utc(2028, 2, 29), utc(2032, 2, 29)]
    assert body["local_times"] == ["2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00"]


@pytest.mark.covers("jobs:schedule-preview", "happy")
def test_preview_defaults_to_five_from_now_even_while_disabled(api, clock):
    schedule = created(api, enabled=False)
    clock(NOW + timedelta(hours=1))
    body = api.get(f"{API}/{schedule['id']}/preview").json()
    assert [at(t) for t in body["fire_times"]] == [
        utc(2026, 1, 15, 13, minute) for minute in (10, 15, 20, 25, 30)
    ]
    assert body["local_times"][0] == "2026-01-15T13:10:00+00:00"
    hundred = api.get(f"{API}/{schedule['id']}/preview?n=100").json()["fire_times"]
    # 100 five-minute marks from 13:10: the last is 495 minutes later, 21:25.
    assert len(hundred) == 100 and at(hundred[-1]) == utc(2026, 1, 15, 21, 25)


@pytest.mark.covers("jobs:schedule-preview", "happy")
@pytest.mark.parametrize(
    "n",
    [
        "0",
        "101",
        "abc",
        "-1",
        "",
        "2.5",
        "²",
    ],
)
def test_preview_refuses_a_bad_count(api, n):
    schedule = created(api)
    refused(api.get(f"{API}/{schedule['id']}/preview", {"n": n}), "n")


# --- trigger and runs --------------------------------------------------------------------------


@pytest.mark.covers("jobs:schedule-trigger", "happy")
@pytest.mark.covers("jobs:schedule-runs", "happy")
def test_trigger_enqueues_a_job_now_and_records_a_manual_run(api, reports, project):
    schedule = api.post(API, FULL, format="json").json()
    url = f"{API}/{schedule['id']}"
    response = api.post(f"{url}/trigger", format="json")
    assert response.status_code == 201, response.content
    job = response.json()
    assert job["queue"] == "reports"
    assert job["job_type"] == FULL["job_type"]
    assert job["payload"] == FULL["payload"]
    assert job["priority"] == FULL["priority"]
    assert job["state"] == "pending"
    assert Job.objects.for_project(project).get().pk.hex == job["id"].replace("-", "")

    runs = api.get(f"{url}/runs")
    assert runs.status_code == 200, runs.content
    page = runs.json()
    assert set(page) == {"results", "next"} and page["next"] is None
    [run] = page["results"]
    assert set(run) == {"id", "fire_time", "manual", "outcome", "job_id", "error", "created_at"}
    assert run["manual"] is True and run["outcome"] == "enqueued"
    assert run["job_id"] == job["id"]
    assert at(run["fire_time"]) == NOW

    after = api.get(url).json()
    assert after["last_job_id"] == job["id"]
    assert at(after["last_run_at"]) == NOW
    # A manual run is outside the cron times: the next one is unchanged.
    assert after["next_run_at"] == schedule["next_run_at"]


@pytest.mark.covers("jobs:schedule-trigger", "happy")
def test_trigger_works_while_disabled_and_refuses_a_body(api):
    schedule = created(api, enabled=False)
    url = f"{API}/{schedule['id']}/trigger"
    check_envelope(api.post(url, {"colour": "red"}, format="json"), 400, "validation_error")
    assert not Job.objects.all_tenants().exists()
    assert api.post(url, {}, format="json").status_code == 201
    assert api.post(url, format="json").status_code == 201
    assert Job.objects.all_tenants().count() == 2
    assert api.get(f"{API}/{schedule['id']}").json()["next_run_at"] is None


@pytest.mark.covers("jobs:schedule-runs", "happy")
def test_runs_list_cron_and_manual_runs_newest_first(api, clock):
    schedule = created(api)
    url = f"{API}/{schedule['id']}"
    manual = api.post(f"{url}/trigger", format="json").json()
    clock(utc(2026, 1, 15, 12, 10))
    assert scheduling.fire_due_schedules(limit=10).enqueued == 1
    runs = api.get(f"{url}/runs").json()["results"]
    assert [(r["manual"], at(r["fire_time"])) for r in runs] == [
        (False, utc(2026, 1, 15, 12, 10)),
        (True, NOW),
    ]
    assert runs[1]["job_id"] == manual["id"]
    assert api.get(url).json()["last_job_id"] == runs[0]["job_id"]
    page = api.get(f"{url}/runs?limit=1").json()
    assert len(page["results"]) == 1 and page["next"]


# --- access ------------------------------------------------------------------------------------

# (method, path, body); {id} is the target schedule.
READS = [
    ("get", API, None),
    ("get", API + "/{id}", None),
    ("get", API + "/{id}/preview?n=3", None),
    ("get", API + "/{id}/runs", None),
]
WRITES = [
    ("post", API, {**MINIMAL, "name": "fresh"}),
    ("patch", API + "/{id}", {"priority": 9}),
    ("delete", API + "/{id}", None),
    ("post", API + "/{id}/trigger", None),
]
ROUTES = READS + WRITES
ONE_SCHEDULE = [route for route in ROUTES if "{id}" in route[1]]


def call(client: APIClient, route: tuple[str, str, Any], schedule_id: object) -> Any:
    method, path, body = route
    return getattr(client, method)(path.format(id=schedule_id), body, format="json")


def id_of(route: tuple[str, str, Any]) -> str:
    return f"{route[0]} {route[1]}"


@pytest.fixture
def ours(api, project):
    """Our tenant's schedule, with one manual run."""
    schedule = created(api, name="ours")
    api.post(f"{API}/{schedule['id']}/trigger", format="json")
    return schedule


@pytest.mark.covers("jobs:schedules", "access")
@pytest.mark.covers("jobs:schedule-detail", "access")
@pytest.mark.covers("jobs:schedule-preview", "access")
@pytest.mark.covers("jobs:schedule-trigger", "access")
@pytest.mark.covers("jobs:schedule-runs", "access")
@pytest.mark.parametrize("route", ROUTES, ids=id_of)
def test_it_requires_authentication(route, ours):
    before = snapshot()
    check_envelope(call(APIClient(), route, ours["id"]), 401, "not_authenticated")
    assert snapshot() == before


@pytest.mark.covers("jobs:schedules", "access")
@pytest.mark.covers("jobs:schedule-detail", "access")
@pytest.mark.covers("jobs:schedule-preview", "access")
@pytest.mark.covers("jobs:schedule-trigger", "access")
@pytest.mark.covers("jobs:schedule-runs", "access")
@pytest.mark.parametrize("route", ROUTES, ids=id_of)
def test_a_key_without_schedule_scopes_is_refused(route, ours, key_client):
    client = key_client("jobs:read", "jobs:write", "queues:read", "queues:write", "workers")
    before = snapshot()
    check_envelope(call(client, route, ours["id"]), 403, "permission_denied")
    assert snapshot() == before


@pytest.mark.covers("jobs:schedules", "access")
@pytest.mark.covers("jobs:schedule-detail", "access")
@pytest.mark.covers("jobs:schedule-preview", "access")
@pytest.mark.covers("jobs:schedule-trigger", "access")
@pytest.mark.covers("jobs:schedule-runs", "access")
@pytest.mark.parametrize("route", WRITES, ids=id_of)
def test_a_read_only_key_and_a_viewer_may_not_write(route, ours, key_client, viewer, project):
    for client in (key_client("schedules:read"), user_client(viewer, project)):
        before = snapshot()
        check_envelope(call(client, route, ours["id"]), 403, "permission_denied")
        assert snapshot() == before


@pytest.mark.covers("jobs:schedules", "access")
@pytest.mark.covers("jobs:schedule-detail", "access")
@pytest.mark.covers("jobs:schedule-preview", "access")
@pytest.mark.covers("jobs:schedule-runs", "access")
@pytest.mark.parametrize("route", READS, ids=id_of)
def test_a_read_only_key_and_a_viewer_may_read(route, ours, key_client, viewer, project):
    for client in (key_client("schedules:read"), user_client(viewer, project)):
        response = call(client, route, ours["id"])
        assert response.status_code == 200, response.content


@pytest.mark.covers("jobs:schedules", "happy")
@pytest.mark.covers("jobs:schedule-detail", "happy")
@pytest.mark.covers("jobs:schedule-preview", "happy")
@pytest.mark.covers("jobs:schedule-trigger", "happy")
@pytest.mark.covers("jobs:schedule-runs", "happy")
@pytest.mark.parametrize("route", ROUTES, ids=id_of)
def test_a_member_may_do_everything(route, ours, member, project):
    response = call(user_client(member, project), route, ours["id"])
    expected = {"post": 201, "delete": 204}.get(route[0], 200)
    assert response.status_code == expected, response.content


# --- cross-tenant ------------------------------------------------------------------------------


@pytest.fixture
def theirs(other_project: Project, other_queue: Any) -> Schedule:
    """Another organization's schedule, with one manual run."""
    schedule = scheduling.create_schedule(
        other_project,
        {"name": "theirs", "cron": "*/5 * * * *", "queue": "default", "job_type": "t"},
    )
    scheduling.trigger_schedule(schedule)
    return schedule


@pytest.mark.covers("jobs:schedule-detail", "cross_tenant")
@pytest.mark.covers("jobs:schedule-preview", "cross_tenant")
@pytest.mark.covers("jobs:schedule-trigger", "cross_tenant")
@pytest.mark.covers("jobs:schedule-runs", "cross_tenant")
@pytest.mark.parametrize("route", ONE_SCHEDULE, ids=id_of)
def test_another_tenants_schedule_is_not_found_and_unchanged(
    route, api, ours, theirs, org, cross_tenant_denials
):
    before = snapshot()
    check_envelope(call(api, route, theirs.pk), 404, "not_found")
    assert snapshot() == before
    assert cross_tenant_denials(org) == [("schedule", str(theirs.pk))]


@pytest.mark.covers("jobs:schedule-detail", "cross_tenant")
@pytest.mark.covers("jobs:schedule-preview", "cross_tenant")
@pytest.mark.covers("jobs:schedule-trigger", "cross_tenant")
@pytest.mark.covers("jobs:schedule-runs", "cross_tenant")
@pytest.mark.parametrize("route", ONE_SCHEDULE, ids=id_of)
@pytest.mark.parametrize(
    "schedule_id", ["not-a-uuid", "123", "01960000-0000-7000-8000-000000000000"]
)
def test_an_id_that_names_nothing_is_the_same_404(route, schedule_id, api, ours):
    before = snapshot()
    check_envelope(call(api, route, schedule_id), 404, "not_found")
    assert snapshot() == before


@pytest.mark.covers("jobs:schedule-detail", "cross_tenant")
@pytest.mark.covers("jobs:schedule-runs", "cross_tenant")
def test_a_schedule_of_another_project_in_the_org_is_not_found(api, ours, key_client, project):
    second = Project.objects.create(organization=project.organization, name="second")
    client = key_client("schedules:read", "schedules:write", project=second)
    check_envelope(client.get(f"{API}/{ours['id']}"), 404, "not_found")
    check_envelope(client.get(f"{API}/{ours['id']}/runs"), 404, "not_found")
    assert client.get(API).json()["results"] == []


@pytest.mark.covers("jobs:schedules", "cross_tenant")
def test_the_list_shows_only_the_callers_project(api, ours, theirs, key_client, other_project):
    assert [s["id"] for s in api.get(API).json()["results"]] == [ours["id"]]
    outsider = key_client("schedules:read", "schedules:write", project=other_project)
    assert [s["id"] for s in outsider.get(API).json()["results"]] == [str(theirs.pk)]


@pytest.mark.covers("jobs:schedules", "cross_tenant")
def test_an_outsider_creates_in_its_own_project_only(api, ours, key_client, other_project):
    outsider = key_client("schedules:read", "schedules:write", project=other_project)
    body = created(outsider, name="ours")  # the same name, in their project: no conflict
    assert Schedule.objects.for_project(other_project).get().pk.hex == body["id"].replace("-", "")
    assert [s["id"] for s in api.get(API).json()["results"]] == [ours["id"]]


@pytest.mark.covers("jobs:schedules", "cross_tenant")
@pytest.mark.covers("jobs:schedule-detail", "cross_tenant")
@pytest.mark.covers("jobs:schedule-preview", "cross_tenant")
@pytest.mark.covers("jobs:schedule-trigger", "cross_tenant")
@pytest.mark.covers("jobs:schedule-runs", "cross_tenant")
@pytest.mark.parametrize("route", ROUTES, ids=id_of)
def test_a_user_naming_another_organizations_project_is_not_found(
    route, ours, theirs, member, other_project
):
    before = snapshot()
    client = user_client(member, other_project)
    check_envelope(call(client, route, theirs.pk), 404, "not_found")
    assert snapshot() == before
