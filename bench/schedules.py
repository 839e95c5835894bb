"""Schedules benchmark (not a test): prints one JSON line per figure.

    python -m bench.schedules [--schedules 1000]

(a) validation: how long parsing refuses a never-firing expression (`0 0 30 2 *`, a bounded
    search of 10 years) and accepts a leap-day one (`0 0 29 2 *`), median of 200 each;
(b) the fire step with N schedules due in the same minute across 10 projects (a top-of-the-hour
    burst): time for the dispatcher to fire them all, in steps of 100 per transaction;
(c) the fire step when nothing is due (most ticks), median of 200.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime

from django.db import connection

import bench  # noqa: F401 - configures Django before the app imports
from accounts.models import Organization, Project
from bench.common import emit, fresh_database
from billing.models import Subscription, Tier
from jobs.models import Job, Schedule
from jobs.schedules import cron
from jobs.schedules import services as scheduling
from queues.models import Queue
from taskforge.lib.errors import ValidationFailed
from workers.dispatcher import SCHEDULES_PER_TICK, Dispatcher

START = datetime(2026, 6, 1, 9, 59, 30, tzinfo=UTC)
DUE = datetime(2026, 6, 1, 10, 0, 1, tzinfo=UTC)


def freeze(moment: datetime) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('taskforge.now', %s, false)", [moment.isoformat()])


def median_ms(action, repeat: int = 200) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 3)


def bench_validation() -> None:
    def never() -> None:
        try:
            cron.parse("0 0 30 2 *", "UTC", reference=START)
        except ValidationFailed:
            return
        raise AssertionError("0 0 30 2 * was accepted")

    emit(
        "schedules.validate_ms",
        {
            "never_firing_refused": median_ms(never),
            "leap_day_accepted": median_ms(
                lambda: cron.parse("0 0 29 2 *", "Europe/Berlin", reference=START)
            ),
        },
    )


def bench_fire(n: int) -> None:
    fresh_database()
    freeze(START)
    for p in range(10):
        org = Organization.objects.create(name=f"Bench {p}", slug=f"bench-{p}")
        Subscription.objects.create(organization=org, tier=Tier.ENTERPRISE)
        project = Project.objects.create(organization=org, name="bench")
        Queue.objects.create(organization=org, project=project, name="default")
        for i in range(n // 10):
            scheduling.create_schedule(
                project,
                {"name": f"s{i}", "cron": "0 * * * *", "queue": "default", "job_type": "t"},
            )
    dispatcher = Dispatcher(poll_interval=1.0)
    freeze(DUE)
    started = time.perf_counter()
    fired = 0
    while True:
        enqueued, behind = dispatcher.fire_schedules()
        fired += enqueued
        if not behind:
            break
    elapsed = time.perf_counter() - started
    assert fired == n == Job.objects.all_tenants().count(), (fired, n)
    assert not Schedule.objects.all_tenants().filter(next_run_at__lte=DUE).exists()
    emit(
        "schedules.fire_burst",
        {
            "schedules": n,
            "per_transaction": SCHEDULES_PER_TICK,
            "seconds": round(elapsed, 3),
            "schedules_per_s": round(n / elapsed),
        },
    )
    emit("schedules.fire_idle_ms", {"median": median_ms(dispatcher.fire_schedules)})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--schedules", type=int, default=1000, help="due schedules for (b)")
    args = parser.parse_args()
    bench_validation()
    bench_fire(args.schedules)


if __name__ == "__main__":
    main()
