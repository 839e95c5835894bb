import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from jobs import services
from jobs.models import (
    ExecutionLog,
    Job,
    JobDependency,
    JobExecution,
    JobState,
    RunOutcome,
    ScheduleRun,
)
from jobs.schedules import services as scheduling
from jobs.specs import JobSpec
from workers import claiming
from workers import services as worker_services

pytestmark = pytest.mark.django_db(transaction=True)


def finished(project, queue_name="default", *, days_ago, state=JobState.SUCCEEDED, **spec):
    job, _ = services.submit_job(project, JobSpec(queue=queue_name, job_type="t", **spec))
    when = timezone.now() - timedelta(days=days_ago)
    Job.objects.all_tenants().filter(pk=job.pk).update(state=state, run_at=when, finished_at=when)
    return job


def prune(*args):
    out = io.StringIO()
    call_command("prunejobs", *args, stdout=out)
    return out.getvalue()


def alive(*jobs):
    return set(
        Job.objects.all_tenants().filter(pk__in=[j.pk for j in jobs]).values_list("pk", flat=True)
    )


def test_it_deletes_finished_jobs_past_their_queues_retention_only(project, queue, make_queue):
    queue.retention_days = 7
    queue.save(update_fields=["retention_days"])
    make_queue("archive", retention_days=30)
    old = finished(project, days_ago=10)
    old_dead = finished(project, days_ago=10, state=JobState.DEAD)
    recent = finished(project, days_ago=1)
    kept_longer = finished(project, "archive", days_ago=10)
    waiting, _ = services.submit_job(project, JobSpec(queue="default", job_type="t"))
    Job.objects.all_tenants().filter(pk=waiting.pk).update(
        run_at=timezone.now() - timedelta(days=10)
    )
    assert "pruned 2 finished job(s)" in prune()
    assert alive(old, old_dead, recent, kept_longer, waiting) == {
        recent.pk,
        kept_longer.pk,
        waiting.pk,
    }


def test_older_than_overrides_every_queues_retention(project, queue, make_queue):
    make_queue("archive", retention_days=30)
    job = finished(project, "archive", days_ago=10)
    prune("--older-than", "5")
    assert not alive(job)


def test_executions_logs_and_edges_go_with_the_job(project, queue):
    worker, _ = worker_services.register_worker(
        project, name="w", queues=[worker_services.QueueWeight("default")], capacity=2
    )
    parent, _ = services.submit_job(project, JobSpec(queue="default", job_type="p"))
    child, _ = services.submit_job(
        project, JobSpec(queue="default", job_type="c", depends_on=[parent.pk])
    )
    [delivered] = claiming.claim(project, worker.pk, limit=2).jobs
    services.append_logs(
        project, parent.pk, lease_token=delivered.lease_token, entries=[{"message": "hi"}]
    )
    services.complete_job(project, parent.pk, lease_token=delivered.lease_token)
    old = timezone.now() - timedelta(days=30)
    Job.objects.all_tenants().filter(pk=parent.pk).update(run_at=old, finished_at=old)
    prune("--older-than", "7")
    assert not alive(parent)
    assert alive(child)  # released (pending) before its parent went: it stays
    assert not JobExecution.objects.all_tenants().filter(job_id=parent.pk).exists()
    assert not ExecutionLog.objects.all_tenants().filter(job_id=parent.pk).exists()
    assert not JobDependency.objects.all_tenants().filter(parent_id=parent.pk).exists()


def test_it_works_in_batches_until_done(project, queue):
    jobs = [finished(project, days_ago=40) for _ in range(5)]
    output = prune("--batch-size", "2")
    assert "pruned 5 finished job(s)" in output
    assert not alive(*jobs)


def test_bad_arguments_are_refused():
    with pytest.raises(CommandError):
        call_command("prunejobs", "--batch-size", "0", stdout=io.StringIO())
    with pytest.raises(CommandError):
        call_command("prunejobs", "--older-than", "-1", stdout=io.StringIO())


def test_it_prunes_schedule_runs_past_their_queues_retention(project, queue, make_queue):
    queue.retention_days = 7
    queue.save(update_fields=["retention_days"])
    schedule = scheduling.create_schedule(
        project, {"name": "n", "cron": "@daily", "queue": queue.name, "job_type": "t"}
    )
    now = timezone.now()
    _old, recent = (
        ScheduleRun.objects.create(
            organization=project.organization,
            schedule=schedule,
            fire_time=now - timedelta(days=days),
            outcome=RunOutcome.ENQUEUED,
            created_at=now - timedelta(days=days),
        )
        for days in (10, 3)
    )
    out = prune()
    assert "pruned 1 schedule run record(s)" in out
    assert set(ScheduleRun.objects.all_tenants().values_list("pk", flat=True)) == {recent.pk}
    prune("--older-than", "1")
    assert not ScheduleRun.objects.all_tenants().exists()
