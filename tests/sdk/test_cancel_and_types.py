"""The SDK worker and the server together: jobs cancelled while they run (ctx.cancelled, the
slot kept until the handler returns) and job types declared at registration."""

import logging
import threading
import time

import pytest
from taskforge_client import JobCancelled, Registry, registry

from jobs.models import Job, JobExecution
from tests.sdk.conftest import wait_for
from tests.sdk.test_cli import start_worker
from workers.models import Worker as WorkerRow

DEMO_TYPES = ["demo.echo", "demo.fail_sometimes", "demo.noop", "demo.sleep"]


def job_row(job_id):
    return Job.objects.all_tenants().get(pk=job_id)


def released(job_id):
    """Cancelled, and no longer holding its worker's slot."""
    row = job_row(job_id)
    return row.state == "cancelled" and row.lease_expires_at is None


# --- cancellation ----------------------------------------------------------------------------


def test_a_handler_sees_its_job_cancelled_and_the_slot_stays_busy_until_it_returns(
    sdk_server, api, run_worker
):
    # Concurrency 1: the job submitted right after the cancel must wait for the slot, which
    # the cancelled handler keeps until it returns (here: a while after it noticed).
    worker = sdk_server.worker(concurrency=1, heartbeat_interval=0.05, registry=Registry())
    started, noticed = threading.Event(), threading.Event()
    times: dict[str, float] = {}

    @worker.handler("long.loop")
    def long_loop(ctx, payload):
        started.set()
        deadline = time.monotonic() + 30
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        if ctx.cancelled:
            noticed.set()
            time.sleep(0.3)  # cleaning up: the slot is still taken
        times["returned"] = time.monotonic()
        return "dropped"

    @worker.handler("next.one")
    def next_one(ctx, payload):
        times["next_started"] = time.monotonic()
        return "ran"

    long_job = api.submit("default", "long.loop")
    run_worker(worker)
    assert started.wait(30)

    api.cancel(long_job.id)
    next_job = api.submit("default", "next.one")

    assert noticed.wait(30), "the handler never saw ctx.cancelled"
    done = api.wait(next_job.id, timeout=30, poll=0.05)
    assert (done.state, done.result) == ("succeeded", "ran")
    assert times["next_started"] >= times["returned"]
    # The cancelled job's result was reported, refused, and freed the slot on the server.
    wait_for(lambda: released(long_job.id), message="the cancelled job to be released")
    row = job_row(long_job.id)
    assert (row.result, row.attempts, str(row.worker_id)) == (None, 1, worker.worker_id)


def test_a_handler_ending_with_job_cancelled_is_logged_not_failed_nor_retried(
    sdk_server, api, run_worker, caplog
):
    worker = sdk_server.worker(heartbeat_interval=0.05, registry=Registry())
    started = threading.Event()
    seen: list[BaseException] = []

    @worker.handler("sleeps")
    def sleeps(ctx, payload):
        started.set()
        try:
            for _ in range(300):
                ctx.sleep(0.1)  # wakes at the cancel, and raises JobCancelled
        except JobCancelled as exc:
            seen.append(exc)
            raise
        return "not cancelled"

    job = api.submit("default", "sleeps", max_attempts=5)
    with caplog.at_level(logging.INFO, logger="taskforge_client.worker"):
        run_worker(worker)
        assert started.wait(30)
        api.cancel(job.id)
        wait_for(lambda: seen, message="the handler to see JobCancelled")
        wait_for(lambda: not worker.running, message="the worker to let the job go")
        wait_for(lambda: released(job.id), message="the cancelled job to be released")

    assert len(seen) == 1 and str(seen[0]) == f"job {job.id} was cancelled"
    assert f"job {job.id} cancelled" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    row = job_row(job.id)
    assert (row.state, row.attempts, row.last_error) == ("cancelled", 1, "cancelled by user")
    assert JobExecution.objects.all_tenants().filter(job_id=job.id).count() == 1


def test_ctx_log_raises_job_cancelled_once_the_job_is_cancelled(sdk_server, api, run_worker):
    worker = sdk_server.worker(heartbeat_interval=0.05, registry=Registry())
    started = threading.Event()
    raised: list[str] = []

    @worker.handler("chatty")
    def chatty(ctx, payload):
        started.set()
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                ctx.log("still working")
                time.sleep(0.01)
        except JobCancelled:
            raised.append("log")
            ctx.raise_if_cancelled()  # raises again: the job stays cancelled
        return "not cancelled"

    job = api.submit("default", "chatty")
    run_worker(worker)
    assert started.wait(30)
    api.cancel(job.id)

    wait_for(lambda: raised, message="ctx.log to raise JobCancelled")
    wait_for(lambda: released(job.id), message="the cancelled job to be released")
    assert raised == ["log"]
    assert api.logs(job.id) == []  # the server refuses a cancelled job's lines: none sent


# --- job types -------------------------------------------------------------------------------


def test_two_workers_on_one_queue_each_get_only_their_own_job_types(sdk_server, api, run_worker):
    ran: dict[str, str] = {}
    lock = threading.Lock()

    def record(ctx, payload):
        with lock:
            ran[ctx.job_id] = ctx.worker_name
        time.sleep(0.01)
        return ctx.job_type

    workers = {}
    for name, job_type in (("worker-a", "type.a"), ("worker-b", "type.b")):
        worker = sdk_server.worker(name=name, concurrency=4, registry=Registry())
        worker.handler(job_type)(record)
        workers[name] = run_worker(worker)
    rows = {w.name: w.job_types for w in WorkerRow.objects.all_tenants()}
    assert "type.a" in rows["worker-a"] and "type.b" not in rows["worker-a"]
    assert "type.b" in rows["worker-b"] and "type.a" not in rows["worker-b"]

    specs = [{"queue": "default", "job_type": f"type.{t}"} for _ in range(20) for t in "ab"]
    _, jobs = api.submit_batch(specs)
    wait_for(
        lambda: Job.objects.all_tenants().filter(state="succeeded").count() == 40,
        message="40 jobs to succeed",
    )

    for job in jobs:
        expected = "worker-a" if job.job_type == "type.a" else "worker-b"
        assert ran[job.id] == expected, job.job_type
    # Every job ran once: none went to the other worker first and failed "no handler".
    assert JobExecution.objects.all_tenants().count() == 40


def test_a_job_no_worker_handles_waits_pending(sdk_server, api, run_worker):
    worker = sdk_server.worker(registry=Registry())
    worker.handler("known")(lambda ctx, payload: "ok")
    unknown = api.submit("default", "nobody.handles.this")
    known = api.submit("default", "known", priority=0)  # after the unknown one in claim order
    run_worker(worker)

    assert api.wait(known.id, timeout=30, poll=0.05).state == "succeeded"
    row = job_row(unknown.id)
    assert (row.state, row.attempts) == ("pending", 0)


def test_the_registered_job_types_follow_the_handlers(sdk_server, run_worker):
    typed = sdk_server.worker(name="typed", registry=Registry())
    typed.handler("b.type")(lambda ctx, payload: None)
    typed.handler("a.type")(lambda ctx, payload: None)
    anything = sdk_server.worker(name="anything", registry=Registry(), any_job_type=True)
    anything.handler("a.type")(lambda ctx, payload: None)
    fallback = sdk_server.worker(name="fallback", registry=Registry())
    fallback.registry.fallback(lambda ctx, payload: None)
    for worker in (typed, anything, fallback):
        run_worker(worker)

    rows = {w.name: w.job_types for w in WorkerRow.objects.all_tenants()}
    # Sorted, with the module-level registry's handlers (the demo ones, once imported).
    assert rows["typed"] == sorted({"a.type", "b.type", *registry.job_types()})
    assert rows["anything"] is None
    assert rows["fallback"] is None


@pytest.mark.slow
@pytest.mark.parametrize("flag", [False, True])
def test_taskforge_worker_registers_its_modules_job_types_or_any(sdk_server, tmp_path, flag):
    args = ["--any-job-type"] if flag else []
    process = start_worker(sdk_server, tmp_path, *args, "taskforge_client.demo")
    try:
        wait_for(lambda: WorkerRow.objects.all_tenants().exists(), message="the registration")
        registered = WorkerRow.objects.all_tenants().get().job_types
    finally:
        process.terminate()
        process.wait(30)
    assert registered == (None if flag else DEMO_TYPES)
