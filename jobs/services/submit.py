"""Submitting jobs: one job, a batch (all or nothing, with refs between its jobs and
callbacks), and the engine's own producers (schedule runs, batch callbacks).

Validation happens first, in jobs/specs.py. A job without parents (most single submits) then
takes one statement in autocommit (queries.submit_job: resolve the queue, insert, NOTIFY, or
find the job of a repeated idempotency key): one round trip. Everything else (parents, refs,
batches) takes one transaction: one read of the queues and the jobs already holding the
idempotency keys (queries.submit_queues), then the rows (jobs/queries.insert_jobs: INSERT for
one job, COPY for many) and one NOTIFY per queue that got pending jobs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
from queues.models import Queue
from taskforge.lib.errors import ValidationFailed, field_error
from taskforge.lib.ids import uuid7

_IDEMPOTENCY_RETRIES = 3


class Submitted:
    """The result of a submission, in input order.

    ``created[i]`` is False for an idempotent repeat. ``jobs`` builds model instances on
    first use: for a large batch that costs more than the insert, and not every caller needs
    them. ``new_rows[i]`` has every column of the i-th job when it is new (None for a repeat),
    ``payloads[i]`` its payload as given; ``queue_names`` the names of the queues the submission
    named, by id; ``repeated()`` reads the jobs that idempotent repeats return.
    """

    def __init__(
        self,
        *,
        ids: list[UUID],
        created: list[bool],
        batch_id: UUID | None,
        new_rows: list[queries.JobRow | None],
        payloads: list[Any],
        project: Project,
        queue_names: dict[UUID, str] | None = None,
    ) -> None:
        self.ids = ids
        self.created = created
        self.batch_id = batch_id
        self.new_rows = new_rows
        self.payloads = payloads
        self.queue_names = queue_names or {}
        self._project = project
        self._jobs: list[Job] | None = None

    @property
    def rows(self) -> dict[UUID, queries.JobRow]:
        """The new jobs' rows by id."""
        return {row.id: row for row in self.new_rows if row is not None}

    @property
    def jobs(self) -> list[Job]:
        if self._jobs is None:
            built: dict[UUID, Job] = {}
            for row, payload in zip(self.new_rows, self.payloads, strict=True):
                if row is not None:
                    job = Job.from_db("default", queries.JOB_COLUMNS, row)
                    job.payload = payload
                    built[row.id] = job
            missing = [job_id for job_id in self.ids if job_id not in built]
            if missing:  # idempotent repeats: read the existing jobs
                built.update(Job.objects.for_project(self._project).in_bulk(missing))
            self._jobs = [built[job_id] for job_id in self.ids]
        return self._jobs

    def repeated(self) -> dict[UUID, tuple[Job, str]]:
        """The existing jobs that idempotent repeats return, with their queues' names (such a
        job may sit in a queue the submission did not name)."""
        wanted = [
            job_id for job_id, row in zip(self.ids, self.new_rows, strict=True) if row is None
        ]
        if not wanted:
            return {}
        found = Job.objects.for_project(self._project).in_bulk(wanted)
        names = dict(self.queue_names)
        other = {job.queue_id for job in found.values()} - set(names)
        if other:
            names.update(
                Queue.objects.for_project(self._project)
                .filter(pk__in=other)
                .values_list("pk", "name")
            )
        return {job_id: (job, names[job.queue_id]) for job_id, job in found.items()}


@dataclass(frozen=True, slots=True)
class SubmittedJob:
    """One job as a submission without parents left it (submit_one): what the API shows.

    ``created`` is False for an idempotent repeat, which returns the existing job whole (its
    payload, state and queue, which may differ from the request's).
    """

    created: bool
    id: UUID
    queue: str
    job_type: str
    payload: Any
    state: str
    priority: int
    sub_priority: int
    run_at: datetime
    attempts: int
    max_attempts: int
    timeout_seconds: int
    idempotency_key: str | None
    tags: list[str]
    result: Any
    last_error: str
    worker_id: UUID | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    batch_id: UUID | None


def submit_job(project: Project, spec: JobSpec) -> tuple[Job, bool]:
    """Submit one job; return it and whether it was created (False: idempotent repeat)."""
    if without_parents(spec):
        one = submit_one(project, spec)
        job = Job.objects.for_project(project).get(pk=one.id)
        if one.created:
            job.payload = spec.payload  # as given (the stored jsonb may order keys otherwise)
        return job, one.created
    submitted = _submit_with_retry(project, [spec], as_batch=False)
    return submitted.jobs[0], submitted.created[0]


def without_parents(spec: JobSpec) -> bool:
    """Whether ``spec`` names no parent: submit_one takes it."""
    return not spec.depends_on and not spec.depends_on_refs and spec.ref is None


def submit_one(project: Project, spec: JobSpec) -> SubmittedJob:
    """Submit one job without parents (``without_parents``) in one statement: in autocommit
    when the caller has no transaction open, so one round trip (queries.submit_job)."""
    if not without_parents(spec):
        raise ValueError("submit_one takes a job without parents; use submit_job")
    payload = validate_spec(None, spec)
    job_id = uuid7()
    for _ in range(_IDEMPOTENCY_RETRIES + 1):
        row = queries.submit_job(
            id=job_id,
            organization_id=project.organization_id,
            project_id=project.pk,
            queue=spec.queue,
            job_type=spec.job_type,
            payload=payload,
            priority=spec.priority,
            sub_priority=spec.sub_priority,
            max_attempts=spec.max_attempts,
            timeout_seconds=spec.timeout_seconds,
            idempotency_key=spec.idempotency_key,
            tags=spec.tags,
            run_at=spec.run_at,
            delay_seconds=spec.delay_seconds,
        )
        if row is not None:
            break
    else:
        raise IdempotencyRace()
    if row.outcome == "no_queue":
        raise field_error("queue", f"no queue named {spec.queue!r}")
    if row.outcome == "created":
        return SubmittedJob(
            created=True,
            id=job_id,
            queue=spec.queue,
            job_type=spec.job_type,
            payload=spec.payload,
            state=row.state,  # type: ignore[arg-type]
            priority=spec.priority,
            sub_priority=spec.sub_priority,
            run_at=row.run_at,  # type: ignore[arg-type]
            attempts=0,
            max_attempts=row.max_attempts,  # type: ignore[arg-type]
            timeout_seconds=row.timeout_seconds,  # type: ignore[arg-type]
            idempotency_key=spec.idempotency_key,
            tags=list(spec.tags),
            result=None,
            last_error="",
            worker_id=None,
            created_at=row.created_at,  # type: ignore[arg-type]
            started_at=None,
            finished_at=None,
            batch_id=None,
        )
    # 'existing': every column is set (the statement's NULLs are for 'created' only).
    return SubmittedJob(
        created=False,
        id=row.id,  # type: ignore[arg-type]
        queue=row.queue_name,  # type: ignore[arg-type]
        job_type=row.job_type,  # type: ignore[arg-type]
        payload=json.loads(row.payload),  # type: ignore[arg-type]
        state=row.state,  # type: ignore[arg-type]
        priority=row.priority,  # type: ignore[arg-type]
        sub_priority=row.sub_priority,  # type: ignore[arg-type]
        run_at=row.run_at,  # type: ignore[arg-type]
        attempts=row.attempts,  # type: ignore[arg-type]
        max_attempts=row.max_attempts,  # type: ignore[arg-type]
        timeout_seconds=row.timeout_seconds,  # type: ignore[arg-type]
        idempotency_key=row.idempotency_key,
        tags=list(row.tags or ()),
        result=None if row.result is None else json.loads(row.result),
        last_error=row.last_error,  # type: ignore[arg-type]
        worker_id=row.worker_id,
        created_at=row.created_at,  # type: ignore[arg-type]
        started_at=row.started_at,
        finished_at=row.finished_at,
        batch_id=row.batch_id,
    )


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
    # The first try does not look the idempotency keys up: almost every key is new, and the
    # unique index checks each one as the rows go in anyway (a lookup of 1,000 keys cost 4 ms
    # of the database's time). A key used before makes the insert fail; the next try looks
    # the keys up, and so do the retries of a race with a concurrent submit.
    look_up_keys = False
    races = 0
    while True:
        try:
            with transaction.atomic(durable=True):
                return _submit(
                    project,
                    specs,
                    payloads,
                    by_ref,
                    as_batch=as_batch,
                    callbacks=callbacks,
                    look_up_keys=look_up_keys,
                )
        except IdempotencyRace:
            if not look_up_keys:
                look_up_keys = True
                continue
            races += 1
            if races > _IDEMPOTENCY_RETRIES:
                raise


def _submit(
    project: Project,
    specs: Sequence[JobSpec],
    payloads: list[str],
    by_ref: dict[str, int],
    *,
    as_batch: bool,
    callbacks: Mapping[str, JobSpec] | None = None,
    look_up_keys: bool = True,
) -> Submitted:
    callbacks = callbacks or {}
    queues, now, existing = _look_up(
        project, specs, as_batch=as_batch, callbacks=callbacks, look_up_keys=look_up_keys
    )
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
        batch_id=batch.pk if batch else _existing_batch_id(project, ids) if as_batch else None,
        new_rows=[rows.get(i) for i in range(len(specs))],
        payloads=[spec.payload for spec in specs],
        project=project,
        queue_names={defaults.id: name for name, defaults in queues.items()},
    )


def _existing_batch_id(project: Project, ids: list[UUID]) -> UUID | None:
    """The batch of an earlier submission that this one repeats entirely, if any."""
    return (
        Job.objects.for_project(project)
        .filter(pk__in=ids, batch__isnull=False)
        .values_list("batch_id", flat=True)
        .first()
    )


def _look_up(
    project: Project,
    specs: Sequence[JobSpec],
    *,
    as_batch: bool,
    callbacks: Mapping[str, JobSpec],
    look_up_keys: bool,
) -> tuple[dict[str, queries.QueueDefaults], datetime, dict[str, tuple[UUID, str]]]:
    """The specs' queues by name (the batch callbacks' are checked too), the transaction's
    now(), and (``look_up_keys``) the jobs already submitted with the specs' idempotency keys,
    {key: (id, state)}: one round trip. Errors in the order they were always checked: unknown
    queues first, then a key named twice."""
    names = {s.queue for s in specs} | {s.queue for s in callbacks.values()}
    keys = [s.idempotency_key for s in specs if s.idempotency_key is not None]
    queues, now, existing = queries.submit_queues(
        project.pk, sorted(names), keys if look_up_keys else ()
    )
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
    if len(keys) != len(set(keys)):
        raise ValidationFailed(
            "jobs: the same idempotency_key appears twice in one batch",
            details={"field": "idempotency_key"},
        )
    return queues, now, existing


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
    organization_id, project_id = project.organization_id, project.pk
    batch_id = batch.pk if batch else None
    # Without refs every order is topological: skip the walk.
    order = topological_order(specs, by_ref) if by_ref else range(len(specs))
    for i in order:
        if i in repeats:
            continue
        spec, queue = specs[i], queues[specs[i].queue]
        failed = None
        waiting = 0
        if spec.depends_on or spec.depends_on_refs:
            states = [parent_states[p] for p in spec.depends_on]
            states += [state_of[by_ref[ref]] for ref in spec.depends_on_refs]
            # With on_parent_failure=run a failed parent counts as finished: not waited for.
            finished: tuple[str, ...] = (JobState.SUCCEEDED,)
            if spec.on_parent_failure == ParentFailure.RUN:
                finished += graph.FAILED_STATES
            else:
                failed = next((s for s in states if s in graph.FAILED_STATES), None)
            waiting = sum(1 for s in states if s not in finished)
        # The same datetime object for every job due now: COPY formats it once.
        run_at = spec.run_at or (
            now + timedelta(seconds=spec.delay_seconds) if spec.delay_seconds else now
        )
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
            organization_id=organization_id,
            project_id=project_id,
            queue_id=queue.id,
            job_type=spec.job_type,
            payload=payloads[i],
            state=state,
            priority=spec.priority,
            sub_priority=spec.sub_priority,
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
            batch_id=batch_id,
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
