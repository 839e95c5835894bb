"""Three real ``rundispatcher`` processes whose database clock is frozen on a fire time
(``PGOPTIONS=-c taskforge.now=…``): the schedule fires once, not once per dispatcher."""

from __future__ import annotations

import time

import pytest

from jobs.models import ScheduleRun
from tests.processes import child_env, running
from tests.schedules.conftest import utc

pytestmark = pytest.mark.django_db(transaction=True)


def test_three_dispatcher_processes_fire_a_due_slot_once(clock, make_schedule, tmp_path):
    clock(utc(2026, 9, 1, 11, 58))
    schedule = make_schedule("*/5 * * * *")
    assert schedule.next_run_at == utc(2026, 9, 1, 12, 0)
    env = child_env(PGOPTIONS="-c taskforge.now=2026-09-01T12:00:30+00:00")
    args = ("rundispatcher", "--poll-interval", "0.2")
    runs = ScheduleRun.objects.all_tenants().filter(schedule=schedule)
    with running(args, args, args, log_dir=tmp_path, env=env) as children:
        deadline = time.monotonic() + 60
        while not runs.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        # Every dispatcher keeps ticking on the same frozen time for a while: none may fire
        # the slot again.
        time.sleep(3)
        assert all(child.process.poll() is None for child in children)
    assert list(runs.values_list("fire_time", flat=True)) == [utc(2026, 9, 1, 12, 0)]
    assert runs.get().job_id is not None
    schedule.refresh_from_db()
    assert schedule.next_run_at == utc(2026, 9, 1, 12, 5)
