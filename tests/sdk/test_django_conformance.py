"""The Django Tasks backend against the behaviours of Django's reference suites.

Each test names the reference test(s) it carries over, from the test suites of
RealOrangeOne/django-tasks (its ``test_tasks.py``) and RealOrangeOne/django-tasks-db (its
``tests.py``, whose database worker is the reference for what a worker records). Everything
runs for real: the live server, workers of the SDK (threads here; ``taskforge-worker``
processes in test_django_worker_process.py), tasks from tests/sdk/reference_tasks.py.
docs/django-tasks.md lists what does not apply to a remote backend and where TaskForge
differs on purpose.
"""

import asyncio
import dataclasses
import logging
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django_tasks import TaskResultStatus, task_backends
from django_tasks.exceptions import (
    InvalidTaskBackendError,
    InvalidTaskError,
    TaskResultDoesNotExist,
    TaskResultMismatch,
)
from django_tasks.signals import task_enqueued, task_finished, task_started
from taskforge_client.django import TaskForgeBackend, install

from jobs.models import Job, JobExecution
from tests.sdk import reference_tasks as tasks
from tests.sdk.conftest import wait_for

SUCCESSFUL = TaskResultStatus.SUCCESSFUL
FAILED = TaskResultStatus.FAILED


@pytest.fixture
def backend(settings, sdk_server, make_queue):
    """TaskForge as the default Tasks backend (and as "other"), failing tasks at once as the
    reference worker does (OPTIONS max_attempts 1; the retry test sets its own)."""
    make_queue("idle")
    options = {"URL": sdk_server.url, "API_KEY": sdk_server.key, "MAX_ATTEMPTS": 1}
    settings.TASKS = {
        alias: {
            "BACKEND": "taskforge_client.django.TaskForgeBackend",
            # "ghost" is allowed here but does not exist on the server.
            "QUEUES": ["default", "idle", "ghost"],
            "OPTIONS": options,
        }
        for alias in ("default", "other")
    }
    yield task_backends["default"]
    for alias in ("default", "other"):
        task_backends[alias].close()


@pytest.fixture
def worker(backend, sdk_server, run_worker):
    """A worker running Django tasks from the default queue, one at a time."""
    started = sdk_server.worker(concurrency=1, queues=["default", "idle"], name="django-worker")
    install(started.registry)
    return run_worker(started)


@pytest.fixture
def signals():
    """The task_started / task_finished signals the worker sent: (name, sender, status, id)."""
    seen = []

    def started(sender, task_result, **kwargs):
        seen.append(("started", sender, task_result.status, task_result.id))

    def finished(sender, task_result, **kwargs):
        seen.append(("finished", sender, task_result.status, task_result.id))

    task_started.connect(started)
    task_finished.connect(finished)
    yield seen
    task_started.disconnect(started)
    task_finished.disconnect(finished)


def finish(*results, timeout=30):
    """Refresh the results until each is finished (the worker runs them meanwhile)."""

    def done():
        for result in results:
            result.refresh()
        return all(result.is_finished for result in results)

    wait_for(done, timeout=timeout, message="the tasks to finish")


def job_of(result):
    return Job.objects.all_tenants().get(pk=result.id)


# --- enqueue and read back (no worker) -------------------------------------------------------


@pytest.mark.parametrize("task", [tasks.noop_task, tasks.noop_task_async])
def test_enqueue_returns_a_ready_result_and_signals_it_once(backend, task):
    # test_enqueue_task (both references)
    received = []

    def on_enqueued(sender, task_result, **kwargs):
        received.append((sender, task_result))

    task_enqueued.connect(on_enqueued)
    try:
        result = task.enqueue(1, two=3)
    finally:
        task_enqueued.disconnect(on_enqueued)

    assert result.status == TaskResultStatus.READY and not result.is_finished
    assert (result.started_at, result.last_attempted_at, result.finished_at) == (None,) * 3
    with pytest.raises(ValueError, match="Task has not finished yet"):
        _ = result.return_value
    assert result.task == task and result.args == [1] and result.kwargs == {"two": 3}
    assert result.attempts == 0 and result.errors == [] and result.worker_ids == []
    assert uuid.UUID(result.id) and result.enqueued_at is not None
    assert received == [(TaskForgeBackend, result)]


@pytest.mark.parametrize("task", [tasks.noop_task, tasks.noop_task_async])
def test_aenqueue_and_aget_result(backend, task):
    # test_enqueue_task_async, test_get_result_async
    result = asyncio.run(task.aenqueue())
    assert result.status == TaskResultStatus.READY and result.args == [] and result.kwargs == {}
    assert asyncio.run(backend.aget_result(result.id)) == result
    assert asyncio.run(task.aget_result(result.id)) == result


def test_arguments_are_normalised_and_unsupported_ones_refused_before_sending(backend):
    # test_get_result (args normalised); test_enqueue_with_invalid_argument
    result = backend.enqueue(tasks.noop_task, (), {})
    assert result.args == [] and backend.get_result(result.id).args == []
    with pytest.raises(TypeError, match="Unsupported type"):
        tasks.noop_task.enqueue(datetime.now(UTC))
    assert Job.objects.all_tenants().count() == 1


def test_get_result_gives_back_the_task_as_it_was_enqueued(backend):
    # test_get_result; test_run_after_tz
    when = datetime.now(UTC).replace(microsecond=123456) + timedelta(hours=1)
    task = tasks.noop_task.using(priority=30, queue_name="idle", run_after=when, backend="other")
    result = task.enqueue(1, two=(3, 4))

    got = task_backends["other"].get_result(result.id)

    assert got == result
    assert got.task == task
    assert (got.task.priority, got.task.queue_name, got.task.run_after) == (30, "idle", when)
    assert got.task.backend == got.backend == "other" and got.kwargs == {"two": [3, 4]}
    plain = tasks.noop_task.enqueue()
    assert tasks.noop_task.get_result(plain.id).task.run_after is None
    assert tasks.noop_task.get_result(plain.id) == plain


def test_refresh_of_an_unrun_task_changes_nothing(backend):
    # test_refresh_result (test_tasks)
    result = tasks.noop_task.enqueue()
    before = dataclasses.asdict(result)
    result.refresh()
    assert dataclasses.asdict(result) == before
    asyncio.run(result.arefresh())
    assert dataclasses.asdict(result) == before


@pytest.mark.parametrize(
    "result_id", ["123", "../queues/default", "{id}/executions", "{id}?expand=executions", ""]
)
def test_an_unknown_or_malformed_id_is_task_result_does_not_exist(backend, result_id):
    # test_get_missing_result, test_invalid_uuid (and their async forms)
    real = tasks.noop_task.enqueue()
    result_id = result_id.format(id=real.id) if result_id else str(uuid.uuid4())
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result(result_id)
    with pytest.raises(TaskResultDoesNotExist):
        tasks.noop_task.get_result(result_id)
    with pytest.raises(TaskResultDoesNotExist):
        asyncio.run(backend.aget_result(result_id))


def test_a_result_of_another_task_is_a_mismatch(backend):
    # test_get_incorrect_result (and async)
    result = tasks.noop_task_async.enqueue()
    with pytest.raises(TaskResultMismatch, match="noop_task_async"):
        tasks.noop_task.get_result(result.id)
    with pytest.raises(TaskResultMismatch):
        asyncio.run(tasks.noop_task.aget_result(result.id))


def test_queues_are_checked_by_django_and_by_the_server(backend):
    # test_validate_on_enqueue: a queue outside QUEUES; and one the server lacks
    with pytest.raises(InvalidTaskError, match="unknown_queue"):
        tasks.noop_task.using(queue_name="unknown_queue").enqueue()
    with pytest.raises(InvalidTaskError, match="'ghost' does not exist on the TaskForge server"):
        tasks.noop_task.using(queue_name="ghost").enqueue()
    assert not Job.objects.all_tenants().exists()


def test_priorities_keep_djangos_range_and_exact_value(backend):
    # test_using_priority; the priority range checks
    for bad in (-101, 101, 3.1):
        with pytest.raises(InvalidTaskError, match="priority"):
            tasks.noop_task.using(priority=bad)
    for priority, stored in ((-100, (0, -100)), (0, (5, 0)), (2, (5, 2)), (100, (9, 100))):
        result = tasks.noop_task.using(priority=priority).enqueue()
        job = job_of(result)
        assert (job.priority, job.sub_priority) == stored
        assert backend.get_result(result.id).task.priority == priority


def test_using_makes_new_equal_tasks_and_the_backend_keeps_its_alias_and_options(backend):
    # test_using_creates_new_instance, test_chained_using, test_using_correct_backend
    first = tasks.noop_task.using(priority=10)
    chained = first.using(queue_name="idle")
    assert first == tasks.noop_task.using(priority=10) and first is not tasks.noop_task.using()
    assert (chained.priority, chained.queue_name) == (10, "idle")
    with pytest.raises(InvalidTaskBackendError):
        tasks.noop_task.using(backend="unknown")
    assert backend.alias == "default" and task_backends["other"].alias == "other"
    assert {key.lower() for key in backend.options} == {"url", "api_key", "max_attempts"}


def test_enqueue_logs_exactly_one_django_tasks_record(backend, caplog):
    # test_enqueue_logs
    with caplog.at_level(logging.DEBUG, logger="django_tasks"):
        result = tasks.noop_task.enqueue()
    records = [r for r in caplog.records if r.name.startswith("django_tasks")]
    assert len(records) == 1
    assert "enqueued" in records[0].getMessage() and result.id in records[0].getMessage()


def test_options_are_checked_and_max_attempts_honoured(settings, sdk_server):
    # test_check; the attempts a failing task gets are the backend's to choose
    assert [m.id for m in TaskForgeBackend("tf", {"OPTIONS": {}}).check()] == [
        "taskforge_client.E001"
    ]
    wrong = TaskForgeBackend(
        "tf", {"OPTIONS": {"url": "http://x", "api_key": "k", "max_attempts": 0}}
    )
    assert [m.id for m in wrong.check()] == ["taskforge_client.E002"]
    for options, expected in (({}, 5), ({"max_attempts": 3}, 3)):
        settings.TASKS = sdk_server.tasks_setting(**options)
        try:
            assert task_backends["default"].check() == []
            assert job_of(tasks.noop_task.enqueue()).max_attempts == expected
        finally:
            task_backends["default"].close()


# --- run by a worker --------------------------------------------------------------------------


def test_a_task_run_by_a_worker_reads_back_finished(worker):
    # test_run_enqueued_task, test_refresh_result (and arefresh)
    result = tasks.calculate_meaning_of_life.enqueue()
    other = tasks.calculate_meaning_of_life.enqueue()
    wait_for(lambda: job_of(other).state == "succeeded", message="the task to run")
    assert result.status == TaskResultStatus.READY and result.attempts == 0  # local, stale

    finish(result)
    asyncio.run(other.arefresh())

    for done in (result, other):
        assert done.status == SUCCESSFUL and done.is_finished and done.return_value == 42
        assert done.enqueued_at <= done.started_at <= done.finished_at
        assert done.last_attempted_at == done.started_at
        assert done.attempts == 1 and done.worker_ids == [worker.worker_id]
        assert done.errors == []


def test_a_batch_of_tasks_ends_three_successful_one_failed(worker):
    # test_batch_processes_all_tasks
    results = [tasks.noop_task.enqueue() for _ in range(3)]
    results.append(tasks.failing_task_value_error.enqueue())
    finish(*results)
    assert [r.status for r in results] == [SUCCESSFUL] * 3 + [FAILED]


def test_a_failing_task_records_its_whole_traceback(worker):
    # test_failing_task, test_complex_exception
    failed = tasks.failing_task_value_error.enqueue()
    complex_ = tasks.complex_exception.enqueue()
    finish(failed, complex_)

    assert failed.status == FAILED and failed.attempts == 1
    assert failed.enqueued_at <= failed.started_at <= failed.finished_at
    with pytest.raises(ValueError, match="Task failed"):
        _ = failed.return_value
    (error,) = failed.errors
    assert error.exception_class is ValueError
    assert error.traceback.startswith("Traceback (most recent call last):\n")
    assert error.traceback.endswith("ValueError: This task failed due to ValueError\n")
    assert "reference_tasks.py" in error.traceback  # the frames, not only the last line
    (error,) = complex_.errors
    assert error.exception_class is ValueError
    assert 'ValueError(ValueError("This task failed"))' in error.traceback


def test_a_return_value_json_cannot_hold_fails_the_task_with_type_error(worker, signals):
    # test_complex_return_value, test_verbose_logging (the signal tells the stored outcome)
    result = tasks.complex_return_value.enqueue()
    finish(result)

    assert result.status == FAILED and result._return_value is None
    (error,) = result.errors
    assert error.exception_class is TypeError
    assert "is not JSON serializable" in error.traceback
    assert error.traceback.endswith("\n")
    assert [(n, s, st) for n, s, st, i in signals if i == result.id] == [
        ("started", TaskForgeBackend, TaskResultStatus.RUNNING),
        ("finished", TaskForgeBackend, FAILED),
    ]


@pytest.mark.parametrize(
    ("task", "exception"),
    [
        (tasks.failing_task_system_exit, SystemExit),
        (tasks.failing_task_keyboard_interrupt, KeyboardInterrupt),
        (tasks.exit_task, SystemExit),
    ],
)
def test_system_exit_and_interrupts_in_a_task_fail_it_and_the_worker_goes_on(
    worker, task, exception
):
    # test_system_exit_task, test_keyboard_interrupt_task, test_worker_doesnt_exit
    failed = task.enqueue()
    after = tasks.calculate_meaning_of_life.enqueue()
    finish(failed, after)
    assert failed.status == FAILED and failed.errors[0].exception_class is exception
    assert after.status == SUCCESSFUL


def test_a_job_naming_no_task_fails_at_once_without_running_anything(worker, api, tmp_path):
    # test_invalid_task_path, test_missing_task_path, test_task_import_string
    marker = tmp_path / "ran"
    paths = {
        "missing_attribute": "tests.sdk.reference_tasks.some_test",
        "missing_module": "missing.func",
        "plain_function": "tests.sdk.reference_tasks.not_a_task",
        "not_callable_task": "subprocess.check_output",
    }
    jobs = {
        name: api.submit("default", path, {"args": [str(marker)], "kwargs": {}}, max_attempts=3)
        for name, path in paths.items()
    }
    wait_for(
        lambda: all(api.get_job(job.id).is_terminal for job in jobs.values()),
        message="the jobs to fail",
    )
    for name, job in jobs.items():
        done = api.get_job(job.id, executions=True)
        assert (done.state, done.attempts) == ("dead", 1), name  # not retried
    assert not marker.exists()
    (attempt,) = api.get_job(jobs["missing_attribute"].id, executions=True).executions
    assert "ImportError" in attempt["traceback"] and "some_test" in attempt["traceback"]
    assert attempt["error"].startswith("taskforge_client.django.TaskImportError: ")
    with pytest.raises(TaskResultDoesNotExist):
        task_backends["default"].get_result(jobs["plain_function"].id)


def test_a_context_task_sees_its_own_result(worker):
    # test_takes_context, test_context
    when = datetime.now(UTC) - timedelta(seconds=1)
    own_id = tasks.get_task_id.enqueue()
    attempt = tasks.context_attempt.enqueue(1)
    described = tasks.describe_context.using(priority=40, queue_name="idle", run_after=when)
    context = described.enqueue()
    finish(own_id, attempt, context)

    assert own_id.return_value == own_id.id
    assert attempt.status == SUCCESSFUL and attempt.worker_ids == [worker.worker_id]
    seen = context.return_value
    assert seen == {
        "id": context.id,
        "status": "RUNNING",
        "priority": 40,
        "queue_name": "idle",
        "run_after": when.isoformat(),
        "backend": "default",
        "enqueued_at": context.enqueued_at.isoformat(),
        "attempt": 1,
        "worker_ids": [worker.worker_id],
        "args": [],
        "kwargs": {},
    }


def test_signals_come_in_order_from_the_backend_class(worker, signals):
    # the signal order of the reference worker: started (RUNNING) before finished
    good = tasks.noop_task.enqueue()
    bad = tasks.failing_task_value_error.enqueue()
    finish(good, bad)
    for result, status in ((good, SUCCESSFUL), (bad, FAILED)):
        assert [(n, s, st) for n, s, st, i in signals if i == result.id] == [
            ("started", TaskForgeBackend, TaskResultStatus.RUNNING),
            ("finished", TaskForgeBackend, status),
        ]


def test_tasks_run_by_priority_then_by_when_they_became_due(backend, sdk_server, run_worker):
    # test_run_after_priority. Within one priority the reference runs tasks without run_after
    # last; TaskForge runs them in the order they became due (docs/django-tasks.md).
    tasks.RAN.clear()
    now = datetime.now(UTC)
    soon = now + timedelta(seconds=1)
    enqueued = [
        tasks.record.using(priority=20, run_after=now - timedelta(hours=2)).enqueue("old"),
        tasks.record.using(priority=20, run_after=now - timedelta(hours=10)).enqueue("very_old"),
        tasks.record.using(priority=0, run_after=now + timedelta(hours=10)).enqueue("far_future"),
        tasks.record.using(priority=10, run_after=soon).enqueue("high_soon"),
        tasks.record.using(priority=0, run_after=soon).enqueue("soon"),
        tasks.record.using(priority=10).enqueue("high"),
        tasks.record.using(priority=2).enqueue("low"),
        tasks.record.using(priority=-2).enqueue("lower"),
    ]
    wait_for(lambda: datetime.now(UTC) > soon + timedelta(seconds=0.2), message="run_after")
    started = sdk_server.worker(concurrency=1, name="ordered")
    install(started.registry)
    run_worker(started)
    finish(*[r for r in enqueued if r.args != ["far_future"]])

    assert tasks.RAN == ["very_old", "old", "high", "high_soon", "low", "soon", "lower"]
    far = next(r for r in enqueued if r.args == ["far_future"])
    far.refresh()
    assert far.status == TaskResultStatus.READY


def test_run_after_holds_a_task_until_then(worker):
    # test_run_after
    later = tasks.calculate_meaning_of_life.using(
        run_after=datetime.now(UTC) + timedelta(hours=1)
    ).enqueue()
    now = tasks.calculate_meaning_of_life.enqueue()
    finish(now)
    later.refresh()
    assert later.status == TaskResultStatus.READY and job_of(later).state == "scheduled"
    Job.objects.all_tenants().filter(pk=later.id).update(run_at=datetime.now(UTC))
    finish(later)
    assert later.status == SUCCESSFUL and later.task.run_after > datetime.now(UTC)


def test_a_worker_runs_only_the_queues_it_serves(backend, sdk_server, run_worker, make_queue):
    # test_doesnt_process_different_queue, test_process_all_queues
    elsewhere = tasks.calculate_meaning_of_life.using(queue_name="idle").enqueue()
    mine = tasks.calculate_meaning_of_life.enqueue()
    default_only = sdk_server.worker(queues=["default"], name="default-only")
    install(default_only.registry)
    run_worker(default_only)
    finish(mine)
    elsewhere.refresh()
    assert elsewhere.status == TaskResultStatus.READY

    idle = sdk_server.worker(queues=["idle"], name="idle-worker")
    install(idle.registry)
    run_worker(idle)
    finish(elsewhere)
    assert elsewhere.worker_ids == [idle.worker_id]


def test_a_failing_task_is_retried_up_to_max_attempts_keeping_each_error(
    settings, sdk_server, run_worker, queue
):
    # Not in the references (their worker never retries): each attempt's error is kept.
    queue.backoff_base_seconds = 0.05
    queue.save()
    settings.TASKS = sdk_server.tasks_setting(max_attempts=2)
    try:
        started = sdk_server.worker(name="retrying")
        install(started.registry)
        run_worker(started)
        result = tasks.failing_task_value_error.enqueue()
        finish(result)
        assert result.status == FAILED and result.attempts == 2
        assert [e.exception_class for e in result.errors] == [ValueError, ValueError]
        assert JobExecution.objects.all_tenants().filter(job_id=result.id).count() == 2
    finally:
        task_backends["default"].close()
