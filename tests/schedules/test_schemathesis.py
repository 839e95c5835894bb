"""Property-based tests of the Schedules API against its own OpenAPI schema (schemathesis).

As tests/api/test_schemathesis.py, for ``/api/v1/schedules``: generated requests (schema
examples, boundary values, random valid and invalid input) go through the whole Django stack
with an all-scopes API key on the pro plan; every answer must be documented, never a 5xx, and
every 4xx the error envelope. Half of the generated ids and queue names become real ones.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from billing.models import Subscription, Tier
from jobs.schedules import services as scheduling
from taskforge.wsgi import application
from tests.api.test_schemathesis import CHECKS, _maybe

schema = schemathesis.openapi.from_wsgi("/api/schema/", application).include(
    path_regex=r"^/api/v1/schedules(/|$)"
)


@pytest.fixture
def world(org: Any, project: Any, queue: Any, make_queue: Any, make_api_key: Any) -> Any:
    Subscription.objects.all_tenants().filter(organization=org).update(tier=Tier.PRO)
    make_queue("reports")
    schedules = [
        scheduling.create_schedule(
            project, {"name": "nightly", "cron": "30 2 * * *", "queue": "default",
                      "job_type": "reports.nightly", "timezone": "Europe/Berlin"},
        ),
        scheduling.create_schedule(
            project, {"name": "often", "cron": "*/5 * * * *", "queue": "reports",
                      "job_type": "reports.often", "overlap": "skip"},
        ),
    ]  # fmt: skip
    _, raw = make_api_key(scopes=["admin"])
    return {
        "headers": {"Authorization": f"Bearer {raw}"},
        "ids": [str(s.pk) for s in schedules],
        "queues": ["default", "reports"],
    }


@pytest.mark.django_db(transaction=True)
@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_it_answers_generated_requests_as_documented_and_never_with_a_5xx(
    case: schemathesis.Case, world: Any
) -> None:
    if case.path_parameters and "schedule_id" in case.path_parameters:
        case.path_parameters["schedule_id"] = _maybe(
            case.path_parameters["schedule_id"], world["ids"]
        )
    if isinstance(case.body, dict) and "queue" in case.body:
        case.body["queue"] = _maybe(case.body["queue"], world["queues"])
    case.call_and_validate(headers=world["headers"], checks=CHECKS)
