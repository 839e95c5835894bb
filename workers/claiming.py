"""Claiming at fetch: a worker's long-poll claims its jobs itself.

GET /workers/{id}/jobs is the claim: in one short transaction the fetch locks its worker,
reads the worker's queues with their limits and its busy slots, plans how its free slots are
split between its queues (workers/planning.py: queue priorities first, then weights by smooth
weighted round robin), and claims that many jobs with SKIP LOCKED, delivered in the same
statement (workers/sql/claim_for_worker.sql). Only a worker that is asking gets jobs, and a
job goes from "pending" to a worker's hands in one statement, with no dispatcher between
(docs/architecture.md, "Delivery" has the figures that decided it).

Every limit is applied inside the claim's transaction, under locks every claimer takes in one
order, so any number of web processes claim at once without exceeding one:
* the organization's plan max_concurrency: an advisory lock per capped organization, then
  its running count (jobs/sql/lock_organizations.sql, running_per_organization.sql);
* a queue's max_concurrency: the queue row, locked, then its running count;
* a queue's rate limit: its token bucket, locked, spent by the claim statement itself;
* the worker's capacity: its row, locked first, then its busy count (processing jobs, and
  cancelled ones whose handlers still run).

Round-robin state (weights) is kept per web process, keyed by (worker, queue): a worker's
fetches go to the process its keep-alive connection reached, so its weights hold there.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from django.db import transaction
from django.db.models import Count
from django.db.models.functions import Now

from accounts.models import Project
from billing.plans import limits_of
from jobs import queries
from jobs.models import Job, JobState
from queues.models import Queue
from taskforge import conf
from workers import claim_sql
from workers.models import Worker, WorkerStatus
from workers.planning import Assignment, LastSeen, RoundRobinState, forget_unseen, plan_slots

# Seconds the round-robin weights of a (worker, queue) pair outlive its last fetch.
ROUND_ROBIN_KEEP_SECONDS = 60.0

_round_robin: RoundRobinState = {}
_round_robin_seen: LastSeen = {}
_round_robin_lock = threading.Lock()
_next_forget = 0.0


@dataclass(frozen=True, slots=True)
class Claim:
    """What one fetch claimed, and what its long-poll needs to wait well for more."""

    jobs: list[queries.AssignedJob] = field(default_factory=list)
    # The worker's status; None when the worker no longer exists.
    status: str | None = None
    # The queues it serves now (active, unpaused): the ones whose NOTIFYs should wake it.
    queue_ids: frozenset[UUID] = frozenset()
    # A rate-limited queue still had jobs the bucket held back: its next token is due in this
    # many seconds, so the long-poll should look again by then.
    retry_in: float | None = None

    @property
    def serving(self) -> bool:
        """Whether the worker may get jobs at all (not draining, offline or gone)."""
        return self.status == WorkerStatus.ONLINE


def claim(project: Project, worker_id: UUID, *, limit: int | None) -> Claim:
    """Claim up to ``limit`` jobs (None: as many as the worker's capacity) for the project's
    worker, fewer when its free slots, its queues' limits or its plan allow fewer, and deliver
    them. A worker that does not exist in the project gets ``Claim()`` (status None)."""
    with transaction.atomic(durable=True):
        locked = claim_sql.lock_worker(project.pk, worker_id)
        if locked is None:
            return Claim()
        capacity, status, job_types = locked
        limit = capacity if limit is None else limit
        if status == WorkerStatus.OFFLINE:
            # Marked offline for silence, yet polling: a poll is proof of life, as a heartbeat
            # is (services.heartbeat brings it back the same way). Its old leases ended when
            # it went offline; what it fetches now is new work. Answering nothing instead
            # would make a long-polling client poll again at once, in a loop, until its next
            # heartbeat.
            Worker.objects.for_project(project).filter(
                pk=worker_id, status=WorkerStatus.OFFLINE
            ).update(status=WorkerStatus.ONLINE, last_heartbeat=Now())
            status = WorkerStatus.ONLINE
        rows = claim_sql.worker_assignments(worker_id, cap=max(1, min(limit, capacity)))
        queue_ids = frozenset(row[0] for row in rows)
        _note_seen(worker_id, queue_ids)
        if status != WorkerStatus.ONLINE or not rows:
            return Claim(status=status, queue_ids=queue_ids)
        busy = int(rows[0][9])
        free = min(limit, capacity - busy)
        if free <= 0:
            return Claim(status=status, queue_ids=queue_ids)
        choices, available, capped, rate_limited, plans = _read_assignments(rows)
        plan_room = _plan_room(available, choices, plans)
        if capped:
            _apply_concurrency_caps(available, capped)
        pending = dict(available)
        buckets = _apply_rate_limits(available, rate_limited)
        with _round_robin_lock:
            slots = plan_slots(
                {worker_id: free},
                {worker_id: choices},
                available,
                budget=free,
                state=_round_robin,
                plan_room=plan_room,
            )
        counts = dict(Counter(slot.queue_id for slot in slots))
        claimed = claim_sql.claim_for_worker(
            worker_id,
            counts,
            job_types=job_types,
            ack_seconds=conf.ack_timeout_seconds(),
            buckets=buckets,
        )
    return Claim(
        jobs=[job for _, job in claimed],
        status=status,
        queue_ids=queue_ids,
        retry_in=_next_token_in(buckets, pending, Counter(queue for queue, _ in claimed)),
    )


def _read_assignments(
    rows: list[tuple[Any, ...]],
) -> tuple[list[Assignment], dict[UUID, int], set[UUID], set[UUID], dict[UUID, int | None]]:
    """The worker's choices, pending jobs per queue, which queues have a cap and which a rate
    limit, and the plan max_concurrency of their organizations (None: no cap)."""
    choices: list[Assignment] = []
    available: dict[UUID, int] = {}
    capped: set[UUID] = set()
    rate_limited: set[UUID] = set()
    plans: dict[UUID, int | None] = {}
    for row in rows:
        queue_id, weight, priority, max_concurrency, limited, org, tier, limits, pending = row[:9]
        choices.append(Assignment(queue_id, int(weight), int(priority), org))
        available[queue_id] = int(pending)
        if max_concurrency is not None:
            capped.add(queue_id)
        if limited:
            rate_limited.add(queue_id)
        if org not in plans:
            plans[org] = limits_of(tier, json.loads(limits) if limits else None)["max_concurrency"]
    return choices, available, capped, rate_limited, plans


def _plan_room(
    available: dict[UUID, int],
    choices: list[Assignment],
    plans: dict[UUID, int | None],
) -> dict[UUID, int]:
    """How many more jobs each organization with jobs waiting may start under its plan's
    max_concurrency (its running jobs across all its projects, queues and workers, and every
    claimer's); organizations whose plan has no cap are left out.

    The organization has no row every claimer would lock (one without a subscription is on
    starter), so each capped organization gets an advisory lock (lock_organizations.sql) held
    until this claim commits: the running count, read after the lock is granted, includes
    every other claim committed before, and none claims for the organization meanwhile. The
    organization locks come before any queue row's (caps, then rate limits), so every claimer
    takes its locks in one order.
    """
    caps = {
        choice.organization_id: cap
        for choice in choices
        if choice.organization_id is not None
        and available.get(choice.queue_id, 0) > 0
        and (cap := plans.get(choice.organization_id)) is not None
    }
    if not caps:
        return {}
    queries.lock_organizations(sorted(caps))
    running = queries.running_per_organization(caps)
    return {org: max(0, cap - running.get(org, 0)) for org, cap in caps.items()}


def _apply_concurrency_caps(available: dict[UUID, int], capped: set[UUID]) -> None:
    """Lower each capped queue's availability to its max_concurrency headroom.

    The queue rows are locked first, so claimers take turns on capped queues and the running
    count each one reads already includes the others' committed claims.
    """
    rows = (
        Queue.objects.all_tenants()
        .filter(pk__in=sorted(capped), max_concurrency__isnull=False)
        .order_by("pk")
        .select_for_update(no_key=True)
        .values_list("pk", "max_concurrency")
    )
    caps = {queue_id: cap for queue_id, cap in rows if cap is not None}
    if not caps:
        return
    running = dict(
        Job.objects.all_tenants()
        .filter(state=JobState.PROCESSING, queue_id__in=list(caps))
        .values("queue_id")
        .annotate(n=Count("*"))
        .values_list("queue_id", "n")
    )
    for queue_id, cap in caps.items():
        available[queue_id] = max(0, min(available[queue_id], cap - running.get(queue_id, 0)))


def _apply_rate_limits(
    available: dict[UUID, int], rate_limited: set[UUID]
) -> dict[UUID, queries.RateBucket]:
    """Lower each rate-limited queue's availability to the whole tokens in its bucket.

    Only queues with pending jobs are locked (jobs/sql/lock_rate_limits.sql): claimers take
    turns on them until this transaction, whose claim spends the tokens, commits.
    Organizations (_plan_room) and concurrency caps are locked first, so every claimer takes
    its locks in the same order: organizations by lock key, capped queues by id, then the
    other rate-limited ones by id.
    """
    waiting = sorted(queue_id for queue_id in rate_limited if available.get(queue_id, 0) > 0)
    buckets = queries.lock_rate_limits(waiting)
    for queue_id, bucket in buckets.items():
        available[queue_id] = min(available[queue_id], bucket.allowed)
    return buckets


def _next_token_in(
    buckets: dict[UUID, queries.RateBucket], pending: dict[UUID, int], spent: Counter[UUID]
) -> float | None:
    """Seconds until the next token of a queue whose limit, not the worker's free slots, left
    jobs pending; None when no queue waits on its limit."""
    delays = [
        bucket.seconds_to_next_token(spent[queue_id])
        for queue_id, bucket in buckets.items()
        if pending[queue_id] > spent[queue_id] and bucket.tokens - spent[queue_id] < 1
    ]
    return min(delays) if delays else None


def _note_seen(worker_id: UUID, queue_ids: frozenset[UUID]) -> None:
    """Record that the worker fetched for these queues (even when full: its weights must
    survive until it frees a slot), and drop, at most once per keep time, the weights of
    (worker, queue) pairs not fetched for that long (workers gone, assignments removed,
    queues paused), so the state does not grow forever."""
    global _next_forget
    now = time.monotonic()
    with _round_robin_lock:
        for queue_id in queue_ids:
            _round_robin_seen[worker_id, queue_id] = now
        if now < _next_forget:
            return
        _next_forget = now + ROUND_ROBIN_KEEP_SECONDS
        forget_unseen(_round_robin, _round_robin_seen, now=now, keep_for=ROUND_ROBIN_KEEP_SECONDS)


def channels_of(worker_id: UUID, queue_ids: frozenset[UUID]) -> list[str]:
    """The notification keys whose NOTIFY should wake this worker's long-poll: each of its
    queues' (jobs became pending there) and its own (drained, deregistered, queues changed)."""
    keys = [f"{queries.JOBS_READY_CHANNEL}:{queries.queue_payload(q)}" for q in sorted(queue_ids)]
    return [*keys, queries.worker_channel(worker_id)]
