"""Job lifecycle services: submit, complete, fail, cancel, retry, purge.

Each public service is one durable transaction (STYLE.md §3.3); the hot statements they run
live in jobs/sql/ and are executed by jobs/claiming.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import (
    Case,
    Count,
    Exists,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Now

from accounts.audit import SYSTEM, Actor, record_audit
from accounts.models import Project
from jobs import claiming
from jobs.exceptions import (
    IdempotencyRace,
    JobNotCancellable,
    JobNotFound,
    JobNotRetryable,
    StaleLease,
)
from jobs.models import (
    TERMINAL_STATES,
    Batch,
    ExecutionLog,
    ExecutionStatus,
    Job,
    JobDependency,
    JobExecution,
    JobState,
    LogLevel,
    ParentFailure,
)
from jobs.submission import (
    CALLBACK_FIELDS,
    JobSpec,
    callback_payload,
    check_graph_size,
    check_refs,
    encode_payload,
    topological_order,
    validate_callback,
    validate_spec,
)
from queues.models import Queue
from taskforge import conf
from taskforge.lib.errors import NotFound, TaskForgeError, ValidationFailed
from taskforge.lib.ids import uuid7

logger = logging.getLogger("taskforge.jobs")

# A losing idempotency race is retried this many times (each retry finds the winner's job).
_IDEMPOTENCY_RETRIES = 3
_FAILED_STATES = (JobState.DEAD, JobState.CANCELLED)
# A batch's callbacks, by name: on_complete fires whatever the outcome, on_success only when
# every job of the batch succeeded.
CALLBACK_NAMES = ("on_complete", "on_success")


class Submitted:
    """The result of a submission, in input order.

    ``created[i]`` is False for an idempotent repeat. ``jobs`` builds model instances on
    first use: for a large batch that costs more than the insert, and not every caller needs
    them (``rows`` has every column already).
    """

    def __init__(
        self,
        *,
        ids: list[UUID],
        created: list[bool],
        batch_id: UUID | None,
        rows: dict[UUID, tuple[Any, ...]],
        payloads: dict[UUID, Any],
        project: Project,
    ) -> None:
        self.ids = ids
        self.created = created
        self.batch_id = batch_id
        self.rows = rows
        self._payloads = payloads
        self._project = project
        self._jobs: list[Job] | None = None

    @property
    def jobs(self) -> list[Job]:
        if self._jobs is None:
            built = {}
            for job_id, row in self.rows.items():
                job = Job.from_db("default", claiming.JOB_COLUMNS, row)
                job.payload = self._payloads[job_id]
                built[job_id] = job
            missing = [job_id for job_id in self.ids if job_id not in built]
            if missing:  # idempotent repeats: read the existing jobs
                built.update(Job.objects.for_project(self._project).in_bulk(missing))
            self._jobs = [built[job_id] for job_id in self.ids]
        return self._jobs


def get_job(project: Project, job_id: UUID | str) -> Job:
    """The project's job with this id; a missing and a foreign job both raise JobNotFound."""
    try:
        return Job.objects.for_project(project).get(pk=job_id)
    except (Job.DoesNotExist, ValueError, ValidationError):
        raise JobNotFound(f"job {job_id} not found") from None


def submit_job(project: Project, spec: JobSpec) -> tuple[Job, bool]:
    """Submit one job; return it and whether it was created (False: idempotent repeat)."""
    submitted = _submit_with_retry(project, [spec], as_batch=False)
    return submitted.jobs[0], submitted.created[0]


def submit_jobs(
    project: Project,
    specs: Sequence[JobSpec],
    *,
    on_complete: JobSpec | None = None,
    on_success: JobSpec | None = None,
) -> Submitted:
    """Submit a batch, all or nothing; jobs may depend on each other through ``ref``.

    ``on_complete`` / ``on_success`` are callback jobs enqueued once when every job of the
    batch has finished (on_success only if all succeeded); see _fire_batch_callbacks.
    """
    if not specs:
        raise ValidationFailed("jobs: at least one job is required", details={"field": "jobs"})
    if len(specs) > conf.max_batch_jobs():
        raise ValidationFailed(
            f"jobs: at most {conf.max_batch_jobs()} jobs per batch, got {len(specs)}",
            details={"field": "jobs", "limit": conf.max_batch_jobs()},
        )
    callbacks = {
        name: spec
        for name, spec in (("on_complete", on_complete), ("on_success", on_success))
        if spec is not None
    }
    for name, spec in callbacks.items():
        validate_callback(name, spec)
    return _submit_with_retry(project, specs, as_batch=True, callbacks=callbacks)


def enqueue_in_transaction(project: Project, specs: Sequence[JobSpec]) -> Submitted:
    """Submit jobs inside the caller's transaction, for the engine's own producers (schedule
    runs, batch callbacks). An idempotency key already used returns the existing job; a
    concurrent submit of the same key raises IdempotencyRace (not retried here: the caller's
    transaction is the unit of retry).
    """
    payloads = [validate_spec(None, spec) for spec in specs]
    return _submit(project, specs, payloads, check_refs(specs), as_batch=False)


def _submit_with_retry(
    project: Project,
    specs: Sequence[JobSpec],
    *,
    as_batch: bool,
    callbacks: Mapping[str, JobSpec] | None = None,
) -> Submitted:
    payloads = [validate_spec(None if not as_batch else i, s) for i, s in enumerate(specs)]
    check_graph_size(specs)
    by_ref = check_refs(specs)
    for attempt in range(_IDEMPOTENCY_RETRIES + 1):
        try:
            with transaction.atomic(durable=True):
                return _submit(
                    project, specs, payloads, by_ref, as_batch=as_batch, callbacks=callbacks
                )
        except IdempotencyRace:
            if attempt == _IDEMPOTENCY_RETRIES:
                raise
    raise AssertionError("unreachable")


def _submit(
    project: Project,
    specs: Sequence[JobSpec],
    payloads: list[str],
    by_ref: dict[str, int],
    *,
    as_batch: bool,
    callbacks: Mapping[str, JobSpec] | None = None,
) -> Submitted:
    callbacks = callbacks or {}
    queues, now = _resolve_queues(project, specs, as_batch=as_batch, callbacks=callbacks)
    existing = _existing_by_key(project, specs)
    parent_states = _lock_parents(project, specs, as_batch=as_batch)
    repeats = {i for i, s in enumerate(specs) if s.idempotency_key in existing}
    batch = None
    # A batch counts the jobs it created: a retried batch whose every job repeats an earlier
    # submission creates no new (empty) batch, and its callbacks are the earlier batch's.
    if as_batch and len(repeats) < len(specs):
        batch = Batch.objects.create(
            organization_id=project.organization_id,
            project=project,
            total=len(specs) - len(repeats),
            **{name: _stored_callback(spec) for name, spec in callbacks.items()},
        )
    ids = [
        existing[s.idempotency_key][0] if i in repeats and s.idempotency_key else uuid7()
        for i, s in enumerate(specs)
    ]
    rows = _new_rows(
        project, specs, payloads, queues, parent_states, existing, by_ref, ids, repeats, batch, now
    )
    try:
        claiming.insert_jobs(list(rows.values()))
    except claiming.DuplicateIdempotencyKey:
        raise IdempotencyRace() from None
    _insert_edges(project, specs, ids, by_ref, repeats)
    state_column = claiming.JOB_COLUMNS.index("state")
    # Every job created cancelled (a parent had already failed): the batch is finished now.
    if (
        batch is not None
        and batch.has_callbacks
        and all(row[state_column] in TERMINAL_STATES for row in rows.values())
    ):
        _fire_batch_callbacks([batch.pk])
    return Submitted(
        ids=ids,
        created=[i not in repeats for i in range(len(specs))],
        batch_id=batch.pk if batch else _existing_batch_id(project, ids),
        rows={row[0]: row for row in rows.values()},
        payloads={ids[i]: specs[i].payload for i in rows},
        project=project,
    )


def _existing_batch_id(project: Project, ids: list[UUID]) -> UUID | None:
    """The batch of an earlier submission that this one repeats entirely, if any."""
    return (
        Job.objects.for_project(project)
        .filter(pk__in=ids, batch__isnull=False)
        .values_list("batch_id", flat=True)
        .first()
    )


def _where(as_batch: bool, index: int, name: str) -> tuple[str, dict[str, Any]]:
    prefix = f"jobs[{index}]." if as_batch else ""
    details: dict[str, Any] = {"field": name, **({"index": index} if as_batch else {})}
    return prefix + name, details


def _resolve_queues(
    project: Project,
    specs: Sequence[JobSpec],
    *,
    as_batch: bool,
    callbacks: Mapping[str, JobSpec],
) -> tuple[dict[str, claiming.QueueDefaults], datetime]:
    """The specs' queues by name, and the transaction's now(), in one round trip (the batch
    callbacks' queues are checked in the same one)."""
    names = {s.queue for s in specs} | {s.queue for s in callbacks.values()}
    queues, now = claiming.submit_queues(project.pk, sorted(names))
    for index, spec in enumerate(specs):
        if spec.queue not in queues:
            where, details = _where(as_batch, index, "queue")
            raise ValidationFailed(f"{where}: no queue named {spec.queue!r}", details=details)
    for name, spec in callbacks.items():
        if spec.queue not in queues:
            raise ValidationFailed(
                f"{name}.queue: no queue named {spec.queue!r}", details={"field": f"{name}.queue"}
            )
    assert now is not None  # at least one queue was found
    return queues, now


def _existing_by_key(project: Project, specs: Sequence[JobSpec]) -> dict[str, tuple[UUID, str]]:
    """Jobs already submitted with the specs' idempotency keys: {key: (id, state)}."""
    keys = [s.idempotency_key for s in specs if s.idempotency_key is not None]
    if len(keys) != len(set(keys)):
        raise ValidationFailed(
            "jobs: the same idempotency_key appears twice in one batch",
            details={"field": "idempotency_key"},
        )
    if not keys:
        return {}
    rows = Job.objects.for_project(project).filter(idempotency_key__in=keys)
    found = rows.values_list("idempotency_key", "pk", "state")
    return {key: (pk, state) for key, pk, state in found if key is not None}


def _lock_parents(project: Project, specs: Sequence[JobSpec], *, as_batch: bool) -> dict[UUID, str]:
    """Lock the parents named by id and return their states.

    FOR SHARE blocks a parent's completion until this submission commits: otherwise a parent
    finishing in between would not see the new edge, and the child would wait forever.
    """
    wanted = {parent for s in specs for parent in s.depends_on}
    if not wanted:
        return {}
    found = claiming.lock_parents(project.pk, sorted(wanted))
    for index, spec in enumerate(specs):
        for parent in spec.depends_on:
            if parent not in found:
                where, details = _where(as_batch, index, "depends_on")
                raise ValidationFailed(f"{where}: no job {parent} in this project", details=details)
    return found


def _new_rows(
    project: Project,
    specs: Sequence[JobSpec],
    payloads: list[str],
    queues: dict[str, claiming.QueueDefaults],
    parent_states: dict[UUID, str],
    existing: dict[str, tuple[UUID, str]],
    by_ref: dict[str, int],
    ids: list[UUID],
    repeats: set[int],
    batch: Batch | None,
    now: datetime,
) -> dict[int, tuple[Any, ...]]:
    """Rows (claiming.JOB_COLUMNS order) for the new jobs, by spec index.

    ``now`` is the transaction's now(): run_at and the initial state are decided exactly as
    SQL in this transaction would. A job whose parent already ended dead or cancelled is
    created cancelled; rows are planned in topological order so that its in-batch children
    inherit that.
    """
    state_of: dict[int, str] = {}
    for i in repeats:
        key = specs[i].idempotency_key
        state_of[i] = existing[key][1] if key else JobState.PENDING
    rows: dict[int, tuple[Any, ...]] = {}
    for i in topological_order(specs, by_ref):
        if i in repeats:
            continue
        spec, queue = specs[i], queues[specs[i].queue]
        states = [parent_states[p] for p in spec.depends_on]
        states += [state_of[by_ref[ref]] for ref in spec.depends_on_refs]
        # With on_parent_failure=run a failed parent counts as finished: not waited for.
        finished: tuple[str, ...] = (JobState.SUCCEEDED,)
        failed = None
        if spec.on_parent_failure == ParentFailure.RUN:
            finished += _FAILED_STATES
        else:
            failed = next((s for s in states if s in _FAILED_STATES), None)
        waiting = sum(1 for s in states if s not in finished)
        run_at = spec.run_at or now + timedelta(seconds=spec.delay_seconds or 0)
        if failed:
            state = JobState.CANCELLED
        elif waiting:
            state = JobState.BLOCKED
        elif run_at > now:
            state = JobState.SCHEDULED
        else:
            state = JobState.PENDING
        # For the children in this batch, a new job is never "succeeded" yet.
        state_of[i] = JobState.CANCELLED if failed else JobState.BLOCKED
        rows[i] = (
            ids[i], project.organization_id, project.pk, queue.id, spec.job_type, payloads[i],
            state, spec.priority, run_at, 0, spec.max_attempts or queue.max_attempts,
            spec.timeout_seconds or queue.timeout_seconds, spec.idempotency_key, list(spec.tags),
            None, f"cancelled: a parent job ended {failed}" if failed else "",
            None, None, None, None, waiting, batch.pk if batch else None,
            now, None, now if failed else None,
        )  # fmt: skip
    return rows


def _insert_edges(
    project: Project,
    specs: Sequence[JobSpec],
    ids: list[UUID],
    by_ref: dict[str, int],
    repeats: set[int],
) -> None:
    edges = [
        JobDependency(
            organization_id=project.organization_id,
            parent_id=parent,
            child_id=ids[i],
            on_parent_failure=spec.on_parent_failure,
        )
        for i, spec in enumerate(specs)
        if i not in repeats
        for parent in [*spec.depends_on, *(ids[by_ref[ref]] for ref in spec.depends_on_refs)]
    ]
    if edges:
        JobDependency.objects.bulk_create(edges, ignore_conflicts=True)


# --- Results ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResultItem:
    """One worker-reported result (the batched ``results`` endpoint sends many)."""

    job_id: UUID
    lease_token: UUID
    succeeded: bool
    result: Any = None
    error: str = ""
    retryable: bool = True


def complete_job(project: Project, job_id: UUID, *, lease_token: UUID, result: Any = None) -> Job:
    """Mark a job succeeded and release its children; StaleLease if the token is not current."""
    outcomes = report_results(project, [ResultItem(job_id, lease_token, True, result=result)])
    if outcomes[job_id] is None:
        raise StaleLease(_stale_message(job_id), details={"job_id": str(job_id)})
    return get_job(project, job_id)


def fail_job(
    project: Project, job_id: UUID, *, lease_token: UUID, error: str, retryable: bool = True
) -> Job:
    """Record a failed attempt: retry after backoff, or dead when exhausted or not retryable."""
    item = ResultItem(job_id, lease_token, False, error=error, retryable=retryable)
    if report_results(project, [item])[job_id] is None:
        raise StaleLease(_stale_message(job_id), details={"job_id": str(job_id)})
    return get_job(project, job_id)


def _stale_message(job_id: UUID) -> str:
    return (
        f"job {job_id} is not processing under this lease token "
        "(it expired and was re-assigned, was cancelled, or already has a result)"
    )


def report_results(
    project: Project | None, items: Sequence[ResultItem]
) -> dict[UUID, claiming.Outcome | None]:
    """Apply many results in one transaction; return each job's outcome (None = stale lease).

    ``project`` None is for the engine's own callers (benchmarks); the API always scopes.
    """
    # Each result is serialised once: checked here, and this text is what gets stored.
    results: dict[UUID, str] = {}
    for item in items:
        if item.succeeded:
            results[item.job_id] = encode_payload(None, item.result, name="result")
        elif "\x00" in item.error:
            raise ValidationFailed(
                "error: must not contain NUL characters", details={"field": "error"}
            )
    project_id = project.pk if project else None
    with transaction.atomic(durable=True):
        outcomes: dict[UUID, claiming.Outcome | None] = {item.job_id: None for item in items}
        done = [(i.job_id, i.lease_token, results[i.job_id]) for i in items if i.succeeded]
        failed = [
            (i.job_id, i.lease_token, i.error[:10_000], i.retryable)
            for i in items
            if not i.succeeded
        ]
        released: list[UUID] = []
        if done:
            completion = claiming.complete_jobs(project_id, done)
            released = completion.released
            outcomes.update((o.job_id, o) for o in completion.succeeded)
        if failed:
            outcomes.update((o.job_id, o) for o in claiming.fail_jobs(project_id, failed))
        applied = [o for o in outcomes.values() if o is not None]
        cascade = _cascade_failures(applied)
        _fire_batch_callbacks(_owed_batches(applied, cascade))
        # Freed slots and released children are new work for the dispatchers.
        if applied or released or cascade.released:
            claiming.notify([claiming.DISPATCH_CHANNEL])
    return outcomes


def _cascade_failures(outcomes: Sequence[claiming.Outcome]) -> claiming.Cascade:
    roots = [
        (o.job_id, f"cancelled: ancestor job {o.job_id} ended {o.state}")
        for o in outcomes
        if o.state in _FAILED_STATES
    ]
    return claiming.cancel_descendants(roots)


def _owed_batches(outcomes: Sequence[claiming.Outcome], cascade: claiming.Cascade) -> set[UUID]:
    """Batches that may have just finished and still owe callbacks."""
    owed = {o.batch_id for o in outcomes if o.callback_owed and o.batch_id is not None}
    return owed | cascade.owed_batches


def _settle(roots: Sequence[tuple[UUID, str]], batch_ids: Iterable[UUID | None]) -> None:
    """After jobs were cancelled or deleted by an operator: settle their descendants, wake the
    dispatchers for released ones, and fire the callbacks of batches this finished."""
    cascade = claiming.cancel_descendants(roots)
    if cascade.released:
        claiming.notify([claiming.DISPATCH_CHANNEL])
    _fire_batch_callbacks({*batch_ids, *cascade.owed_batches})


def expire_leases(*, limit: int) -> int:
    """Fail jobs whose lease ran out as timed-out attempts (retry or dead); return the count."""
    with transaction.atomic(durable=True):
        expired = claiming.expired_leases(limit=limit)
        if not expired:
            return 0
        items = [
            (job_id, token, "lease expired: the worker stopped heartbeating", True)
            for job_id, token in expired
        ]
        outcomes = claiming.fail_jobs(None, items, execution_status=ExecutionStatus.TIMED_OUT)
        cascade = _cascade_failures(outcomes)
        _fire_batch_callbacks(_owed_batches(outcomes, cascade))
        if cascade.released:
            claiming.notify([claiming.DISPATCH_CHANNEL])
        return len(expired)


def append_logs(
    project: Project, job_id: UUID, *, lease_token: UUID, entries: Sequence[dict[str, Any]]
) -> int:
    """Store log lines for the job's current execution; StaleLease if the token is not current."""
    rows = []
    for index, entry in enumerate(entries):
        level, message = entry.get("level", LogLevel.INFO), entry.get("message")
        if level not in LogLevel.values:
            raise ValidationFailed(
                f"entries[{index}].level: must be one of {LogLevel.values}",
                details={"field": "level", "index": index},
            )
        if not isinstance(message, str) or "\x00" in message:
            raise ValidationFailed(
                f"entries[{index}].message: must be a string without NUL",
                details={"field": "message", "index": index},
            )
        metadata = entry.get("metadata") or {}
        encode_payload(index, metadata, name="metadata")
        rows.append((level, message[:10_000], metadata))
    with transaction.atomic(durable=True):
        execution = (
            JobExecution.objects.for_project(project)
            .filter(job_id=job_id, lease_token=lease_token, job__state=JobState.PROCESSING)
            .first()
        )
        if execution is None:
            raise StaleLease(_stale_message(job_id), details={"job_id": str(job_id)})
        ExecutionLog.objects.bulk_create(
            ExecutionLog(
                organization_id=project.organization_id,
                job_id=job_id,
                execution=execution,
                level=level,
                message=message,
                metadata=metadata,
            )
            for level, message, metadata in rows
        )
    return len(rows)


# --- Operator actions --------------------------------------------------------------------------


def cancel_job(
    project: Project, job_id: UUID, *, actor: Actor = SYSTEM, reason: str = "cancelled by user"
) -> Job:
    """Cancel a job that has not finished; a running attempt's result will be refused (409)."""
    with transaction.atomic(durable=True):
        job = _locked_job(project, job_id)
        if job.is_terminal:
            raise JobNotCancellable(f"job {job_id} already ended {job.state}")
        if job.state == JobState.PROCESSING:
            JobExecution.objects.for_project(project).filter(
                job=job, lease_token=job.lease_token
            ).update(status=ExecutionStatus.FAILED, error=reason, finished_at=Now())
        Job.objects.for_project(project).filter(pk=job.pk).update(
            state=JobState.CANCELLED,
            last_error=reason,
            finished_at=Now(),
            lease_token=None,
            lease_expires_at=None,
        )
        _settle([(job.pk, f"cancelled: ancestor job {job.pk} was cancelled")], [job.batch_id])
        record_audit(
            project.organization_id,
            "job.cancelled",
            actor=actor,
            project=project,
            target_type="job",
            target_id=job.pk,
        )
    return get_job(project, job_id)


def retry_job(project: Project, job_id: UUID, *, actor: Actor = SYSTEM) -> Job:
    """Run a dead or cancelled job again from attempt 1 (blocked while parents are unfinished).

    Its blocked run-policy children wait for it again. A batch whose callbacks already fired
    does not fire them again when the retried job finishes.
    """
    with transaction.atomic(durable=True):
        job = _locked_job(project, job_id)
        if job.state not in _FAILED_STATES:
            raise JobNotRetryable(
                f"job {job_id} is {job.state}; only dead or cancelled jobs can be retried"
            )
        claiming.reblock_run_children([job.pk])
        waiting = _waited_for_edges(project, [job.pk]).filter(child=job).count()
        state = JobState.BLOCKED if waiting else JobState.PENDING
        Job.objects.for_project(project).filter(pk=job.pk).update(
            state=state,
            pending_parents=waiting,
            attempts=0,
            run_at=Now(),
            finished_at=None,
            worker_id=None,
            lease_token=None,
            lease_expires_at=None,
            delivered_at=None,
        )
        if state == JobState.PENDING:
            claiming.notify([claiming.DISPATCH_CHANNEL])
        record_audit(
            project.organization_id,
            "job.retried",
            actor=actor,
            project=project,
            target_type="job",
            target_id=job.pk,
        )
    return get_job(project, job_id)


def _waited_for_edges(project: Project, retried: Sequence[UUID]) -> QuerySet[JobDependency]:
    """Edges whose parent a retried child must wait for: parents that have not succeeded,
    except failed ones behind a run-policy edge (finished for that child), unless that
    parent is being retried too."""
    finished_by_policy = (
        Q(on_parent_failure=ParentFailure.RUN)
        & Q(parent__state__in=_FAILED_STATES)
        & ~Q(parent__in=list(retried))
    )
    return (
        JobDependency.objects.for_org(project.organization)
        .exclude(parent__state=JobState.SUCCEEDED)
        .exclude(finished_by_policy)
    )


def _locked_job(project: Project, job_id: UUID) -> Job:
    try:
        return Job.objects.for_project(project).select_for_update().get(pk=job_id)
    except (Job.DoesNotExist, ValueError, ValidationError):
        raise JobNotFound(f"job {job_id} not found") from None


def purge_queue(queue: Queue, *, actor: Actor = SYSTEM) -> int:
    """Delete the queue's pending and scheduled jobs; their waiting descendants are cancelled."""
    with transaction.atomic(durable=True):
        doomed = Job.objects.for_project(queue.project).filter(
            queue=queue, state__in=(JobState.PENDING, JobState.SCHEDULED)
        )
        rows = list(doomed.select_for_update(skip_locked=True).values_list("pk", "batch_id"))
        ids = [pk for pk, _ in rows]
        roots = [(pk, f"cancelled: parent job {pk} was purged") for pk in ids]
        cascade = claiming.cancel_descendants(roots)
        if cascade.released:
            claiming.notify([claiming.DISPATCH_CHANNEL])
        Job.objects.for_project(queue.project).filter(pk__in=ids).delete()
        # After the delete: the purged jobs no longer count as unfinished.
        _fire_batch_callbacks({batch_id for _, batch_id in rows} | cascade.owed_batches)
        record_audit(
            queue.organization_id,
            "queue.purged",
            actor=actor,
            project=queue.project,
            target_type="queue",
            target_id=queue.name,
            metadata={"deleted": len(ids)},
        )
    return len(ids)


# --- Bulk actions and batches --------------------------------------------------------------

BULK_LIMIT = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFilter:
    state: str | None = None
    queue: str | None = None
    job_type: str | None = None
    tag: str | None = None


def _bulk_targets(
    project: Project, ids: Sequence[UUID] | None, job_filter: JobFilter | None
) -> QuerySet[Job]:
    jobs = Job.objects.for_project(project)
    if ids is not None:
        return jobs.filter(pk__in=list(ids))
    assert job_filter is not None
    if job_filter.state:
        jobs = jobs.filter(state=job_filter.state)
    if job_filter.queue:
        jobs = jobs.filter(queue__name=job_filter.queue)
    if job_filter.job_type:
        jobs = jobs.filter(job_type=job_filter.job_type)
    if job_filter.tag:
        jobs = jobs.filter(tags__contains=[job_filter.tag])
    return jobs


def bulk_action(
    project: Project,
    action: str,
    *,
    ids: Sequence[UUID] | None = None,
    job_filter: JobFilter | None = None,
    actor: Actor = SYSTEM,
) -> int:
    """Cancel, retry or delete many jobs at once (at most BULK_LIMIT); return how many changed.

    Jobs the action does not apply to (cancel a finished job, retry a running one, delete a
    running one) are skipped, not errors: a filter naturally matches some of those.
    """
    if action not in ("cancel", "retry", "delete"):
        raise ValidationFailed(
            "action: must be retry, cancel or delete", details={"field": "action"}
        )
    with transaction.atomic(durable=True):
        targets = _bulk_targets(project, ids, job_filter)
        applicable = {
            "cancel": ~Q(state__in=TERMINAL_STATES),
            "retry": Q(state__in=_FAILED_STATES),
            "delete": ~Q(state=JobState.PROCESSING),
        }[action]
        picked = list(
            targets.filter(applicable)
            .order_by("pk")
            .select_for_update()
            .values_list("pk", flat=True)[:BULK_LIMIT]
        )
        if picked:
            {"cancel": _bulk_cancel, "retry": _bulk_retry, "delete": _bulk_delete}[action](
                project, picked
            )
        record_audit(
            project.organization_id,
            f"jobs.bulk_{action}",
            actor=actor,
            project=project,
            target_type="job",
            metadata={"affected": len(picked), "by": "ids" if ids is not None else "filter"},
        )
    return len(picked)


def _bulk_cancel(project: Project, ids: list[UUID]) -> None:
    reason = "cancelled by user (bulk)"
    jobs = Job.objects.for_project(project).filter(pk__in=ids)
    JobExecution.objects.for_project(project).filter(
        job__in=jobs.filter(state=JobState.PROCESSING), lease_token=F("job__lease_token")
    ).update(status=ExecutionStatus.FAILED, error=reason, finished_at=Now())
    batch_ids = set(jobs.exclude(batch=None).order_by().values_list("batch_id", flat=True))
    jobs.update(
        state=JobState.CANCELLED, last_error=reason, finished_at=Now(), lease_token=None,
        lease_expires_at=None,
    )  # fmt: skip
    _settle([(pk, f"cancelled: ancestor job {pk} was cancelled") for pk in ids], batch_ids)


def _bulk_retry(project: Project, ids: list[UUID]) -> None:
    jobs = Job.objects.for_project(project).filter(pk__in=ids)
    # Before any state changes: the run-policy children of the retried jobs wait again, and
    # the retried jobs' own counts treat retried parents as unfinished.
    claiming.reblock_run_children(ids)
    waiting = (
        _waited_for_edges(project, ids)
        .filter(child=OuterRef("pk"))
        .values("child")
        .annotate(n=Count("*"))
        .values("n")
    )
    jobs.update(pending_parents=Coalesce(Subquery(waiting), 0))
    blocked_or_pending = Case(
        When(pending_parents__gt=0, then=Value(JobState.BLOCKED)), default=Value(JobState.PENDING)
    )
    jobs.update(
        state=blocked_or_pending,
        attempts=0, run_at=Now(), finished_at=None, worker_id=None, lease_token=None,
        lease_expires_at=None, delivered_at=None,
    )  # fmt: skip
    claiming.notify([claiming.DISPATCH_CHANNEL])


def _bulk_delete(project: Project, ids: list[UUID]) -> None:
    jobs = Job.objects.for_project(project).filter(pk__in=ids)
    # Only unfinished jobs are roots: a finished one already released or settled its
    # children when it succeeded or failed, and must not count a second time.
    unfinished = list(
        jobs.exclude(state__in=TERMINAL_STATES).order_by().values_list("pk", flat=True)
    )
    batch_ids = set(jobs.exclude(batch=None).order_by().values_list("batch_id", flat=True))
    roots = [(pk, f"cancelled: parent job {pk} was deleted") for pk in unfinished]
    cascade = claiming.cancel_descendants(roots)
    if cascade.released:
        claiming.notify([claiming.DISPATCH_CHANNEL])
    jobs.delete()
    # After the delete: the deleted jobs no longer count as unfinished.
    _fire_batch_callbacks(batch_ids | cascade.owed_batches)


@dataclass(frozen=True, slots=True)
class BatchStatus:
    id: UUID
    total: int
    counts: dict[str, int]
    finished: bool
    created_at: datetime
    on_complete: dict[str, Any] | None = None
    on_success: dict[str, Any] | None = None
    callback_enqueued_at: datetime | None = None
    on_complete_job_id: UUID | None = None
    on_success_job_id: UUID | None = None


def batch_status(project: Project, batch_id: UUID | str) -> BatchStatus:
    """Progress of a batch: its jobs counted by state, and its callbacks."""
    try:
        batch = Batch.objects.for_project(project).get(pk=batch_id)
    except (Batch.DoesNotExist, ValueError, ValidationError):
        raise NotFound(f"batch {batch_id} not found") from None
    counts = _batch_counts([batch.pk])[batch.pk]
    unfinished = sum(n for state, n in counts.items() if state not in TERMINAL_STATES)
    return BatchStatus(
        batch.pk,
        batch.total,
        counts,
        unfinished == 0,
        batch.created_at,
        on_complete=batch.on_complete,
        on_success=batch.on_success,
        callback_enqueued_at=batch.callback_enqueued_at,
        on_complete_job_id=batch.on_complete_job_id,
        on_success_job_id=batch.on_success_job_id,
    )


def _batch_counts(batch_ids: Sequence[UUID]) -> dict[UUID, dict[str, int]]:
    """Each batch's jobs counted by state (every state present, 0 when none)."""
    counts = {batch_id: dict.fromkeys(JobState.values, 0) for batch_id in batch_ids}
    rows = (
        Job.objects.all_tenants()
        .filter(batch_id__in=list(batch_ids))
        .order_by()
        .values("batch_id", "state")
        .annotate(n=Count("*"))
        .values_list("batch_id", "state", "n")
    )
    for batch_id, state, n in rows:
        counts[batch_id][state] = n
    return counts


# --- Batch callbacks ---------------------------------------------------------------------------

# Batches whose callbacks are still owed: the condition of the partial index batch_callback_owed.
_OWES_CALLBACKS = Q(callback_enqueued_at__isnull=True) & (
    Q(on_complete__isnull=False) | Q(on_success__isnull=False)
)


def _stored_callback(spec: JobSpec) -> dict[str, Any]:
    """A callback spec as kept on the Batch (the job fields a callback may set)."""
    return {
        "queue": spec.queue,
        "job_type": spec.job_type,
        "payload": spec.payload,
        "priority": spec.priority,
        "max_attempts": spec.max_attempts,
        "timeout_seconds": spec.timeout_seconds,
        "tags": list(spec.tags),
    }


def _fire_batch_callbacks(batch_ids: Iterable[UUID | None]) -> int:
    """Enqueue the callbacks of the batches among ``batch_ids`` whose every job has finished;
    return how many batches fired. Runs in the transaction that finished the jobs, after the
    job updates.

    Exactly once, however many transactions finish a batch's last jobs at the same time: the
    owed batches are locked first (FOR NO KEY UPDATE, in id order so that two callers never
    deadlock) and only then are their unfinished jobs counted. Under READ COMMITTED that count
    is a new snapshot, taken after any wait for the lock, so it sees the completions of every
    transaction that held the lock before: whichever transaction locks a batch last sees its
    last job finished. The one that fires sets callback_enqueued_at, which the lock's WHERE
    re-checks after a wait, so no later transaction fires the batch again. Batches without
    callbacks, or whose callbacks were enqueued already, are filtered out before any lock.
    """
    ids = sorted({batch_id for batch_id in batch_ids if batch_id is not None})
    if not ids:
        return 0
    locked = list(
        Batch.objects.all_tenants()
        .filter(_OWES_CALLBACKS, pk__in=ids)
        .select_related("project")
        .order_by("pk")
        .select_for_update(no_key=True, of=("self",))
    )
    return _fire_finished(locked)


def _fire_finished(batches: Sequence[Batch]) -> int:
    """Fire the locked ``batches`` that have no unfinished job; return how many fired."""
    if not batches:
        return 0
    unfinished = Job.objects.all_tenants().filter(batch=OuterRef("pk"))
    finished_ids = set(
        Batch.objects.all_tenants()
        .filter(pk__in=[b.pk for b in batches])
        .exclude(Exists(unfinished.exclude(state__in=TERMINAL_STATES)))
        .values_list("pk", flat=True)
    )
    finished = [b for b in batches if b.pk in finished_ids]
    if not finished:
        return 0
    counts = _batch_counts([b.pk for b in finished])
    for batch in finished:
        _fire(batch, counts[batch.pk])
    return len(finished)


def _fire(batch: Batch, counts: dict[str, int]) -> None:
    """Enqueue a finished batch's callbacks and mark them enqueued (the exactly-once guard)."""
    succeeded = counts[JobState.SUCCEEDED] == batch.total
    job_ids: dict[str, UUID | None] = {}
    for name in CALLBACK_NAMES:
        stored = getattr(batch, name)
        if stored is None or (name == "on_success" and not succeeded):
            continue
        fields = {key: stored[key] for key in CALLBACK_FIELDS if key in stored}
        fields["payload"] = callback_payload(
            fields.get("payload") or {}, batch_id=batch.pk, total=batch.total, counts=counts
        )
        job_ids[f"{name}_job_id"] = _enqueue_callback(batch, name, JobSpec(**fields))
    Batch.objects.all_tenants().filter(pk=batch.pk).update(callback_enqueued_at=Now(), **job_ids)


def _enqueue_callback(batch: Batch, name: str, spec: JobSpec) -> UUID | None:
    """Enqueue one callback job; None (logged) when the engine refuses it.

    The spec was checked at submit, but its queue may have been deleted since. Refusing the
    callback must not refuse the worker's result that finished the batch, so the attempt runs
    in a savepoint and a refusal is logged instead of raised.
    """
    try:
        with transaction.atomic():
            return enqueue_in_transaction(batch.project, [spec]).ids[0]
    except TaskForgeError as exc:
        logger.warning("batch %s: %s callback not enqueued: %s", batch.pk, name, exc.message)
        return None


def fire_owed_batch_callbacks(*, limit: int) -> int:
    """Safety sweep: fire up to ``limit`` finished batches whose callbacks are still owed;
    return how many fired.

    Callbacks normally fire in the transaction that finishes a batch; this catches a batch
    finished some other way (a queue deleted with its jobs, say). SKIP LOCKED: a batch being
    fired right now is left to the transaction that holds it, and the count after the lock
    (in _fire_finished) is the authoritative one. Index: batch_callback_owed.
    """
    with transaction.atomic(durable=True):
        unfinished = (
            Job.objects.all_tenants()
            .filter(batch=OuterRef("pk"))
            .exclude(state__in=TERMINAL_STATES)
        )
        batches = list(
            Batch.objects.all_tenants()
            .filter(_OWES_CALLBACKS)
            .exclude(Exists(unfinished))
            .select_related("project")
            .order_by("created_at")
            .select_for_update(no_key=True, skip_locked=True, of=("self",))[:limit]
        )
        return _fire_finished(batches)
