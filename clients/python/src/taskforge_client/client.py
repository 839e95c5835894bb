"""The HTTP client: submit and inspect jobs, with bounded retries of transient failures.

Retries (see :class:`RetryPolicy`) cover connection errors, 502/503/504 and 429, with
exponential backoff and jitter, and honour ``Retry-After`` (the server sends it with a 429, and
with the 503 ``unavailable`` it answers while its database is down). They stop after
``attempts`` tries or ``max_elapsed`` seconds, whichever comes first. A request that may already
have changed something on the server is retried only when repeating it is harmless:

* reads, PUT and DELETE always;
* any request that never reached the server (the connection could not be made), and any 429
  (the server refused it before doing anything);
* a POST the caller marks ``idempotent`` — :meth:`TaskForge.submit` does, because it always
  sends an idempotency key (a new uuid4 per call unless you pass your own), so a repeat returns
  the job the first attempt created instead of a second one.
"""

from __future__ import annotations

import email.utils
import json as _json
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from taskforge_client import __version__
from taskforge_client._http import ConnectFailed, HTTPFailure, Response, Transport
from taskforge_client.errors import (
    EncodingError,
    NotFound,
    RateLimited,
    TaskForgeError,
    TransportError,
    WaitTimeout,
    error_class,
)
from taskforge_client.jobs import Job

API_PREFIX = "/api/v1"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How the client retries transient failures.

    ``attempts`` counts the first try: 5 means up to 4 retries. The n-th retry waits
    ``min(backoff_max, backoff_base * 2 ** (n - 1))`` with equal jitter (half fixed, half
    random), or the server's Retry-After (429, 503) when that is longer. A Retry-After above
    ``max_retry_after`` is not waited for: the error is raised at once. No retry starts once
    ``max_elapsed`` seconds have passed since the first try began, nor when its wait would end
    after that, so one call gives up within about ``max_elapsed`` plus one request's timeout.
    ``sleep`` exists for tests.
    """

    attempts: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    max_retry_after: float = 60.0
    max_elapsed: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def backoff(self, retry: int) -> float:
        delay = min(self.backoff_max, self.backoff_base * 2 ** (retry - 1))
        return delay / 2 + random.uniform(0, delay / 2)  # noqa: S311 (jitter, not security)

    def allows(self, attempt: int, started: float, wait: float) -> bool:
        """Whether try number ``attempt`` (1-based) may be followed by one after ``wait`` s."""
        elapsed = time.monotonic() - started
        return attempt < self.attempts and elapsed + wait <= self.max_elapsed


NO_RETRIES = RetryPolicy(attempts=1)


class TaskForge:
    """A TaskForge API client for one project (API keys belong to one project).

    ``url`` is the server's base URL (``https://taskforge.example.com``; a trailing
    ``/api/v1`` is accepted). ``retry`` bounds the retries of transient failures
    (:class:`RetryPolicy`: tries, total seconds, backoff; ``NO_RETRIES`` for none). The client
    is thread-safe; close it, or use it as a context manager, to release its connections.
    ``transport`` replaces the HTTP transport (tests): it sends its own headers, key included.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: Transport | None = None,
    ) -> None:
        base = url.rstrip("/")
        if base.endswith(API_PREFIX):
            base = base[: -len(API_PREFIX)]
        self.url = base
        self.timeout = timeout
        self.retry_policy = retry or RetryPolicy()
        self._http = transport or Transport(
            base + API_PREFIX,
            headers={
                "Authorization": f"Bearer {api_key}",
                "User-Agent": f"taskforge-client/{__version__}",
                "Accept": "application/json",
            },
            timeout=timeout,
        )

    # --- jobs ---------------------------------------------------------------------------------

    def submit(
        self,
        queue: str,
        job_type: str,
        payload: Any = None,
        *,
        priority: int | None = None,
        sub_priority: int | None = None,
        run_at: datetime | str | None = None,
        delay_seconds: float | None = None,
        idempotency_key: str | None = None,
        depends_on: Iterable[str | Job | uuid.UUID] | None = None,
        max_attempts: int | None = None,
        timeout_seconds: int | None = None,
        tags: Iterable[str] | None = None,
        on_parent_failure: str | None = None,
    ) -> Job:
        """Submit a job; return it (the existing job when the idempotency key was used before).

        Without ``idempotency_key`` a new uuid4 key is sent, so retrying after a lost response
        cannot create the job twice. Pass your own key to make separate calls idempotent.
        ``on_parent_failure`` is ``"cancel"`` (the server's default: a parent ending dead or
        cancelled cancels this job) or ``"run"`` (run it once the other parents are done).
        ``priority`` is 0-9 (higher runs first); ``sub_priority`` (-100 to 100, default 0)
        orders jobs of one priority, for a finer scale.
        """
        body = job_body(
            queue=queue,
            job_type=job_type,
            payload=payload,
            priority=priority,
            sub_priority=sub_priority,
            run_at=run_at,
            delay_seconds=delay_seconds,
            idempotency_key=idempotency_key or str(uuid.uuid4()),
            depends_on=depends_on,
            max_attempts=max_attempts,
            timeout_seconds=timeout_seconds,
            tags=tags,
            on_parent_failure=on_parent_failure,
        )
        return Job.from_dict(self.request("POST", "/jobs", json=body, idempotent=True))

    def submit_batch(
        self,
        jobs: Sequence[Mapping[str, Any]],
        *,
        on_complete: Mapping[str, Any] | None = None,
        on_success: Mapping[str, Any] | None = None,
    ) -> tuple[str, list[Job]]:
        """Submit up to 1,000 jobs at once, all or nothing; return ``(batch_id, jobs)``.

        Each item takes the keyword arguments of :meth:`submit` plus ``ref`` and
        ``depends_on_refs`` (refs of other items in the batch). Items without an idempotency key
        get a uuid4 one, so the batch is retried safely.

        ``on_complete`` / ``on_success`` are callback jobs (``queue``, ``job_type`` and
        optionally ``payload``, ``priority``, ``max_attempts``, ``timeout_seconds``, ``tags``)
        enqueued once when every job of the batch has finished (``on_success``: only if every
        job succeeded); their payload gets the batch's summary under ``"batch"``.
        """
        items = []
        for item in jobs:
            spec = dict(item)
            spec.setdefault("idempotency_key", None)
            spec["idempotency_key"] = spec["idempotency_key"] or str(uuid.uuid4())
            items.append(job_body(**spec))
        body: dict[str, Any] = {"jobs": items}
        for name, callback in (("on_complete", on_complete), ("on_success", on_success)):
            if callback is not None:
                body[name] = {key: value for key, value in callback.items() if value is not None}
        data = self.request("POST", "/jobs/batch", json=body, idempotent=True)
        return str(data["batch_id"]), [Job.from_dict(job) for job in data["jobs"]]

    def get_job(self, job_id: str | uuid.UUID, *, executions: bool = False) -> Job:
        """The job; with ``executions``, its attempts too (``Job.executions``), in one request.

        NotFound when there is no such job, or ``job_id`` is not a job id at all."""
        params = {"expand": "executions"} if executions else None
        return Job.from_dict(self.request("GET", _job_path(job_id), params=params))

    def wait(self, job_id: str | uuid.UUID, *, timeout: float = 60.0, poll: float = 0.5) -> Job:
        """Poll the job until it is succeeded, dead or cancelled; return it.

        Polls quickly at first, then every ``poll`` seconds at most; raises WaitTimeout after
        ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        interval = min(0.05, poll)
        while True:
            job = self.get_job(job_id)
            if job.is_terminal:
                return job
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(
                    f"job {job_id} is still {job.state} after {timeout:g}s",
                    details={"job_id": str(job_id), "state": job.state},
                )
            time.sleep(min(interval, left))
            interval = min(poll, interval * 2)

    def cancel(self, job_id: str | uuid.UUID) -> Job:
        """Cancel a job that has not finished (Conflict if it already has)."""
        return Job.from_dict(self.request("POST", _job_path(job_id, "/cancel")))

    def retry_job(self, job_id: str | uuid.UUID) -> Job:
        """Run a dead or cancelled job again, with its attempts reset."""
        return Job.from_dict(self.request("POST", _job_path(job_id, "/retry")))

    def logs(self, job_id: str | uuid.UUID) -> list[dict[str, Any]]:
        """The job's log lines, oldest first: ``{id, execution_id, level, message, metadata}``."""
        results: list[dict[str, Any]] = self.request("GET", _job_path(job_id, "/logs"))["results"]
        return results

    def executions(self, job_id: str | uuid.UUID) -> list[dict[str, Any]]:
        """The job's attempts: ``{id, attempt, status, worker, error, traceback, started_at,
        finished_at}``."""
        page = self.request("GET", _job_path(job_id, "/executions"))
        results: list[dict[str, Any]] = page["results"]
        return results

    # --- schedules ---------------------------------------------------------------------------

    def create_schedule(
        self,
        name: str,
        cron: str,
        queue: str,
        job_type: str,
        payload: Any = None,
        *,
        timezone: str | None = None,
        priority: int | None = None,
        enabled: bool | None = None,
        overlap: str | None = None,
        catch_up: str | None = None,
        catch_up_max: int | None = None,
    ) -> dict[str, Any]:
        """Create a cron schedule (docs/schedules.md); return its representation.

        ``cron`` is five fields or an alias (``@hourly``); ``timezone`` an IANA name (default
        UTC); ``overlap`` ``allow``/``skip``; ``catch_up`` ``none``/``latest``/``all``.
        A bad expression or timezone raises ValidationError naming the field.
        """
        fields = {
            "name": name, "cron": cron, "queue": queue, "job_type": job_type, "payload": payload,
            "timezone": timezone, "priority": priority, "enabled": enabled, "overlap": overlap,
            "catch_up": catch_up, "catch_up_max": catch_up_max,
        }  # fmt: skip
        body = {key: value for key, value in fields.items() if value is not None}
        schedule: dict[str, Any] = self.request("POST", "/schedules", json=body)
        return schedule

    def schedules(self) -> list[dict[str, Any]]:
        """Every schedule of the project, newest first (all pages)."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 500}
        while True:
            page = self.request("GET", "/schedules", params=params)
            found.extend(page["results"])
            if not page["next"]:
                return found
            params = {"limit": 500, "cursor": parse_qs(urlsplit(page["next"]).query)["cursor"][0]}

    def get_schedule(self, schedule_id: str | uuid.UUID) -> dict[str, Any]:
        schedule: dict[str, Any] = self.request("GET", _schedule_path(schedule_id))
        return schedule

    def update_schedule(self, schedule_id: str | uuid.UUID, **changes: Any) -> dict[str, Any]:
        """Change a schedule: ``update_schedule(id, enabled=False)``, ``cron="0 * * * *"``…"""
        schedule: dict[str, Any] = self.request(
            "PATCH",
            _schedule_path(schedule_id),
            json=changes,
            idempotent=True,
        )
        return schedule

    def delete_schedule(self, schedule_id: str | uuid.UUID) -> None:
        self.request("DELETE", _schedule_path(schedule_id), idempotent=True)

    def preview_schedule(self, schedule_id: str | uuid.UUID, n: int = 5) -> list[datetime]:
        """The schedule's next ``n`` fire times (UTC, timezone-aware)."""
        data = self.request("GET", _schedule_path(schedule_id, "/preview"), params={"n": n})
        return [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in data["fire_times"]]

    def trigger_schedule(self, schedule_id: str | uuid.UUID) -> Job:
        """Enqueue one run of the schedule now; return its job."""
        return Job.from_dict(self.request("POST", _schedule_path(schedule_id, "/trigger"), json={}))

    # --- plumbing -----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        idempotent: bool | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send one API request (``path`` is relative to ``/api/v1``); return the decoded body.

        Raises the TaskForgeError subclass of the error code. ``idempotent`` says whether the
        request may be repeated after an ambiguous failure (default: by method).
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method in SAFE_METHODS
        # Encoded before anything is sent: a UnicodeEncodeError or ValueError from deeper down
        # would be neither a TaskForgeError nor a transport error, and callers could not tell.
        content = encode_json(json) if json is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        policy = self.retry_policy
        started = time.monotonic()
        attempt = 1
        while True:
            try:
                response = self._http.request(
                    method,
                    path,
                    content=content,
                    headers=headers,
                    params=params,
                    timeout=timeout if timeout is not None else self.timeout,
                )
            except HTTPFailure as exc:
                wait = policy.backoff(attempt)
                repeatable = idempotent or isinstance(exc, ConnectFailed)
                if repeatable and policy.allows(attempt, started, wait):
                    policy.sleep(wait)
                    attempt += 1
                    continue
                raise TransportError(
                    f"{method} {path}: {type(exc).__name__}: {exc}", details={"path": path}
                ) from exc
            if response.is_success:
                return _json.loads(response.content) if response.content else None
            error = _error_from(response)
            retry_after = _retry_after(response)
            if self._should_retry(response, error, idempotent, retry_after):
                wait = policy.backoff(attempt)
                if retry_after is not None:
                    wait = max(wait, retry_after)
                if policy.allows(attempt, started, wait):
                    policy.sleep(wait)
                    attempt += 1
                    continue
            raise error

    def _should_retry(
        self,
        response: Response,
        error: TaskForgeError,
        safe: bool,
        retry_after: float | None,
    ) -> bool:
        # Not when the server asks for a longer pause than we are willing to block for.
        if retry_after is not None and retry_after > self.retry_policy.max_retry_after:
            return False
        if isinstance(error, RateLimited):
            return True  # refused before the view ran: repeating is always safe
        return safe and response.status in RETRY_STATUSES

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TaskForge:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TaskForge({self.url!r})"


def encode_json(value: Any) -> bytes:
    """``value`` as the JSON bytes of a request body (UTF-8, compact).

    Raises EncodingError, naming the problem, when it cannot be: a lone surrogate (half of a
    UTF-16 pair, which UTF-8 cannot encode), NaN or Infinity, a type JSON lacks, or nesting
    deeper than the encoder's stack.
    """
    try:
        text = _json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = exc.object[exc.start]
        problem = (
            f"a lone surrogate ({char.encode('unicode_escape').decode()}) is half of a UTF-16 "
            "pair, not a character, and UTF-8 cannot encode it"
        )
    except RecursionError:
        problem = "it is nested too deep"
    except (TypeError, ValueError) as exc:
        problem = str(exc)
    raise EncodingError(
        f"the request body cannot be sent as JSON: {problem}", details={"reason": problem}
    )


def job_body(
    *,
    queue: str,
    job_type: str,
    payload: Any = None,
    priority: int | None = None,
    sub_priority: int | None = None,
    run_at: datetime | str | None = None,
    delay_seconds: float | None = None,
    idempotency_key: str | None = None,
    depends_on: Iterable[str | Job | uuid.UUID] | None = None,
    max_attempts: int | None = None,
    timeout_seconds: int | None = None,
    tags: Iterable[str] | None = None,
    ref: str | None = None,
    depends_on_refs: Iterable[str] | None = None,
    on_parent_failure: str | None = None,
) -> dict[str, Any]:
    """The JSON body of one job submission; None means "the server's default"."""
    if isinstance(run_at, datetime):
        if run_at.tzinfo is None:
            raise ValueError("run_at must be a timezone-aware datetime")
        run_at = run_at.isoformat()
    fields: dict[str, Any] = {
        "queue": queue,
        "job_type": job_type,
        "payload": payload,
        "priority": priority,
        "sub_priority": sub_priority,
        "run_at": run_at,
        "delay_seconds": delay_seconds,
        "idempotency_key": idempotency_key,
        "depends_on": [str(p.id if isinstance(p, Job) else p) for p in depends_on]
        if depends_on is not None
        else None,
        "max_attempts": max_attempts,
        "timeout_seconds": timeout_seconds,
        "tags": list(tags) if tags is not None else None,
        "ref": ref,
        "depends_on_refs": list(depends_on_refs) if depends_on_refs is not None else None,
        "on_parent_failure": on_parent_failure,
    }
    return {name: value for name, value in fields.items() if value is not None}


def _job_path(job_id: str | uuid.UUID | Job, action: str = "") -> str:
    return f"/jobs/{_path_id(job_id, 'job')}{action}"


def _schedule_path(schedule_id: str | uuid.UUID, action: str = "") -> str:
    return f"/schedules/{_path_id(schedule_id, 'schedule')}{action}"


def _path_id(value: str | uuid.UUID | Job, what: str) -> str:
    """An id as a URL path segment. TaskForge's ids are UUIDs: anything else (``"123"``,
    ``"<id>/executions"``, ``"../queues"``) names no object, and put into the path it would
    name another endpoint, so it is NotFound here, before any request."""
    text = str(value.id if isinstance(value, Job) else value)
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise NotFound(
            f"no {what} {text!r}: not a TaskForge id (a UUID)",
            details={"id": text[:200]},
        ) from None


def _error_from(response: Response) -> TaskForgeError:
    """The exception for an error response, from the envelope when there is one."""
    code: str | None = None
    message = ""
    details: dict[str, Any] = {}
    try:
        body = _json.loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        envelope = body["error"]
        code = envelope.get("code")
        message = str(envelope.get("message") or "")
        details = envelope.get("details") if isinstance(envelope.get("details"), dict) else {}
    if not message:
        # Not our envelope: a proxy's error page, say. Keep the start of it.
        message = response.text[:200].strip() or response.reason or "error"
    cls = error_class(response.status, code)
    if issubclass(cls, RateLimited):
        return RateLimited(
            message,
            code=code,
            details=details,
            status=response.status,
            retry_after=_retry_after(response),
        )
    return cls(message, code=code, details=details, status=response.status)


def _retry_after(response: Response) -> float | None:
    """Retry-After in seconds: delta-seconds or an HTTP date."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
