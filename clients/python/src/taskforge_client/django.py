"""A Django Tasks backend that runs tasks as TaskForge jobs, and the worker side that runs them.

Works with Django 6's ``django.tasks`` and, on Django 5.2, the ``django-tasks`` backport
(``pip install "taskforge-client[django]"``). Settings::

    TASKS = {
        "default": {
            "BACKEND": "taskforge_client.django.TaskForgeBackend",
            # TaskForge queues tasks may use (they must exist in the project).
            "QUEUES": ["default", "emails"],
            "OPTIONS": {"url": "https://taskforge.example.com", "api_key": "tf_…"},
        }
    }

``task.enqueue(*args, **kwargs)`` submits a job whose ``job_type`` is the task's import path
(``myapp.tasks.send_welcome``), on the queue ``queue_name``, with payload
``{"args": [...], "kwargs": {...}}`` (and ``"run_after"`` when set). Django's priority
(-100..100) becomes TaskForge's 0..9 in buckets of 20 (Django's default 0 is TaskForge's
default 5) and, exactly, the job's ``sub_priority``, which orders jobs within a bucket: tasks
run in Django's priority order. ``run_after`` becomes ``run_at``. ``get_result(id)`` reads the
job and its attempts back in one request. docs/django-tasks.md has the whole mapping.

To run the tasks, start a worker with Django configured::

    DJANGO_SETTINGS_MODULE=mysite.settings taskforge-worker taskforge_client.django_worker

which installs :func:`run_task` as the fallback handler: every job type without a handler of
its own is imported as a task path and run.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import traceback
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from django.core import checks
from django.db import close_old_connections
from django.utils import timezone
from django.utils.module_loading import import_string

from taskforge_client.client import TaskForge
from taskforge_client.errors import NotFound, ValidationError
from taskforge_client.handlers import JobContext, PermanentError, Registry, permanent, registry
from taskforge_client.jobs import Job, parse_time

if TYPE_CHECKING:
    from django_tasks import TaskContext, TaskResult, TaskResultStatus
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import Task, TaskError
    from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist
    from django_tasks.signals import task_enqueued, task_finished, task_started
    from typing_extensions import ParamSpec
else:
    try:  # Django 6 and later
        from django.tasks import TaskContext, TaskResult, TaskResultStatus
        from django.tasks.backends.base import BaseTaskBackend
        from django.tasks.base import Task, TaskError
        from django.tasks.exceptions import InvalidTask as InvalidTaskError
        from django.tasks.exceptions import TaskResultDoesNotExist
        from django.tasks.signals import task_enqueued, task_finished, task_started
    except ImportError:  # the backport
        from django_tasks import TaskContext, TaskResult, TaskResultStatus
        from django_tasks.backends.base import BaseTaskBackend
        from django_tasks.base import Task, TaskError
        from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist
        from django_tasks.signals import task_enqueued, task_finished, task_started
    from typing import ParamSpec

T = TypeVar("T")
P = ParamSpec("P")

# SUCCESSFUL in Django 6.0 and the backport this was written against; SUCCEEDED in later ones.
SUCCEEDED = getattr(TaskResultStatus, "SUCCESSFUL", None) or TaskResultStatus["SUCCEEDED"]

STATUSES = {
    "blocked": TaskResultStatus.READY,
    "scheduled": TaskResultStatus.READY,  # delayed, or waiting to retry
    "pending": TaskResultStatus.READY,
    "processing": TaskResultStatus.RUNNING,
    "succeeded": SUCCEEDED,
    "dead": TaskResultStatus.FAILED,
    "cancelled": TaskResultStatus.FAILED,
}

# "module.Class: message" (the worker's error) -> the exception class path.
_EXCEPTION_PREFIX = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?::|$)")
UNKNOWN_EXCEPTION = "taskforge_client.errors.JobFailed"


class TaskImportError(PermanentError, ImportError):
    """The job names no importable Django task. An ImportError (the task's errors say so), and
    a PermanentError: importing again will not help, so the job fails without a retry."""


def to_taskforge_priority(priority: int) -> int:
    """Django's -100..100 onto TaskForge's 0..9: buckets of 20, with 0 (default) at 5."""
    return max(0, min(9, (priority + 100) // 20))


def to_django_priority(priority: int, sub_priority: int) -> int:
    """A job's Django priority. The backend submits it as the job's sub_priority (which orders
    jobs within the 0-9 priority); a job submitted otherwise gets its bucket's lowest value."""
    if to_taskforge_priority(sub_priority) == priority:
        return sub_priority
    return max(-100, min(100, priority * 20 - 100))


def exception_path(error: str) -> str:
    """The exception class path in a worker's error line, or JobFailed's when there is none."""
    match = _EXCEPTION_PREFIX.match(error)
    if match is None or not match.group(1).rsplit(".", 1)[-1][:1].isupper():
        return UNKNOWN_EXCEPTION
    path = match.group(1)
    return path if "." in path else f"builtins.{path}"


class TaskForgeBackend(BaseTaskBackend):
    """Enqueue Django tasks as TaskForge jobs.

    OPTIONS: ``url`` and ``api_key`` (required), ``timeout`` (seconds per request, default 30)
    and ``max_attempts`` (attempts per task before it is FAILED; default: the queue's, 5
    unless configured on the server).
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        options = {str(key).lower(): value for key, value in self.options.items()}
        self.url: str | None = options.get("url")
        self.api_key: str | None = options.get("api_key")
        self.timeout = float(options.get("timeout", 30.0))
        self.max_attempts: Any = options.get("max_attempts")
        self._client: TaskForge | None = None
        self._client_lock = threading.Lock()

    @property
    def client(self) -> TaskForge:
        with self._client_lock:
            if self._client is None:
                if not self.url or not self.api_key:
                    raise ValueError(f"TASKS[{self.alias!r}]['OPTIONS'] needs url and api_key")
                self._client = TaskForge(self.url, self.api_key, timeout=self.timeout)
            return self._client

    def close(self) -> None:
        """Close the client's connections (a new client is made on next use)."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def enqueue(
        self,
        task: Task[P, T],
        args: P.args,  # type: ignore[valid-type]
        kwargs: P.kwargs,  # type: ignore[valid-type]
    ) -> TaskResult[T]:
        """Submit the task as a job; the result's id is the job's id."""
        self.validate_task(task)
        result: TaskResult[T] = TaskResult(
            task=task,
            id="",
            status=TaskResultStatus.READY,
            enqueued_at=None,
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        # TaskResult normalized the arguments to JSON types (TypeError if it could not).
        payload: dict[str, Any] = {"args": result.args, "kwargs": result.kwargs}
        if task.run_after is not None:
            # Kept as given: the job's run_at moves on when an attempt is retried.
            payload["run_after"] = task.run_after.isoformat()
        try:
            job = self.client.submit(
                task.queue_name,
                task.module_path,
                payload,
                priority=to_taskforge_priority(task.priority),
                sub_priority=task.priority,
                run_at=task.run_after,
                max_attempts=self.max_attempts,
            )
        except ValidationError as exc:
            if exc.details.get("field") == "queue":
                raise InvalidTaskError(
                    f"Queue {task.queue_name!r} does not exist on the TaskForge server "
                    f"of backend {self.alias!r}: create it there first ({exc.message})"
                ) from exc
            raise
        object.__setattr__(result, "id", job.id)
        object.__setattr__(result, "enqueued_at", job.created_at)
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult[Any]:
        """The job as a TaskResult, in one request; TaskResultDoesNotExist for an unknown id
        (or one that is not a TaskForge id at all)."""
        try:
            job = self.client.get_job(result_id, executions=True)
        except NotFound:
            raise TaskResultDoesNotExist(result_id) from None
        return self._task_result(job)

    def _task_result(self, job: Job) -> TaskResult[Any]:
        payload = job.payload if isinstance(job.payload, dict) else {}
        try:
            task = as_enqueued(
                load_task(job.job_type),
                priority=job.priority,
                sub_priority=job.sub_priority,
                queue=job.queue,
                payload=payload,
                backend=self.alias,
            )
        except (PermanentError, InvalidTaskError) as exc:
            raise TaskResultDoesNotExist(f"{job.id}: {exc}") from None
        executions = job.executions or ()
        errors = [
            TaskError(
                exception_class_path=exception_path(e["error"]),
                traceback=e.get("traceback") or e["error"],
            )
            for e in executions
            if e.get("error")
        ]
        status = STATUSES.get(job.state, TaskResultStatus.READY)
        if status == TaskResultStatus.FAILED and not errors:
            reason = job.last_error or job.state
            errors.append(TaskError(exception_class_path=exception_path(reason), traceback=reason))
        result: TaskResult[Any] = TaskResult(
            task=task,
            id=job.id,
            status=status,
            enqueued_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            last_attempted_at=parse_time(executions[-1].get("started_at")) if executions else None,
            args=list(payload.get("args") or []),
            kwargs=dict(payload.get("kwargs") or {}),
            backend=self.alias,
            errors=errors,
            worker_ids=[str(e.get("worker") or "") for e in executions],
        )
        if status == SUCCEEDED:
            object.__setattr__(result, "_return_value", job.result)
        return result

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        messages: list[checks.CheckMessage] = list(super().check(**kwargs))
        if not self.url or not self.api_key:
            messages.append(
                checks.Error(
                    f"TASKS[{self.alias!r}]['OPTIONS'] needs url and api_key.",
                    hint="The TaskForge server URL and an API key with the jobs:write scope.",
                    id="taskforge_client.E001",
                )
            )
        attempts = self.max_attempts
        if attempts is not None and (
            isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 1000
        ):
            messages.append(
                checks.Error(
                    f"TASKS[{self.alias!r}]['OPTIONS']['max_attempts'] must be a whole number "
                    f"from 1 to 1000, not {attempts!r}.",
                    hint="Leave it out to use the queue's own max_attempts.",
                    id="taskforge_client.E002",
                )
            )
        return messages


def as_enqueued(
    task: Task[Any, Any],
    *,
    priority: int,
    sub_priority: int,
    queue: str,
    payload: dict[str, Any],
    **changes: Any,
) -> Task[Any, Any]:
    """``task`` as a job says it was enqueued: its Django priority, its queue and run_after
    (InvalidTaskError when this backend's settings refuse them)."""
    return replace(
        task,
        priority=to_django_priority(priority, sub_priority),
        queue_name=queue or task.queue_name,
        run_after=parse_time(payload.get("run_after")),
        **changes,
    )


def load_task(path: str) -> Task[Any, Any]:
    """The Task object at ``path``; a PermanentError when there is none (retrying won't help):
    TaskImportError when nothing can be imported there."""
    try:
        found = import_string(path)
    except ImportError as exc:
        raise TaskImportError(
            f"no handler for job type {path!r}, nor a Django task there: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(found, Task):
        raise PermanentError(f"{path} is not a Django task (decorate it with @task)")
    return found


def run_task(ctx: JobContext, payload: Any) -> Any:
    """Handler: run the Django task named by the job type with the payload's args/kwargs.

    The TaskResult that the signals and a ``takes_context`` task see is built from the job as
    delivered (its id, queue, priority, run_after, enqueue time and attempt), without another
    request. A return value that cannot be stored as JSON fails the task here, with json's own
    TypeError, before ``task_finished`` reports it.
    """
    task = load_task(ctx.job_type)
    payload = payload if isinstance(payload, dict) else {}
    args, kwargs = list(payload.get("args") or []), dict(payload.get("kwargs") or {})
    # A queue or priority this process's settings refuse: run the task as imported.
    with contextlib.suppress(InvalidTaskError):
        task = as_enqueued(
            task,
            priority=ctx.priority,
            sub_priority=ctx.sub_priority,
            queue=ctx.queue,
            payload=payload,
        )
    now = timezone.now()
    result: TaskResult[Any] = TaskResult(
        task=task,
        id=ctx.job_id,
        status=TaskResultStatus.RUNNING,
        enqueued_at=ctx.created_at,
        started_at=now,
        last_attempted_at=now,
        finished_at=None,
        args=args,
        kwargs=kwargs,
        backend=task.backend,
        errors=[],
        worker_ids=[ctx.worker_id or ctx.worker_name] * ctx.attempt,
    )
    # As Django does around a request: drop connections that broke or aged meanwhile.
    close_old_connections()
    task_started.send(sender=TaskForgeBackend, task_result=result)
    try:
        if task.takes_context:
            value = task.call(TaskContext(task_result=result), *args, **kwargs)
        else:
            value = task.call(*args, **kwargs)
        try:
            # As the worker will send it. What cannot be is this task's failure, with json's
            # own TypeError (or ValueError), and for good: running it again returns the same.
            json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:  # ValueError: NaN, a lone surrogate
            permanent(exc)
            raise
    except BaseException as exc:
        error = TaskError(
            exception_class_path=f"{type(exc).__module__}.{type(exc).__qualname__}",
            traceback="".join(traceback.format_exception(exc)),
        )
        result.errors.append(error)
        _finished(result, TaskResultStatus.FAILED)
        raise
    else:
        object.__setattr__(result, "_return_value", value)
        _finished(result, SUCCEEDED)
        return value
    finally:
        close_old_connections()


def _finished(result: TaskResult[Any], status: TaskResultStatus) -> None:
    object.__setattr__(result, "status", status)
    object.__setattr__(result, "finished_at", timezone.now())
    task_finished.send(sender=TaskForgeBackend, task_result=result)


def install(target: Registry = registry) -> None:
    """Set up Django (from DJANGO_SETTINGS_MODULE) and run Django tasks on ``target``."""
    from django.apps import apps

    if not apps.ready:
        import django

        django.setup()
    target.fallback(run_task)
