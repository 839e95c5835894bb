"""Batch callbacks: on_complete / on_success enqueued exactly once when a batch finishes."""

import threading

import pytest
from django.db import connections

from jobs import services
from jobs.models import Batch, Job, JobState
from jobs.specs import JobSpec
from queues import services as queue_services
from taskforge import queue_ops
from taskforge.lib.errors import PayloadTooLarge, ValidationFailed
from tests.jobs.test_dag import claim, register
from workers.dispatcher import Dispatcher

pytestmark = pytest.mark.django_db(transaction=True)

CALLBACK = JobSpec(queue="callbacks", job_type="batch.done", payload={"report": "weekly"})
SUCCESS = JobSpec(queue="callbacks", job_type="batch.ok", tags=["cb"], priority=8)


@pytest.fixture
def callbacks_queue(make_queue):
    return make_queue("callbacks")


@pytest.fixture
def worker(project, queue, callbacks_queue):
    # Serves only "default": callback jobs stay pending where the tests can look at them.
    return register(project, capacity=1000)


def submit(project, count=3, **callbacks):
    specs = [JobSpec(queue="default", job_type="t") for _ in range(count)]
    return services.submit_jobs(project, specs, **callbacks)


def callback_jobs(project, job_type="batch.done"):
    return list(Job.objects.for_project(project).filter(job_type=job_type))


def batch_of(submitted):
    return Batch.objects.all_tenants().get(pk=submitted.batch_id)


def finish_all(project, tokens, ids, *, dead=()):
    for job_id in ids:
        if job_id in dead:
            services.fail_job(
                project, job_id, lease_token=tokens[job_id], error="x", retryable=False
            )
        else:
            services.complete_job(project, job_id, lease_token=tokens[job_id])


def test_on_complete_is_enqueued_once_when_the_last_job_finishes(project, worker):
    submitted = submit(project, on_complete=CALLBACK)
    tokens = claim(project, worker)
    finish_all(project, tokens, submitted.ids[:-1])
    assert callback_jobs(project) == []
    assert batch_of(submitted).callback_enqueued_at is None

    finish_all(project, tokens, submitted.ids[-1:])
    (callback,) = callback_jobs(project)
    batch = batch_of(submitted)
    assert batch.callback_enqueued_at is not None
    assert (batch.on_complete_job_id, batch.on_success_job_id) == (callback.pk, None)
    assert callback.state == JobState.PENDING
    assert callback.batch_id is None
    counts = dict.fromkeys(JobState.values, 0) | {"succeeded": 3}
    assert callback.payload == {
        "report": "weekly",
        "batch": {"id": str(batch.pk), "total": 3, "counts": counts, "succeeded": True},
    }


def test_on_success_fires_with_on_complete_when_every_job_succeeded(project, worker):
    submitted = submit(project, on_complete=CALLBACK, on_success=SUCCESS)
    finish_all(project, claim(project, worker), submitted.ids)
    (done,), (ok,) = callback_jobs(project), callback_jobs(project, "batch.ok")
    batch = batch_of(submitted)
    assert (batch.on_complete_job_id, batch.on_success_job_id) == (done.pk, ok.pk)
    assert (ok.priority, ok.tags, ok.payload["batch"]["succeeded"]) == (8, ["cb"], True)


def test_on_success_is_not_fired_when_a_job_died(project, worker):
    submitted = submit(project, on_complete=CALLBACK, on_success=SUCCESS)
    finish_all(project, claim(project, worker), submitted.ids, dead={submitted.ids[1]})
    assert callback_jobs(project, "batch.ok") == []
    (done,) = callback_jobs(project)
    summary = done.payload["batch"]
    assert (summary["succeeded"], summary["counts"]["dead"], summary["counts"]["succeeded"]) == (
        False,
        1,
        2,
    )
    batch = batch_of(submitted)
    assert (batch.on_complete_job_id, batch.on_success_job_id) == (done.pk, None)
    assert batch.callback_enqueued_at is not None


def test_only_on_success_given_and_a_job_died_marks_the_batch_done_without_a_job(project, worker):
    submitted = submit(project, on_success=SUCCESS)
    finish_all(project, claim(project, worker), submitted.ids, dead=set(submitted.ids))
    batch = batch_of(submitted)
    assert batch.callback_enqueued_at is not None
    assert batch.on_success_job_id is None
    assert callback_jobs(project, "batch.ok") == []


def test_a_callback_is_fired_at_submit_when_every_job_is_created_cancelled(project, worker):
    parent, _ = services.submit_job(project, JobSpec(queue="default", job_type="t"))
    services.cancel_job(project, parent.pk)
    specs = [JobSpec(queue="default", job_type="t", depends_on=[parent.pk]) for _ in range(2)]
    submitted = services.submit_jobs(project, specs, on_complete=CALLBACK)
    assert {job.state for job in submitted.jobs} == {JobState.CANCELLED}
    (callback,) = callback_jobs(project)
    assert callback.payload["batch"]["counts"]["cancelled"] == 2
    assert batch_of(submitted).on_complete_job_id == callback.pk


def test_cancelling_the_last_job_fires_the_callback(project, worker):
    submitted = submit(project, count=2, on_complete=CALLBACK)
    services.cancel_job(project, submitted.ids[0])
    assert callback_jobs(project) == []
    services.cancel_job(project, submitted.ids[1])
    assert len(callback_jobs(project)) == 1


def test_a_cascade_that_cancels_the_last_jobs_fires_the_callback(project, worker):
    specs = [
        JobSpec(queue="default", job_type="t", ref="a"),
        JobSpec(queue="default", job_type="t", ref="b", depends_on_refs=["a"]),
    ]
    submitted = services.submit_jobs(project, specs, on_complete=CALLBACK)
    tokens = claim(project, worker)
    finish_all(project, tokens, submitted.ids[:1], dead={submitted.ids[0]})
    (callback,) = callback_jobs(project)
    assert callback.payload["batch"]["counts"] | {} == dict.fromkeys(JobState.values, 0) | {
        "dead": 1,
        "cancelled": 1,
    }


@pytest.mark.parametrize("action", ["cancel", "delete"])
def test_bulk_actions_that_finish_the_batch_fire_the_callback(project, worker, action):
    submitted = submit(project, on_complete=CALLBACK)
    assert services.bulk_action(project, action, ids=submitted.ids) == 3
    (callback,) = callback_jobs(project)
    assert batch_of(submitted).on_complete_job_id == callback.pk


def test_purging_the_last_jobs_fires_the_callback(project, worker, queue):
    submit(project, on_complete=CALLBACK)
    queue_ops.purge_queue(queue)
    (callback,) = callback_jobs(project)
    assert callback.payload["batch"]["succeeded"] is False


def test_an_expired_lease_that_kills_the_last_job_fires_the_callback(project, worker):
    specs = [JobSpec(queue="default", job_type="t", max_attempts=1)]
    submitted = services.submit_jobs(project, specs, on_complete=CALLBACK)
    claim(project, worker)
    Job.objects.for_project(project).filter(pk=submitted.ids[0]).update(
        lease_expires_at="2000-01-01T00:00:00Z"
    )
    assert services.expire_leases(limit=10) == 1
    assert len(callback_jobs(project)) == 1


def test_retrying_a_job_after_the_callbacks_fired_does_not_fire_them_again(project, worker):
    submitted = submit(project, count=2, on_complete=CALLBACK)
    tokens = claim(project, worker)
    finish_all(project, tokens, submitted.ids, dead={submitted.ids[0]})
    assert len(callback_jobs(project)) == 1

    services.retry_job(project, submitted.ids[0])
    tokens = claim(project, worker)
    finish_all(project, tokens, submitted.ids[:1])
    assert len(callback_jobs(project)) == 1
    assert services.fire_owed_batch_callbacks(limit=10) == 0


def test_a_batch_without_callbacks_never_gets_marked(project, worker):
    submitted = submit(project)
    finish_all(project, claim(project, worker), submitted.ids)
    assert batch_of(submitted).callback_enqueued_at is None
    assert services.fire_owed_batch_callbacks(limit=10) == 0


def test_a_callback_whose_queue_is_gone_is_skipped_without_refusing_the_result(
    project, worker, callbacks_queue
):
    submitted = submit(project, count=1, on_complete=CALLBACK)
    queue_ops.delete_queue(callbacks_queue)
    tokens = claim(project, worker)
    finish_all(project, tokens, submitted.ids)
    assert Job.objects.for_project(project).get(pk=submitted.ids[0]).state == JobState.SUCCEEDED
    batch = batch_of(submitted)
    assert batch.callback_enqueued_at is not None
    assert batch.on_complete_job_id is None


# --- the safety sweep --------------------------------------------------------------------------


def test_the_sweep_fires_a_finished_batch_that_still_owes_its_callback(project, worker, make_queue):
    make_queue("doomed")
    specs = [JobSpec(queue="doomed", job_type="t") for _ in range(2)]
    submitted = services.submit_jobs(project, specs, on_complete=CALLBACK)
    # A forced queue delete removes the batch's jobs without going through a job service.
    queue_ops.delete_queue(queue_services.get_queue(project, "doomed"), force=True)
    assert callback_jobs(project) == []

    assert services.fire_owed_batch_callbacks(limit=10) == 1
    (callback,) = callback_jobs(project)
    assert batch_of(submitted).on_complete_job_id == callback.pk
    assert callback.payload["batch"]["total"] == 2
    assert services.fire_owed_batch_callbacks(limit=10) == 0


def test_the_dispatchers_sweep_step_fires_owed_callbacks(project, worker, make_queue):
    make_queue("doomed")
    specs = [JobSpec(queue="doomed", job_type="t") for _ in range(2)]
    services.submit_jobs(project, specs, on_complete=CALLBACK)
    queue_ops.delete_queue(queue_services.get_queue(project, "doomed"), force=True)
    Dispatcher(poll_interval=0.1, batch_size=100).tick()
    assert len(callback_jobs(project)) == 1


def test_the_sweep_leaves_unfinished_batches_alone(project, worker):
    submit(project, on_complete=CALLBACK)
    assert services.fire_owed_batch_callbacks(limit=10) == 0
    assert callback_jobs(project) == []


# --- exactly once under concurrency -----------------------------------------------------------


@pytest.mark.parametrize("round_", range(5))
def test_concurrent_completions_of_a_batchs_last_jobs_fire_its_callback_once(
    project, worker, round_
):
    threads_count = 4
    submitted = submit(project, count=10, on_complete=CALLBACK, on_success=SUCCESS)
    tokens = claim(project, worker)
    finish_all(project, tokens, submitted.ids[:-threads_count])
    barrier = threading.Barrier(threads_count)
    errors: list[BaseException] = []

    def finish(job_id) -> None:
        try:
            barrier.wait(timeout=10)
            services.complete_job(project, job_id, lease_token=tokens[job_id])
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=finish, args=(job_id,)) for job_id in submitted.ids[-threads_count:]
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert not any(thread.is_alive() for thread in threads)
    assert len(callback_jobs(project)) == 1
    assert len(callback_jobs(project, "batch.ok")) == 1
    batch = batch_of(submitted)
    assert batch.on_complete_job_id == callback_jobs(project)[0].pk


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("callback", "field"),
    [
        (JobSpec(queue="nope", job_type="t"), "on_complete.queue"),
        (JobSpec(queue="callbacks", job_type=""), "on_complete.job_type"),
        (JobSpec(queue="callbacks", job_type="t", payload=[1]), "on_complete.payload"),
        (JobSpec(queue="callbacks", job_type="t", payload={"batch": 1}), "on_complete.payload"),
        (JobSpec(queue="callbacks", job_type="t", priority=10), "on_complete.priority"),
        (JobSpec(queue="callbacks", job_type="t", ref="x"), "on_complete.ref"),
    ],
)
def test_an_invalid_callback_is_refused_naming_the_field(project, worker, callback, field):
    with pytest.raises(ValidationFailed) as caught:
        submit(project, on_complete=callback)
    assert caught.value.details["field"] == field
    assert caught.value.message.startswith(field)
    assert Batch.objects.all_tenants().count() == 0
    assert Job.objects.all_tenants().count() == 0


def test_a_callback_payload_too_large_with_the_summary_is_refused(project, worker, settings):
    settings.TASKFORGE_MAX_PAYLOAD_BYTES = 400
    # Small enough on its own, too large once the batch summary is added.
    callback = JobSpec(queue="callbacks", job_type="t", payload={"x": "y" * 200})
    with pytest.raises(PayloadTooLarge) as caught:
        submit(project, on_success=callback)
    assert caught.value.details["field"] == "on_success.payload"
