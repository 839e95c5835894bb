"""The dispatcher's fire step on a frozen, advancing database clock: exactly once per fire time
with racing dispatchers, daylight-saving changes, leap days, overlap and catch-up policies."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connection

from jobs.models import Job, JobState, RunOutcome, Schedule, ScheduleRun
from jobs.schedules import services as scheduling
from tests.schedules.conftest import freeze, utc
from workers.dispatcher import Dispatcher

pytestmark = pytest.mark.django_db(transaction=True)


def fire_times(schedule: Schedule) -> list[datetime]:
    runs = ScheduleRun.objects.all_tenants().filter(schedule=schedule, manual=False)
    return sorted(runs.values_list("fire_time", flat=True))


def jobs_of(schedule: Schedule) -> list[Job]:
    ids = ScheduleRun.objects.all_tenants().filter(schedule=schedule).values_list("job_id")
    return list(Job.objects.all_tenants().filter(pk__in=ids))


def run_clock(start: datetime, end: datetime, step: timedelta) -> None:
    """Tick the fire step at every ``step`` from ``start`` to ``end`` (inclusive)."""
    moment = start
    while moment <= end:
        freeze(moment)
        scheduling.fire_due_schedules(limit=100)
        moment += step


def finish(job_ids: list[Any]) -> None:
    Job.objects.all_tenants().filter(pk__in=job_ids).update(state=JobState.SUCCEEDED)


# --- exactly once ------------------------------------------------------------------------------


def test_three_dispatchers_racing_fire_each_five_minute_slot_exactly_once(clock, make_schedule):
    start = utc(2026, 11, 24, 9, 58)
    clock(start)
    schedule = make_schedule("*/5 * * * *")
    assert schedule.next_run_at == utc(2026, 11, 24, 10, 0)
    # Each simulated instant: every dispatcher's clock moves there, then all three fire at once.
    instants = [start + timedelta(seconds=20 * i) for i in range(3 * 60 + 1)]  # one hour
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def dispatcher_thread() -> None:
        dispatcher = Dispatcher(poll_interval=0.1, batch_size=100)
        try:
            for moment in instants:
                freeze(moment)
                barrier.wait(timeout=30)
                dispatcher.fire_schedules()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            barrier.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=dispatcher_thread) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    expected = [utc(2026, 11, 24, 10, 0) + timedelta(minutes=5 * i) for i in range(12)]
    assert fire_times(schedule) == expected
    jobs = jobs_of(schedule)
    assert len(jobs) == 12
    assert {job.job_type for job in jobs} == {"reports.build"}
    # Each run's job carries its fire time in an idempotency key: one job per slot, also in
    # the jobs table.
    assert sorted(job.idempotency_key for job in jobs) == [
        f"schedule:{schedule.pk}:{t:%Y-%m-%dT%H:%M:%SZ}" for t in expected
    ]
    schedule.refresh_from_db()
    assert schedule.next_run_at == utc(2026, 11, 24, 11, 0)


def test_a_fire_time_already_recorded_is_not_fired_again(clock, make_schedule):
    clock(utc(2026, 1, 1, 0, 0, 30))
    schedule = make_schedule("*/5 * * * *")
    run_clock(utc(2026, 1, 1, 0, 5), utc(2026, 1, 1, 0, 5), timedelta(minutes=1))
    # Someone moves next_run_at back by hand: the recorded fire time stays single.
    Schedule.objects.all_tenants().filter(pk=schedule.pk).update(next_run_at=utc(2026, 1, 1, 0, 5))
    run_clock(utc(2026, 1, 1, 0, 6), utc(2026, 1, 1, 0, 6), timedelta(minutes=1))
    assert fire_times(schedule) == [utc(2026, 1, 1, 0, 5)]
    assert len(jobs_of(schedule)) == 1


# --- daylight saving -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timezone", "cron", "start", "end", "expected_local"),
    [
        # Berlin springs forward 2026-03-29 02:00 -> 03:00: 02:30 runs at 03:30 new time, once.
        (
            "Europe/Berlin", "30 2 * * *", utc(2026, 3, 27, 12), utc(2026, 3, 30, 12),
            ["2026-03-28 02:30 CET", "2026-03-29 03:30 CEST", "2026-03-30 02:30 CEST"],
        ),
        # Berlin falls back 2026-10-25 03:00 -> 02:00: 02:30 happens twice and runs once.
        (
            "Europe/Berlin", "30 2 * * *", utc(2026, 10, 24, 12), utc(2026, 10, 26, 12),
            ["2026-10-25 02:30 CEST", "2026-10-26 02:30 CET"],
        ),
        # New York springs forward 2026-03-08 02:00 -> 03:00.
        (
            "America/New_York", "30 2 * * *", utc(2026, 3, 7, 12), utc(2026, 3, 9, 12),
            ["2026-03-08 03:30 EDT", "2026-03-09 02:30 EDT"],
        ),
        # New York falls back 2026-11-01 02:00 -> 01:00: 01:30 happens twice and runs once.
        (
            "America/New_York", "30 1 * * *", utc(2026, 10, 31, 12), utc(2026, 11, 2, 12),
            ["2026-11-01 01:30 EDT", "2026-11-02 01:30 EST"],
        ),
        # Wildcard hours follow elapsed time: hourly across fall-back runs in both 02:xx hours.
        (
            "Europe/Berlin", "30 * * * *", utc(2026, 10, 24, 23, 45), utc(2026, 10, 25, 2, 45),
            ["2026-10-25 02:30 CEST", "2026-10-25 02:30 CET", "2026-10-25 03:30 CET"],
        ),
        # ... and across spring-forward the hour that does not exist is simply not there.
        (
            "America/New_York", "30 * * * *", utc(2026, 3, 8, 5, 45), utc(2026, 3, 8, 8, 45),
            ["2026-03-08 01:30 EST", "2026-03-08 03:30 EDT", "2026-03-08 04:30 EDT"],
        ),
    ],
    ids=[
        "berlin-spring", "berlin-fall", "new-york-spring", "new-york-fall", "berlin-hourly-fall",
        "new-york-hourly-spring",
    ],
)  # fmt: skip
def test_daylight_saving_changes_neither_double_fire_nor_drop_a_run(
    clock, make_schedule, timezone, cron, start, end, expected_local
):
    clock(start)
    schedule = make_schedule(cron, timezone=timezone, catch_up="none")
    run_clock(start, end, timedelta(minutes=5))
    tz = scheduling.cron.parse_timezone(timezone)
    local = [f"{t.astimezone(tz):%Y-%m-%d %H:%M %Z}" for t in fire_times(schedule)]
    assert local == expected_local
    assert len(jobs_of(schedule)) == len(expected_local)


def test_a_five_minute_schedule_keeps_its_pace_across_both_berlin_changes(clock, make_schedule):
    for start in (utc(2026, 3, 29, 0, 30), utc(2026, 10, 25, 0, 30)):
        clock(start - timedelta(seconds=1))
        schedule = make_schedule("*/5 * * * *", timezone="Europe/Berlin")
        run_clock(start, start + timedelta(hours=1), timedelta(minutes=1))
        times = fire_times(schedule)
        assert times == [start + timedelta(minutes=5 * i) for i in range(13)]


def test_february_29th_fires_only_on_leap_days(clock, make_schedule):
    clock(utc(2027, 2, 27))
    schedule = make_schedule("0 0 29 2 *")
    assert schedule.next_run_at == utc(2028, 2, 29)
    # 2027 has no February 29th: March 1st passes without a run.
    run_clock(utc(2027, 2, 28, 23, 55), utc(2027, 3, 1, 0, 5), timedelta(minutes=5))
    assert fire_times(schedule) == []
    run_clock(utc(2028, 2, 28, 23, 55), utc(2028, 3, 1, 0, 5), timedelta(minutes=5))
    assert fire_times(schedule) == [utc(2028, 2, 29)]
    schedule.refresh_from_db()
    assert schedule.next_run_at == utc(2032, 2, 29)


# --- overlap ---------------------------------------------------------------------------------


def test_overlap_skip_records_a_skipped_run_while_the_previous_one_is_unfinished(
    clock, make_schedule
):
    clock(utc(2026, 5, 1, 11, 59))
    schedule = make_schedule("*/5 * * * *", overlap="skip")
    run_clock(utc(2026, 5, 1, 12, 0), utc(2026, 5, 1, 12, 10), timedelta(minutes=5))
    runs = list(ScheduleRun.objects.all_tenants().filter(schedule=schedule).order_by("fire_time"))
    assert [r.outcome for r in runs] == [
        RunOutcome.ENQUEUED,
        RunOutcome.SKIPPED_OVERLAP,
        RunOutcome.SKIPPED_OVERLAP,
    ]
    assert runs[1].job_id is None
    # Once the first run has finished, the next fire time runs again.
    finish([runs[0].job_id])
    run_clock(utc(2026, 5, 1, 12, 15), utc(2026, 5, 1, 12, 15), timedelta(minutes=5))
    latest = ScheduleRun.objects.all_tenants().filter(schedule=schedule).latest("fire_time")
    assert latest.outcome == RunOutcome.ENQUEUED
    assert latest.fire_time == utc(2026, 5, 1, 12, 15)


def test_overlap_allow_runs_every_fire_time_even_with_earlier_runs_unfinished(clock, make_schedule):
    clock(utc(2026, 5, 1, 11, 59))
    schedule = make_schedule("*/5 * * * *", overlap="allow")
    run_clock(utc(2026, 5, 1, 12, 0), utc(2026, 5, 1, 12, 10), timedelta(minutes=5))
    assert len(jobs_of(schedule)) == 3


# --- catch-up after downtime -------------------------------------------------------------------


OUTAGE_START = utc(2026, 6, 1, 8, 0)


def _after_two_hour_outage(
    clock: Callable[[datetime], None], make_schedule: Callable[..., Schedule], **fields: Any
) -> Schedule:
    """A */5 schedule due at 08:05 whose dispatchers were all down until 10:02:30."""
    clock(OUTAGE_START)
    schedule = make_schedule("*/5 * * * *", **fields)
    assert schedule.next_run_at == utc(2026, 6, 1, 8, 5)
    freeze(utc(2026, 6, 1, 10, 2, 30))
    scheduling.fire_due_schedules(limit=100)
    schedule.refresh_from_db()
    assert schedule.next_run_at == utc(2026, 6, 1, 10, 5)
    return schedule


def test_catch_up_none_skips_every_missed_fire_time(clock, make_schedule):
    schedule = _after_two_hour_outage(clock, make_schedule, catch_up="none")
    assert fire_times(schedule) == []
    run_clock(utc(2026, 6, 1, 10, 5), utc(2026, 6, 1, 10, 5), timedelta(minutes=5))
    assert fire_times(schedule) == [utc(2026, 6, 1, 10, 5)]


def test_catch_up_none_still_runs_a_fire_time_that_is_only_seconds_late(clock, make_schedule):
    clock(utc(2026, 6, 1, 7, 59))
    schedule = make_schedule("*/5 * * * *", catch_up="none")
    run_clock(utc(2026, 6, 1, 8, 0, 40), utc(2026, 6, 1, 8, 0, 40), timedelta(minutes=1))
    assert fire_times(schedule) == [utc(2026, 6, 1, 8, 0)]


def test_catch_up_latest_runs_the_most_recent_missed_fire_time_once(clock, make_schedule):
    schedule = _after_two_hour_outage(clock, make_schedule, catch_up="latest")
    assert fire_times(schedule) == [utc(2026, 6, 1, 10, 0)]
    assert len(jobs_of(schedule)) == 1


def test_catch_up_all_runs_every_missed_fire_time_oldest_first(clock, make_schedule):
    schedule = _after_two_hour_outage(clock, make_schedule, catch_up="all")
    missed = [utc(2026, 6, 1, 8, 5) + timedelta(minutes=5 * i) for i in range(24)]
    assert fire_times(schedule) == missed
    assert len(jobs_of(schedule)) == 24
    schedule.refresh_from_db()
    assert schedule.last_run_at == utc(2026, 6, 1, 10, 0)


def test_catch_up_all_is_bounded_by_catch_up_max(clock, make_schedule):
    schedule = _after_two_hour_outage(clock, make_schedule, catch_up="all", catch_up_max=5)
    assert fire_times(schedule) == [
        utc(2026, 6, 1, 9, 40) + timedelta(minutes=5 * i) for i in range(5)
    ]


def test_catch_up_all_with_overlap_skip_enqueues_one_job(clock, make_schedule):
    schedule = _after_two_hour_outage(clock, make_schedule, catch_up="all", overlap="skip")
    runs = ScheduleRun.objects.all_tenants().filter(schedule=schedule)
    assert runs.filter(outcome=RunOutcome.ENQUEUED).count() == 1
    assert runs.filter(outcome=RunOutcome.SKIPPED_OVERLAP).count() == 23


# --- enable, disable, trigger ----------------------------------------------------------------


def test_a_disabled_schedule_does_not_fire_and_re_enabling_does_not_catch_up(clock, make_schedule):
    clock(utc(2026, 7, 1, 0, 1))
    schedule = make_schedule("*/5 * * * *", catch_up="all")
    scheduling.update_schedule(schedule, {"enabled": False})
    run_clock(utc(2026, 7, 1, 0, 5), utc(2026, 7, 1, 1, 0), timedelta(minutes=5))
    assert fire_times(schedule) == []
    freeze(utc(2026, 7, 1, 1, 2))
    schedule = scheduling.update_schedule(schedule, {"enabled": True})
    assert schedule.next_run_at == utc(2026, 7, 1, 1, 5)
    scheduling.fire_due_schedules(limit=100)
    assert fire_times(schedule) == []


def test_trigger_enqueues_a_run_now_and_overlap_skip_waits_for_it(clock, make_schedule):
    clock(utc(2026, 7, 1, 0, 1))
    schedule = make_schedule("*/5 * * * *", overlap="skip", payload={"k": 1}, priority=8)
    job = scheduling.trigger_schedule(schedule)
    assert (job.job_type, job.payload, job.priority, job.state) == (
        "reports.build",
        {"k": 1},
        8,
        JobState.PENDING,
    )
    run = ScheduleRun.objects.all_tenants().get(schedule=schedule)
    assert (run.manual, run.outcome, run.job_id) == (True, RunOutcome.ENQUEUED, job.pk)
    run_clock(utc(2026, 7, 1, 0, 5), utc(2026, 7, 1, 0, 5), timedelta(minutes=5))
    cron_run = ScheduleRun.objects.all_tenants().get(schedule=schedule, manual=False)
    assert cron_run.outcome == RunOutcome.SKIPPED_OVERLAP


def test_the_dispatcher_tick_fires_due_schedules(clock, make_schedule):
    clock(utc(2026, 7, 1, 0, 4, 59))
    schedule = make_schedule("*/5 * * * *")
    freeze(utc(2026, 7, 1, 0, 5, 1))
    result = Dispatcher(poll_interval=0.1, batch_size=100).tick()
    assert result.fired == 1
    assert fire_times(schedule) == [utc(2026, 7, 1, 0, 5)]


def test_a_run_the_engine_refuses_is_recorded_failed_and_holds_up_no_other_schedule(
    clock, make_schedule, settings, other_project, other_queue
):
    clock(utc(2026, 7, 1, 0, 4))
    big = make_schedule("*/5 * * * *", payload={"blob": "x" * 500})
    neighbour = make_schedule("*/5 * * * *")
    theirs = scheduling.create_schedule(
        other_project,
        {"name": "small", "cron": "*/5 * * * *", "queue": other_queue.name, "job_type": "t"},
    )
    settings.TASKFORGE_MAX_PAYLOAD_BYTES = 100  # lowered after the schedule was created
    run_clock(utc(2026, 7, 1, 0, 5), utc(2026, 7, 1, 0, 5), timedelta(minutes=5))
    failed = ScheduleRun.objects.all_tenants().get(schedule=big)
    assert (failed.outcome, failed.job_id) == (RunOutcome.FAILED, None)
    assert "payload" in failed.error
    assert fire_times(neighbour) == [utc(2026, 7, 1, 0, 5)]
    assert len(jobs_of(neighbour)) == 1
    assert fire_times(theirs) == [utc(2026, 7, 1, 0, 5)]
    big.refresh_from_db()
    assert big.next_run_at == utc(2026, 7, 1, 0, 10)


def test_a_schedule_whose_timezone_cannot_be_read_is_disabled_not_retried_forever(
    clock, make_schedule
):
    clock(utc(2026, 7, 1, 0, 4))
    broken = make_schedule("*/5 * * * *")
    healthy = make_schedule("*/5 * * * *")
    # As if this host's tz database lacked the zone.
    Schedule.objects.all_tenants().filter(pk=broken.pk).update(timezone="Mars/Olympus")
    run_clock(utc(2026, 7, 1, 0, 5), utc(2026, 7, 1, 0, 5), timedelta(minutes=5))
    broken.refresh_from_db()
    assert (broken.enabled, broken.next_run_at) == (False, None)
    assert fire_times(healthy) == [utc(2026, 7, 1, 0, 5)]
    # It can still be renamed (nothing re-reads its timing) and fixed.
    scheduling.update_schedule(broken, {"name": "renamed"})
    fixed = scheduling.update_schedule(broken, {"timezone": "UTC", "enabled": True})
    assert fixed.next_run_at == utc(2026, 7, 1, 0, 10)
