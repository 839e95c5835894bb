"""The dashboard's statistics of one project: counters by state, throughput charts, queue
health and the latest failures; and the maintenance of the per-minute rollup they read.

Every read is bounded, whatever the size of the jobs table: a count stops at a cap and is
shown past it as the planner's estimate (or "cap+"), charts and rates read the rollup
(``JobThroughput``, written by the statements that finish attempts) and never the jobs, and
the failures are the newest executions through an index. How and why, with the figures
measured on a million jobs: docs/dashboard-data.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Literal
from uuid import UUID

from django.db import transaction

from accounts.models import Project
from jobs import queries
from jobs.models import JobState
from queues.models import Queue
from taskforge import conf
from taskforge.lib.errors import ValidationFailed

# --- Counts ----------------------------------------------------------------------------------

CountKind = Literal["exact", "estimate", "at_least"]


@dataclass(frozen=True, slots=True)
class Count:
    """A number of jobs: ``exact``; or, past the cap of exact counting, the planner's
    ``estimate``, or ``at_least`` the cap when the planner guesses lower than that."""

    value: int
    kind: CountKind = "exact"

    @property
    def label(self) -> str:
        """How the dashboard shows it: "1,234", "≈ 1.2M", "10,000+"."""
        if self.kind == "estimate":
            return f"≈ {_short(self.value)}"
        if self.kind == "at_least":
            return f"{self.value:,}+"
        return f"{self.value:,}"


def _short(value: int) -> str:
    """Two significant figures are all an estimate is worth: 1.2K, 45K, 3.4M, 1.2B."""
    for scale, unit in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "K")):
        if value >= scale * 0.9995:
            scaled = value / scale
            text = f"{scaled:.1f}" if round(scaled, 1) < 10 else f"{scaled:.0f}"
            return text.removesuffix(".0") + unit
    return f"{value:,}"


def exact_count_limit() -> int:
    """Counts past this many jobs are estimated (TASKFORGE_DASHBOARD_EXACT_COUNT_LIMIT)."""
    return conf.dashboard_exact_count_limit()


# The cap of each count in the per-queue views (the queue list, queue health): one statement
# counts every queue, so a project with 50 queues reads at most 50 x 1,001 rows per state.
QUEUE_COUNT_CAP = 1_000

# Past the cap, at most this many per-queue counts are estimated (one EXPLAIN each, ~0.3 ms);
# the others show "1,000+".
QUEUE_ESTIMATES = 20

# Running jobs are bounded by the workers' slots; counting stops here all the same.
RUNNING_CAP = 10_000


def state_counts(project: Project, *, queue: Queue | None = None) -> dict[str, Count]:
    """The project's jobs (or one of its queues') in each state (every JobState), exact up
    to exact_count_limit().

    One statement (state_counts.sql) counts every state, each count reading at most cap + 1
    entries of an index over the project's queues. Past the cap, the planner's estimate of
    the same filter (estimate_jobs.sql: EXPLAIN, no row read).
    """
    cap = exact_count_limit()
    queue_id = queue.pk if queue is not None else None
    found = queries.state_counts(project.pk, cap=cap, queue_id=queue_id)
    return {
        state: _count(found.get(state, 0), cap, project, state, queue_id)
        for state in JobState.values
    }


def _count(found: int, cap: int, project: Project, state: str, queue_id: UUID | None) -> Count:
    """A count that stopped at ``cap`` + 1: exact, else the planner's estimate, unless the
    planner says less than the cap (stale statistics), then "cap+"."""
    if found <= cap:
        return Count(found)
    estimate = queries.estimate_jobs(project.pk, state, queue_id=queue_id)
    return Count(estimate, "estimate") if estimate > cap else Count(cap, "at_least")


def queue_depths(project: Project) -> dict[UUID, dict[str, Count]]:
    """For each of the project's queues, its jobs in each of queries.DEPTH_STATES (pending,
    scheduled, blocked, processing, dead), exact up to QUEUE_COUNT_CAP: the queue list.

    One statement counts them all (queue_depths.sql). Past the cap, the first QUEUE_ESTIMATES
    counts are the planner's estimates, the others "1,000+".
    """
    depths = queries.queue_depths(project.pk, cap=QUEUE_COUNT_CAP)
    estimator = _QueueEstimator(project)
    return {
        queue_id: {state: estimator.count(queue_id, state, n) for state, n in counts.items()}
        for queue_id, counts in depths.items()
    }


class _QueueEstimator:
    """Turns a capped per-queue count into a Count, estimating at most QUEUE_ESTIMATES."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.left = QUEUE_ESTIMATES

    def count(self, queue_id: UUID, state: str, found: int) -> Count:
        if found > QUEUE_COUNT_CAP and self.left <= 0:
            return Count(QUEUE_COUNT_CAP, "at_least")
        if found > QUEUE_COUNT_CAP:
            self.left -= 1
        return _count(found, QUEUE_COUNT_CAP, self.project, state, queue_id)


# --- Throughput ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """A chart's span: ``buckets`` buckets of ``bucket_seconds``, the last one holding now."""

    bucket_seconds: int
    buckets: int
    # What one bucket is called ("Finished per minute").
    bucket_label: str


# The chart windows, the default first. The rollup keeps minutes for a day (the 1 h and 24 h
# charts) and hours for 8 days (the 7 d chart).
WINDOWS: Mapping[str, Window] = MappingProxyType(
    {
        "1h": Window(60, 60, "minute"),
        "24h": Window(600, 144, "10 minutes"),
        "7d": Window(3600, 168, "hour"),
    }
)


@dataclass(frozen=True, slots=True)
class Bucket:
    """What finished in [start, start + the window's bucket): jobs that succeeded, attempts
    that failed (retried or not), and jobs that ended dead (among those failed)."""

    start: datetime
    succeeded: int = 0
    failed: int = 0
    dead: int = 0


@dataclass(frozen=True, slots=True)
class Series:
    """A throughput chart: one bucket per step of the window, oldest first, no gaps."""

    window: str
    bucket_label: str
    buckets: tuple[Bucket, ...]

    @property
    def total_succeeded(self) -> int:
        return sum(b.succeeded for b in self.buckets)

    @property
    def total_failed(self) -> int:
        return sum(b.failed for b in self.buckets)

    @property
    def total_dead(self) -> int:
        return sum(b.dead for b in self.buckets)


def throughput(
    project: Project, *, window: str, queue: Queue | None = None, now: datetime | None = None
) -> Series:
    """Succeeded, failed and dead per bucket of ``window`` (a key of WINDOWS) for the project,
    or one of its queues, up to ``now`` (the database clock by default).

    Reads only the rollup (throughput.sql), whatever has been folded: every row falls into the
    bucket that holds its minute.
    """
    spec = _window(window)
    rows = queries.throughput(
        project.pk,
        bucket_seconds=spec.bucket_seconds,
        buckets=spec.buckets,
        queue_id=queue.pk if queue is not None else None,
        now=now,
    )
    return Series(window, spec.bucket_label, tuple(_sum_queues(rows)))


def _window(name: str) -> Window:
    try:
        return WINDOWS[name]
    except KeyError:
        raise ValidationFailed(
            f"window: must be one of {', '.join(WINDOWS)}", details={"field": "window"}
        ) from None


def _sum_queues(rows: Sequence[queries.ThroughputRow]) -> list[Bucket]:
    """One bucket per start (the rows come ordered by start), its queues added up."""
    buckets: list[Bucket] = []
    for row in rows:
        if buckets and buckets[-1].start == row.start:
            last = buckets[-1]
            buckets[-1] = Bucket(
                last.start,
                last.succeeded + row.succeeded,
                last.failed + row.failed,
                last.dead + row.dead,
            )
        else:
            buckets.append(Bucket(row.start, row.succeeded, row.failed, row.dead))
    return buckets


# --- Queue health ----------------------------------------------------------------------------

# The sparkline and the failure rate cover the last hour, minute by minute.
HEALTH_MINUTES = 60
# The throughput is taken over the last few whole minutes (the current one is still running).
RATE_MINUTES = 5


@dataclass(frozen=True, slots=True)
class QueueHealth:
    """One row of the queue-health table."""

    queue: Queue
    paused: bool
    pending: Count
    running: int
    # Since the oldest pending job became due (its run_at); None without pending jobs.
    oldest_pending_seconds: float | None
    # Finished attempts (succeeded + failed) per minute over the last RATE_MINUTES whole
    # minutes.
    throughput_per_minute: float
    # failed / (succeeded + failed) over the last hour; None when nothing finished.
    failure_rate: float | None
    # Finished attempts per minute over the last hour, oldest first (HEALTH_MINUTES values).
    sparkline: tuple[int, ...]


def queue_health(project: Project, *, now: datetime | None = None) -> list[QueueHealth]:
    """One row per queue of the project, by name, from three statements whatever the number
    of queues: the queues, their backlogs (queue_backlog.sql: capped counts and a loose index
    scan for the oldest pending job) and the last hour of the rollup."""
    queues = list(Queue.objects.for_project(project).order_by("name"))
    if not queues:
        return []
    backlogs = queries.queue_backlog(
        project.pk, cap=QUEUE_COUNT_CAP, running_cap=RUNNING_CAP, now=now
    )
    minutes = _minutes_by_queue(
        queries.throughput(project.pk, bucket_seconds=60, buckets=HEALTH_MINUTES, now=now)
    )
    estimator = _QueueEstimator(project)
    rows = []
    for queue in queues:
        backlog = backlogs.get(queue.pk, queries.Backlog(0, 0, None))
        succeeded, failed = minutes.get(queue.pk, ([0] * HEALTH_MINUTES, [0] * HEALTH_MINUTES))
        finished = [s + f for s, f in zip(succeeded, failed, strict=True)]
        attempts = sum(finished)
        oldest = backlog.oldest_pending_seconds
        rows.append(
            QueueHealth(
                queue=queue,
                paused=queue.paused,
                pending=estimator.count(queue.pk, JobState.PENDING, backlog.pending),
                running=backlog.running,
                # A job promoted in the same instant can look a hair younger than now.
                oldest_pending_seconds=None if oldest is None else max(0.0, oldest),
                throughput_per_minute=sum(finished[-1 - RATE_MINUTES : -1]) / RATE_MINUTES,
                failure_rate=sum(failed) / attempts if attempts else None,
                sparkline=tuple(finished),
            )
        )
    return rows


def _minutes_by_queue(
    rows: Sequence[queries.ThroughputRow],
) -> dict[UUID, tuple[list[int], list[int]]]:
    """Per queue, succeeded and failed for each minute of the window (rows ordered by start,
    every minute present at least once)."""
    starts = sorted({row.start for row in rows})
    index = {start: i for i, start in enumerate(starts)}
    per_queue: dict[UUID, tuple[list[int], list[int]]] = {}
    for row in rows:
        if row.queue_id is None:
            continue
        succeeded, failed = per_queue.setdefault(
            row.queue_id, ([0] * len(starts), [0] * len(starts))
        )
        succeeded[index[row.start]] += row.succeeded
        failed[index[row.start]] += row.failed
    return per_queue


# --- Failures --------------------------------------------------------------------------------

# The newest failed attempts that are grouped; past this many, older ones are not looked at.
FAILURE_SAMPLE = 1_000
# A group is new when first seen within this long.
NEW_WITHIN = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class FailureGroup:
    """Failed attempts of one job type with the same normalised message: the error's first
    line with uuids, hex strings and numbers replaced by <uuid>, <hex>, <n> (rules in
    failure_groups.sql), at most 200 characters."""

    job_type: str
    message: str
    count: int
    first_seen: datetime
    last_seen: datetime
    # The job of the newest attempt in the group.
    latest_job_id: UUID
    # First seen within NEW_WITHIN (among the attempts looked at; see failure_groups).
    new: bool


def failure_groups(
    project: Project, *, hours: int = 24, limit: int = 10, now: datetime | None = None
) -> list[FailureGroup]:
    """The project's failed and timed-out attempts of the last ``hours`` before ``now`` (the
    database clock by default), grouped by job type and normalised message: the ``limit``
    largest groups, the most recently seen first among equals.

    Only the newest FAILURE_SAMPLE attempts are read (failure_groups.sql, through
    execution_project_failed, newest first), so a flood of failures costs the same as a
    thousand, and the grouping happens in the database. A group is ``new`` when its first
    attempt among those read is younger than NEW_WITHIN and the sample reaches back further
    than that (with a thousand failures in the last hour, nothing can be told new).
    """
    rows = queries.failure_groups(
        project.pk, hours=hours, sample=FAILURE_SAMPLE, groups=limit, now=now
    )
    return [
        FailureGroup(
            job_type=row.job_type,
            message=row.message,
            count=row.attempts,
            first_seen=row.first_seen,
            last_seen=row.last_seen,
            latest_job_id=row.latest_job_id,
            new=_sample_reaches_back(row) and row.first_seen >= row.clock - NEW_WITHIN,
        )
        for row in rows
    ]


def _sample_reaches_back(row: queries.FailureGroupRow) -> bool:
    """Whether the attempts looked at cover all of the last NEW_WITHIN: they were all there
    were, or the oldest of them is older than that."""
    return row.sampled < FAILURE_SAMPLE or row.oldest_sampled < row.clock - NEW_WITHIN


# --- Maintenance -----------------------------------------------------------------------------

# Advisory lock key of the rollup's maintenance ("TFROLL" as an integer).
_FOLD_LOCK = 0x5446524F4C4C


def fold_throughput(*, now: datetime | None = None) -> int:
    """Fold the rollup (engine maintenance, every tenant): the backends' shards of minutes
    that are over into shard 0, minutes older than a day into hour rows, and delete hour rows
    older than 8 days. Return how many rows went.

    One transaction, in one dispatcher at a time (a transaction advisory lock: another
    dispatcher that finds it taken does nothing). Sums by bucket are the same before and
    after, so readers never notice (fold_throughput.sql).
    """
    with transaction.atomic(durable=True):
        if not queries.try_transaction_lock(_FOLD_LOCK):
            return 0
        return queries.fold_throughput(now=now) + queries.prune_throughput(now=now)
