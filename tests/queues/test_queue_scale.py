"""Purge and force-delete at scale: set-based batches, no id list in Python, no orphan rows.

The jobs are inserted by one INSERT … SELECT generate_series each (ids from md5, so the
statements' id-ordered batches interleave them), and the actions run through
taskforge.queue_ops. Memory is measured with tracemalloc around the action: the services that
loaded every id and deleted through the ORM's collector peaked at about 120 MB for the
50,000-job purge and 30 MB for the 20,500-job force delete; the batched statements keep the
ids in the database and stay near 100 KB.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, transaction

from accounts.models import AuditLog
from jobs.models import (
    Batch,
    ExecutionLog,
    Job,
    JobDependency,
    JobExecution,
    JobState,
    Schedule,
)
from jobs.services import batches, queue_jobs
from jobs.specs import JobSpec
from queues.models import Queue
from taskforge import queue_ops
from workers import services as worker_services
from workers.models import QueueWorkerAssignment, Worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

# Far above what the batched statements allocate (tens of KB), far below what holding one
# Python object per job would take at these sizes.
MEMORY_BOUND = 2 * 1024 * 1024


def insert_jobs(
    queue: Queue,
    count: int,
    *,
    prefix: str,
    state: str,
    batch_every: int = 0,
    batch: Batch | None = None,
) -> None:
    """``count`` jobs in ``queue``, id md5(prefix-g), in ``state`` (an SQL expression of g);
    every ``batch_every``-th one in ``batch``."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO jobs_job (id, organization_id, project_id, queue_id, job_type, payload,
                state, priority, run_at, attempts, max_attempts, timeout_seconds, tags,
                last_error, worker_id, lease_token, lease_expires_at, pending_parents,
                batch_id, created_at)
            SELECT md5(%(prefix)s || g)::uuid, %(org)s, %(project)s, %(queue)s, 't', '{{}}',
                s.state, 5, now(), 1, 5, 300, '{{}}', '',
                CASE WHEN s.state = 'processing' THEN gen_random_uuid() END,
                CASE WHEN s.state = 'processing' THEN gen_random_uuid() END,
                CASE WHEN s.state = 'processing' THEN now() + interval '1 hour' END,
                0,
                CASE WHEN %(every)s > 0 AND g %% %(every)s = 0 THEN %(batch)s::uuid END,
                now()
            FROM generate_series(1, %(count)s) AS g, LATERAL (SELECT {state} AS state) AS s
            """,
            {
                "prefix": f"{prefix}-",
                "org": queue.organization_id,
                "project": queue.project_id,
                "queue": queue.pk,
                "count": count,
                "every": batch_every,
                "batch": batch.pk if batch else None,
            },
        )


def add_history(prefix: str, count: int) -> None:
    """One execution and one log line for each of the jobs md5(prefix-1..count), and an edge
    from each odd one to the next even one."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH executions AS (
                INSERT INTO jobs_jobexecution (organization_id, project_id, job_id, attempt,
                    lease_token, status, error, started_at, finished_at)
                SELECT j.organization_id, j.project_id, j.id, 1, gen_random_uuid(), 'failed',
                    'x', now(), now()
                FROM jobs_job AS j
                WHERE j.id IN (SELECT md5(%(prefix)s || g)::uuid
                               FROM generate_series(1, %(count)s) AS g)
                RETURNING id, job_id, organization_id
            )
            INSERT INTO jobs_executionlog (organization_id, job_id, execution_id, level,
                message, metadata, created_at)
            SELECT organization_id, job_id, id, 'info', 'line', '{}', now() FROM executions
            """,
            {"prefix": f"{prefix}-", "count": count},
        )
        cursor.execute(
            """
            INSERT INTO jobs_jobdependency (organization_id, parent_id, child_id,
                on_parent_failure)
            SELECT p.organization_id, p.id, md5(%(prefix)s || (2 * g))::uuid, 'cancel'
            FROM generate_series(1, %(count)s / 2) AS g
            JOIN jobs_job AS p ON p.id = md5(%(prefix)s || (2 * g - 1))::uuid
            """,
            {"prefix": f"{prefix}-", "count": count},
        )


def peak_memory(action: Callable[[], Any]) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        result = action()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def blocked(queue: Queue, *, parents: int) -> Job:
    return Job.objects.create(
        organization_id=queue.organization_id,
        project_id=queue.project_id,
        queue=queue,
        job_type="child",
        state=JobState.BLOCKED,
        pending_parents=parents,
    )


def edge(parent: Job, child: Job, policy: str = "cancel") -> None:
    JobDependency.objects.create(
        organization_id=parent.organization_id,
        parent=parent,
        child=child,
        on_parent_failure=policy,
    )


def test_purging_a_large_queue_deletes_its_waiting_jobs_in_batches_without_loading_them(
    org, project, queue, make_queue
):
    make_queue("callbacks")
    make_queue("later")
    owing = Batch.objects.create(
        organization=org,
        project=project,
        total=500,
        on_complete=batches.stored_callback(JobSpec(queue="callbacks", job_type="cb")),
    )
    # 45,000 pending, 5,000 scheduled (purged); 1,000 processing and 1,000 succeeded (kept).
    insert_jobs(
        queue,
        50_000,
        prefix="w",
        state="CASE WHEN mod(g, 10) = 0 THEN 'scheduled' ELSE 'pending' END",
        batch_every=100,
        batch=owing,
    )
    insert_jobs(queue, 1_000, prefix="p", state="'processing'")
    insert_jobs(queue, 1_000, prefix="s", state="'succeeded'")
    waiting = Job.objects.for_project(project).filter(queue=queue, state=JobState.PENDING)
    first, last = waiting.order_by("pk").first(), waiting.order_by("-pk").first()
    assert first is not None and last is not None
    # In another queue: a cancel child of the first purged job, and a run child waiting for
    # the first and the last (purged by different statements).
    later = Queue.objects.for_project(project).get(name="later")
    cancel_child = blocked(later, parents=1)
    run_child = blocked(later, parents=2)
    edge(first, cancel_child)
    edge(first, run_child, "run")
    edge(last, run_child, "run")

    deleted, peak = peak_memory(lambda: queue_ops.purge_queue(queue))

    assert deleted == 50_000
    assert peak < MEMORY_BOUND, f"purge peaked at {peak} bytes"
    left = Job.objects.for_project(project).filter(queue=queue)
    assert left.filter(state__in=[JobState.PENDING, JobState.SCHEDULED]).count() == 0
    assert left.filter(state=JobState.PROCESSING).count() == 1_000
    assert left.filter(state=JobState.SUCCEEDED).count() == 1_000
    cancel_child.refresh_from_db()
    assert cancel_child.state == JobState.CANCELLED
    assert cancel_child.last_error == f"cancelled: parent job {first.pk} was purged"
    run_child.refresh_from_db()
    assert (run_child.state, run_child.pending_parents) == (JobState.PENDING, 0)
    assert not JobDependency.objects.for_org(org).filter(parent__in=[first, last]).exists()
    # The batch's jobs were spread over every statement; its callback fired once, at the end.
    owing.refresh_from_db()
    assert owing.callback_enqueued_at is not None
    [callback] = Job.objects.for_project(project).filter(job_type="cb")
    assert owing.on_complete_job_id == callback.pk
    [row] = AuditLog.objects.for_org(org).filter(action="queue.purged")
    assert row.metadata == {"deleted": 50_000}


def test_a_purge_in_many_batches_keeps_the_children_it_releases_into_the_same_queue(project, queue):
    insert_jobs(queue, 25, prefix="small", state="'pending'")
    waiting = Job.objects.for_project(project).filter(queue=queue).order_by("pk")
    first, last = waiting.first(), waiting.last()
    assert first is not None and last is not None
    # Blocked in the purged queue: released or cancelled by the first batch, they are pending
    # or cancelled when the later batches run, and must not be purged by them.
    run_child, cancel_child = blocked(queue, parents=2), blocked(queue, parents=1)
    edge(first, run_child, "run")
    edge(last, run_child, "run")
    edge(first, cancel_child)

    with transaction.atomic():
        assert queue_jobs.purge_waiting_jobs(queue, batch_size=4) == 25

    left = dict(Job.objects.for_project(project).filter(queue=queue).values_list("pk", "state"))
    assert left == {run_child.pk: JobState.PENDING, cancel_child.pk: JobState.CANCELLED}


def orphans() -> dict[str, int]:
    """Rows that point at a job that no longer exists (the foreign keys are deferred: only
    the commit would notice)."""
    missing = "NOT EXISTS (SELECT 1 FROM jobs_job AS j WHERE j.id = {})"
    counts = {}
    with connection.cursor() as cursor:
        for table, column in [
            ("jobs_jobexecution", "job_id"),
            ("jobs_executionlog", "job_id"),
            ("jobs_jobdependency", "parent_id"),
            ("jobs_jobdependency", "child_id"),
        ]:
            where = missing.format(f"t.{column}")
            cursor.execute(f"SELECT count(*) FROM {table} AS t WHERE {where}")
            counts[f"{table}.{column}"] = cursor.fetchone()[0]
    return counts


def test_force_deleting_a_queue_with_many_jobs_leaves_no_orphan_rows(org, project, make_queue):
    doomed, kept = make_queue("doomed"), make_queue("kept")
    every_state = "(ARRAY['succeeded','dead','cancelled','pending','scheduled','blocked'])"
    insert_jobs(doomed, 20_000, prefix="d", state=f"{every_state}[mod(g, 6) + 1]")
    insert_jobs(doomed, 500, prefix="dp", state="'processing'")
    add_history("d", 20_000)
    insert_jobs(kept, 2_000, prefix="k", state="'succeeded'")
    add_history("k", 2_000)
    # A finished parent in the doomed queue may have a child elsewhere: its edge goes, the
    # child stays.
    parent = Job.objects.for_project(project).filter(queue=doomed, state=JobState.SUCCEEDED)[0]
    child = Job.objects.for_project(project).filter(queue=kept)[0]
    edge(parent, child)
    Schedule.objects.create(
        organization=org, project=project, queue=doomed, name="s", cron="0 3 * * *", job_type="t"
    )
    serves = [worker_services.QueueWeight("doomed"), worker_services.QueueWeight("kept")]
    worker, _ = worker_services.register_worker(project, name="w", queues=serves)

    deleted, peak = peak_memory(lambda: queue_ops.delete_queue(doomed, force=True))

    assert deleted == 20_500
    assert peak < MEMORY_BOUND, f"force delete peaked at {peak} bytes"
    assert not Queue.objects.for_project(project).filter(pk=doomed.pk).exists()
    assert not Job.objects.for_project(project).filter(queue_id=doomed.pk).exists()
    left_behind = orphans()
    assert left_behind == dict.fromkeys(left_behind, 0)
    assert Job.objects.for_project(project).filter(queue=kept).count() == 2_000
    assert JobExecution.objects.for_project(project).filter(job__queue=kept).count() == 2_000
    assert ExecutionLog.objects.for_org(org).filter(job__queue=kept).count() == 2_000
    assert JobDependency.objects.for_org(org).filter(child__queue=kept).count() == 1_000
    assert not Schedule.objects.for_project(project).exists()
    assert list(
        QueueWorkerAssignment.objects.for_org(org).values_list("queue__name", flat=True)
    ) == ["kept"]
    assert Worker.objects.for_project(project).filter(pk=worker.pk).exists()
    [row] = AuditLog.objects.for_org(org).filter(action="queue.deleted")
    assert row.metadata == {"queue_id": str(doomed.pk), "force": True, "jobs_deleted": 20_500}
