"""The Django Tasks backend: in this process against the live server, and end to end in the
sample project (tests/sdk/sample_django) run as subprocesses with its own settings."""

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from django_tasks import TaskResultStatus, task, task_backends
from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist
from taskforge_client.django import (
    UNKNOWN_EXCEPTION,
    TaskForgeBackend,
    exception_path,
    install,
    to_django_priority,
    to_taskforge_priority,
)

from jobs.models import Job
from tests.sdk.conftest import SDK_TESTS, child_env, wait_for, worker_command


# Module level, so the worker imports them by path (created on the default backend of the
# test settings; the `backend` fixture switches it to TaskForge).
@task
def multiply(a, b):
    return a * b


@task
def divide(a, b):
    return a / b


@pytest.fixture
def backend(settings, sdk_server):
    """TaskForgeBackend as this process's default Tasks backend (the tasks above use it)."""
    settings.TASKS = {
        "default": {
            "BACKEND": "taskforge_client.django.TaskForgeBackend",
            "QUEUES": ["default"],
            "OPTIONS": {"URL": sdk_server.url, "API_KEY": sdk_server.key},
        }
    }
    yield task_backends["default"]
    task_backends["default"].close()


def test_django_priorities_map_onto_zero_to_nine_with_the_default_at_five():
    assert [to_taskforge_priority(p) for p in (-100, -81, -80, -1, 0, 19, 20, 79, 80, 100)] == [
        0, 0, 1, 4, 5, 5, 6, 8, 9, 9,
    ]  # fmt: skip


def test_a_jobs_django_priority_is_its_sub_priority_or_its_buckets_lowest():
    assert [to_django_priority(to_taskforge_priority(p), p) for p in (-100, -3, 0, 42, 100)] == [
        -100, -3, 0, 42, 100,
    ]  # fmt: skip
    # Submitted without the backend (sub_priority 0 outside the job's bucket).
    assert [to_django_priority(p, 0) for p in (0, 4, 6, 9)] == [-100, -20, 20, 80]


def test_error_lines_name_their_exception_class():
    assert exception_path("ValueError: boom") == "builtins.ValueError"
    assert exception_path("myapp.errors.Oops: x: y") == "myapp.errors.Oops"
    assert exception_path("KeyboardInterrupt") == "builtins.KeyboardInterrupt"
    assert exception_path("timed out after 5s") == UNKNOWN_EXCEPTION
    assert exception_path("no handler for job type 'x'") == UNKNOWN_EXCEPTION


def test_the_backend_says_what_it_supports_and_checks_its_options():
    backend = TaskForgeBackend("tf", {"OPTIONS": {}})

    assert backend.supports_defer and backend.supports_get_result and backend.supports_priority
    assert [m.id for m in backend.check()] == ["taskforge_client.E001"]
    configured = TaskForgeBackend("tf", {"OPTIONS": {"url": "http://tf.test", "api_key": "k"}})
    assert configured.check() == []


def test_enqueue_submits_a_job_named_after_the_task(backend):
    when = datetime.now(UTC) + timedelta(hours=1)

    result = multiply.using(priority=60, run_after=when).enqueue(6, b=7)

    assert isinstance(backend, TaskForgeBackend)
    assert result.status == TaskResultStatus.READY and result.backend == "default"
    assert result.enqueued_at is not None
    job = Job.objects.all_tenants().get(pk=result.id)
    assert job.job_type == "tests.sdk.test_django_backend.multiply"
    assert job.payload == {"args": [6], "kwargs": {"b": 7}, "run_after": when.isoformat()}
    assert (job.priority, job.sub_priority) == (8, 60)
    assert job.state == "scheduled" and job.run_at == when
    assert job.queue.name == "default"


def test_the_backend_refuses_a_queue_it_was_not_given(backend):
    with pytest.raises(InvalidTaskError):
        multiply.using(queue_name="elsewhere")


def test_a_worker_runs_enqueued_tasks_and_get_result_reads_them(backend, sdk_server, run_worker):
    good = multiply.enqueue(6, 7)
    bad = divide.enqueue(1, 0)
    Job.objects.all_tenants().filter(pk=bad.id).update(max_attempts=1)
    worker = sdk_server.worker()
    install(worker.registry)
    run_worker(worker)

    def finished():
        good.refresh()
        bad.refresh()
        return good.is_finished and bad.is_finished

    wait_for(finished, message="both tasks to finish")

    done = multiply.get_result(good.id)
    assert done.status == TaskResultStatus.SUCCESSFUL and done.return_value == 42
    assert done.task == multiply and done.args == [6, 7] and done.attempts == 1
    assert done.worker_ids == [worker.worker_id] and good.return_value == 42
    failed = divide.get_result(bad.id)
    assert failed.status == TaskResultStatus.FAILED
    assert [e.exception_class for e in failed.errors] == [ZeroDivisionError]
    assert "division by zero" in failed.errors[0].traceback


def test_get_result_of_an_unknown_id_raises_does_not_exist(backend):
    with pytest.raises(TaskResultDoesNotExist):
        multiply.get_result("0190a000-0000-7000-8000-000000000000")


@pytest.mark.slow
def test_the_sample_project_enqueues_tasks_a_cli_worker_runs(sdk_server, dispatcher, make_queue):
    make_queue("once", max_attempts=1)
    env = child_env(
        sdk_server, DJANGO_SETTINGS_MODULE="sample_django.settings", PYTHONPATH=str(SDK_TESTS)
    )
    worker = subprocess.Popen(
        [*worker_command(), "--poll-wait", "1", "--queues", "default:1,once:1",
         "--name", "sample-worker", "taskforge_client.django_worker"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        sample = subprocess.run(
            [sys.executable, "-m", "sample_django.enqueue"],
            env=env, capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
    finally:
        worker.terminate()
        worker_output, _ = worker.communicate(timeout=30)
    print(sample.stdout, sample.stderr, worker_output, sep="\n---\n")
    assert sample.returncode == 0 and worker.returncode == 0

    enqueued, finished = (json.loads(line) for line in sample.stdout.splitlines())
    assert enqueued["statuses"] == ["READY", "READY", "READY"]
    added, greeted, exploded = finished["results"]
    assert added["status"] == "SUCCESSFUL" and added["return_value"] == 5
    assert greeted["return_value"] == {
        "greeting": "hello ada?", "attempt": 1, "id": greeted["id"]
    }  # fmt: skip
    assert exploded["status"] == "FAILED" and exploded["errors"] == ["builtins.KeyError"]
    assert exploded["exception_classes"] == ["KeyError"]
    assert finished["checks"] == []
    jobs = {job.job_type: job for job in Job.objects.all_tenants()}
    assert jobs["sample_django.tasks.greet"].priority == 7
    assert jobs["sample_django.tasks.add"].payload == {"args": [2, 3], "kwargs": {}}
    assert jobs["sample_django.tasks.explode"].queue.name == "once"
