"""Delayed jobs end to end: a real ``rundispatcher`` promotes them when their run_at comes,
never before, and assigns them in the same pass."""

from __future__ import annotations

import time

import pytest

from jobs import services
from jobs.models import Job, JobState
from jobs.specs import JobSpec
from tests.processes import running
from workers.services import QueueWeight, register_worker

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_dispatcher_process_runs_delayed_jobs_at_their_run_at_not_before(
    project, queue, tmp_path
):
    register_worker(project, name="w1", queues=[QueueWeight(queue.name, 1)], capacity=10)
    now_job, _ = services.submit_job(project, JobSpec(queue=queue.name, job_type="now"))
    delayed = [
        services.submit_job(
            project, JobSpec(queue=queue.name, job_type="later", delay_seconds=delay)
        )[0]
        for delay in (1.5, 3.0)
    ]
    far, _ = services.submit_job(
        project, JobSpec(queue=queue.name, job_type="tomorrow", delay_seconds=86_400)
    )
    assert {job.state for job in delayed} == {JobState.SCHEDULED}
    jobs = Job.objects.all_tenants()
    with running(("rundispatcher", "--poll-interval", "0.2"), log_dir=tmp_path):
        deadline = time.monotonic() + 60
        wanted = [now_job.pk, *(job.pk for job in delayed)]
        while time.monotonic() < deadline:
            if jobs.filter(pk__in=wanted, state=JobState.PROCESSING).count() == 3:
                break
            time.sleep(0.05)
    for job in jobs.filter(pk__in=wanted):
        assert job.state == JobState.PROCESSING
        assert job.started_at >= job.run_at, (job.job_type, job.started_at, job.run_at)
    assert jobs.get(pk=far.pk).state == JobState.SCHEDULED
