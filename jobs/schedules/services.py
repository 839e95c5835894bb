"""Cron schedules: create, change, delete, preview, trigger, and the dispatcher's fire step.

Time: every decision uses the database clock ``taskforge_now()`` (queries.schedule_clock),
which tests freeze and advance; fire-time arithmetic is jobs/schedules/cron.py.

Exactly once per fire time: the fire step locks due schedules ``FOR UPDATE SKIP LOCKED``, so one
dispatcher handles a schedule at a time and moves its next_run_at past now before it commits;
the unique (schedule, fire_time) constraint on ScheduleRun backs that up in the database.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction

from accounts.audit import SYSTEM, Actor, record_audit
from accounts.models import Organization, Project
from billing.plans import plan_limits
from jobs import queries, services
from jobs.exceptions import IdempotencyRace
from jobs.models import (
    TERMINAL_STATES,
    CatchUp,
    Job,
    Overlap,
    RunOutcome,
    Schedule,
    ScheduleRun,
)
from jobs.schedules import cron
from jobs.specs import JobSpec, encode_payload
from queues.models import Queue
from taskforge.lib.errors import (
    Conflict,
    NotFound,
    QuotaExceeded,
    TaskForgeError,
    ValidationFailed,
)

logger = logging.getLogger("taskforge.schedules")

# With catch_up=none, a fire time at most this late still runs (a busy or restarting
# dispatcher); older ones count as missed.
GRACE = timedelta(seconds=60)

MAX_PREVIEW = 100

EDITABLE_FIELDS = frozenset(
    {
        "name", "cron", "timezone", "queue", "job_type", "payload", "priority", "enabled",
        "overlap", "catch_up", "catch_up_max",
    }
)  # fmt: skip


class ScheduleClock(models.Func):
    """``taskforge_now()`` in a query: the database time schedules fire by."""

    function = "taskforge_now"
    template = "%(function)s()"
    output_field = models.DateTimeField()


class ScheduleNameTaken(Conflict):
    pass


def get_schedule(project: Project, schedule_id: UUID | str) -> Schedule:
    try:
        return Schedule.objects.for_project(project).select_related("queue").get(pk=schedule_id)
    except (Schedule.DoesNotExist, ValueError, ValidationError):
        raise NotFound(f"schedule {schedule_id} not found") from None


# --- create, change, delete ---------------------------------------------------------------------


def create_schedule(
    project: Project, fields: Mapping[str, Any], *, actor: Actor = SYSTEM
) -> Schedule:
    """Create a schedule; its first fire time is the first one after now."""
    _check_editable(fields)
    with transaction.atomic(durable=True):
        # Creates in one organization take turns, so two cannot both take the last slot.
        Organization.objects.select_for_update().filter(pk=project.organization_id).first()
        limits = plan_limits(project.organization_id)
        cap = limits.get("max_schedules")
        if cap is not None and Schedule.objects.for_org(project.organization).count() >= cap:
            raise QuotaExceeded(
                f"your plan allows {cap} schedules; delete one or upgrade",
                details={"limit": cap, "limit_name": "max_schedules"},
            )
        schedule = Schedule(organization_id=project.organization_id, project=project)
        clock = queries.schedule_clock()
        _apply(schedule, fields, clock=clock, limits=limits)
        _save_checking_name(schedule)
        record_audit(
            project.organization_id,
            "schedule.created",
            actor=actor,
            project=project,
            target_type="schedule",
            target_id=schedule.pk,
            metadata={"name": schedule.name, "cron": schedule.cron},
        )
    return schedule


def update_schedule(
    schedule: Schedule, changes: Mapping[str, Any], *, actor: Actor = SYSTEM
) -> Schedule:
    """Change a schedule. A new cron or timezone, or enabling it, restarts its fire times from
    now: a schedule re-enabled after a pause does not catch up the time it was disabled."""
    _check_editable(changes)
    project = schedule.project
    with transaction.atomic(durable=True):
        locked = _locked(schedule)
        clock = queries.schedule_clock()
        _apply(locked, changes, clock=clock, limits=plan_limits(project.organization_id))
        _save_checking_name(locked)
        record_audit(
            project.organization_id,
            "schedule.updated",
            actor=actor,
            project=project,
            target_type="schedule",
            target_id=locked.pk,
            metadata={"changed": sorted(changes)},
        )
    return locked


def delete_schedule(schedule: Schedule, *, actor: Actor = SYSTEM) -> None:
    """Delete a schedule and its run history; jobs it already enqueued are kept."""
    project = schedule.project
    with transaction.atomic(durable=True):
        Schedule.objects.for_project(project).filter(pk=schedule.pk).delete()
        record_audit(
            project.organization_id,
            "schedule.deleted",
            actor=actor,
            project=project,
            target_type="schedule",
            target_id=schedule.pk,
            metadata={"name": schedule.name},
        )


def _apply(
    schedule: Schedule,
    changes: Mapping[str, Any],
    *,
    clock: datetime,
    limits: Mapping[str, int | None],
) -> None:
    """Validate ``changes`` against the schedule's other values and set them, with next_run_at."""
    for name in ("name", "job_type"):
        if name in changes:
            value = changes[name]
            if not isinstance(value, str) or not value.strip() or "\x00" in value:
                raise ValidationFailed(
                    f"{name}: must be a non-empty string", details={"field": name}
                )
            setattr(schedule, name, value)
    if "queue" in changes:
        queue = Queue.objects.for_project(schedule.project).filter(name=changes["queue"]).first()
        if queue is None:
            raise ValidationFailed(
                f"queue: no queue named {changes['queue']!r} in this project",
                details={"field": "queue"},
            )
        schedule.queue = queue
    if "payload" in changes:
        encode_payload(None, changes["payload"])
        schedule.payload = changes["payload"]
    was_enabled = schedule.enabled and schedule.next_run_at is not None
    for name in ("priority", "enabled", "overlap", "catch_up", "catch_up_max"):
        if name in changes:
            setattr(schedule, name, changes[name])
    timing_changed = bool({"cron", "timezone"} & set(changes))
    restart = timing_changed or not was_enabled
    if not schedule.enabled:
        schedule.next_run_at = None
    # The expression is checked when it changes or is about to fire again; a rename or a
    # disable never fails on it (a timezone a host no longer knows, a plan downgrade).
    if not (timing_changed or (schedule.enabled and restart)):
        return
    expression = cron.parse(
        changes.get("cron", schedule.cron),
        changes.get("timezone", schedule.timezone),
        reference=clock,
    )
    schedule.cron = " ".join(str(changes.get("cron", schedule.cron)).split())
    schedule.timezone = str(changes.get("timezone", schedule.timezone))
    # The plan's frequency applies to what will fire from now on: a schedule left over-frequent
    # by a downgrade can still be renamed or disabled, but not re-enabled or re-timed.
    floor = limits.get("min_schedule_interval_seconds")
    if schedule.enabled and floor and expression.min_interval_seconds() < floor:
        raise ValidationFailed(
            f"cron: {schedule.cron!r} fires every {expression.min_interval_seconds()} s; "
            f"your plan allows at most one run every {floor} s",
            details={"field": "cron", "min_interval_seconds": floor},
        )
    if schedule.enabled:
        schedule.next_run_at = expression.next_after(clock)


def _save_checking_name(schedule: Schedule) -> None:
    taken = ScheduleNameTaken(
        f"a schedule named {schedule.name!r} already exists in this project",
        details={"field": "name"},
    )
    others = Schedule.objects.for_project(schedule.project).exclude(pk=schedule.pk)
    if others.filter(name=schedule.name).exists():
        raise taken
    try:
        with transaction.atomic():
            schedule.save()
    except IntegrityError:  # a concurrent create took the name between check and save
        raise taken from None


def _check_editable(fields: Mapping[str, Any]) -> None:
    unknown = set(fields) - EDITABLE_FIELDS
    if unknown:
        raise ValueError(f"not schedule fields: {sorted(unknown)}")


def _locked(schedule: Schedule) -> Schedule:
    """The schedule's row, locked for the rest of the transaction, with its queue."""
    return (
        Schedule.objects.for_project(schedule.project)
        .select_for_update()
        .select_related("queue")
        .get(pk=schedule.pk)
    )


# --- preview and trigger -------------------------------------------------------------------------


def preview(schedule: Schedule, count: int) -> list[datetime]:
    """The schedule's next ``count`` fire times from now (as if enabled)."""
    if not 1 <= count <= MAX_PREVIEW:
        raise ValidationFailed(f"n: must be from 1 to {MAX_PREVIEW}", details={"field": "n"})
    with transaction.atomic():
        clock = queries.schedule_clock()
    expression = cron.parse(schedule.cron, schedule.timezone, reference=clock)
    return expression.upcoming(clock, count)


def trigger_schedule(schedule: Schedule, *, actor: Actor = SYSTEM) -> Job:
    """Enqueue one run now, outside the cron times (overlap does not apply: it was asked for).

    The run counts as the schedule's latest, so ``overlap: skip`` waits for it too.
    """
    project = schedule.project
    with transaction.atomic(durable=True):
        locked = _locked(schedule)
        clock = queries.schedule_clock()
        job_id = services.enqueue_in_transaction(project, [_spec(locked)]).ids[0]
        ScheduleRun.objects.create(
            organization_id=project.organization_id,
            schedule=locked,
            fire_time=clock,
            manual=True,
            outcome=RunOutcome.ENQUEUED,
            job_id=job_id,
        )
        Schedule.objects.for_project(project).filter(pk=locked.pk).update(
            last_run_at=clock, last_job_id=job_id
        )
        record_audit(
            project.organization_id,
            "schedule.triggered",
            actor=actor,
            project=project,
            target_type="schedule",
            target_id=locked.pk,
            metadata={"job_id": str(job_id)},
        )
    return services.get_job(project, job_id)


def _spec(schedule: Schedule, *, idempotency_key: str | None = None) -> JobSpec:
    return JobSpec(
        queue=schedule.queue.name,
        job_type=schedule.job_type,
        payload=schedule.payload,
        priority=schedule.priority,
        idempotency_key=idempotency_key,
    )


def _run_key(schedule: Schedule, fire_time: datetime) -> str:
    """A cron run's idempotency key: one job per (schedule, fire time) in the jobs table too,
    and a handle clients can look the run's job up by."""
    return f"schedule:{schedule.pk}:{fire_time.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


# --- the dispatcher's fire step ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fired:
    schedules: int = 0
    enqueued: int = 0
    skipped: int = 0


def fire_due_schedules(*, limit: int) -> Fired:
    """Fire every due schedule (at most ``limit``) for its due fire times, in one transaction.

    Which fire times are due follows each schedule's catch_up policy (``_due_fire_times``);
    ``overlap: skip`` records a skipped run instead of a job while the previous run is
    unfinished.
    """
    with transaction.atomic(durable=True):
        # One statement when nothing is due (most ticks): the clock is read in SQL.
        due = list(
            Schedule.objects.all_tenants()
            .filter(enabled=True, next_run_at__lte=ScheduleClock())
            .select_related("queue", "project")
            .order_by("next_run_at")
            .select_for_update(skip_locked=True, of=("self",))[:limit]
        )
        if not due:
            return Fired()
        clock = queries.schedule_clock()
        plans = {schedule.pk: _plan(schedule, clock) for schedule in due}
        _drop_recorded(plans)
        running = _unfinished_jobs(due)
        runs, enqueued, skipped = _enqueue(due, plans, running)
        ScheduleRun.objects.bulk_create(runs)
        Schedule.objects.all_tenants().bulk_update(
            due, ["enabled", "next_run_at", "last_run_at", "last_job_id"]
        )
    return Fired(schedules=len(due), enqueued=enqueued, skipped=skipped)


def _plan(schedule: Schedule, clock: datetime) -> list[datetime]:
    """The schedule's fire times to act on now; also moves its next_run_at past ``clock``."""
    try:
        expression = cron.compile_cron(schedule.cron, schedule.timezone)
    except ValidationFailed as exc:  # e.g. a timezone this host's tz database lacks
        logger.error(
            "schedule %s (%s) cannot fire and is now disabled: %s", schedule.pk, schedule.name, exc
        )
        schedule.enabled, schedule.next_run_at = False, None
        return []
    assert schedule.next_run_at is not None
    fires = _due_fire_times(schedule, expression, clock)
    # next_run_at is itself a fire time: if it is not the first to run, some were missed.
    if not fires or fires[0] > schedule.next_run_at:
        logger.warning(
            "schedule %s (%s): fire times since %s were missed; catch_up=%s runs %d of them",
            schedule.pk,
            schedule.name,
            schedule.next_run_at.isoformat(),
            schedule.catch_up,
            len(fires),
        )
    schedule.next_run_at = expression.next_after(clock)
    if schedule.next_run_at is None:
        logger.warning("schedule %s (%s) has no further fire time", schedule.pk, schedule.name)
    return fires


# A fire time equal to next_run_at is due: the window (next_run_at - _TICK, now] includes it.
_TICK = timedelta(microseconds=1)


def _due_fire_times(schedule: Schedule, expression: cron.Cron, clock: datetime) -> list[datetime]:
    """The fire times in [next_run_at, now] that run, by the catch_up policy:
    none: only one at most GRACE late; latest: the most recent one; all: the most recent
    catch_up_max ones, oldest first."""
    assert schedule.next_run_at is not None
    start = schedule.next_run_at - _TICK
    if schedule.catch_up == CatchUp.NONE:
        return expression.latest_between(max(start, clock - GRACE), clock, 1)
    if schedule.catch_up == CatchUp.LATEST:
        return expression.latest_between(start, clock, 1)
    return expression.latest_between(start, clock, schedule.catch_up_max)


def _drop_recorded(plans: dict[UUID, list[datetime]]) -> None:
    """Leave out fire times already recorded (only possible if next_run_at was moved back by
    hand; the unique constraint would otherwise refuse the whole step)."""
    wanted = {t for times in plans.values() for t in times}
    if not wanted:
        return
    recorded = set(
        ScheduleRun.objects.all_tenants()
        .filter(schedule_id__in=list(plans), manual=False, fire_time__in=wanted)
        .values_list("schedule_id", "fire_time")
    )
    for schedule_id, times in plans.items():
        times[:] = [t for t in times if (schedule_id, t) not in recorded]


def _unfinished_jobs(due: list[Schedule]) -> set[UUID]:
    """The last jobs of overlap=skip schedules that have not finished."""
    last = [s.last_job_id for s in due if s.overlap == Overlap.SKIP and s.last_job_id]
    if not last:
        return set()
    return set(
        Job.objects.all_tenants()
        .filter(pk__in=last)
        .exclude(state__in=TERMINAL_STATES)
        .values_list("pk", flat=True)
    )


def _enqueue(
    due: list[Schedule], plans: dict[UUID, list[datetime]], running: set[UUID]
) -> tuple[list[ScheduleRun], int, int]:
    """Submit the runs' jobs (one submission per project) and build their ScheduleRun rows."""
    wanted: dict[UUID, list[tuple[Schedule, datetime]]] = defaultdict(list)
    runs: list[ScheduleRun] = []
    skipped = 0
    for schedule in due:
        busy = schedule.overlap == Overlap.SKIP and schedule.last_job_id in running
        for fire_time in plans[schedule.pk]:
            if busy:
                skipped += 1
                runs.append(_run(schedule, fire_time, RunOutcome.SKIPPED_OVERLAP, None))
                continue
            wanted[schedule.project_id].append((schedule, fire_time))
            # The job enqueued now is unfinished: with overlap=skip, later fire times of
            # this same step wait for it.
            busy = schedule.overlap == Overlap.SKIP
    enqueued = 0
    for pairs in wanted.values():
        for (schedule, fire_time), job_id, error in _submit_runs(pairs):
            if job_id is None:
                runs.append(_run(schedule, fire_time, RunOutcome.FAILED, None, error=error))
                continue
            runs.append(_run(schedule, fire_time, RunOutcome.ENQUEUED, job_id))
            schedule.last_run_at, schedule.last_job_id = fire_time, job_id
            enqueued += 1
    return runs, enqueued, skipped


Pair = tuple[Schedule, datetime]


def _submit_runs(pairs: list[Pair]) -> list[tuple[Pair, UUID | None, str]]:
    """Enqueue one project's runs in one submission: (run, job id or None, error) each.

    If the engine refuses the submission (a payload that outgrew a lowered size limit, say),
    each run is tried on its own, so only the refused ones fail: logged, recorded as failed
    runs, not retried. Savepoints keep a refusal from undoing the rest of the step.
    """
    project = pairs[0][0].project
    try:
        return [(pair, job_id, "") for pair, job_id in zip(pairs, _submit(pairs), strict=True)]
    except (TaskForgeError, IdempotencyRace):
        pass
    results: list[tuple[Pair, UUID | None, str]] = []
    for pair in pairs:
        try:
            results.append((pair, _submit([pair])[0], ""))
        except (TaskForgeError, IdempotencyRace) as exc:
            error = getattr(exc, "message", "") or f"{type(exc).__name__}: {exc}"
            logger.error(
                "schedule %s (%s) of project %s: the run at %s was not enqueued: %s",
                pair[0].pk, pair[0].name, project.pk, pair[1].isoformat(), error,
            )  # fmt: skip
            results.append((pair, None, error))
    return results


def _submit(pairs: list[Pair]) -> list[UUID]:
    with transaction.atomic():
        specs = [_spec(s, idempotency_key=_run_key(s, t)) for s, t in pairs]
        return services.enqueue_in_transaction(pairs[0][0].project, specs).ids


def _run(
    schedule: Schedule, fire_time: datetime, outcome: str, job_id: UUID | None, *, error: str = ""
) -> ScheduleRun:
    return ScheduleRun(
        organization_id=schedule.organization_id,
        schedule=schedule,
        fire_time=fire_time,
        outcome=outcome,
        job_id=job_id,
        error=error[:2000],
    )
