"""Schedules run on the database clock; these helpers freeze and advance it.

``taskforge_now()`` (jobs/migrations/0004) returns the session setting ``taskforge.now`` when
set, so a test moves time for the connection it runs on, and each dispatcher thread for its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection

from accounts.models import Project
from billing.models import Subscription, Tier
from jobs.models import Schedule
from jobs.schedules import services as scheduling
from queues.models import Queue


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def freeze(moment: datetime) -> None:
    """Set this connection's schedule clock (session-wide, so it outlives transactions)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('taskforge.now', %s, false)", [moment.isoformat()])


def unfreeze() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('taskforge.now', '', false)")


@pytest.fixture
def clock(transactional_db: Any) -> Iterator[Callable[[datetime], None]]:
    yield freeze
    unfreeze()


@pytest.fixture
def pro_plan(org: Any) -> None:
    """Pro allows schedules every minute (starter: every 5 minutes)."""
    Subscription.objects.all_tenants().filter(organization=org).update(tier=Tier.PRO)


@pytest.fixture
def make_schedule(project: Project, queue: Queue) -> Callable[..., Schedule]:
    def make(cron: str = "*/5 * * * *", **fields: Any) -> Schedule:
        values = {
            "name": f"s{Schedule.objects.for_project(project).count()}",
            "cron": cron,
            "queue": queue.name,
            "job_type": "reports.build",
            **fields,
        }
        return scheduling.create_schedule(project, values)

    return make
