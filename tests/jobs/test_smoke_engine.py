import pytest

from jobs import services
from jobs.models import JobExecution, JobState
from jobs.specs import JobSpec
from workers import claiming
from workers import services as worker_services
from workers.dispatcher import Dispatcher


@pytest.mark.django_db(transaction=True)
def test_it_runs_a_job_through_its_life(project, queue):
    worker, _ = worker_services.register_worker(
        project, name="w1", queues=[worker_services.QueueWeight("default")], capacity=4
    )
    job, created = services.submit_job(
        project, JobSpec(queue="default", job_type="t", payload={"a": 1})
    )
    assert created and job.state == JobState.PENDING
    # A tick hands out nothing: the job waits for a worker that asks.
    Dispatcher(poll_interval=0.1, batch_size=100).tick()
    job.refresh_from_db()
    assert (job.state, job.worker_id) == (JobState.PENDING, None)
    fetched = claiming.claim(project, worker.pk, limit=10).jobs
    assert [f.id for f in fetched] == [job.pk]
    job.refresh_from_db()
    assert (job.state, job.worker_id, job.attempts) == (JobState.PROCESSING, worker.pk, 1)
    done = services.complete_job(
        project, job.pk, lease_token=fetched[0].lease_token, result={"ok": True}
    )
    assert done.state == JobState.SUCCEEDED and done.result == {"ok": True}
    assert JobExecution.objects.get(job=job).status == "succeeded"
