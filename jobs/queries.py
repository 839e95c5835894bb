"""The engine's hot SQL: the only module that executes the statements in jobs/sql/.

Every function is one set-based statement (a batch of jobs per round trip), runs inside the
caller's transaction, and uses the database clock for all time arithmetic. Each .sql file
starts with a comment saying what it does, which index it relies on and why it is safe
under concurrency.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple
from uuid import UUID

import psycopg
from django.conf import settings
from django.db import IntegrityError, connection
from psycopg import sql

from taskforge.lib import channels
from taskforge.lib.sqlfiles import SqlFiles

# NOTIFYed when jobs become pending: the payload is the queue's id in hex (queue_payload()),
# or empty when the sender does not know which queues (every waiting long-poll re-checks).
JOBS_READY_CHANNEL = channels.JOBS_READY


def queue_payload(queue_id: UUID) -> str:
    """The payload of a JOBS_READY_CHANNEL notification about one queue (notify_ready.sql
    builds the same text in SQL)."""
    return queue_id.hex


def worker_channel(worker_id: UUID) -> str:
    """The LISTEN channel on which a worker's long-poll hears that it was drained,
    deregistered or given other queues."""
    return f"taskforge_worker_{worker_id.hex}"


_SQL = SqlFiles("jobs")
_execute = _SQL.rows
_rowcount = _SQL.rowcount


class JobRow(NamedTuple):
    """A new job as insert_job.sql / insert_jobs.sql write it: every concrete field of Job, in
    model order, so a row can also build its Job with Job.from_db() without a read back.
    tests/jobs/test_job_row.py keeps the model, these fields and both statements in step.
    payload and result are JSON text."""

    id: UUID
    organization_id: UUID
    project_id: UUID
    queue_id: UUID
    job_type: str
    payload: str
    state: str
    priority: int
    sub_priority: int
    run_at: datetime
    attempts: int
    max_attempts: int
    timeout_seconds: int
    idempotency_key: str | None
    tags: list[str]
    result: str | None
    last_error: str
    worker_id: UUID | None
    lease_token: UUID | None
    lease_expires_at: datetime | None
    delivered_at: datetime | None
    pending_parents: int
    batch_id: UUID | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


JOB_COLUMNS = JobRow._fields


class DuplicateIdempotencyKey(Exception):
    """A concurrent submit committed one of these idempotency keys first."""


def insert_jobs(rows: Sequence[JobRow]) -> None:
    """Insert new job rows and say which queues got pending jobs (notify_ready, at commit).

    One row goes in with one INSERT that also NOTIFYs; many are streamed with COPY, as text
    built here (copy_text), then one NOTIFY per queue with pending jobs.
    """
    try:
        if len(rows) == 1:
            _execute("insert_job", rows[0]._asdict())
            return
        with (
            connection.wrap_database_errors,
            _SQL.cursor() as cursor,
            cursor.copy(_SQL.text("insert_jobs")) as copy,
        ):
            copy.write(copy_text(rows))
    except IntegrityError as exc:
        if isinstance(exc.__cause__, psycopg.errors.UniqueViolation):
            raise DuplicateIdempotencyKey(str(exc)) from exc
        raise
    notify_ready(sorted({row.queue_id for row in rows if row.state == "pending"}))


@dataclass(frozen=True, slots=True)
class QueueDefaults:
    """What a new job takes from its queue."""

    id: UUID
    max_attempts: int
    timeout_seconds: int


class SubmitLookup(NamedTuple):
    """What a submission reads before it writes (submit_queues.sql)."""

    # The project's queues among the names asked for, by name.
    queues: dict[str, QueueDefaults]
    # The transaction's now(); None when no queue was found.
    now: datetime | None
    # Jobs of the project that already have one of the idempotency keys: {key: (id, state)}.
    existing: dict[str, tuple[UUID, str]]


def submit_queues(project_id: UUID, names: Sequence[str], keys: Sequence[str] = ()) -> SubmitLookup:
    """The project's queues among ``names`` by name, the transaction's now(), and the project's
    jobs that already use one of the idempotency ``keys``: one round trip."""
    params = {"project_id": project_id, "names": list(names), "keys": list(keys)}
    queues: dict[str, QueueDefaults] = {}
    existing: dict[str, tuple[UUID, str]] = {}
    now = None
    for kind, name, row_id, max_attempts, timeout_seconds, state, at in _execute(
        "submit_queues", params
    ):
        if kind == "queue":
            queues[name] = QueueDefaults(row_id, max_attempts, timeout_seconds)
            now = at
        else:
            existing[name] = (row_id, state)
    return SubmitLookup(queues, now, existing)


def lock_parents(project_id: UUID, job_ids: Sequence[UUID]) -> dict[UUID, str]:
    """Lock the project's jobs among ``job_ids`` FOR SHARE; return {id: state}."""
    rows = _execute("lock_parents", {"project_id": project_id, "ids": list(job_ids)})
    return {job_id: state for job_id, state in rows}


@dataclass(frozen=True, slots=True)
class Slot:
    """Room for one job: the ``number``-th job claimed from a queue goes to ``worker_id``."""

    worker_id: UUID
    queue_id: UUID
    number: int


@dataclass(frozen=True, slots=True)
class RateBucket:
    """A rate-limited queue's start tokens, refilled up to ``as_of`` (lock_rate_limits.sql)."""

    rate: float
    tokens: float
    as_of: datetime

    @property
    def allowed(self) -> int:
        """How many jobs may start now: the whole tokens (a hair of float error forgiven)."""
        return math.floor(self.tokens + 1e-9)

    def seconds_to_next_token(self, spent: int) -> float:
        """After ``spent`` jobs started, how long until a whole token is there again."""
        return max(0.0, (1.0 - (self.tokens - spent)) / self.rate)


def lock_rate_limits(queue_ids: Sequence[UUID]) -> dict[UUID, RateBucket]:
    """Lock the rate-limited queues among ``queue_ids`` until the end of the transaction;
    return their buckets. Pass them to the claim in the same transaction
    (workers/sql/claim_for_worker.sql), which spends them.
    """
    if not queue_ids:
        return {}
    rows = _execute("lock_rate_limits", {"queue_ids": list(queue_ids)})
    return {queue_id: RateBucket(rate, tokens, as_of) for queue_id, rate, tokens, as_of in rows}


def schedule_clock() -> datetime:
    """The database time schedules fire by (see schedule_clock.sql)."""
    clock: datetime = _execute("schedule_clock", {})[0][0]
    return clock


def promote_due(*, limit: int) -> int:
    """Move due scheduled jobs to pending and wake their queues' long-polls; return how many
    moved."""
    return sum(int(n) for _, n, _ in _execute("promote_due", {"limit": limit}))


# Outcome.state of a result not applied because another transaction holds the job's row: it
# is neither applied nor stale, and the worker sends it again shortly (complete_jobs.sql).
BUSY = "busy"


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where a job went after a result: its new state, and run_at for a scheduled retry (or
    the state BUSY: not applied, the job's row was locked)."""

    job_id: UUID
    state: str
    run_at: datetime | None
    batch_id: UUID | None
    # The job finished and its batch still owes callbacks: the caller checks the batch.
    callback_owed: bool = False


@dataclass(frozen=True, slots=True)
class Completion:
    succeeded: list[Outcome]
    released: list[UUID]
    # Current leases whose row another transaction held: left for the worker to send again.
    busy: list[UUID] = field(default_factory=list)


class Done(NamedTuple):
    """A success to record: the result as JSON text."""

    job_id: UUID
    lease_token: UUID
    result: str


class Failed(NamedTuple):
    """A failed attempt to record: retried after backoff unless not retryable or exhausted."""

    job_id: UUID
    lease_token: UUID
    error: str
    retryable: bool
    # The worker's full traceback, kept on the execution ("" when it sent none).
    traceback: str = ""


def complete_jobs(project_id: UUID, items: Sequence[Done]) -> Completion:
    """Complete the project's jobs among ``items``; stale tokens are left out, and jobs whose
    row another transaction holds are not waited for but listed as busy."""
    params = {
        "project_id": project_id,
        "ids": [item.job_id for item in items],
        "lease_tokens": [item.lease_token for item in items],
        "results": [item.result for item in items],
    }
    succeeded: list[Outcome] = []
    released: list[UUID] = []
    busy: list[UUID] = []
    for kind, job_id, batch_id, callback_owed in _execute("complete_jobs", params):
        if kind == "done":
            succeeded.append(Outcome(job_id, "succeeded", None, batch_id, callback_owed))
        elif kind == BUSY:
            busy.append(job_id)
        else:
            released.append(job_id)
    return Completion(succeeded=succeeded, released=released, busy=busy)


def fail_jobs(project_id: UUID, items: Sequence[Failed]) -> list[Outcome]:
    """Fail the project's jobs among ``items``; stale tokens are left out, and jobs whose row
    another transaction holds come back with the state BUSY, unchanged."""
    return _fail(project_id, items, execution_status="failed")


def fail_expired_leases_of_every_tenant(items: Sequence[Failed]) -> list[Outcome]:
    """The engine's lease expiry, across every tenant: fail attempts whose worker went silent
    (their executions end timed_out). Never for a request: those go through fail_jobs, scoped
    to the caller's project."""
    return _fail(None, items, execution_status="timed_out")


def _fail(
    project_id: UUID | None, items: Sequence[Failed], *, execution_status: str
) -> list[Outcome]:
    params = {
        "project_id": project_id,
        "ids": [item.job_id for item in items],
        "lease_tokens": [item.lease_token for item in items],
        "errors": [item.error for item in items],
        "retryable": [item.retryable for item in items],
        "tracebacks": [item.traceback for item in items],
        "execution_status": execution_status,
    }
    return [Outcome(*row) for row in _execute("fail_jobs", params)]


def lock_worker_jobs(
    project_id: UUID, worker_id: UUID, *, keep: Sequence[UUID]
) -> list[tuple[UUID, UUID]]:
    """Lock the worker's processing jobs but ``keep`` (SKIP LOCKED); return (job id, lease
    token) for each."""
    params = {"project_id": project_id, "worker_id": worker_id, "keep": list(keep)}
    return [(job_id, token) for job_id, token in _execute("lock_worker_jobs", params)]


def expired_leases(*, limit: int) -> list[tuple[UUID, UUID]]:
    """Lock processing jobs whose lease ran out; return (job id, lease token)."""
    return [(job_id, token) for job_id, token in _execute("expired_leases", {"limit": limit})]


@dataclass(frozen=True, slots=True)
class Cascade:
    """What cancel_descendants did: jobs cancelled, blocked jobs released to pending."""

    cancelled: list[UUID]
    released: list[UUID]
    # Batches of cancelled jobs that still owe callbacks (see services._fire_batch_callbacks).
    owed_batches: set[UUID]


def cancel_descendants(roots: Sequence[tuple[UUID, str]]) -> Cascade:
    """Settle the blocked descendants of (job id, reason) roots by each edge's
    on_parent_failure: cancel (and walk on), or count the parent as finished (and release)."""
    cascade = Cascade(cancelled=[], released=[], owed_batches=set())
    if not roots:
        return cascade
    params = {"ids": [r[0] for r in roots], "reasons": [r[1] for r in roots]}
    for kind, job_id, batch_id, callback_owed in _execute("cancel_descendants", params):
        if kind == "cancelled":
            cascade.cancelled.append(job_id)
            if callback_owed:
                cascade.owed_batches.add(batch_id)
        else:
            cascade.released.append(job_id)
    return cascade


def reblock_run_children(job_ids: Sequence[UUID]) -> int:
    """Make the blocked run-policy children of retried jobs wait for them again; return how
    many children changed."""
    if not job_ids:
        return 0
    return _rowcount("reblock_run_children", {"ids": list(job_ids)})


@dataclass(frozen=True, slots=True)
class AssignedJob:
    """A job as delivered to its worker."""

    id: UUID
    job_type: str
    payload: Any
    attempt: int
    lease_token: UUID
    lease_expires_at: datetime
    timeout_seconds: int
    queue: str
    priority: int
    sub_priority: int
    created_at: datetime


def prune_jobs(*, limit: int, days: int | None = None) -> int:
    """Delete up to ``limit`` finished jobs past retention (see prune_jobs.sql); return how many."""
    return _rowcount("prune_jobs", {"limit": limit, "days": days})


# --- A queue's jobs in bulk: the taken set -------------------------------------------------
# A purge or a queue deletion first takes (locks) the jobs it will delete into the
# transaction's temporary table taken_jobs, then works through it in batches of ``limit`` ids
# in id order. The ids never leave the database. FIRST_KEY starts the walk: every job id
# sorts after the nil UUID.

FIRST_KEY = UUID(int=0)


def take_waiting_jobs(queue_id: UUID) -> int:
    """Lock the queue's pending and scheduled jobs (SKIP LOCKED) into the transaction's taken
    set; return how many were taken."""
    _create_taken_set()
    return _rowcount("take_waiting_jobs", {"queue_id": queue_id})


def take_queue_jobs(queue_id: UUID) -> dict[str, int]:
    """Lock every job of the queue (waiting for their writers) into the transaction's taken
    set; return how many were taken in each state (states without jobs are left out)."""
    _create_taken_set()
    return {state: int(n) for state, n in _execute("take_queue_jobs", {"queue_id": queue_id})}


def _create_taken_set() -> None:
    if not connection.in_atomic_block:  # ON COMMIT DROP: in autocommit it would vanish at once
        raise RuntimeError("the taken jobs set lives in a transaction; open one first")
    _execute("taken_jobs_table", {})


@dataclass(frozen=True, slots=True)
class Settled:
    """What settle_purged_jobs did to the waiting descendants of a batch of purged jobs."""

    released: int
    # Batches of jobs cancelled by the walk that may now owe their callbacks.
    owed_batches: set[UUID]


def settle_purged_jobs(*, after: UUID, limit: int) -> Settled:
    """Cancel or release the blocked descendants of the next batch of taken jobs (the
    ``limit`` ids after ``after``), as jobs purged; delete_taken_jobs() deletes that batch."""
    [(released, owed)] = _execute("settle_purged_jobs", {"after": after, "limit": limit})
    return Settled(released=int(released), owed_batches=set(owed))


@dataclass(frozen=True, slots=True)
class DeletedBatch:
    """One batch of delete_taken_jobs: its last id (None once the taken set is exhausted)."""

    last_id: UUID | None
    deleted: int
    # Batches of the deleted jobs that still owe their callbacks.
    owed_batches: set[UUID]


def delete_taken_jobs(*, after: UUID, limit: int) -> DeletedBatch:
    """Delete the next batch of taken jobs (the ``limit`` ids after ``after``) with their
    executions, log lines and edges."""
    [(last_id, deleted, owed)] = _execute("delete_taken_jobs", {"after": after, "limit": limit})
    return DeletedBatch(last_id=last_id, deleted=int(deleted), owed_batches=set(owed))


def expire_worker_leases(worker_ids: Sequence[UUID]) -> int:
    if not worker_ids:
        return 0
    return _rowcount("expire_worker_leases", {"worker_ids": list(worker_ids)})


def notify(channels: Sequence[str]) -> None:
    """NOTIFY each channel once, at commit of the current transaction."""
    if channels:
        _execute("notify", {"channels": sorted(set(channels))})


def notify_ready(queue_ids: Sequence[UUID]) -> None:
    """Wake the long-polls of the workers serving these queues, at commit: jobs are pending."""
    if queue_ids:
        _execute("notify_ready", {"queue_ids": sorted(set(queue_ids))})


# Advisory lock key for the maintenance step ("TFMAINT" as an integer).
_MAINTENANCE_LOCK = 0x54464D41494E54


def maintain_tables(tables: Sequence[str]) -> list[str]:
    """ANALYZE or VACUUM (ANALYZE) the tables that churned enough; return what was done.

    Thresholds follow autovacuum's defaults (50 rows + 10 % for analyze, 50 rows + 20 % for
    vacuum, and 1,000 rows + 20 % inserted for vacuum, which keeps the visibility map fresh
    for index-only scans). Runs in autocommit, outside any transaction, in one dispatcher at
    a time.
    """
    if connection.in_atomic_block:
        raise RuntimeError("maintain_tables must run outside a transaction (VACUUM)")
    done: list[str] = []
    if not _execute("try_lock", {"key": _MAINTENANCE_LOCK})[0][0]:
        return done
    try:
        rows = _execute("table_stats", {"tables": list(tables)})
        for name, live, dead, modified, inserted in rows:
            if dead > 50 + 0.2 * live or inserted > 1000 + 0.2 * live:
                command = "VACUUM (ANALYZE)"
            elif modified > 50 + 0.1 * live:
                command = "ANALYZE"
            else:
                continue
            with connection.cursor() as cursor:
                cursor.execute(sql.SQL(command + " {}").format(sql.Identifier(name)).as_string())
            done.append(f"{command} {name}")
    finally:
        _execute("unlock", {"key": _MAINTENANCE_LOCK})
    return done


def project_job_types(project_id: UUID, *, limit: int) -> list[str]:
    """The project's distinct job types, alphabetically, at most ``limit`` (a loose index scan
    of job_project_type; see project_job_types.sql)."""
    rows = _execute("project_job_types", {"project_id": project_id, "limit": limit})
    return [row[0] for row in rows]


# --- The dashboard's statistics (jobs/services/stats.py) ----------------------------------


def try_transaction_lock(key: int) -> bool:
    """Take the advisory lock ``key`` until the current transaction ends, if no other session
    holds it; return whether it was taken."""
    if not connection.in_atomic_block:  # in autocommit the lock would end with the statement
        raise RuntimeError("a transaction advisory lock needs a transaction; open one first")
    return bool(_execute("try_xact_lock", {"key": key})[0][0])


def fold_throughput(*, now: datetime | None = None) -> int:
    """Fold the rollup's rows of past minutes into shard 0 and those older than a day into
    hour rows (fold_throughput.sql); return how many rows were folded away."""
    return int(_execute("fold_throughput", {"now": now})[0][0])


def prune_throughput(*, now: datetime | None = None) -> int:
    """Delete the rollup's hour rows older than 8 days; return how many."""
    return _rowcount("prune_throughput", {"now": now})


class ThroughputRow(NamedTuple):
    """One bucket of throughput.sql: a queue's sums, or (queue_id None) an empty bucket."""

    start: datetime
    queue_id: UUID | None
    succeeded: int
    failed: int
    dead: int


def throughput(
    project_id: UUID,
    *,
    bucket_seconds: int,
    buckets: int,
    queue_id: UUID | None = None,
    now: datetime | None = None,
) -> list[ThroughputRow]:
    """The project's rollup summed per bucket and queue over the ``buckets`` buckets ending
    with the current one, oldest first; every bucket appears at least once."""
    params = {
        "project_id": project_id,
        "bucket_seconds": bucket_seconds,
        "buckets": buckets,
        "queue_id": queue_id,
        "now": now,
    }
    return [
        ThroughputRow(start, queue, int(s), int(f), int(d))
        for start, queue, s, f, d in _execute("throughput", params)
    ]


def state_counts(project_id: UUID, *, cap: int, queue_id: UUID | None = None) -> dict[str, int]:
    """The project's (or one of its queues') jobs in each state, each count stopping at
    ``cap`` + 1."""
    params = {"project_id": project_id, "queue_id": queue_id, "cap": cap}
    return {state: int(n) for state, n in _execute("state_counts", params)}


def estimate_jobs(project_id: UUID, state: str, *, queue_id: UUID | None = None) -> int:
    """The planner's estimate of the project's jobs in ``state`` (of one queue of the project,
    when given: the caller has checked it is the project's); reads no row."""
    if queue_id is None:
        plan = _execute("estimate_jobs", {"project_id": project_id, "state": state})[0][0]
    else:
        plan = _execute("estimate_queue_jobs", {"queue_id": queue_id, "state": state})[0][0]
    if isinstance(plan, str):  # Django registers a text loader for json; decode here, once.
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


class FailureGroupRow(NamedTuple):
    """One row of failure_groups.sql."""

    job_type: str
    message: str
    # Attempts in the group (``count`` is taken by tuple).
    attempts: int
    first_seen: datetime
    last_seen: datetime
    latest_job_id: UUID
    # How many attempts were grouped, and the oldest of them.
    sampled: int
    oldest_sampled: datetime
    # The time they were read at: ``now``, or the database's now().
    clock: datetime


def failure_groups(
    project_id: UUID, *, hours: int, sample: int, groups: int, now: datetime | None = None
) -> list[FailureGroupRow]:
    """The project's newest ``sample`` failed or timed-out attempts of the last ``hours``,
    grouped by job type and normalised message; the ``groups`` largest groups."""
    params = {
        "project_id": project_id,
        "hours": hours,
        "sample": sample,
        "groups": groups,
        "now": now,
    }
    return [FailureGroupRow(*row) for row in _execute("failure_groups", params)]


# The states queue_depths.sql counts, in its column order.
DEPTH_STATES = ("pending", "scheduled", "blocked", "processing", "dead")


def queue_depths(project_id: UUID, *, cap: int) -> dict[UUID, dict[str, int]]:
    """Jobs per state (DEPTH_STATES) of each of the project's queues, each count stopping at
    ``cap`` + 1."""
    params = {"project_id": project_id, "cap": cap}
    return {
        row[0]: dict(zip(DEPTH_STATES, (int(n) for n in row[1:]), strict=True))
        for row in _execute("queue_depths", params)
    }


class Backlog(NamedTuple):
    """What queue_backlog.sql says of one queue."""

    pending: int
    running: int
    oldest_pending_seconds: float | None


def queue_backlog(
    project_id: UUID, *, cap: int, running_cap: int, now: datetime | None = None
) -> dict[UUID, Backlog]:
    """Pending (stopping at ``cap`` + 1) and running (at ``running_cap`` + 1) jobs and the age
    of the oldest pending job, for each of the project's queues."""
    params = {
        "project_id": project_id,
        "cap": cap,
        "running_cap": running_cap,
        "now": now,
    }
    return {
        queue_id: Backlog(int(pending), int(running), oldest)
        for queue_id, pending, running, oldest in _execute("queue_backlog", params)
    }


# --- Organizations' plan caps (the claim at fetch, workers/claiming.py) -----------------------


def lock_organizations(organization_ids: Sequence[UUID]) -> None:
    """Lock the organizations (an advisory lock each, in one order) until the transaction ends,
    waiting for other dispatchers that hold them; count their running jobs after this call."""
    if not connection.in_atomic_block:  # in autocommit the locks would end with the statement
        raise RuntimeError("organization locks need a transaction; open one first")
    if organization_ids:
        _execute("lock_organizations", {"organization_ids": list(organization_ids)})


def running_per_organization(caps: Mapping[UUID, int]) -> dict[UUID, int]:
    """Processing jobs of each organization in ``caps`` (across its projects), each count
    stopping at the organization's cap."""
    if not caps:
        return {}
    params = {"organization_ids": list(caps), "caps": list(caps.values())}
    return {org: int(n) for org, n in _execute("running_per_organization", params)}


# --- Submission's fast paths (jobs/services/submit.py) ----------------------------------------

# COPY's text format: a backslash starts an escape, a tab ends a field, a newline a row.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_NULL = "\\N"


def _copy_field(value: str) -> str:
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


def _array_literal(items: Sequence[str]) -> str:
    """A text[] literal, every element quoted (so commas, braces and NULL read as text)."""
    quoted = ('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in items)
    return "{" + ",".join(quoted) + "}"


def copy_text(rows: Sequence[JobRow]) -> bytes:
    """``rows`` in COPY's text format, for insert_jobs.sql.

    Built here rather than with psycopg's write_row, which looks up a dumper for each of the
    25 values of every row (twice the CPU). Most values of a batch are the same objects in
    every row (the tenant, the queue, the batch, the transaction's now()), so runs of columns
    are formatted once per distinct combination, found again by the identities of their values
    (every value is held by ``rows`` meanwhile, so no identity is reused). Timestamps are ISO
    8601 with their offset, which PostgreSQL reads the same whatever the session's DateStyle.
    """
    runs: dict[tuple[int, ...], str] = {}

    def run(*values: Any) -> str:
        key = tuple(map(id, values))
        found = runs.get(key)
        if found is None:
            found = runs[key] = "\t".join(map(_copy_value, values))
        return found

    lines = [
        "\t".join(
            (
                str(row.id),
                run(row.organization_id, row.project_id, row.queue_id),
                _copy_field(row.job_type),
                _copy_field(row.payload),
                run(
                    row.state,
                    row.priority,
                    row.sub_priority,
                    row.run_at,
                    row.attempts,
                    row.max_attempts,
                    row.timeout_seconds,
                ),
                _COPY_NULL if row.idempotency_key is None else _copy_field(row.idempotency_key),
                _copy_field(_array_literal(row.tags)) if row.tags else "{}",
                _COPY_NULL if row.result is None else _copy_field(row.result),
                run(
                    row.last_error,
                    row.worker_id,
                    row.lease_token,
                    row.lease_expires_at,
                    row.delivered_at,
                    row.pending_parents,
                    row.batch_id,
                    row.created_at,
                    row.started_at,
                    row.finished_at,
                ),
            )
        )
        for row in rows
    ]
    lines.append("")
    return "\n".join(lines).encode()


def _copy_value(value: Any) -> str:
    if value is None:
        return _COPY_NULL
    if isinstance(value, str):
        return _copy_field(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)  # UUID, int


class SubmittedRow(NamedTuple):
    """One row of submit_job.sql: the outcome and, for 'existing', the whole job (payload and
    result as JSON text); for 'created', only what the statement decided."""

    outcome: str
    id: UUID | None
    queue_name: str | None
    job_type: str | None
    payload: str | None
    state: str | None
    priority: int | None
    sub_priority: int | None
    run_at: datetime | None
    attempts: int | None
    max_attempts: int | None
    timeout_seconds: int | None
    idempotency_key: str | None
    tags: list[str] | None
    result: str | None
    last_error: str | None
    worker_id: UUID | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    batch_id: UUID | None
    notified: int


def submit_job(
    *,
    id: UUID,
    organization_id: UUID,
    project_id: UUID,
    queue: str,
    job_type: str,
    payload: str,
    priority: int,
    sub_priority: int,
    max_attempts: int | None,
    timeout_seconds: int | None,
    idempotency_key: str | None,
    tags: Sequence[str],
    run_at: datetime | None,
    delay_seconds: float | None,
) -> SubmittedRow | None:
    """Submit one job without parents in one statement (submit_job.sql, whose comment lists
    the outcomes); None when a concurrent submit of the same key committed first: run it
    again. Wakes the queue's waiters (at commit) when the job is pending.

    Numbers, times and tags go as text (the statement casts them), and so does None: psycopg
    keys a prepared statement by its parameters' types, so one set of types for every job
    keeps one prepared statement per connection (an int is an int2 or an int4 by its size,
    None has no type at all)."""
    rows = _execute_prepared(
        "submit_job",
        {
            "id": id,
            "organization_id": organization_id,
            "project_id": project_id,
            "queue": queue,
            "job_type": job_type,
            "payload": payload,
            "priority": str(priority),
            "sub_priority": str(sub_priority),
            "max_attempts": _text(max_attempts),
            "timeout_seconds": _text(timeout_seconds),
            "idempotency_key": idempotency_key,
            "tags": _array_literal(tags),
            "run_at": None if run_at is None else run_at.isoformat(),
            "delay_seconds": _text(delay_seconds),
        },
    )
    return SubmittedRow(*rows[0]) if rows else None


def _text(value: float | None) -> str | None:
    return None if value is None else str(value)  # a float's str() reads back exactly


# Django turns psycopg's preparing off (prepare_threshold None) unless the database OPTIONS
# say otherwise, and then psycopg ignores prepare=True. The single submit prepares its
# statement anyway: planning its CTEs costs more than running them (0.3 ms of 0.5).
_PREPARE_WHEN_ASKED = 2**31 - 1  # a count no statement reaches: only prepare=True prepares


@cache
def _without_comments(name: str) -> str:
    """The statement without its comment lines: psycopg caches the parsing of statements up
    to 4 KB only, and the comments made submit_job.sql longer than that."""
    lines = _SQL.text(name).splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("--"))


def _execute_prepared(name: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """_execute, with the statement kept prepared on this connection (unless
    TASKFORGE_PREPARED_STATEMENTS is off, for poolers that cannot keep them)."""
    prepare = bool(settings.TASKFORGE_PREPARED_STATEMENTS)
    with connection.wrap_database_errors, _SQL.cursor() as cursor:
        conn = cursor.connection
        saved = conn.prepare_threshold
        if saved is None and prepare:
            conn.prepare_threshold = _PREPARE_WHEN_ASKED
        try:
            cursor.execute(_without_comments(name), params, prepare=prepare)
        finally:
            conn.prepare_threshold = saved
        return cursor.fetchall()
