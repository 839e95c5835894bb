"""Dashboard benchmark (not a test): every page and live region on a million jobs.

    python -m bench.dashboard [--jobs 1000000] [--reuse] [--vacuum] [--only ROUTE]
                              [--requests 30] [--explain 8]

Load (COPY, a few minutes for a million): 10 organizations, one project each with an admin
user, 3-5 queues per project (one paused, one rate-limited), jobs spread unevenly (one tenant
holds 40 %) over the last 7 days in every state (80 % succeeded, 6 % pending, 3 % scheduled,
1 % processing, 4 % dead, 4 % cancelled, 2 % blocked) with their executions, log lines,
dependency edges, workers and the per-minute throughput rollup, then ANALYZE and the
dispatcher's table maintenance, which VACUUMs the hot tables that grew (this server runs
without autovacuum; --vacuum VACUUMs every table).

Measure: every GET route of the "dashboard" URL namespace that is a ``dashboard_page``, found
in the URLconf (new pages are measured without touching this file), the page and each of its
live regions (``?partial=<name>``, as htmx polls them), for the big tenant's admin and a small
tenant's admin, with Django's test client in this process: server time is the whole request
(middleware, session, queries, rendering), no network. Routes that take an object are
measured with real objects of the loaded data (a queue of each kind, a job of each state, a
worker); the job list also with its filters. One JSON line per measurement, then a table, and
the EXPLAIN of the slowest statement of the slowest measurements.
See bench/README.md for the figures measured on this machine.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import logging
import math
import os
import random
import re
import sys
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from psycopg import sql

import bench  # noqa: F401 - configures Django before the app imports
from accounts.models import Organization, Project, Role, User
from bench.common import BENCH_DB, emit, fresh_database, percentiles, server_params
from billing.models import Subscription, Tier
from jobs import queries
from jobs.models import ExecutionStatus, Job, JobState
from jobs.queries import JobRow, insert_jobs
from jobs.services import listing
from queues.models import Queue
from workers.dispatcher import HOT_TABLES
from workers.models import QueueWorkerAssignment, Worker, WorkerStatus, WorkerType

SEED = 16
# The admins' password, so a person can sign in to the loaded database and look around.
PASSWORD = "dashboard-bench-16"
BUDGET_MS = 150.0
WARMUP = 3
CHUNK = 20_000
DAY = 86_400.0

# --- What is loaded -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TenantPlan:
    slug: str
    name: str
    share: float
    tier: str


# Uneven on purpose: the big tenant is where lists and counts get expensive, the small one
# is what most customers look like.
TENANTS = (
    TenantPlan("bench-acme", "Acme Retail", 0.40, Tier.ENTERPRISE),
    TenantPlan("bench-globex", "Globex", 0.15, Tier.PRO),
    TenantPlan("bench-initech", "Initech", 0.10, Tier.PRO),
    TenantPlan("bench-umbrella", "Umbrella", 0.08, Tier.PRO),
    TenantPlan("bench-hooli", "Hooli", 0.07, Tier.PRO),
    TenantPlan("bench-stark", "Stark Logistics", 0.06, Tier.PRO),
    TenantPlan("bench-wayne", "Wayne Media", 0.05, Tier.STARTER),
    TenantPlan("bench-tyrell", "Tyrell", 0.04, Tier.STARTER),
    TenantPlan("bench-soylent", "Soylent", 0.03, Tier.STARTER),
    TenantPlan("bench-cyberdyne", "Cyberdyne", 0.02, Tier.STARTER),
)
BIG, SMALL = 0, len(TENANTS) - 1


@dataclass(frozen=True, slots=True)
class QueuePlan:
    name: str
    weight: float
    job_types: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


# The first three are every project's: a plain queue, a rate-limited one and a paused one
# (paused two days ago, so it holds a backlog); bigger projects get the last two as well.
QUEUES = (
    QueuePlan("default", 0.40, ("email.send", "user.sync")),
    QueuePlan("webhooks", 0.25, ("webhook.deliver",), {"rate_limit_per_second": 20.0}),
    QueuePlan("imports", 0.08, ("import.rows",), {"paused": True}),
    QueuePlan("reports", 0.12, ("report.build", "export.csv"), {"max_concurrency": 10}),
    QueuePlan("billing", 0.15, ("invoice.charge", "invoice.email"), {"priority": 8}),
)
PAUSED_FOR = 2 * DAY

STATE_SHARES = {
    JobState.SUCCEEDED: 0.80,
    JobState.PENDING: 0.06,
    JobState.SCHEDULED: 0.03,
    JobState.PROCESSING: 0.01,
    JobState.DEAD: 0.04,
    JobState.CANCELLED: 0.04,
    JobState.BLOCKED: 0.02,
}
TERMINAL = {JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED}

# A handful of distinct failures, as real error groups look: (status, message, traceback).
ERRORS = (
    (ExecutionStatus.FAILED, "TimeoutError: upstream did not answer within 30 s", "fetch"),
    (
        ExecutionStatus.FAILED,
        "ConnectionRefusedError: [Errno 111] Connection refused (smtp.internal:25)",
        "send",
    ),
    (ExecutionStatus.FAILED, "KeyError: 'order'", "handle"),
    (
        ExecutionStatus.FAILED,
        "HTTPError: 503 Service Unavailable for url: https://hooks.example.com/notify",
        "deliver",
    ),
    (ExecutionStatus.FAILED, "ValueError: card declined for customer", "charge"),
    (ExecutionStatus.TIMED_OUT, "lease expired: the worker stopped heartbeating", ""),
)
TAGS = (["vip"], ["eu"], ["us"], ["eu", "vip"], ["backfill"], ["beta"], ["us", "backfill"])


class Weighted:
    """A weighted draw, cheaper than random.choices for a million draws."""

    def __init__(self, options: Sequence[Any], weights: Sequence[float]) -> None:
        self.options = list(options)
        self.cumulative = list(itertools.accumulate(weights))

    def draw(self, rng: random.Random) -> Any:
        index = bisect.bisect(self.cumulative, rng.random() * self.cumulative[-1])
        return self.options[min(index, len(self.options) - 1)]


PRIORITIES = Weighted((5, 3, 8, 9), (80, 10, 8, 2))
RETRIES = Weighted((0, 1, 2), (95, 4, 1))
DEAD_ERRORS = Weighted(range(len(ERRORS)), (30, 20, 10, 25, 10, 5))


def error_text(index: int) -> str:
    _status, message, function = ERRORS[index]
    if not function:
        return message
    return (
        "Traceback (most recent call last):\n"
        '  File "/app/worker/handlers.py", line 42, in run\n'
        "    return handler(**payload)\n"
        f'  File "/app/worker/tasks.py", line 118, in {function}\n'
        f"    raise {message.split(':')[0]}(...)\n"
        f"{message}"
    )


def uuid7_at(seconds: float, rng: random.Random) -> uuid.UUID:
    """A UUIDv7 whose timestamp is ``seconds`` (as taskforge.lib.ids makes them, but at a
    chosen time), so ids sort like created_at, as they do in a real table."""
    ms = int(seconds * 1000)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= rng.getrandbits(12) << 64
    value |= 0b10 << 62
    value |= rng.getrandbits(62)
    return uuid.UUID(int=value)


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@dataclass(slots=True)
class Tenant:
    plan: TenantPlan
    organization: Organization
    project: Project
    user: User
    queues: list[Queue]
    plans: list[QueuePlan]
    weights: list[float]
    online: list[uuid.UUID] = field(default_factory=list)
    all_workers: list[uuid.UUID] = field(default_factory=list)
    user_ids: int = 1


@dataclass(slots=True)
class Counts:
    jobs: int = 0
    executions: int = 0
    logs: int = 0
    edges: int = 0
    throughput_rows: int = 0


# Skeleton of a job drawn before any row is built: (created, tenant, queue, state, id).
Skeleton = tuple[float, int, int, str, uuid.UUID]


class Loader:
    """Builds the data set: tenants with the ORM (a few rows), the rest with COPY."""

    def __init__(self, jobs: int) -> None:
        self.total = jobs
        self.rng = random.Random(SEED)
        self.now = time.time()
        self.tenants: list[Tenant] = []
        self.counts = Counts()
        self.next_execution_id = 1
        self.next_order_id = 1
        # (queue_id, bucket start, shard) -> [succeeded, failed, dead]: the charts' rollup.
        self.throughput: dict[tuple[uuid.UUID, float, int], list[int]] = defaultdict(
            lambda: [0, 0, 0]
        )
        self.started = time.perf_counter()
        # Hashed once: ten argon2 hashes would take longer than a hundred thousand jobs.
        self.password_hash = make_password(PASSWORD)

    # --- tenants, queues, workers (ORM) ---

    def create_tenants(self) -> None:
        for plan in TENANTS:
            organization = Organization.objects.create(name=plan.name, slug=plan.slug)
            Subscription.objects.create(organization=organization, tier=plan.tier)
            project = Project.objects.create(organization=organization, name="default")
            user = User.objects.create(
                email=f"admin@{plan.slug}.example",
                password=self.password_hash,
                organization=organization,
                role=Role.ADMIN,
            )
            count = 5 if plan.share >= 0.07 else 4 if plan.share >= 0.04 else 3
            plans = list(QUEUES[:count])
            queues = [
                Queue.objects.create(
                    organization=organization, project=project, name=q.name, **q.options
                )
                for q in plans
            ]
            tenant_jobs = max(1, round(self.total * plan.share))
            self.tenants.append(
                Tenant(
                    plan=plan,
                    organization=organization,
                    project=project,
                    user=user,
                    queues=queues,
                    plans=plans,
                    weights=[q.weight for q in plans],
                    # About five jobs per customer id, so a payload search finds a handful.
                    user_ids=max(10, tenant_jobs // 5),
                )
            )

    def create_workers(self, processing: dict[int, int]) -> None:
        """~20 workers for each big project, a few for small ones; some offline, one draining.
        Online workers get the capacity that holds the project's processing jobs."""
        for index, tenant in enumerate(self.tenants):
            count = 20 if tenant.plan.share >= 0.10 else max(3, round(tenant.plan.share * 100))
            offline = max(1, count // 6)
            draining = 1 if count >= 5 else 0
            online = count - offline - draining
            capacity = max(4, math.ceil(processing.get(index, 0) / online * 1.25))
            workers = []
            for number in range(count):
                if number < online:
                    status, heartbeat = WorkerStatus.ONLINE, self.now - self.rng.uniform(0, 5)
                elif number < online + draining:
                    status, heartbeat = WorkerStatus.DRAINING, self.now - self.rng.uniform(0, 5)
                else:
                    status = WorkerStatus.OFFLINE
                    heartbeat = self.now - self.rng.uniform(3600, 3 * DAY)
                kind = (
                    WorkerType.GENERAL
                    if number % 4
                    else (WorkerType.SPECIALIZED_IO if number % 8 else WorkerType.SPECIALIZED_CPU)
                )
                workers.append(
                    Worker(
                        organization=tenant.organization,
                        project=tenant.project,
                        name=f"worker-{number:02d}.{tenant.plan.slug.removeprefix('bench-')}",
                        worker_type=kind,
                        status=status,
                        capacity=capacity,
                        last_heartbeat=at(heartbeat),
                        created_at=at(self.now - 7 * DAY - self.rng.uniform(0, DAY)),
                        metadata={
                            "hostname": f"ip-10-0-{index}-{number}",
                            "pid": 1000 + number,
                            "sdk": "taskforge-python/1.4.0",
                        },
                    )
                )
            Worker.objects.bulk_create(workers)
            assignments = [
                QueueWorkerAssignment(
                    organization=tenant.organization, queue=queue, worker=worker, weight=1 + q % 3
                )
                for worker in workers
                for q, queue in enumerate(tenant.queues)
            ]
            QueueWorkerAssignment.objects.bulk_create(assignments)
            tenant.online = [w.pk for w in workers if w.status == WorkerStatus.ONLINE]
            tenant.all_workers = [w.pk for w in workers]

    # --- skeletons: who, where, when, which state ---

    def skeletons(self) -> list[Skeleton]:
        rng = self.rng
        states = Weighted(list(STATE_SHARES), list(STATE_SHARES.values()))
        tenants = Weighted(list(range(len(self.tenants))), [t.plan.share for t in self.tenants])
        queues = [Weighted(list(range(len(t.queues))), t.weights) for t in self.tenants]
        out: list[Skeleton] = []
        for _ in range(self.total):
            t = tenants.draw(rng)
            tenant = self.tenants[t]
            q = queues[t].draw(rng)
            state = states.draw(rng)
            paused = tenant.queues[q].paused
            if paused and state == JobState.PROCESSING:
                q = 0  # a paused queue starts nothing
                paused = False
            created = self.created_at(state, paused)
            out.append((created, t, q, state, uuid7_at(created, rng)))
        out.sort(key=lambda s: (s[0], s[4]))
        return out

    def created_at(self, state: str, paused: bool) -> float:
        rng, now = self.rng, self.now
        if state in TERMINAL:
            while True:
                # Busier in the (UTC) daytime, as real traffic is.
                moment = now - rng.uniform(120, 7 * DAY)
                hour = (moment % DAY) / 3600
                if rng.random() < 0.55 + 0.45 * math.sin((hour - 6) / 24 * 2 * math.pi):
                    break
            if paused and moment > now - PAUSED_FOR:
                moment -= PAUSED_FOR
            return moment
        if state == JobState.PENDING:
            if paused:
                return now - rng.uniform(1, PAUSED_FOR)
            return now - 1 - min(rng.expovariate(1 / 1800), 7 * DAY - 2)
        if state == JobState.SCHEDULED:
            return now - rng.uniform(60, DAY)
        if state == JobState.PROCESSING:
            return now - rng.uniform(20, 240)
        return now - rng.uniform(60, 12 * 3600)  # blocked

    # --- rows ---

    def load(self) -> None:
        self.create_tenants()
        skeletons = self.skeletons()
        self.progress(f"drew {len(skeletons):,} jobs")
        processing: dict[int, int] = defaultdict(int)
        for s in skeletons:
            if s[3] == JobState.PROCESSING:
                processing[s[1]] += 1
        self.create_workers(processing)
        edges, parents = self.plan_edges(skeletons)
        jobs: list[JobRow] = []
        executions: list[tuple[Any, ...]] = []
        logs: list[tuple[Any, ...]] = []
        slots: dict[int, int] = defaultdict(int)
        for skeleton in skeletons:
            jobs.append(self.job(skeleton, executions, logs, slots, parents))
            if len(jobs) >= CHUNK:
                self.flush(jobs, executions, logs)
        self.flush(jobs, executions, logs)
        self.copy(
            "jobs_jobdependency",
            ("organization_id", "parent_id", "child_id", "on_parent_failure"),
            edges,
        )
        self.counts.edges = len(edges)
        self.copy_throughput()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence('jobs_jobexecution', 'id'), %s)",
                [self.next_execution_id],
            )
        self.progress("all rows written")

    def plan_edges(
        self, skeletons: Sequence[Skeleton]
    ) -> tuple[list[tuple[Any, ...]], dict[uuid.UUID, str]]:
        """Blocked jobs wait for one unfinished job of their project (sometimes another blocked
        one: a chain), and some also name a parent that already succeeded; a few cancelled jobs
        were cancelled because a parent ended dead. Returns the edges and, for those cancelled
        children, the reason their last_error gives."""
        rng = self.rng
        unfinished: dict[int, list[uuid.UUID]] = defaultdict(list)
        succeeded: dict[int, list[uuid.UUID]] = defaultdict(list)
        dead: dict[int, list[uuid.UUID]] = defaultdict(list)
        for _created, t, _q, state, job_id in skeletons:
            if state in (JobState.PENDING, JobState.SCHEDULED, JobState.PROCESSING):
                unfinished[t].append(job_id)
            elif state == JobState.SUCCEEDED and rng.random() < 0.01:
                succeeded[t].append(job_id)
            elif state == JobState.DEAD:
                dead[t].append(job_id)
        edges: list[tuple[Any, ...]] = []
        reasons: dict[uuid.UUID, str] = {}
        blocked_so_far: dict[int, list[uuid.UUID]] = defaultdict(list)
        for _created, t, _q, state, job_id in skeletons:
            org = self.tenants[t].organization.pk
            if state == JobState.BLOCKED:
                chain = blocked_so_far[t] and rng.random() < 0.1
                pool = blocked_so_far[t] if chain else unfinished[t]
                if pool:
                    edges.append((org, rng.choice(pool), job_id, "cancel"))
                    if succeeded[t] and rng.random() < 0.25:
                        edges.append((org, rng.choice(succeeded[t]), job_id, "run"))
                blocked_so_far[t].append(job_id)
            elif state == JobState.CANCELLED and dead[t] and rng.random() < 0.1:
                parent = rng.choice(dead[t])
                edges.append((org, parent, job_id, "cancel"))
                reasons[job_id] = f"cancelled: ancestor job {parent} ended dead"
        return list({(e[1], e[2]): e for e in edges}.values()), reasons

    def job(
        self,
        skeleton: Skeleton,
        executions: list[tuple[Any, ...]],
        logs: list[tuple[Any, ...]],
        slots: dict[int, int],
        reasons: dict[uuid.UUID, str],
    ) -> JobRow:
        created, t, q, state, job_id = skeleton
        rng, now = self.rng, self.now
        tenant = self.tenants[t]
        queue, plan = tenant.queues[q], tenant.plans[q]
        job_type = rng.choice(plan.job_types)
        order_id = self.next_order_id
        self.next_order_id += 1
        payload: dict[str, Any] = {
            "user_id": rng.randint(1, tenant.user_ids),
            "order": {"id": order_id},
        }
        if job_type.startswith("email"):
            payload["template"] = rng.choice(("welcome", "receipt", "reset"))
        tags = list(rng.choice(TAGS)) if rng.random() < 0.3 else []
        idempotency_key = f"order-{order_id}" if rng.random() < 0.1 else None
        priority = PRIORITIES.draw(rng)
        row: dict[str, Any] = {
            "run_at": at(created),
            "attempts": 0,
            "result": None,
            "last_error": "",
            "worker_id": None,
            "lease_token": None,
            "lease_expires_at": None,
            "delivered_at": None,
            "pending_parents": 0,
            "started_at": None,
            "finished_at": None,
        }
        attempts: list[tuple[int, float, float]] = []  # (error index or -1, start, end)
        clock = created + rng.expovariate(1 / 1.5)
        if state == JobState.SUCCEEDED:
            for _ in range(RETRIES.draw(rng)):
                clock = self.attempt(attempts, clock, rng.randrange(len(ERRORS)))
            self.attempt(attempts, clock, -1)
            if rng.random() < 0.4:
                row["result"] = json.dumps({"status": "ok", "items": rng.randint(1, 500)})
        elif state == JobState.DEAD:
            error = DEAD_ERRORS.draw(rng)
            for _ in range(5 if rng.random() < 0.7 else 1):
                clock = self.attempt(attempts, clock, error)
        elif state == JobState.CANCELLED:
            if rng.random() < 0.25:
                clock = self.attempt(attempts, clock, rng.randrange(len(ERRORS)))
        elif state == JobState.SCHEDULED:
            if rng.random() < 0.5:
                for _ in range(rng.randint(1, 3)):
                    clock = self.attempt(attempts, clock, rng.randrange(len(ERRORS)), until=now)
                row["run_at"] = at(now + rng.uniform(1, 600))
            else:
                row["run_at"] = at(now + rng.uniform(60, 12 * 3600))
        elif state == JobState.PROCESSING:
            if rng.random() < 0.1:
                clock = self.attempt(attempts, clock, rng.randrange(len(ERRORS)), until=now - 5)
        elif state == JobState.BLOCKED:
            row["pending_parents"] = 1

        if attempts and attempts[-1][2] > now - 1:
            # Squeeze a timeline that would end in the future into the time since creation.
            scale = (now - 1 - created) / (attempts[-1][2] - created)
            attempts = [
                (e, created + (s - created) * scale, created + (f - created) * scale)
                for e, s, f in attempts
            ]

        org, project = tenant.organization.pk, tenant.project.pk
        workers = tenant.all_workers
        last_execution = None
        for number, (error, start, end) in enumerate(attempts, 1):
            status = ExecutionStatus.SUCCEEDED if error < 0 else ERRORS[error][0]
            text = "" if error < 0 else error_text(error)
            last_execution = self.next_execution_id
            self.next_execution_id += 1
            executions.append(
                (
                    last_execution,
                    org,
                    project,
                    job_id,
                    number,
                    uuid.uuid4(),
                    rng.choice(workers),
                    status,
                    text,
                    at(start),
                    at(end),
                )
            )
            self.count(queue.pk, end, 0 if error < 0 else 1)
            row["last_error"] = text
        if attempts:
            row["started_at"] = at(attempts[0][1])
            row["attempts"] = len(attempts)
        if state in TERMINAL:
            end = attempts[-1][2] if attempts else created
            if state == JobState.CANCELLED:
                end = min(end + rng.uniform(1, 7200), now - 1)
            row["finished_at"] = at(end)
            if state == JobState.DEAD:
                self.count(queue.pk, end, 2)
                self.log_lines(logs, org, job_id, last_execution, end, row["last_error"])
            elif state == JobState.CANCELLED:
                row["last_error"] = reasons.get(job_id, "cancelled by user")
        if state == JobState.PROCESSING:
            worker = tenant.online[slots[t] % len(tenant.online)]
            slots[t] += 1
            start = now - rng.uniform(1, 120)
            lease = uuid.uuid4()
            row.update(
                attempts=len(attempts) + 1,
                worker_id=worker,
                lease_token=lease,
                lease_expires_at=at(start + 300),
                delivered_at=at(start + 0.01),
                started_at=row["started_at"] or at(start),
            )
            execution = self.next_execution_id
            self.next_execution_id += 1
            executions.append(
                (
                    execution,
                    org,
                    project,
                    job_id,
                    len(attempts) + 1,
                    lease,
                    worker,
                    ExecutionStatus.STARTED,
                    "",
                    at(start),
                    None,
                )
            )
            logs.append((org, job_id, execution, "info", "started", "{}", at(start + 0.02)))
        return JobRow(
            id=job_id,
            organization_id=org,
            project_id=project,
            queue_id=queue.pk,
            job_type=job_type,
            payload=json.dumps(payload),
            state=state,
            priority=priority,
            sub_priority=0,
            max_attempts=5,
            timeout_seconds=300,
            idempotency_key=idempotency_key,
            tags=tags,
            batch_id=None,
            created_at=at(created),
            **row,
        )

    def attempt(
        self,
        attempts: list[tuple[int, float, float]],
        clock: float,
        error: int,
        until: float | None = None,
    ) -> float:
        """Append one attempt starting at ``clock``; return when the next one may start
        (after the backoff). ``until`` keeps retries of unfinished jobs in the past."""
        rng = self.rng
        duration = min(rng.lognormvariate(-0.5, 1.2), 600.0)
        if error >= 0 and ERRORS[error][0] == ExecutionStatus.TIMED_OUT:
            duration = 300.0
        start, end = clock, clock + duration
        if until is not None and end > until:
            return clock
        attempts.append((error, start, end))
        return end + rng.uniform(0, 2 ** len(attempts))

    def log_lines(
        self,
        logs: list[tuple[Any, ...]],
        org: uuid.UUID,
        job_id: uuid.UUID,
        execution: int | None,
        end: float,
        error: str,
    ) -> None:
        if execution is None:
            return
        message = error.rsplit("\n", 1)[-1]
        logs.extend(
            [
                (org, job_id, execution, "info", "starting", '{"step": 1}', at(end - 0.5)),
                (
                    org,
                    job_id,
                    execution,
                    "warn",
                    "upstream slow, retrying once",
                    "{}",
                    at(end - 0.2),
                ),
                (org, job_id, execution, "error", message, "{}", at(end)),
            ]
        )

    def count(self, queue_id: uuid.UUID, moment: float, column: int) -> None:
        if moment >= self.now - DAY:
            key = (queue_id, moment - moment % 60, 0)
        else:
            key = (queue_id, moment - moment % 3600, 1)
        self.throughput[key][column] += 1

    # --- COPY ---

    def flush(
        self, jobs: list[JobRow], executions: list[tuple[Any, ...]], logs: list[tuple[Any, ...]]
    ) -> None:
        if not jobs:
            return
        if jobs:
            insert_jobs(jobs)
        self.copy(
            "jobs_jobexecution",
            (
                "id",
                "organization_id",
                "project_id",
                "job_id",
                "attempt",
                "lease_token",
                "worker_id",
                "status",
                "error",
                "started_at",
                "finished_at",
            ),
            executions,
        )
        self.copy(
            "jobs_executionlog",
            (
                "organization_id",
                "job_id",
                "execution_id",
                "level",
                "message",
                "metadata",
                "created_at",
            ),
            logs,
        )
        self.counts.jobs += len(jobs)
        self.counts.executions += len(executions)
        self.counts.logs += len(logs)
        jobs.clear()
        executions.clear()
        logs.clear()
        self.progress(
            f"jobs {self.counts.jobs:,} / {self.total:,}, executions {self.counts.executions:,},"
            f" log lines {self.counts.logs:,}"
        )

    def copy(self, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        connection.ensure_connection()
        with psycopg.Cursor(connection.connection) as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)

    def copy_throughput(self) -> None:
        """Rows as the maintenance leaves them: the last day in minute rows (shard 0), older
        hours coarsened (shard 1); the last three minutes still split among the backends
        that counted them (pid shards), not folded yet."""
        queues = {q.pk: t for t in self.tenants for q in t.queues}
        recent = self.now - 180
        rows = []
        for (queue_id, bucket, shard), counts in self.throughput.items():
            tenant = queues[queue_id]
            keys = (tenant.organization.pk, tenant.project.pk, queue_id, at(bucket))
            if shard == 0 and bucket >= recent:
                pids = (4_711, 4_712, 4_713)
                for i, pid in enumerate(pids):
                    part = [(n + len(pids) - 1 - i) // len(pids) for n in counts]
                    rows.append((*keys, pid, *part))
            else:
                rows.append((*keys, shard, *counts))
        self.copy(
            "jobs_jobthroughput",
            (
                "organization_id",
                "project_id",
                "queue_id",
                "minute",
                "shard",
                "succeeded",
                "failed",
                "dead",
            ),
            rows,
        )
        self.counts.throughput_rows = len(rows)

    def progress(self, message: str) -> None:
        elapsed = time.perf_counter() - self.started
        print(f"# load {elapsed:6.1f} s: {message}", file=sys.stderr, flush=True)


# --- Loading, or finding a loaded database ------------------------------------------------------

MARKER = "bench_dashboard_load"


def loaded_jobs() -> int | None:
    """The --jobs of the load this database holds, or None (no database, or no finished load)."""
    with psycopg.connect(dbname="postgres", autocommit=True, **server_params()) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [BENCH_DB]).fetchone()
    if not exists:
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [MARKER])
        if cursor.fetchone()[0] is None:
            return None
        cursor.execute(f"SELECT jobs FROM {MARKER}")
        row = cursor.fetchone()
    return int(row[0]) if row else None


def analyze() -> float:
    """ANALYZE everything, then run the dispatcher's table maintenance as production does
    (this server runs with autovacuum off): after a load it VACUUMs the hot tables that grew,
    which sets the visibility map the index-only counts rely on (jobs/queries.py
    maintain_tables)."""
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
        cursor.execute("SELECT pg_stat_force_next_flush()")
    for action in queries.maintain_tables(HOT_TABLES):
        print(f"# maintenance: {action}", file=sys.stderr)
    with connection.cursor() as cursor:
        cursor.execute("CHECKPOINT")
    return time.perf_counter() - started


def load(jobs: int) -> None:
    fresh_database()
    loader = Loader(jobs)
    loader.load()
    analyze_s = analyze()
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {MARKER} (jobs bigint, loaded_at timestamptz)")
        cursor.execute(f"INSERT INTO {MARKER} VALUES (%s, now())", [jobs])
        cursor.execute(
            "SELECT relname, pg_total_relation_size(oid) FROM pg_class WHERE relname = ANY(%s)",
            [["jobs_job", "jobs_jobexecution", "jobs_executionlog", "jobs_jobthroughput"]],
        )
        sizes = {name: round(size / 2**20) for name, size in cursor.fetchall()}
    counts = loader.counts
    emit(
        "dashboard.load",
        {
            "jobs": counts.jobs,
            "executions": counts.executions,
            "log_lines": counts.logs,
            "edges": counts.edges,
            "throughput_rows": counts.throughput_rows,
            "load_s": round(time.perf_counter() - loader.started, 1),
            "analyze_s": round(analyze_s, 1),
            "table_mb_with_indexes": sizes,
        },
    )


def ensure_loaded(jobs: int, reuse: bool, vacuum: bool) -> None:
    found = loaded_jobs() if reuse else None
    if found == jobs:
        # Later migrations (new indexes of the pages being written) apply to the loaded
        # data; ANALYZE again so the planner sees them.
        call_command("migrate", verbosity=0)
        analyze()
        print(f"# reusing {BENCH_DB}: {jobs:,} jobs already loaded", file=sys.stderr)
    else:
        if reuse:
            print(
                f"# --reuse: {BENCH_DB} holds {found or 'no'} loaded jobs, not {jobs:,}: loading",
                file=sys.stderr,
            )
        load(jobs)
    if vacuum:
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("VACUUM (ANALYZE)")
        print(f"# VACUUM (ANALYZE): {time.perf_counter() - started:.0f} s", file=sys.stderr)


def machine() -> dict[str, Any]:
    """What the figures depend on besides the code: the load on the machine's cores, the
    server's cache, and how much of the jobs table the visibility map covers (VACUUM sets
    it; without it an index-only scan still reads the table's pages)."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW shared_buffers")
        shared_buffers = cursor.fetchone()[0]
        cursor.execute(
            "SELECT relallvisible::float / greatest(relpages, 1) FROM pg_class"
            " WHERE relname = 'jobs_job'"
        )
        all_visible = cursor.fetchone()[0]
    return {
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "shared_buffers": shared_buffers,
        "jobs_all_visible": round(all_visible, 2),
    }


# --- What is measured ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    pattern: URLPattern
    params: tuple[str, ...]
    partials: tuple[str, ...]


def dashboard_routes() -> list[Route]:
    """Every route of the "dashboard" namespace, in URLconf order (nested includes too)."""
    _prefix, resolver = get_resolver().namespace_dict["dashboard"]
    routes: list[Route] = []

    def walk(patterns: Sequence[URLPattern | URLResolver]) -> None:
        for entry in patterns:
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns)
                continue
            view = entry.callback
            routes.append(
                Route(
                    name=entry.name or "",
                    pattern=entry,
                    params=tuple(entry.pattern.regex.groupindex),
                    partials=tuple(getattr(view, "dashboard_partials", None) or ()),
                )
            )

    walk(resolver.url_patterns)
    return routes


def is_dashboard_page(route: Route) -> bool:
    return hasattr(route.pattern.callback, "dashboard_partials")


@dataclass(slots=True)
class Samples:
    """Real objects of the loaded data, for the routes that name one, per URL parameter."""

    by_param: dict[str, list[tuple[str, str]]]
    job_filters: list[tuple[str, dict[str, str]]]


def samples_for(tenant: TenantRef) -> Samples:
    project = tenant.project
    queues = list(Queue.objects.for_project(project))
    busy = next(q for q in queues if q.name == "default")
    by_param: dict[str, list[tuple[str, str]]] = {"name": [("busy", busy.name)]}
    for queue in queues:
        if queue.paused:
            by_param["name"].append(("paused", queue.name))
        if queue.rate_limit_per_second:
            by_param["name"].append(("rate-limited", queue.name))
    jobs = Job.objects.for_project(project)
    by_param["job_id"] = []
    for state in JobState.values:
        candidates = jobs.filter(state=state).order_by("-created_at")
        if state == JobState.DEAD:
            # The richest detail page: five failed attempts, each with its log lines.
            candidates = candidates.filter(attempts__gte=5)
        found = candidates.only("pk").first()
        if found is not None:
            by_param["job_id"].append((state, str(found.pk)))
    workers = Worker.objects.for_project(project)
    by_param["worker_id"] = [
        (status, str(w.pk))
        for status in (WorkerStatus.ONLINE, WorkerStatus.OFFLINE)
        if (w := workers.filter(status=status).first()) is not None
    ]
    return Samples(by_param=by_param, job_filters=job_filters(project, busy))


def job_filters(project: Project, busy: Queue) -> list[tuple[str, dict[str, str]]]:
    """The job list's filters worth measuring, as the list's URL parameters
    (jobs/services/listing.py reads them); the older cursor of page 1 gives page 2."""
    jobs = Job.objects.for_project(project)
    recent = list(jobs.filter(state=JobState.SUCCEEDED).order_by("-created_at")[1000:1200])
    some = recent[0] if recent else None
    user_id = some.payload["user_id"] if some else 1
    job_type = some.job_type if some else "email.send"
    key = next((job.idempotency_key for job in recent if job.idempotency_key), "order-1")
    now = datetime.now(UTC)
    filters = [
        *((f"state={state}", {"state": state}) for state in JobState.values),
        (f"queue={busy.name}", {"queue": busy.name}),
        (f"job_type={job_type}", {"job_type": job_type}),
        ("tag=vip", {"tag": "vip"}),
        (
            "created in one hour, 30 h ago",
            {
                "created_after": (now - timedelta(hours=30)).isoformat(timespec="seconds"),
                "created_before": (now - timedelta(hours=29)).isoformat(timespec="seconds"),
            },
        ),
        (
            f"state=dead queue={busy.name} tag=vip",
            {"state": JobState.DEAD, "queue": busy.name, "tag": "vip"},
        ),
        (f"search payload.user_id:{user_id}", {"search": f"payload.user_id:{user_id}"}),
        ("search key:<idempotency key>", {"search": f"key:{key}"}),
        ("search text 'charge'", {"search": "charge"}),
        ("search text, no match", {"search": "no-such-job-type"}),
    ]
    return [*filters, *older_pages(project)]


def older_pages(project: Project) -> list[tuple[str, dict[str, str]]]:
    """Page 2 through the listing's own cursor (``before``), unfiltered and filtered."""
    out = []
    for label, params in (
        ("page 2", {}),
        ("state=dead page 2", {"state": JobState.DEAD}),
        ("state=pending page 2", {"state": JobState.PENDING}),
    ):
        first = listing.page(project, listing.JobQuery.from_params(params))
        if first.older_cursor:
            out.append((label, {**params, "before": first.older_cursor}))
        else:
            print(f"ERROR {label}: page 1 has no older cursor", flush=True)
    return out


@dataclass(slots=True)
class TenantRef:
    """A loaded tenant found again (--reuse)."""

    plan: TenantPlan
    project: Project
    user: User


def tenant_ref(plan: TenantPlan) -> TenantRef:
    organization = Organization.objects.get(slug=plan.slug)
    project = Project.objects.for_org(organization).get(name="default")
    user = User.objects.for_org(organization).get(role=Role.ADMIN)
    return TenantRef(plan=plan, project=project, user=user)


@dataclass(slots=True)
class Query:
    text: str
    params: Any
    ms: float


class QueryRecorder:
    """Every statement the request runs, with its time: the ORM's and those of the SQL files
    (taskforge/lib/sqlfiles.py runs them on psycopg cursors of its own, out of Django's sight,
    so CaptureQueriesContext would miss them); both go through psycopg.Cursor.execute."""

    def __init__(self) -> None:
        self.queries: list[Query] = []

    @contextmanager
    def recording(self) -> Iterator[None]:
        original = psycopg.Cursor.execute
        queries = self.queries

        def execute(cursor: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(cursor, query, params, **kwargs)
            finally:
                ms = (time.perf_counter() - started) * 1000
                queries.append(Query(query_text(query, cursor), params, ms))

        psycopg.Cursor.execute = execute  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            psycopg.Cursor.execute = original  # type: ignore[method-assign]


def query_text(query: Any, cursor: Any) -> str:
    if isinstance(query, str):
        return query
    if isinstance(query, bytes):
        return query.decode()
    return str(query.as_string(cursor))


@dataclass(slots=True)
class Result:
    tenant: str
    route: str
    variant: str
    partial: str | None
    url: str
    samples_ms: list[float] = field(default_factory=list)
    queries: list[Query] = field(default_factory=list)
    kb: float = 0.0
    error: str | None = None

    @property
    def label(self) -> str:
        where = f"#{self.partial}" if self.partial else ""
        variant = f" [{self.variant}]" if self.variant else ""
        return f"{self.tenant:5} {self.route}{where}{variant}"

    @property
    def p50(self) -> float:
        return percentiles(self.samples_ms)["p50"]

    @property
    def p95(self) -> float:
        return percentiles(self.samples_ms)["p95"]

    def slowest_query(self) -> Query | None:
        reads = [q for q in self.queries if _is_read(q.text)]
        return max(reads, key=lambda q: q.ms, default=None)

    def figures(self) -> dict[str, Any]:
        slowest = self.slowest_query()
        return {
            "tenant": self.tenant,
            "route": self.route,
            "partial": self.partial,
            "variant": self.variant,
            "url": self.url,
            "n": len(self.samples_ms),
            "p50_ms": round(self.p50, 1),
            "p95_ms": round(self.p95, 1),
            "max_ms": round(max(self.samples_ms), 1),
            "queries": len(self.queries),
            "sql_ms": round(sum(q.ms for q in self.queries), 1),
            "slowest_query_ms": round(slowest.ms, 1) if slowest else None,
            # Where the time went, for whoever makes the page faster.
            "slowest_statements": [
                {"ms": round(q.ms, 1), "sql": _squash(q.text)[:200]}
                for q in sorted(self.queries, key=lambda q: q.ms, reverse=True)[:3]
            ],
            "kb": round(self.kb, 1),
            "over_budget": self.p95 > BUDGET_MS,
        }


class Bench:
    def __init__(self, requests: int, only: str | None) -> None:
        self.requests = requests
        self.only = only.removeprefix("dashboard:") if only else None
        self.results: list[Result] = []
        self.errors: list[Result] = []

    def run(self, tenants: Sequence[tuple[str, TenantRef]]) -> None:
        try:
            routes = dashboard_routes()
        except Exception as exc:
            print(f"ERROR the dashboard URLconf does not load: {exc!r}", flush=True)
            traceback.print_exc()
            self.errors.append(Result("-", "urlconf", "", None, "", error=repr(exc)))
            return
        wanted = [r for r in routes if self.only in (None, r.name)]
        if not wanted:
            print(f"ERROR no dashboard route named {self.only!r}", flush=True)
            self.errors.append(Result("-", str(self.only), "", None, "", error="no such route"))
        for route in wanted:
            if not is_dashboard_page(route):
                # The sign-in doors (login, signup, logout, …): not pages of a signed-in seat.
                print(f"# skip dashboard:{route.name}: not a dashboard_page", file=sys.stderr)
        for label, tenant in tenants:
            client = Client()
            client.force_login(tenant.user)
            samples = samples_for(tenant)
            for route in wanted:
                if is_dashboard_page(route):
                    self.route(client, label, route, samples, full=label == "big")

    def route(
        self, client: Client, tenant: str, route: Route, samples: Samples, full: bool
    ) -> None:
        objects = self.objects(route, samples)
        if objects is None:
            return
        if not full:
            objects = objects[:1]
        for object_label, kwargs in objects:
            url = reverse(f"dashboard:{route.name}", kwargs=kwargs)
            if not self.serves_get(client, url):
                print(f"# skip dashboard:{route.name}: answers GET with 405", file=sys.stderr)
                return
            self.target(client, tenant, route, object_label, url, None)
            for partial in route.partials:
                self.target(client, tenant, route, object_label, url, partial)
                if full and partial == "chart":
                    for window in ("24h", "7d"):
                        self.target(
                            client,
                            tenant,
                            route,
                            _join(object_label, f"window={window}"),
                            url,
                            partial,
                            {"window": window},
                        )
        if full and route.name == "jobs":
            for label, params in samples.job_filters:
                self.target(client, tenant, route, label, url, None, params)
                for partial in route.partials:
                    self.target(client, tenant, route, label, url, partial, params)

    def objects(self, route: Route, samples: Samples) -> list[tuple[str, dict[str, str]]] | None:
        if not route.params:
            return [("", {})]
        missing = [p for p in route.params if not samples.by_param.get(p)]
        if missing:
            message = f"no loaded object for URL parameter(s) {', '.join(missing)}"
            print(f"ERROR dashboard:{route.name}: {message}", flush=True)
            self.errors.append(Result("-", route.name, "", None, "", error=message))
            return None
        # One parameter per dashboard route so far; several would take their first samples.
        first, *rest = route.params
        fixed = {p: samples.by_param[p][0][1] for p in rest}
        return [(label, {first: value, **fixed}) for label, value in samples.by_param[first]]

    def serves_get(self, client: Client, url: str) -> bool:
        requests = logging.getLogger("django.request")
        level = requests.level
        requests.setLevel(logging.ERROR)  # the 405 is the answer looked for, not a warning
        try:
            return client.get(url).status_code != 405
        except Exception:
            return True  # measured below, where the error is reported
        finally:
            requests.setLevel(level)

    def target(
        self,
        client: Client,
        tenant: str,
        route: Route,
        variant: str,
        url: str,
        partial: str | None,
        params: dict[str, str] | None = None,
    ) -> None:
        query = dict(params or {})
        if partial:
            query["partial"] = partial
        full_url = url + ("?" + _urlencode(query) if query else "")
        result = Result(tenant, route.name, variant, partial, full_url)
        headers = {"HX-Request": "true"} if partial else {}
        try:
            for _ in range(WARMUP):
                self.get(client, full_url, headers)
            for _ in range(self.requests):
                started = time.perf_counter()
                self.get(client, full_url, headers)
                result.samples_ms.append((time.perf_counter() - started) * 1000)
            recorder = QueryRecorder()
            with recorder.recording():
                response = self.get(client, full_url, headers)
            result.queries = recorder.queries
            result.kb = len(response.content) / 1024
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            print(f"ERROR {result.label} {full_url}: {result.error}", flush=True)
            traceback.print_exc(limit=-3)
            self.errors.append(result)
            return
        self.results.append(result)
        emit("dashboard.page", result.figures())

    @staticmethod
    def get(client: Client, url: str, headers: dict[str, str]) -> Any:
        response = client.get(url, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"answered {response.status_code}")
        return response

    def summary(self, explain: int) -> None:
        print()
        # statements: how many one request ran; sql ms: their time, in the recorded request.
        print(
            f"{'tenant page#partial [variant]':66} {'p50':>7} {'p95':>7} {'max':>7}"
            f" {'stmts':>5} {'sql ms':>6}"
        )
        for r in self.results:
            flag = "  OVER 150 ms" if r.p95 > BUDGET_MS else ""
            print(
                f"{r.label[:66]:66} {r.p50:7.1f} {r.p95:7.1f} {max(r.samples_ms):7.1f}"
                f" {len(r.queries):5} {sum(q.ms for q in r.queries):6.1f}{flag}"
            )
        over = [r for r in self.results if r.p95 > BUDGET_MS]
        print(
            f"\n{len(self.results)} measured, {len(over)} over {BUDGET_MS:.0f} ms at p95,"
            f" {len(self.errors)} failed"
        )
        for r in self.errors:
            print(f"FAILED {r.label} {r.url}: {r.error}")
        for r in self.to_explain(explain):
            self.explain(r)

    def to_explain(self, limit: int) -> list[Result]:
        """The slowest measurement of each page or region, slowest first, skipping those whose
        slowest statement was already shown (the same statement with other values)."""
        chosen: list[Result] = []
        seen_pages: set[tuple[str, str | None]] = set()
        seen_statements: set[str] = set()
        for r in sorted(self.results, key=lambda r: r.p95, reverse=True):
            query = r.slowest_query()
            shape = re.sub(r"'[^']*'|\b\d+\b", "?", _squash(query.text)) if query else ""
            if (r.route, r.partial) in seen_pages or shape in seen_statements:
                continue
            seen_pages.add((r.route, r.partial))
            seen_statements.add(shape)
            chosen.append(r)
            if len(chosen) == limit:
                break
        return chosen

    def explain(self, result: Result) -> None:
        query = result.slowest_query()
        print(
            f"\n# slowest statement of {result.label} (p95 {result.p95:.1f} ms,"
            f" {len(result.queries)} statements):"
        )
        if query is None:
            print("#   (no SELECT)")
            return
        print(f"#   {query.ms:.1f} ms: {_squash(query.text)[:600]}")
        if query.params:
            print(f"#   params: {str(query.params)[:300]}")
        try:
            connection.ensure_connection()
            with psycopg.ClientCursor(connection.connection) as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + query.text, query.params)
                for (line,) in cursor.fetchall():
                    print(f"#   {line}")
        except Exception as exc:
            print(f"#   EXPLAIN failed: {exc}")
            if connection.connection is not None and not connection.get_autocommit():
                connection.rollback()


def _is_read(text: str) -> bool:
    """A SELECT (our SQL files start with a comment), which EXPLAIN ANALYZE may run again."""
    code = re.sub(r"--[^\n]*|/\*.*?\*/", "", text, flags=re.S).lstrip().upper()
    return code.startswith(("SELECT", "WITH"))


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _urlencode(params: dict[str, str]) -> str:
    from urllib.parse import urlencode

    return urlencode(params)


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs to load")
    parser.add_argument(
        "--reuse", action="store_true", help="keep the database if it holds this --jobs load"
    )
    parser.add_argument("--only", help="measure one route (its URL name, e.g. jobs)")
    parser.add_argument("--requests", type=int, default=30, help="timed requests per URL")
    parser.add_argument(
        "--explain",
        type=int,
        default=8,
        help="EXPLAIN the slowest statement of the N slowest pages or regions",
    )
    parser.add_argument(
        "--vacuum",
        action="store_true",
        help="VACUUM (ANALYZE) before measuring, as autovacuum leaves a table (visibility map)",
    )
    parser.add_argument("--load-only", action="store_true", help="load, measure nothing")
    args = parser.parse_args()
    # Measure as production renders: no debug bookkeeping (query log, template debug data).
    settings.DEBUG = False
    ensure_loaded(args.jobs, args.reuse, args.vacuum)
    if args.load_only:
        return
    emit("dashboard.machine", {"when": "start", **machine()})
    tenants = [("big", tenant_ref(TENANTS[BIG])), ("small", tenant_ref(TENANTS[SMALL]))]
    bench_run = Bench(args.requests, args.only)
    bench_run.run(tenants)
    emit("dashboard.machine", {"when": "end", **machine()})
    bench_run.summary(args.explain)
    sys.exit(1 if bench_run.errors else 0)


if __name__ == "__main__":
    main()
