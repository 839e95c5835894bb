"""What workers report: results (complete, fail, many at once), log lines, and the
engine's lease expiry, which fails an attempt whose worker went silent; and the attempts a
worker's old process took with it when the worker registers again.

A job an operator cancelled while it ran stays on its worker's slot ("held": state
cancelled, worker_id kept, lease_expires_at set; jobs/services/actions.py). Its result is
refused like any stale one, but it tells that the worker no longer runs the job, so it
releases the hold (lease_expires_at NULL) and the slot counts free again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.db import connection, transaction

from accounts.models import Project
from jobs import limits, queries
from jobs.exceptions import JobBusy, StaleLease
from jobs.models import ExecutionLog, Job, JobExecution, JobState, LogLevel
from jobs.services import batches, graph, lookup
from jobs.specs import encode_payload
from taskforge.lib.errors import ValidationFailed, field_error

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
    traceback: str = ""


def complete_job(project: Project, job_id: UUID, *, lease_token: UUID, result: Any = None) -> Job:
    """Mark a job succeeded and release its children; StaleLease if the token is not current,
    JobBusy if another transaction holds the job's row (nothing changed: try again)."""
    outcomes = report_results(project, [ResultItem(job_id, lease_token, True, result=result)])
    _raise_unless_applied(job_id, outcomes[job_id])
    return lookup.get_job(project, job_id)


def fail_job(
    project: Project,
    job_id: UUID,
    *,
    lease_token: UUID,
    error: str,
    retryable: bool = True,
    traceback: str = "",
) -> Job:
    """Record a failed attempt: retry after backoff, or dead when exhausted or not retryable.
    StaleLease and JobBusy as for complete_job."""
    item = ResultItem(
        job_id, lease_token, False, error=error, retryable=retryable, traceback=traceback
    )
    _raise_unless_applied(job_id, report_results(project, [item])[job_id])
    return lookup.get_job(project, job_id)


def _raise_unless_applied(job_id: UUID, outcome: queries.Outcome | None) -> None:
    if outcome is None:
        raise StaleLease(_stale_message(job_id), details={"job_id": str(job_id)})
    if outcome.state == queries.BUSY:
        raise JobBusy(
            f"job {job_id} is being changed by another transaction; nothing was changed: "
            "send the same request again shortly",
            details={"job_id": str(job_id)},
        )


def _stale_message(job_id: UUID) -> str:
    return (
        f"job {job_id} is not processing under this lease token "
        "(it expired and was re-assigned, was cancelled, or already has a result)"
    )


def report_results(
    project: Project, items: Sequence[ResultItem], *, worker_id: UUID | None = None
) -> dict[UUID, queries.Outcome | None]:
    """Apply many results to the project's jobs in one transaction; return each job's outcome
    (None: a stale lease, or not a job of this project; state BUSY: another transaction held
    the job's row, so the result was not applied and the caller should send it again).

    A stale result of a job held cancelled releases the hold when it carries the token of the
    attempt that ran on the holding worker (and, given ``worker_id``, that worker reports it).

    Nothing waits for a row lock on a job: one locked row must not hold up the other results
    of the batch, nor the worker's slots behind them (complete_jobs.sql)."""
    # Each result is serialised once: checked here, and this text is what gets stored.
    results: dict[UUID, str] = {}
    for item in items:
        if item.succeeded:
            results[item.job_id] = encode_payload(None, item.result, name="result")
        else:
            for name in ("error", "traceback"):
                if "\x00" in getattr(item, name):
                    raise ValidationFailed(
                        f"{name}: must not contain NUL characters", details={"field": name}
                    )
    with transaction.atomic(durable=True):
        outcomes: dict[UUID, queries.Outcome | None] = {item.job_id: None for item in items}
        done = [
            queries.Done(i.job_id, i.lease_token, results[i.job_id]) for i in items if i.succeeded
        ]
        failed = [
            queries.Failed(
                i.job_id,
                i.lease_token,
                i.error[: limits.ERROR_MAX_LENGTH],
                i.retryable,
                i.traceback[: limits.TRACEBACK_MAX_LENGTH],
            )
            for i in items
            if not i.succeeded
        ]
        released: list[UUID] = []
        if done:
            completion = queries.complete_jobs(project.pk, done)
            released = completion.released
            outcomes.update((o.job_id, o) for o in completion.succeeded)
            outcomes.update(
                (job_id, queries.Outcome(job_id, queries.BUSY, None, None))
                for job_id in completion.busy
            )
        if failed:
            outcomes.update((o.job_id, o) for o in queries.fail_jobs(project.pk, failed))
        applied = [o for o in outcomes.values() if o is not None and o.state != queries.BUSY]
        stale = [item for item in items if outcomes[item.job_id] is None]
        if stale:
            freed = _release_held(project, stale, worker_id=worker_id)
            # A long-poll of the worker may wait for that slot: its queues' waiters re-check.
            queries.notify_ready(freed)
        cascade = graph.cascade_failures(applied)
        batches.fire_batch_callbacks(graph.owed_batches(applied, cascade))
        # Released children are new work for the long-polls.
        channels = [queries.JOBS_READY_CHANNEL] if released or cascade.released else []
        # The slots these results freed are the reporting worker's: its long-poll may be
        # waiting for them. A worker fetches as soon as its handlers return, often before
        # their results are applied, and the claim then finds it full; without this it
        # would sleep until its next re-check (seconds) with jobs pending.
        if worker_id is not None and applied:
            channels.append(queries.worker_channel(worker_id))
        queries.notify(channels)
    return outcomes


def _release_held(
    project: Project, stale: Sequence[ResultItem], *, worker_id: UUID | None
) -> list[UUID]:
    """Release the held cancelled jobs among ``stale`` whose result came from the attempt that
    was cancelled (the job's last, on the worker holding it); return their queues.

    The lease token identifies the attempt: its JobExecution row (unique per job and token)
    records the attempt's number and the worker it ran on. Rows another transaction holds
    are skipped, like every write of the completion path; the worker's heartbeats, which
    stop naming the job, release it then."""
    tokens = {item.job_id: item.lease_token for item in stale}
    attempts = (
        JobExecution.objects.for_project(project)
        .filter(job_id__in=list(tokens), lease_token__in=list(tokens.values()))
        .values_list("job_id", "lease_token", "attempt", "worker_id")
    )
    ran = {
        job_id: (attempt, ran_on)
        for job_id, token, attempt, ran_on in attempts
        if tokens[job_id] == token and (worker_id is None or ran_on == worker_id)
    }
    if not ran:
        return []
    held = (
        Job.objects.for_project(project)
        .filter(pk__in=list(ran), state=JobState.CANCELLED, lease_expires_at__isnull=False)
        .select_for_update(skip_locked=True, no_key=True)
        .values_list("pk", "attempts", "worker_id", "queue_id")
    )
    released = {
        pk: queue_id for pk, attempt, holder, queue_id in held if ran[pk] == (attempt, holder)
    }
    if not released:
        return []
    Job.objects.for_project(project).filter(pk__in=list(released)).update(lease_expires_at=None)
    return sorted(set(released.values()))


def _release_worker_held(project: Project, worker_id: UUID, *, keep: Sequence[UUID]) -> int:
    """Release the worker's held cancelled jobs except ``keep``; return how many. Rows another
    transaction holds are skipped: the worker's heartbeats, which do not name them, release
    them."""
    held = (
        Job.objects.for_project(project)
        .filter(worker_id=worker_id, state=JobState.CANCELLED, lease_expires_at__isnull=False)
        .exclude(pk__in=list(keep))
        .select_for_update(skip_locked=True, no_key=True)
        .values_list("pk", flat=True)
    )
    ids = list(held)
    if not ids:
        return 0
    return Job.objects.for_project(project).filter(pk__in=ids).update(lease_expires_at=None)


def expire_leases(*, limit: int) -> int:
    """Fail jobs whose lease ran out as timed-out attempts (retry or dead); return the count."""
    with transaction.atomic(durable=True):
        expired = queries.expired_leases(limit=limit)
        if not expired:
            return 0
        items = [
            queries.Failed(job_id, token, "lease expired: the worker stopped heartbeating", True)
            for job_id, token in expired
        ]
        outcomes = queries.fail_expired_leases_of_every_tenant(items)
        cascade = graph.cascade_failures(outcomes)
        batches.fire_batch_callbacks(graph.owed_batches(outcomes, cascade))
        if cascade.released:
            queries.notify([queries.JOBS_READY_CHANNEL])
        return len(expired)


def fail_worker_jobs_in_transaction(
    project: Project, worker_id: UUID, *, keep: Sequence[UUID], error: str
) -> int:
    """Fail, as attempts lost with the worker's old process, the jobs it holds except ``keep``
    (the ones its new process says it runs); return how many. In the caller's transaction:
    a worker's re-registration, which must free its slots in the same commit.

    Each is a failed attempt like a worker-reported one: retried after the queue's backoff, or
    dead when out of attempts, with the cascade and batch callbacks that follow. A row another
    transaction holds is skipped (lock_worker_jobs.sql) and left to lease expiry. The jobs
    cancelled while they ran there and still held (not in ``keep``) are released: the new
    process does not run them.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("fail_worker_jobs_in_transaction needs the caller's transaction")
    _release_worker_held(project, worker_id, keep=keep)
    held = queries.lock_worker_jobs(project.pk, worker_id, keep=keep)
    if not held:
        return 0
    items = [queries.Failed(job_id, token, error, True) for job_id, token in held]
    outcomes = [o for o in queries.fail_jobs(project.pk, items) if o.state != queries.BUSY]
    cascade = graph.cascade_failures(outcomes)
    batches.fire_batch_callbacks(graph.owed_batches(outcomes, cascade))
    # Released children are new work for the long-polls.
    if cascade.released:
        queries.notify([queries.JOBS_READY_CHANNEL])
    return len(outcomes)


def append_logs(
    project: Project, job_id: UUID, *, lease_token: UUID, entries: Sequence[dict[str, Any]]
) -> int:
    """Store log lines for the job's current execution; StaleLease if the token is not current.

    Current means the job is processing under this very token: the execution row of an
    earlier attempt carries its own (older) token and is found by it too, so matching the
    execution alone would accept the lines of an attempt that lost its lease."""
    rows = []
    for index, entry in enumerate(entries):
        level, message = entry.get("level", LogLevel.INFO), entry.get("message")
        if level not in LogLevel.values:
            raise field_error(
                "level", f"must be one of {LogLevel.values}", index=index, items="entries"
            )
        if not isinstance(message, str) or "\x00" in message:
            raise field_error(
                "message", "must be a string without NUL", index=index, items="entries"
            )
        metadata = entry.get("metadata") or {}
        encode_payload(index, metadata, name="metadata", items="entries")
        rows.append((level, message[:10_000], metadata))
    with transaction.atomic(durable=True):
        execution = (
            JobExecution.objects.for_project(project)
            .filter(
                job_id=job_id,
                lease_token=lease_token,
                job__state=JobState.PROCESSING,
                job__lease_token=lease_token,
            )
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
