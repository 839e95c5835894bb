"""Why isn't this job running? The reasons, read from the same state the claim decides on.

A worker's fetch (workers/claiming.py) claims a queue's pending jobs only when all of these
hold, so each one that fails is a reason:

* the queue is not paused, and an online worker has an active assignment to it
  (workers/sql/worker_assignments.sql; draining and offline workers get nothing) and handles
  the job's type (a worker that declared its job types claims no other);
* that worker has a free slot: its processing jobs (and cancelled ones it has not reported
  gone) are fewer than its capacity, and workers/planning.py gives free slots to the worker's
  highest-priority queues with jobs waiting first;
* the queue is under its max_concurrency (processing jobs of the queue) and, with a rate
  limit, has a whole token in its bucket (refilled as jobs/sql/lock_rate_limits.sql does);
* the organization is under its plan's max_concurrency (processing jobs of all its projects,
  billing.plans.plan_limits);
* the job comes first in the claim order (workers/sql/claim_for_worker.sql: priority, run_at, id).

Everything is read without locks and through for_project / for_org, so a reason never names
another tenant's job, queue or worker. The answer is a snapshot: the next fetch may change it
a moment later.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from django.db.models import Count, Q
from django.utils import timezone

from accounts.models import Project
from billing.plans import plan_limits
from jobs.models import Job, JobState
from jobs.services.graph import waited_for_edges
from queues.models import Queue
from workers.models import QueueWorkerAssignment, Worker, WorkerStatus

# How many jobs ahead in the claim order are counted, and parents or running jobs named: a
# reason needs an order of magnitude, and each bound keeps the page's queries small.
AHEAD_CAP = 1000
NAMED_JOBS = 20
NAMED_WORKERS = 5


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason a job is not running (or what it is doing): a stable ``code`` for code and
    tests, a sentence for people, the moment it refers to (when the job runs, when a token or
    a lease is due) and the related jobs (parents it waits for, jobs holding the slots)."""

    code: str
    message: str
    at: datetime | None = None
    job_ids: tuple[UUID, ...] = ()


def explain_job(project: Project, job: Job, *, now: datetime | None = None) -> list[Reason]:
    """Why ``job`` (of ``project``) is not running, or what it is doing while it runs; an
    empty list for a finished job. ``now`` defaults to the current time."""
    now = now or timezone.now()
    if job.state == JobState.BLOCKED:
        return [_blocked(project, job)]
    if job.state == JobState.SCHEDULED:
        return [_scheduled(job, now)]
    if job.state == JobState.PENDING:
        return _pending(project, job, now)
    if job.state == JobState.PROCESSING:
        return _processing(project, job, now)
    return []


# --- blocked and scheduled ------------------------------------------------------------------


def _blocked(project: Project, job: Job) -> Reason:
    # The same edges a retry would wait for: unfinished parents, and failed ones unless the
    # edge's policy lets the child run anyway.
    edges = waited_for_edges(project, []).filter(child_id=job.pk)
    parents = list(
        edges.order_by("parent_id").values_list("parent_id", "parent__state")[: NAMED_JOBS + 1]
    )
    if not parents:
        return Reason("blocked", "Waiting for its parent jobs to finish.")
    total = len(parents) if len(parents) <= NAMED_JOBS else edges.count()
    by_state = dict(
        edges.values("parent__state").annotate(n=Count("*")).values_list("parent__state", "n")
    )
    states = ", ".join(f"{n} {state}" for state, n in sorted(by_state.items()))
    named = "" if total <= NAMED_JOBS else f"; the first {NAMED_JOBS} are listed"
    return Reason(
        "blocked",
        f"Waiting for {_jobs(total, 'parent job')} to finish ({states}){named}",
        job_ids=tuple(pk for pk, _ in parents[:NAMED_JOBS]),
    )


def _scheduled(job: Job, now: datetime) -> Reason:
    if job.run_at <= now:
        return Reason(
            "due",
            "Its run time has come: a dispatcher makes it pending on its next tick (if it "
            "stays here, check that a dispatcher is running)",
            at=job.run_at,
        )
    if job.attempts > 0 and job.last_error:
        return Reason(
            "retrying",
            f"Waiting to retry after attempt {job.attempts} failed: {_excerpt(job.last_error)}",
            at=job.run_at,
        )
    return Reason("scheduled", "Scheduled to run later", at=job.run_at)


# --- pending ----------------------------------------------------------------------------------


def _pending(project: Project, job: Job, now: datetime) -> list[Reason]:
    queue = Queue.objects.for_project(project).get(pk=job.queue_id)
    reasons: list[Reason] = []
    if queue.paused:
        reasons.append(
            Reason(
                "queue_paused",
                f"Queue {queue.name} is paused: no job is taken from it until it is resumed",
            )
        )
    reasons += _worker_reasons(project, queue, job.job_type, now)
    if queue.max_concurrency is not None:
        reasons += _concurrency_reason(project, queue, queue.max_concurrency)
    if queue.rate_limit_per_second is not None:
        reasons += _rate_reason(queue, queue.rate_limit_per_second, now)
    reasons += _plan_reason(project)
    ahead = _jobs_ahead(project, job)
    if ahead:
        count = f"{AHEAD_CAP:,}+ jobs are" if ahead > AHEAD_CAP else f"{_jobs(ahead)} {_are(ahead)}"
        reasons.append(Reason("jobs_ahead", f"{count} ahead of it in queue {queue.name}"))
    if not reasons:
        reasons.append(
            Reason(
                "next_in_line",
                "It is next in line: the next worker serving the queue that asks for jobs takes it",
            )
        )
    return reasons


def _worker_reasons(project: Project, queue: Queue, job_type: str, now: datetime) -> list[Reason]:
    """No online worker serves the queue, or none handles the job's type; or all of them are
    full; or their free slots go to higher-priority queues first."""
    assignments = list(
        QueueWorkerAssignment.objects.for_org(project.organization)
        .filter(queue_id=queue.pk, worker__project_id=project.pk)
        .select_related("worker")
        .order_by("worker__name")
    )
    serving = [
        a.worker for a in assignments if a.is_active and a.worker.status == WorkerStatus.ONLINE
    ]
    if not serving:
        return [_no_worker(queue, assignments)]
    handling = [w for w in serving if w.job_types is None or job_type in w.job_types]
    if not handling:
        return [_no_handler(queue, job_type, serving)]
    serving = handling
    running = _running_per_worker(project, [w.pk for w in serving])
    free = [w for w in serving if running.get(w.pk, 0) < w.capacity]
    if not free:
        busy = [f"{w.name} ({running.get(w.pk, 0)} of {w.capacity} slots busy)" for w in serving]
        return [
            Reason(
                "workers_busy",
                f"Every online worker serving queue {queue.name} is at capacity: " + _names(busy),
            )
        ]
    higher = _busier_higher_queues(project, queue, free, now)
    if higher:
        return [
            Reason(
                "higher_priority_queues",
                f"The free slots of the workers serving queue {queue.name} go first to "
                f"higher-priority queues with jobs waiting: {_names(higher)}",
            )
        ]
    return []


def _no_worker(queue: Queue, assignments: Sequence[QueueWorkerAssignment]) -> Reason:
    others = [
        f"{a.worker.name} is {a.worker.status}"
        if a.is_active
        else f"{a.worker.name}'s assignment is inactive"
        for a in assignments
    ]
    detail = f" ({_names(others)})" if others else ""
    return Reason("no_worker", f"No online worker serves queue {queue.name}{detail}")


def _no_handler(queue: Queue, job_type: str, serving: Sequence[Worker]) -> Reason:
    handles = [f"{w.name} handles {_names(sorted(w.job_types or ()))}" for w in serving]
    return Reason(
        "no_handler",
        f"No online worker serving queue {queue.name} has a handler for job type {job_type}; "
        f"it waits for one that does ({_names(handles)})",
    )


def _running_per_worker(project: Project, worker_ids: list[UUID]) -> dict[UUID, int]:
    # Busy slots as the claim counts them (workers/sql/worker_assignments.sql): processing
    # jobs, and cancelled ones whose worker has not reported them gone.
    held = Q(state=JobState.CANCELLED, lease_expires_at__isnull=False)
    rows = (
        Job.objects.for_project(project)
        .filter(Q(state=JobState.PROCESSING) | held, worker_id__in=worker_ids)
        .values("worker_id")
        .annotate(n=Count("*"))
        .values_list("worker_id", "n")
    )
    return {worker_id: n for worker_id, n in rows if worker_id is not None}


def _busier_higher_queues(
    project: Project, queue: Queue, workers: list[Worker], now: datetime
) -> list[str]:
    """Queues of a higher priority, served by these workers, that the dispatcher would claim
    from now: unpaused, with jobs pending, under their cap and with a token in their bucket.
    workers/planning.py fills a worker's slots from those first."""
    candidates = (
        Queue.objects.for_project(project)
        .filter(
            paused=False,
            priority__gt=queue.priority,
            assignments__worker__in=workers,
            assignments__is_active=True,
        )
        .distinct()
        .order_by("-priority", "name")
    )
    pending = Job.objects.for_project(project).filter(state=JobState.PENDING)
    return [
        q.name
        for q in candidates
        if pending.filter(queue_id=q.pk).exists()
        and not (
            q.max_concurrency is not None and _concurrency_reason(project, q, q.max_concurrency)
        )
        and not (
            q.rate_limit_per_second is not None and _rate_reason(q, q.rate_limit_per_second, now)
        )
    ]


def _concurrency_reason(project: Project, queue: Queue, cap: int) -> list[Reason]:
    # job_queue_state (queue, state); counted no further than the cap, all the reason needs.
    processing = Job.objects.for_project(project).filter(
        queue_id=queue.pk, state=JobState.PROCESSING
    )
    running = processing.order_by()[:cap].count()
    if running < cap:
        return []
    holders = processing.order_by("started_at", "pk").values_list("pk", flat=True)[:NAMED_JOBS]
    return [
        Reason(
            "concurrency_limit",
            f"Queue {queue.name} runs at most {_jobs(cap)} at once, and {running:,} "
            f"{_are(running)} running",
            job_ids=tuple(holders),
        )
    ]


def _plan_reason(project: Project) -> list[Reason]:
    """The organization runs as many jobs as its plan allows, counted as the dispatcher counts
    them (jobs/sql/running_per_organization.sql): across all its projects and queues."""
    cap = plan_limits(project.organization_id)["max_concurrency"]
    if cap is None:
        return []
    org = project.organization
    # Through the organization's queues, so job_queue_state (queue, state) reads only its own
    # processing rows; jobs have no index on the organization. No further than the cap.
    running = (
        Job.objects.for_org(org)
        .filter(state=JobState.PROCESSING, queue__in=Queue.objects.for_org(org))
        .order_by()[:cap]
        .count()
    )
    if running < cap:
        return []
    return [
        Reason(
            "plan_limit",
            f"Your organization's plan allows {_jobs(cap, 'running job')} at once, and "
            f"{running:,} {_are(running)} running: it starts when one finishes",
        )
    ]


def _rate_reason(queue: Queue, rate: float, now: datetime) -> list[Reason]:
    tokens = _bucket_tokens(queue, rate, now)
    # As RateBucket.allowed in jobs/queries.py: whole tokens, a hair of float error forgiven.
    if math.floor(tokens + 1e-9) >= 1:
        return []
    due = now + timedelta(seconds=(1.0 - tokens) / rate)
    return [
        Reason(
            "rate_limited",
            f"Queue {queue.name} starts at most {rate:g} jobs a second and has used its "
            "allowance: the next start is due",
            at=due,
        )
    ]


def _bucket_tokens(queue: Queue, rate: float, now: datetime) -> float:
    """The bucket's tokens now, refilled exactly as jobs/sql/lock_rate_limits.sql does (but
    read, not locked): rate tokens a second since rate_refilled_at, at most max(rate, 1); an
    untouched bucket is full."""
    burst = max(rate, 1.0)
    if queue.rate_tokens is None or queue.rate_refilled_at is None:
        return burst
    elapsed = max(0.0, (now - queue.rate_refilled_at).total_seconds())
    return min(burst, queue.rate_tokens + rate * elapsed)


def _jobs_ahead(project: Project, job: Job) -> int:
    """Pending jobs of the queue before ``job`` in the claim order, counted up to AHEAD_CAP+1.

    Three counts, each an index range of job_claim_pending (queue, priority DESC, sub_priority
    DESC, run_at, id): a higher priority, the same priority and a higher sub_priority, then
    both the same and an earlier (run_at, id). One OR of them could not bound the index scan,
    and would read the whole backlog behind the job too.
    """
    pending = Job.objects.for_project(project).filter(queue_id=job.queue_id, state=JobState.PENDING)
    ahead = 0
    for before in (
        Q(priority__gt=job.priority),
        Q(priority=job.priority, sub_priority__gt=job.sub_priority),
        Q(priority=job.priority, sub_priority=job.sub_priority, run_at__lte=job.run_at)
        & (Q(run_at__lt=job.run_at) | Q(pk__lt=job.pk)),
    ):
        ahead += pending.filter(before).order_by()[: AHEAD_CAP + 1 - ahead].count()
        if ahead > AHEAD_CAP:
            break
    return ahead


# --- processing -------------------------------------------------------------------------------


def _processing(project: Project, job: Job, now: datetime) -> list[Reason]:
    # Never None for a processing job (the check constraint job_processing_has_lease).
    assert job.worker_id is not None
    worker = Worker.objects.for_project(project).filter(pk=job.worker_id).first()
    name = worker.name if worker else "a worker that no longer exists"
    standing = f" (now {worker.status})" if worker and worker.status != WorkerStatus.ONLINE else ""
    # Claimed by the worker's own fetch, so delivered the moment it started.
    reasons = [Reason("running", f"Running on {name}{standing}", at=job.delivered_at)]
    if job.lease_expires_at is not None:
        if job.lease_expires_at > now:
            message = "Its lease ends unless the worker heartbeats for it before then"
            reasons.append(Reason("lease", message, at=job.lease_expires_at))
        else:
            message = (
                "Its lease has run out: a dispatcher's next sweep counts the attempt as timed "
                "out and retries the job or lets it die"
            )
            reasons.append(Reason("lease_expired", message, at=job.lease_expires_at))
    return reasons


# --- wording ----------------------------------------------------------------------------------


def _jobs(count: int, noun: str = "job") -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _are(count: int) -> str:
    return "is" if count == 1 else "are"


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(items[:NAMED_WORKERS])
    more = len(items) - NAMED_WORKERS
    return shown + (f" and {more} more" if more > 0 else "")


def _excerpt(text: str, length: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= length else line[: length - 1] + "…"
