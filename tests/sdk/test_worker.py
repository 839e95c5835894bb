"""The Worker in a thread against the real server and a real dispatcher."""

import logging
import threading
from datetime import timedelta

import pytest
import taskforge_client.demo  # noqa: F401 (registers the demo.* handlers)
from django.db.models.functions import Now
from taskforge_client import PermanentError, ValidationError

from jobs.models import ExecutionLog, Job, JobExecution
from tests.sdk.conftest import wait_for
from workers.models import Worker as WorkerRow


def wait_until_terminal(ids, timeout=30.0):
    def finished():
        rows = Job.objects.all_tenants().filter(pk__in=ids)
        return rows.filter(state__in=["succeeded", "dead", "cancelled"]).count() == len(ids)

    wait_for(finished, timeout=timeout, message=f"{len(ids)} job(s) to finish")
    return {str(job.pk): job for job in Job.objects.all_tenants().filter(pk__in=ids)}


def test_a_worker_runs_fifty_demo_jobs_with_their_results_and_logs(sdk_server, api, run_worker):
    specs = []
    for i in range(50):
        kind = ["demo.echo", "demo.sleep", "demo.noop", "demo.fail_sometimes"][i % 4]
        payload = {
            "demo.echo": {"i": i},
            "demo.sleep": {"seconds": 0.01},
            "demo.noop": {},
            "demo.fail_sometimes": {"p": 0},
        }[kind]
        specs.append({"queue": "default", "job_type": kind, "payload": payload})
    _, submitted = api.submit_batch(specs)
    run_worker(sdk_server.worker(concurrency=8))

    done = wait_until_terminal([job.id for job in submitted])

    expected = {"demo.echo": None, "demo.sleep": {"slept": 0.01}, "demo.noop": None,
                "demo.fail_sometimes": {"ok": True}}  # fmt: skip
    for job in submitted:
        row = done[job.id]
        assert row.state == "succeeded", (row.job_type, row.last_error)
        assert row.result == (
            job.payload if job.job_type == "demo.echo" else expected[job.job_type]
        )
        assert row.attempts == 1
    assert JobExecution.objects.all_tenants().filter(status="succeeded").count() == 50
    echo = next(job for job in submitted if job.job_type == "demo.echo")
    assert [(line["level"], line["message"], line["metadata"]) for line in api.logs(echo.id)] == [
        ("info", "echo", {"keys": ["i"]})
    ]
    sleeper = next(job for job in submitted if job.job_type == "demo.sleep")
    assert [line["message"] for line in api.logs(sleeper.id)] == ["sleeping 0.01s"]
    assert ExecutionLog.objects.all_tenants().count() == 13 + 13  # echo and sleep jobs


def test_a_failing_handler_is_retried_until_it_is_dead(sdk_server, api, run_worker, make_queue):
    make_queue("flaky", backoff_base_seconds=0, backoff_jitter="none")
    worker = sdk_server.worker(queues={"flaky": 1})

    @worker.handler("always.fails")
    def fails(ctx, payload):
        raise ValueError(f"boom on attempt {ctx.attempt}")

    job = api.submit("flaky", "always.fails", max_attempts=3)
    run_worker(worker)

    dead = api.wait(job.id, timeout=30, poll=0.05)

    assert dead.state == "dead" and dead.attempts == 3
    assert dead.last_error == "ValueError: boom on attempt 3"
    executions = api.executions(job.id)
    assert [(e["attempt"], e["status"]) for e in executions] == [
        (1, "failed"),
        (2, "failed"),
        (3, "failed"),
    ]
    assert all(e["traceback"].startswith("Traceback (most recent call last):") for e in executions)
    assert executions[2]["traceback"].endswith("ValueError: boom on attempt 3\n")
    errors = [line for line in api.logs(job.id) if line["level"] == "error"]
    assert len(errors) == 3
    assert errors[0]["metadata"] == {"retryable": True}


def test_permanent_error_makes_the_job_dead_at_once(sdk_server, api, run_worker):
    worker = sdk_server.worker()

    @worker.handler("refuses")
    def refuses(ctx, payload):
        raise PermanentError(f"bad input {payload['x']}")

    job = api.submit("default", "refuses", {"x": 1}, max_attempts=5)
    run_worker(worker)

    dead = api.wait(job.id, timeout=30, poll=0.05)

    assert dead.state == "dead" and dead.attempts == 1
    assert dead.last_error == "taskforge_client.handlers.PermanentError: bad input 1"


def test_an_unknown_job_type_is_dead_without_retries(sdk_server, api, run_worker):
    # Only a worker that takes any type gets it (one that declares its types leaves it
    # pending: tests/sdk/test_cancel_and_types.py).
    job = api.submit("default", "nobody.handles.this", max_attempts=5)
    run_worker(sdk_server.worker(any_job_type=True))

    dead = api.wait(job.id, timeout=30, poll=0.05)

    assert dead.state == "dead" and dead.attempts == 1
    assert dead.last_error == "no handler for job type 'nobody.handles.this'"


def test_a_handler_past_its_timeout_fails_retryably_and_frees_its_slot(sdk_server, api, run_worker):
    worker = sdk_server.worker(concurrency=1)
    noticed = threading.Event()

    @worker.handler("slow")
    def slow(ctx, payload):
        ctx.log("before")
        if ctx.sleep(30):  # wakes when the watchdog gives up on us
            noticed.set()
        ctx.log("after the timeout: dropped")
        return "too late"

    slow_job = api.submit("default", "slow", timeout_seconds=1, max_attempts=1)
    quick_job = api.submit("default", "demo.noop", priority=0)
    run_worker(worker)

    dead = api.wait(slow_job.id, timeout=30, poll=0.05)
    assert dead.state == "dead" and dead.last_error == "timed out after 1s"
    # The one slot went to a fresh runner: the next job still runs.
    assert api.wait(quick_job.id, timeout=30, poll=0.05).state == "succeeded"
    assert noticed.wait(5)
    assert [line["message"] for line in api.logs(slow_job.id)] == ["before"]


def test_a_result_that_is_not_json_fails_the_job_for_good(sdk_server, api, run_worker):
    worker = sdk_server.worker()

    @worker.handler("returns.a.set")
    def returns_a_set(ctx, payload):
        return {1, 2}

    job = api.submit("default", "returns.a.set", max_attempts=3)
    run_worker(worker)

    dead = api.wait(job.id, timeout=30, poll=0.05)

    assert dead.state == "dead" and dead.attempts == 1
    assert dead.last_error.startswith("the result is not JSON-serializable")


def test_async_handlers_run_too(sdk_server, api, run_worker):
    worker = sdk_server.worker()

    @worker.handler("async.double")
    async def double(ctx, payload):
        return payload["n"] * 2

    job = api.submit("default", "async.double", {"n": 21})
    run_worker(worker)

    assert api.wait(job.id, timeout=30, poll=0.05).result == 42


def test_stop_lets_running_jobs_finish_then_deregisters(sdk_server, api, run_worker):
    worker = sdk_server.worker(concurrency=2)
    started, release = threading.Event(), threading.Event()

    @worker.handler("blocks")
    def blocks(ctx, payload):
        started.set()
        release.wait(30)
        return "finished"

    job = api.submit("default", "blocks")
    run_worker(worker)
    assert started.wait(30)
    thread = next(t for t in threading.enumerate() if t.name == "sdk-worker-sdk-test-worker")

    worker.stop()
    wait_for(
        lambda: WorkerRow.objects.all_tenants().filter(status="draining").exists(),
        message="the worker to drain",
    )
    assert thread.is_alive() and worker.running == [job.id]
    release.set()
    thread.join(30)

    assert not thread.is_alive()
    assert api.get_job(job.id).result == "finished"
    assert not WorkerRow.objects.all_tenants().exists()


def test_the_worker_drains_when_the_server_says_so(sdk_server, api, run_worker):
    worker = run_worker(sdk_server.worker(heartbeat_interval=0.05))
    thread = next(t for t in threading.enumerate() if t.name == "sdk-worker-sdk-test-worker")

    api.request("POST", f"/workers/{worker.worker_id}/drain")

    thread.join(30)
    assert not thread.is_alive()
    assert not WorkerRow.objects.all_tenants().exists()


def test_a_result_for_a_cancelled_job_is_logged_not_retried(sdk_server, api, run_worker, caplog):
    worker = sdk_server.worker()
    started, release = threading.Event(), threading.Event()

    @worker.handler("cancel.me")
    def cancel_me(ctx, payload):
        started.set()
        release.wait(30)
        return 1

    job = api.submit("default", "cancel.me")
    run_worker(worker)
    assert started.wait(30)
    api.cancel(job.id)

    # INFO: a heartbeat may have told the worker of the cancel first (then the refusal is
    # expected, and logged at INFO rather than WARNING).
    with caplog.at_level(logging.INFO, logger="taskforge_client.worker"):
        release.set()
        wait_for(lambda: not worker.running, message="the result to be reported")

    assert api.get_job(job.id).state == "cancelled"
    assert f"job {job.id}: result refused" in caplog.text


def test_the_worker_heartbeats_the_jobs_it_runs(sdk_server, api, run_worker):
    worker = sdk_server.worker(heartbeat_interval=0.05)
    started, release = threading.Event(), threading.Event()

    @worker.handler("blocks")
    def blocks(ctx, payload):
        started.set()
        release.wait(30)

    job = api.submit("default", "blocks")
    run_worker(worker)
    assert started.wait(30)
    first = Job.objects.all_tenants().get(pk=job.id).lease_expires_at

    wait_for(
        lambda: Job.objects.all_tenants().get(pk=job.id).lease_expires_at > first,
        message="a heartbeat to extend the lease",
    )
    release.set()


def test_a_worker_for_an_unknown_queue_is_refused_at_registration(sdk_server):
    worker = sdk_server.worker(queues={"no-such-queue": 1})

    with pytest.raises(ValidationError) as caught:
        worker.run()

    assert "no-such-queue" in caught.value.message


def test_the_worker_acknowledges_a_delivery_at_once_whatever_its_heartbeat_interval(
    sdk_server, api, run_worker, settings
):
    # The server gives a delivered job 2 s until a heartbeat names it; this worker's regular
    # heartbeat comes every 60 s, so only the heartbeat a fetch triggers can keep the job.
    settings.TASKFORGE_ACK_TIMEOUT_SECONDS = 2
    settings.TASKFORGE_LEASE_SECONDS = 600
    worker = sdk_server.worker(heartbeat_interval=60)
    started, release = threading.Event(), threading.Event()

    @worker.handler("blocks")
    def blocks(ctx, payload):
        started.set()
        release.wait(30)

    job = api.submit("default", "blocks")
    run_worker(worker)
    assert started.wait(30)
    wait_for(
        lambda: (
            Job.objects.all_tenants()
            .filter(pk=job.id, lease_expires_at__gt=Now() + timedelta(seconds=60))
            .exists()
        ),
        timeout=5,
        message="the delivery to be acknowledged with the whole lease",
    )
    release.set()
    assert wait_until_terminal([job.id])[job.id].attempts == 1
