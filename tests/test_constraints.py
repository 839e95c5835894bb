"""The database itself refuses bad rows, whatever the Python code above it forgets.

Rows are written with ``objects.create`` / ``bulk_create`` / ``QuerySet.update``, which skip
model validation, so each refusal below comes from a PostgreSQL constraint. Every refusal is
checked against the constraint's name, so a test cannot pass because some other rule fired.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.apps import apps
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from accounts.models import ApiKey, User
from billing.models import Invoice, UsageRecord
from jobs.models import Job, JobDependency, JobExecution, JobState, Schedule
from queues.models import Queue
from workers.models import QueueWorkerAssignment, Worker

pytestmark = pytest.mark.django_db


def refused_by(constraint: str, write: Callable[[], Any]) -> None:
    """Assert that ``write`` is refused by the named database constraint."""
    with pytest.raises(IntegrityError) as excinfo, transaction.atomic():
        write()
    assert excinfo.value.__cause__ is not None
    assert excinfo.value.__cause__.diag.constraint_name == constraint


def make_job(queue: Queue, **fields: Any) -> Job:
    return Job.objects.create(
        organization_id=queue.organization_id,
        project_id=queue.project_id,
        queue=queue,
        job_type="send_email",
        **fields,
    )


def make_worker(queue: Queue, name: str = "w1", **fields: Any) -> Worker:
    return Worker.objects.create(
        organization_id=queue.organization_id, project_id=queue.project_id, name=name, **fields
    )


# --- Priorities -----------------------------------------------------------------------------


def test_job_priority_0_9_refuses_priority_12(queue):
    refused_by("job_priority_0_9", lambda: make_job(queue, priority=12))


def test_job_priority_0_9_refuses_an_update_to_priority_10(queue):
    job = make_job(queue, priority=9)
    refused_by("job_priority_0_9", lambda: Job.objects.filter(pk=job.pk).update(priority=10))


def test_queue_priority_0_9_refuses_priority_10(project):
    refused_by(
        "queue_priority_0_9",
        lambda: Queue.objects.create(
            organization_id=project.organization_id, project=project, name="hot", priority=10
        ),
    )


def test_schedule_priority_0_9_refuses_priority_10(queue):
    refused_by(
        "schedule_priority_0_9",
        lambda: Schedule.objects.create(
            organization_id=queue.organization_id,
            project_id=queue.project_id,
            queue=queue,
            name="nightly",
            cron="0 3 * * *",
            job_type="report",
            priority=10,
        ),
    )


# --- Queue names ----------------------------------------------------------------------------


def test_queue_name_unique_refuses_a_duplicate_name_in_the_same_project(project, make_queue):
    make_queue("emails")
    refused_by("queue_name_unique", lambda: make_queue("emails"))


def test_queue_name_unique_allows_the_same_name_in_another_project(
    project, other_project, make_queue
):
    make_queue("emails")
    other = make_queue("emails", project=other_project)
    assert other.pk is not None


# --- Idempotency keys -----------------------------------------------------------------------


def test_job_idempotency_key_unique_refuses_a_duplicate_key_in_the_same_project(queue):
    make_job(queue, idempotency_key="order-42")
    refused_by("job_idempotency_key_unique", lambda: make_job(queue, idempotency_key="order-42"))


def test_job_idempotency_key_unique_allows_the_same_key_in_another_project(queue, other_queue):
    make_job(queue, idempotency_key="order-42")
    assert make_job(other_queue, idempotency_key="order-42").pk is not None


def test_job_idempotency_key_unique_allows_any_number_of_null_keys(queue):
    jobs = [
        Job(
            organization_id=queue.organization_id,
            project_id=queue.project_id,
            queue=queue,
            job_type="send_email",
            idempotency_key=None,
        )
        for _ in range(5)
    ]
    Job.objects.bulk_create(jobs)
    assert Job.objects.filter(queue=queue, idempotency_key__isnull=True).count() == 5


# --- Job states and leases ------------------------------------------------------------------


def test_job_state_valid_refuses_state_bogus(queue):
    job = make_job(queue)
    refused_by("job_state_valid", lambda: Job.objects.filter(pk=job.pk).update(state="bogus"))


def test_job_processing_has_lease_refuses_processing_without_worker_and_token(queue):
    refused_by("job_processing_has_lease", lambda: make_job(queue, state=JobState.PROCESSING))


def test_job_processing_has_lease_refuses_processing_without_a_lease_token(queue):
    refused_by(
        "job_processing_has_lease",
        lambda: make_job(queue, state=JobState.PROCESSING, worker_id=uuid.uuid4()),
    )


def test_job_processing_has_lease_refuses_processing_without_a_worker(queue):
    refused_by(
        "job_processing_has_lease",
        lambda: make_job(queue, state=JobState.PROCESSING, lease_token=uuid.uuid4()),
    )


def test_job_processing_has_lease_accepts_processing_with_worker_and_token(queue):
    job = make_job(
        queue, state=JobState.PROCESSING, worker_id=uuid.uuid4(), lease_token=uuid.uuid4()
    )
    assert job.pk is not None


def test_job_max_attempts_1_refuses_max_attempts_0(queue):
    refused_by("job_max_attempts_1", lambda: make_job(queue, max_attempts=0))


# --- Workers --------------------------------------------------------------------------------


def test_worker_capacity_1_refuses_capacity_0(queue):
    worker = make_worker(queue)
    refused_by("worker_capacity_1", lambda: Worker.objects.filter(pk=worker.pk).update(capacity=0))


def test_worker_name_unique_refuses_a_duplicate_name_in_the_same_project(queue):
    make_worker(queue, name="box-1")
    refused_by("worker_name_unique", lambda: make_worker(queue, name="box-1"))


def test_worker_name_unique_allows_the_same_name_in_another_project(queue, other_queue):
    make_worker(queue, name="box-1")
    assert make_worker(other_queue, name="box-1").pk is not None


def test_assignment_weight_1_refuses_weight_0(queue):
    worker = make_worker(queue)
    refused_by(
        "assignment_weight_1",
        lambda: QueueWorkerAssignment.objects.create(
            organization_id=queue.organization_id, queue=queue, worker=worker, weight=0
        ),
    )


# --- Dependencies and executions ------------------------------------------------------------


def test_jobdependency_no_self_refuses_a_job_depending_on_itself(queue):
    job = make_job(queue)
    refused_by(
        "jobdependency_no_self",
        lambda: JobDependency.objects.create(
            organization_id=queue.organization_id, parent=job, child=job
        ),
    )


def test_jobdependency_unique_refuses_a_duplicate_edge(queue):
    parent, child = make_job(queue), make_job(queue)
    edge = {"organization_id": queue.organization_id, "parent": parent, "child": child}
    JobDependency.objects.create(**edge)
    refused_by("jobdependency_unique", lambda: JobDependency.objects.create(**edge))


def make_execution(job: Job, attempt: int, **fields: Any) -> JobExecution:
    return JobExecution.objects.create(
        organization_id=job.organization_id,
        project_id=job.project_id,
        job=job,
        attempt=attempt,
        **fields,
    )


def test_jobexecution_allows_a_repeated_attempt_number_after_a_manual_retry(queue):
    # jobs/models.py dropped jobexecution_attempt_unique: a manual retry resets the job's
    # attempt count, so (job, attempt) repeats; each claim's lease_token tells executions apart.
    job = make_job(queue)
    make_execution(job, 1, lease_token=uuid.uuid4())
    make_execution(job, 1, lease_token=uuid.uuid4())
    assert job.executions.filter(attempt=1).count() == 2


def test_jobexecution_status_valid_refuses_status_bogus(queue):
    refused_by(
        "jobexecution_status_valid", lambda: make_execution(make_job(queue), 1, status="bogus")
    )


# --- Accounts -------------------------------------------------------------------------------


def test_apikey_scopes_known_refuses_an_unknown_scope(project):
    _, prefix = ApiKey.generate()
    refused_by(
        "apikey_scopes_known",
        lambda: ApiKey.objects.create(
            organization_id=project.organization_id,
            project=project,
            name="ci",
            prefix=prefix,
            key_hash="0" * 64,
            scopes=["jobs:read", "root"],
        ),
    )


def test_user_role_valid_refuses_role_bogus(org):
    user = User.objects.create_user("ann@acme.example", "pw-irrelevant-here", organization=org)
    refused_by("user_role_valid", lambda: User.objects.filter(pk=user.pk).update(role="bogus"))


# --- Billing --------------------------------------------------------------------------------


def test_usage_unique_day_refuses_a_second_row_for_the_same_org_project_metric_and_day(project):
    row = {
        "organization_id": project.organization_id,
        "project": project,
        "metric": "jobs",
        "day": datetime.date(2026, 1, 15),
    }
    UsageRecord.objects.create(quantity=3, **row)
    refused_by("usage_unique_day", lambda: UsageRecord.objects.create(quantity=4, **row))


def test_usage_unique_day_allows_another_day_or_metric(project):
    row = {"organization_id": project.organization_id, "project": project}
    UsageRecord.objects.create(metric="jobs", day=datetime.date(2026, 1, 15), **row)
    UsageRecord.objects.create(metric="jobs", day=datetime.date(2026, 1, 16), **row)
    UsageRecord.objects.create(metric="executions", day=datetime.date(2026, 1, 15), **row)
    assert UsageRecord.objects.for_project(project).count() == 3


def test_invoice_period_order_refuses_a_period_ending_before_it_starts(org):
    refused_by(
        "invoice_period_order",
        lambda: Invoice.objects.create(
            organization=org,
            number="INV-0001",
            period_start=datetime.date(2026, 2, 1),
            period_end=datetime.date(2026, 1, 31),
        ),
    )


# --- Indexes --------------------------------------------------------------------------------


def pg_indexes() -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'")
        return dict(cursor.fetchall())


def declared_indexes(app_label: str) -> set[str]:
    return {
        index.name
        for model in apps.get_app_config(app_label).get_models()
        for index in model._meta.indexes
    }


@pytest.mark.parametrize("app_label", ["jobs", "workers"])
def test_every_declared_index_exists_in_postgresql(app_label):
    declared = declared_indexes(app_label)
    assert declared  # the app declares indexes, so the check below checks something
    assert declared <= set(pg_indexes()), declared - set(pg_indexes())


def test_the_expected_job_and_worker_indexes_are_declared():
    expected = {
        "job_claim_pending",
        "job_due_scheduled",
        "job_lease_processing",
        "job_worker_processing",
        "job_state_run_at_prio",
        "job_queue_state",
        "job_project_created",
        "job_batch_state",
        "execution_worker",
        "executionlog_job",
        "schedule_due",
        "worker_status_heartbeat",
        "worker_project_status",
    }
    assert expected <= declared_indexes("jobs") | declared_indexes("workers")


def test_job_claim_pending_is_a_partial_index_in_the_claim_order():
    indexdef = pg_indexes()["job_claim_pending"]
    columns = indexdef[indexdef.index("(") + 1 : indexdef.index(")")]
    assert [c.strip() for c in columns.split(",")] == [
        "queue_id", "priority DESC", "sub_priority DESC", "run_at", "id",
    ]  # fmt: skip
    assert "WHERE" in indexdef
    assert "pending" in indexdef.split("WHERE", 1)[1]


# --- Identifiers ----------------------------------------------------------------------------


def test_job_ids_are_uuid7_and_increase_with_creation_time(queue):
    jobs = [make_job(queue) for _ in range(3)]
    assert [job.id.version for job in jobs] == [7, 7, 7]
    assert jobs[0].id < jobs[1].id < jobs[2].id
    # The first 48 bits are the creation time in milliseconds.
    for job in jobs:
        stamp = datetime.datetime.fromtimestamp((job.id.int >> 80) / 1000, tz=datetime.UTC)
        assert abs(stamp - job.created_at) < datetime.timedelta(seconds=5)
    assert abs(jobs[0].created_at - timezone.now()) < datetime.timedelta(minutes=1)
