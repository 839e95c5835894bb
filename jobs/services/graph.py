"""The DAG rules the other services share: a parent that failed cancels or releases its
children by each edge's policy, and a retried job waits for unfinished parents again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from uuid import UUID

from django.db.models import Q, QuerySet

from accounts.models import Project
from jobs import queries
from jobs.models import JobDependency, JobState, ParentFailure
from jobs.services import batches

FAILED_STATES = (JobState.DEAD, JobState.CANCELLED)


def cascade_failures(outcomes: Sequence[queries.Outcome]) -> queries.Cascade:
    roots = [
        (o.job_id, f"cancelled: ancestor job {o.job_id} ended {o.state}")
        for o in outcomes
        if o.state in FAILED_STATES
    ]
    return queries.cancel_descendants(roots)


def owed_batches(outcomes: Sequence[queries.Outcome], cascade: queries.Cascade) -> set[UUID]:
    """Batches that may have just finished and still owe callbacks."""
    owed = {o.batch_id for o in outcomes if o.callback_owed and o.batch_id is not None}
    return owed | cascade.owed_batches


def settle(roots: Sequence[tuple[UUID, str]], batch_ids: Iterable[UUID | None]) -> None:
    """After jobs were cancelled or deleted by an operator: settle their descendants, wake the
    long-polls for released ones, and fire the callbacks of batches this finished."""
    cascade = queries.cancel_descendants(roots)
    if cascade.released:
        queries.notify([queries.JOBS_READY_CHANNEL])
    batches.fire_batch_callbacks({*batch_ids, *cascade.owed_batches})


def waited_for_edges(project: Project, retried: Sequence[UUID]) -> QuerySet[JobDependency]:
    """Edges whose parent a retried child must wait for: parents that have not succeeded,
    except failed ones behind a run-policy edge (finished for that child), unless that
    parent is being retried too."""
    finished_by_policy = (
        Q(on_parent_failure=ParentFailure.RUN)
        & Q(parent__state__in=FAILED_STATES)
        & ~Q(parent__in=list(retried))
    )
    return (
        JobDependency.objects.for_org(project.organization)
        .exclude(parent__state=JobState.SUCCEEDED)
        .exclude(finished_by_policy)
    )
