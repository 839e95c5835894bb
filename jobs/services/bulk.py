"""Bulk actions: cancel, retry or delete many jobs, chosen by ids or by a filter (a JobQuery,
the same filters as the job list: jobs/services/listing.py)."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from django.db import transaction
from django.db.models import Case, Count, F, OuterRef, Q, QuerySet, Subquery, Value, When
from django.db.models.functions import Coalesce, Now

from accounts.audit import SYSTEM, Actor, record_audit
from accounts.models import Project
from jobs import queries
from jobs.models import TERMINAL_STATES, ExecutionStatus, Job, JobExecution, JobState
from jobs.services import batches, graph, listing
from jobs.services.actions import cancelled_lease
from jobs.services.listing import JobQuery
from taskforge.lib.errors import ValidationFailed

# --- Bulk actions and batches --------------------------------------------------------------

BULK_LIMIT = 10_000


def _bulk_targets(
    project: Project, ids: Sequence[UUID] | None, query: JobQuery | None
) -> QuerySet[Job]:
    if ids is not None:
        return Job.objects.for_project(project).filter(pk__in=list(ids))
    assert query is not None
    return listing.filtered(project, query)


def bulk_action(
    project: Project,
    action: str,
    *,
    ids: Sequence[UUID] | None = None,
    query: JobQuery | None = None,
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
    if (ids is None) == (query is None):
        raise ValidationFailed("ids: give exactly one of ids or filter", details={"field": "ids"})
    if query is not None and query.is_empty:
        # An empty filter would act on every job of the project: make that deliberate.
        raise ValidationFailed(
            "filter: give at least one field to match", details={"field": "filter"}
        )
    with transaction.atomic(durable=True):
        targets = _bulk_targets(project, ids, query)
        applicable = {
            "cancel": ~Q(state__in=TERMINAL_STATES),
            "retry": Q(state__in=graph.FAILED_STATES),
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
    # A running job keeps worker_id and is held for a lease (jobs/services/actions.py).
    jobs.update(
        state=JobState.CANCELLED, last_error=reason, finished_at=Now(), lease_token=None,
        lease_expires_at=cancelled_lease(),
    )  # fmt: skip
    graph.settle([(pk, f"cancelled: ancestor job {pk} was cancelled") for pk in ids], batch_ids)


def _bulk_retry(project: Project, ids: list[UUID]) -> None:
    jobs = Job.objects.for_project(project).filter(pk__in=ids)
    # Before any state changes: the run-policy children of the retried jobs wait again, and
    # the retried jobs' own counts treat retried parents as unfinished.
    queries.reblock_run_children(ids)
    waiting = (
        graph.waited_for_edges(project, ids)
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
    queries.notify([queries.JOBS_READY_CHANNEL])


def _bulk_delete(project: Project, ids: list[UUID]) -> None:
    jobs = Job.objects.for_project(project).filter(pk__in=ids)
    # Only unfinished jobs are roots: a finished one already released or settled its
    # children when it succeeded or failed, and must not count a second time.
    unfinished = list(
        jobs.exclude(state__in=TERMINAL_STATES).order_by().values_list("pk", flat=True)
    )
    batch_ids = set(jobs.exclude(batch=None).order_by().values_list("batch_id", flat=True))
    roots = [(pk, f"cancelled: parent job {pk} was deleted") for pk in unfinished]
    cascade = queries.cancel_descendants(roots)
    if cascade.released:
        queries.notify([queries.JOBS_READY_CHANNEL])
    jobs.delete()
    # After the delete: the deleted jobs no longer count as unfinished.
    batches.fire_batch_callbacks(batch_ids | cascade.owed_batches)
