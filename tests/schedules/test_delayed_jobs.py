"""Delayed jobs end to end: a real ``rundispatcher`` promotes them when their run_at comes,
never before, and the long-poll of a worker serving their queue claims them."""

from __future__ import annotations

import threading
import time

import pytest

from jobs import services
from jobs.models import Job, JobState
from jobs.specs import JobSpec
from tests.conftest import bearer
from tests.processes import running
from tests.workers.conftest import InThread
from workers.services import QueueWeight, register_worker

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_dispatcher_process_runs_delayed_jobs_at_their_run_at_not_before(
    project, queue, tmp_path, make_api_key
):
    worker, _ = register_worker(
        project, name="w1", queues=[QueueWeight(queue.name, 1)], capacity=10
    )
    _, key = make_api_key(scopes=["workers"])
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
    wanted = [now_job.pk, *(job.pk for job in delayed)]
    stop = threading.Event()

    def long_poll() -> list[str]:
        # The worker's fetch loop, through the whole HTTP stack in this process.
        client, delivered = bearer(key), []
        while not stop.is_set():
            response = client.get(f"/api/v1/workers/{worker.pk}/jobs", {"wait": 1})
            assert response.status_code == 200, response.content
            delivered += [job["id"] for job in response.json()["jobs"]]
        return delivered

    poller = InThread(long_poll)
    poller.start()
    try:
        with running(("rundispatcher", "--poll-interval", "0.2"), log_dir=tmp_path):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if jobs.filter(pk__in=wanted, state=JobState.PROCESSING).count() == 3:
                    break
                time.sleep(0.05)
    finally:
        stop.set()
        delivered = poller.join_result()
    assert sorted(delivered) == sorted(str(pk) for pk in wanted)
    for job in jobs.filter(pk__in=wanted):
        assert job.state == JobState.PROCESSING
        assert job.worker_id == worker.pk
        assert job.started_at >= job.run_at, (job.job_type, job.started_at, job.run_at)
    assert jobs.get(pk=far.pk).state == JobState.SCHEDULED
