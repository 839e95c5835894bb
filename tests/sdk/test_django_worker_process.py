"""Django tasks run by ``taskforge-worker`` processes (the sample project's settings): what
the reference suites' worker-process tests check (RealOrangeOne/django-tasks-db, the
DatabaseWorkerProcessTestCase of its ``tests.py``), against the live server.

The tasks are tests/sdk/reference_tasks.py, enqueued here through the backend; the children
import them by the same path.
"""

import os
import signal
import subprocess
import time
import uuid

import pytest
from django_tasks import TaskResultStatus, task_backends

from jobs.models import Job, JobExecution
from tests.processes import REPO_ROOT
from tests.sdk import reference_tasks as tasks
from tests.sdk.conftest import SDK_TESTS, child_env, wait_for, worker_command
from workers.models import Worker

pytestmark = pytest.mark.slow


@pytest.fixture
def backend(settings, sdk_server):
    settings.TASKS = sdk_server.tasks_setting(max_attempts=1)
    yield task_backends["default"]
    task_backends["default"].close()


@pytest.fixture
def start_worker(sdk_server, dispatcher):
    """``start_worker(name)``: a taskforge-worker process running Django tasks."""
    env = child_env(
        sdk_server,
        DJANGO_SETTINGS_MODULE="sample_django.settings",
        PYTHONPATH=os.pathsep.join([str(SDK_TESTS), str(REPO_ROOT)]),
    )
    started = []

    def start(name: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [*worker_command(), "--poll-wait", "1", "--concurrency", "2", "--name", name,
             "taskforge_client.django_worker"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def state(result) -> str:
    return Job.objects.all_tenants().get(pk=result.id).state


def exits(process, within: float) -> int:
    try:
        return process.wait(timeout=within)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the worker did not exit within {within}s") from None


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_lets_the_running_task_finish_then_the_worker_exits_0(
    backend, start_worker, signum
):
    # test_interrupt_signals, test_run_subprocess
    result = tasks.sleep_for.enqueue(1.5)
    worker = start_worker("interrupted")
    wait_for(lambda: state(result) == "processing", message="the task to start")
    worker.send_signal(signum)

    assert exits(worker, within=15) == 0
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 1.5


def test_an_idle_worker_exits_0_at_once_on_a_signal(backend, start_worker):
    # test_interrupt_no_tasks
    worker = start_worker("idle")
    wait_for(
        lambda: Worker.objects.all_tenants().filter(name="idle").exists(), message="registration"
    )
    worker.terminate()
    assert exits(worker, within=5) == 0


def test_a_second_ctrl_c_exits_at_once_and_the_lease_brings_the_task_back(backend, start_worker):
    # test_repeat_ctrl_c. The reference records the task FAILED (SystemExit) and exits 0;
    # TaskForge leaves the attempt to its lease: the job runs again elsewhere.
    result = tasks.sleep_for.enqueue(60)
    worker = start_worker("impatient")
    wait_for(lambda: state(result) == "processing", message="the task to start")
    worker.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert worker.poll() is None and state(result) == "processing"  # draining

    worker.send_signal(signal.SIGINT)

    assert exits(worker, within=5) == 1
    job = Job.objects.all_tenants().get(pk=result.id)
    assert job.state == "processing" and job.lease_expires_at is not None
    result.refresh()
    assert result.status == TaskResultStatus.RUNNING and len(result.worker_ids) == 1


def test_the_worker_logs_each_tasks_start_and_end(backend, start_worker):
    # test_verbose_logging: django_tasks' own log lines, through taskforge-worker's logging
    good = tasks.noop_task.enqueue()
    bad = tasks.failing_task_value_error.enqueue()
    worker = start_worker("verbose")
    wait_for(lambda: state(good) == "succeeded" and state(bad) == "dead", message="both tasks")
    worker.terminate()
    output, _ = worker.communicate(timeout=30)
    path = "tests.sdk.reference_tasks"
    for line in (
        f"Task id={good.id} path={path}.noop_task state=RUNNING",
        f"Task id={good.id} path={path}.noop_task state=SUCCESSFUL",
        f"Task id={bad.id} path={path}.failing_task_value_error state=FAILED",
    ):
        assert line in output, output
    assert "ValueError: This task failed due to ValueError" in output


def test_a_killed_worker_s_task_runs_again_once_its_lease_ends(settings, sdk_server, start_worker):
    # test_kill: the reference leaves the task RUNNING for ever; a lease brings it back.
    settings.TASKFORGE_LEASE_SECONDS = 2
    settings.TASKS = sdk_server.tasks_setting(max_attempts=2)
    try:
        result = tasks.slow_first_attempt.enqueue(60)
        first = start_worker("doomed")
        wait_for(lambda: state(result) == "processing", message="the first attempt")
        first.kill()
        assert exits(first, within=5) == -signal.SIGKILL
        second = start_worker("successor")
        wait_for(lambda: state(result) == "succeeded", timeout=60, message="the second attempt")
        second.terminate()
        result.refresh()
        assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 2
        assert result.attempts == 2 and len(result.errors) == 1
        names = dict(Worker.objects.all_tenants().values_list("pk", "name"))
        assert names.get(uuid.UUID(result.worker_ids[1])) == "successor"
    finally:
        task_backends["default"].close()


def test_several_workers_run_each_task_once(backend, start_worker):
    # test_multiple_workers
    results = [tasks.sleep_for.enqueue(0.1) for _ in range(10)]
    workers = [start_worker(f"w{i}") for i in range(3)]

    wait_for(lambda: all(state(r) == "succeeded" for r in results), timeout=60, message="all tasks")
    for worker in workers:
        worker.terminate()
        assert exits(worker, within=15) == 0
    for result in results:
        result.refresh()
        assert result.status == TaskResultStatus.SUCCESSFUL and result.attempts == 1
    ids = [str(r.id) for r in results]
    assert JobExecution.objects.all_tenants().filter(job_id__in=ids).count() == 10
