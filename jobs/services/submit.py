"""Submitting jobs: one job, a batch (all or nothing, with refs between its jobs and
callbacks), and the engine's own producers (schedule runs, batch callbacks).

Validation happens first, in jobs/specs.py; the rows go in with one statement
(jobs/queries.insert_jobs: INSERT for one job, COPY for many).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.db import transaction

from accounts.models import Project
from jobs import queries
from jobs.exceptions import IdempotencyRace
from jobs.models import TERMINAL_STATES, Batch, Job, JobDependency, JobState, ParentFailure
from jobs.services import batches, graph
from jobs.specs import (
    JobSpec,
    check_batch_size,
    check_graph_size,
    check_refs,
    topological_order,
    validate_callback,
    validate_spec,
)
from taskforge.lib.errors import ValidationFailed, field_error
from taskforge.lib.ids import uuid7

_IDEMPOTENCY_RETRIES = 3


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
        rows: dict[UUID, queries.JobRow],
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
                job = Job.from_db("default", queries.JOB_COLUMNS, row)
                job.payload = self._payloads[job_id]
                built[job_id] = job
            missing = [job_id for job_id in self.ids if job_id not in built]
            if missing:  # idempotent repeats: read the existing jobs
                built.update(Job.objects.for_project(self._project).in_bulk(missing))
            self._jobs = [built[job_id] for job_id in self.ids]
        return self._jobs


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
    check_batch_size(len(specs))
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
            **{name: batches.stored_callback(spec) for name, spec in callbacks.items()},
        )
    ids = [
        existing[s.idempotency_key][0] if i in repeats and s.idempotency_key else uuid7()
        for i, s in enumerate(specs)
    ]
    rows = _new_rows(
        project, specs, payloads, queues, parent_states, existing, by_ref, ids, repeats, batch, now
    )
    try:
        queries.insert_jobs(list(rows.values()))
    except queries.DuplicateIdempotencyKey:
        raise IdempotencyRace() from None
    _insert_edges(project, specs, ids, by_ref, repeats)
    # Every job created cancelled (a parent had already failed): the batch is finished now.
    if (
        batch is not None
        and batch.has_callbacks
        and all(row.state in TERMINAL_STATES for row in rows.values())
    ):
        batches.fire_batch_callbacks([batch.pk])
    return Submitted(
        ids=ids,
        created=[i not in repeats for i in range(len(specs))],
        batch_id=batch.pk if batch else _existing_batch_id(project, ids),
        rows={row.id: row for row in rows.values()},
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


def _resolve_queues(
    project: Project,
    specs: Sequence[JobSpec],
    *,
    as_batch: bool,
    callbacks: Mapping[str, JobSpec],
) -> tuple[dict[str, queries.QueueDefaults], datetime]:
    """The specs' queues by name, and the transaction's now(), in one round trip (the batch
    callbacks' queues are checked in the same one)."""
    names = {s.queue for s in specs} | {s.queue for s in callbacks.values()}
    queues, now = queries.submit_queues(project.pk, sorted(names))
    for index, spec in enumerate(specs):
        if spec.queue not in queues:
            raise field_error(
                "queue", f"no queue named {spec.queue!r}", index=index if as_batch else None
            )
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
    found = queries.lock_parents(project.pk, sorted(wanted))
    for index, spec in enumerate(specs):
        for parent in spec.depends_on:
            if parent not in found:
                raise field_error(
                    "depends_on",
                    f"no job {parent} in this project",
                    index=index if as_batch else None,
                )
    return found


def _new_rows(
    project: Project,
    specs: Sequence[JobSpec],
    payloads: list[str],
    queues: dict[str, queries.QueueDefaults],
    parent_states: dict[UUID, str],
    existing: dict[str, tuple[UUID, str]],
    by_ref: dict[str, int],
    ids: list[UUID],
    repeats: set[int],
    batch: Batch | None,
    now: datetime,
) -> dict[int, queries.JobRow]:
    """The new jobs' rows, by spec index.

    ``now`` is the transaction's now(): run_at and the initial state are decided exactly as
    SQL in this transaction would. A job whose parent already ended dead or cancelled is
    created cancelled; rows are planned in topological order so that its in-batch children
    inherit that.
    """
    state_of: dict[int, str] = {}
    for i in repeats:
        key = specs[i].idempotency_key
        state_of[i] = existing[key][1] if key else JobState.PENDING
    rows: dict[int, queries.JobRow] = {}
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
            finished += graph.FAILED_STATES
        else:
            failed = next((s for s in states if s in graph.FAILED_STATES), None)
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
        rows[i] = queries.JobRow(
            id=ids[i],
            organization_id=project.organization_id,
            project_id=project.pk,
            queue_id=queue.id,
            job_type=spec.job_type,
            payload=payloads[i],
            state=state,
            priority=spec.priority,
            run_at=run_at,
            attempts=0,
            max_attempts=spec.max_attempts or queue.max_attempts,
            timeout_seconds=spec.timeout_seconds or queue.timeout_seconds,
            idempotency_key=spec.idempotency_key,
            tags=list(spec.tags),
            result=None,
            last_error=f"cancelled: a parent job ended {failed}" if failed else "",
            worker_id=None,
            lease_token=None,
            lease_expires_at=None,
            delivered_at=None,
            pending_parents=waiting,
            batch_id=batch.pk if batch else None,
            created_at=now,
            started_at=None,
            finished_at=now if failed else None,
        )
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
