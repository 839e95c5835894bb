"""The tasks of the Django Tasks reference suites (the ``tasks.py`` of the test suites of
RealOrangeOne/django-tasks and RealOrangeOne/django-tasks-db on GitHub), plus a few to observe
the worker, for tests/sdk/test_django_conformance.py.

Module level, so a worker imports them by path: in-process worker threads and the
``taskforge-worker`` subprocesses of the sample project (tests/sdk/sample_django) alike.
"""

import time
from pathlib import Path

try:
    from django.tasks import TaskContext, task
except ImportError:
    from django_tasks import TaskContext, task

# What the recording tasks saw, in the order they ran (in-process workers only).
RAN: list[str] = []


@task()
def noop_task(*args, **kwargs):
    return None


@task()
async def noop_task_async(*args, **kwargs):
    return None


@task()
def calculate_meaning_of_life():
    return 42


@task()
def failing_task_value_error():
    raise ValueError("This task failed due to ValueError")


@task()
def failing_task_system_exit():
    raise SystemExit("This task failed due to SystemExit")


@task()
def failing_task_keyboard_interrupt():
    raise KeyboardInterrupt("This task failed due to KeyboardInterrupt")


@task()
def complex_exception():
    raise ValueError(ValueError("This task failed"))


@task()
def complex_return_value():
    return lambda: True  # neither JSON nor anything else a worker can send back


@task()
def exit_task():
    exit(1)


@task()
def sleep_for(seconds):
    time.sleep(seconds)
    return seconds


@task()
def record(name):
    RAN.append(name)
    return name


@task(takes_context=True)
def get_task_id(context):
    return context.task_result.id


@task(takes_context=True)
def context_attempt(context, attempt):
    assert isinstance(context, TaskContext)
    assert context.attempt == attempt
    return attempt


@task(takes_context=True)
def describe_context(context):
    """What a running task knows of itself, as JSON."""
    result = context.task_result
    run_after = result.task.run_after
    return {
        "id": result.id,
        "status": str(result.status),
        "priority": result.task.priority,
        "queue_name": result.task.queue_name,
        "run_after": run_after.isoformat() if run_after else None,
        "backend": result.task.backend,
        "enqueued_at": result.enqueued_at.isoformat() if result.enqueued_at else None,
        "attempt": context.attempt,
        "worker_ids": result.worker_ids,
        "args": result.args,
        "kwargs": result.kwargs,
    }


def not_a_task(marker):
    """A plain function: a job naming it must fail without it running."""
    Path(marker).write_text("ran")


@task(takes_context=True)
def slow_first_attempt(context, seconds):
    """Sleeps on its first attempt only: the attempt a killed worker leaves behind."""
    if context.attempt == 1:
        time.sleep(seconds)
    return context.attempt
