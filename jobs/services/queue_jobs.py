"""A queue's jobs in bulk, for the operator actions on a queue (taskforge/queue_ops.py): purge
its waiting jobs; count, take and delete all of them before the queue itself goes.

Set-based and batched whatever the queue's size: the jobs are first taken (locked, their ids
copied into a temporary table by one statement), then settled and deleted BATCH_SIZE at a
time by statements that read that table in id order (jobs/sql/take_*.sql, settle_purged_jobs,
delete_taken_jobs). No id list is ever built in Python.

Unlike the other services, these run in the caller's transaction: the caller adds the locks
and the audit record that make them one operator action.
"""

from __future__ import annotations

from django.db.models import Count, Exists, OuterRef, Q, QuerySet

from jobs import queries
from jobs.models import Job, JobDependency, JobState
from jobs.services import batches
from queues.models import Queue

# Jobs per statement: big enough that the round trips do not matter, small enough that one
# statement's locks, undo and foreign-key checks stay modest.
BATCH_SIZE = 10_000
# "Work not yet done": deleting a queue with such jobs needs force.
UNFINISHED_STATES = (JobState.BLOCKED, JobState.SCHEDULED, JobState.PENDING, JobState.PROCESSING)
# Pending rows and the others are in different partial indexes: a filter on unfinished jobs
# names pending on its own, so that each arm of the OR can use its index (a BitmapOr).
_UNFINISHED_NOT_PENDING = [s for s in UNFINISHED_STATES if s != JobState.PENDING]


def purge_waiting_jobs(queue: Queue, *, batch_size: int = BATCH_SIZE) -> int:
    """Delete the queue's pending and scheduled jobs; return how many.

    Their blocked descendants, in any queue, are cancelled (``cancelled: parent job <id> was
    purged``) or released by each edge's policy, and batches left finished fire their
    callbacks. The jobs purged are those waiting when the purge takes them: later submissions
    and the children it releases stay. Rows locked by someone else at that moment (a claim in
    progress, say) are skipped.
    """
    if not queries.take_waiting_jobs(queue.pk):
        return 0
    deleted, released, after = 0, False, queries.FIRST_KEY
    while True:
        settled = queries.settle_purged_jobs(after=after, limit=batch_size)
        batch = queries.delete_taken_jobs(after=after, limit=batch_size)
        if batch.last_id is None:
            break
        deleted += batch.deleted
        released = released or settled.released > 0
        # After the batch's delete: its jobs no longer count as unfinished. A batch with jobs
        # still to purge is not finished yet; the statement deleting its last one reports it.
        batches.fire_batch_callbacks(settled.owed_batches | batch.owed_batches)
        after = batch.last_id
    if released:
        queries.notify([queries.JOBS_READY_CHANNEL])
    return deleted


def unfinished_counts(queue: Queue) -> dict[str, int]:
    """The queue's unfinished jobs by state (states without jobs are left out); no locks."""
    rows = (
        _of_queue(queue)
        .filter(Q(state=JobState.PENDING) | Q(state__in=_UNFINISHED_NOT_PENDING))
        .order_by()
        .values("state")
        .annotate(n=Count("*"))
        .values_list("state", "n")
    )
    return dict(rows)


def take_queue_jobs(queue: Queue) -> dict[str, int]:
    """Lock every job of the queue for delete_taken_jobs(); return how many in each state.

    The caller holds the queue's row lock (queues.services.lock_queue), so no job can join the
    queue before commit; once taken, none can change state or gain an execution, log line or
    edge either: counts and checks made after this are exact until commit.
    """
    return queries.take_queue_jobs(queue.pk)


def jobs_with_dependents_elsewhere(queue: Queue) -> int:
    """How many unfinished jobs of the queue have a child job in another queue.

    Deleting such a parent would leave that child blocked forever: nothing would ever finish,
    cancel or release it.
    """
    elsewhere = (
        JobDependency.objects.for_org(queue.project.organization)
        .filter(parent=OuterRef("pk"))
        .exclude(child__queue=queue)
    )
    return (
        _of_queue(queue)
        .filter(Q(state=JobState.PENDING) | Q(state__in=_UNFINISHED_NOT_PENDING))
        .filter(Exists(elsewhere))
        .count()
    )


def delete_taken_jobs(*, batch_size: int = BATCH_SIZE) -> int:
    """Delete the jobs take_queue_jobs() took, with their executions, log lines and edges;
    return how many. Batches whose callbacks this leaves owed are fired by the dispatcher's
    safety sweep, as before (fire_owed_batch_callbacks)."""
    deleted, after = 0, queries.FIRST_KEY
    while (batch := queries.delete_taken_jobs(after=after, limit=batch_size)).last_id is not None:
        deleted += batch.deleted
        after = batch.last_id
    return deleted


def _of_queue(queue: Queue) -> QuerySet[Job]:
    return Job.objects.for_project(queue.project).filter(queue=queue)
