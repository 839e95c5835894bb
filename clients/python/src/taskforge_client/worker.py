"""The worker runner: registers with TaskForge, long-polls for jobs, runs their handlers in
threads and reports results, until drained.

Threads (all daemons, so a handler stuck forever cannot keep the process alive):

* ``concurrency`` runners execute handlers (sync handlers directly, async ones in their own
  event loop);
* the fetcher long-polls ``GET /workers/{id}/jobs?wait=…&max=<free slots>``;
* the reporter sends results in batches (``POST /workers/{id}/results``), one request at a
  time: each carries every result that finished while the previous one was in flight (up to
  ``flush_size``), and a result that finds the reporter idle waits at most
  ``flush_interval`` (5 ms) for others finishing with it, so jobs finishing together share a
  request without a lone result waiting long;
* the heartbeat sends the ids of the jobs held every ``lease/3`` seconds (10 s at most),
  which extends their leases; when the server answers ``draining`` the worker drains, and the
  jobs it lists as ``cancelled`` get ``ctx.cancelled`` set. A fetch that brought jobs makes it
  go out within ``ACK_HEARTBEAT_SECONDS``: naming a delivered job acknowledges its delivery,
  and the server gives an unacknowledged one only a short lease
  (``TASKFORGE_ACK_TIMEOUT_SECONDS``, 10 s by default) before it retries it elsewhere;
* the watchdog fails jobs that run past their ``timeout_seconds``.

A job's log lines (``ctx.log``) are posted just before its result, while its lease is current.

Results are kept until the server has answered for them: a request that fails for want of the
server (a restart, a network fault, a 5xx) is sent again with backoff for as long as the worker
runs (the heartbeats, which name those jobs too, keep their leases), and an item the server
answers ``busy`` for (another transaction held its job's row) is sent again after
``BUSY_RETRY_SECONDS``, without holding up the results of other jobs.

Job types: the worker registers the job types it has handlers for (its registry's and the
module-level registry's), so the server hands it only jobs of those types; with a fallback
handler, or ``any_job_type=True``, it takes any type.

Cancellation: a job cancelled on the server while it runs keeps its slot there until the
worker reports it. The handler sees ``ctx.cancelled`` (``ctx.log``/``ctx.sleep`` raise
:class:`JobCancelled`); when it returns, or ends with JobCancelled (logged at INFO, not a
failure), the worker reports it as usual, the server answers ``conflict`` and frees the slot.
The worker's own slot is free only when the handler returns, like any job's.

Timeouts: a thread cannot be killed. A handler past its timeout is reported as a retryable
failure ("timed out after Ns"), its context's ``timed_out`` turns true, a fresh runner takes
its slot, and whatever the old thread returns later is discarded. Handlers that may run long
should check ``ctx.timed_out`` or sleep with ``ctx.sleep()``.

Draining (first SIGTERM/SIGINT, ``stop()``, or the server saying ``draining``): stop fetching,
POST /workers/{id}/drain so no fetch claims anything more, let every running job finish,
flush the results, then DELETE /workers/{id} so the name can register
again. A second signal exits at once (status 1); the server retries whatever was held.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import itertools
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from taskforge_client import __version__
from taskforge_client.client import TaskForge, encode_json
from taskforge_client.errors import (
    AuthenticationError,
    EncodingError,
    JobCancelled,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ServerError,
    TaskForgeError,
    TransportError,
    ValidationError,
)
from taskforge_client.handlers import (
    AssignedJob,
    H,
    Handler,
    JobContext,
    Registry,
    is_permanent,
    registry,
    sendable,
)

logger = logging.getLogger("taskforge_client.worker")

# With most slots busy, a fetch waits up to this long for a quarter of them to free, so that
# a busy worker fetches batches of jobs rather than one job per request (_gather_free_slots).
FETCH_GATHER_SECONDS = 0.005
# The longest heartbeat interval; shorter when leases are short (a third of the lease).
MAX_HEARTBEAT_SECONDS = 10.0
# Log lines per request (the server takes at most 1,000).
LOG_CHUNK = 1000
# After stop, a failing results request is given this many more tries before it is dropped
# (the jobs' leases then expire and the server retries them).
SHUTDOWN_REPORT_TRIES = 3
# A result the server answered "busy" for (its job's row was locked by another transaction:
# not applied, not stale) is sent again after this many seconds, with whatever else is due.
BUSY_RETRY_SECONDS = 0.05
# After stop, a busy result is sent again this many more times at most before it is dropped
# (its lease then expires and the server retries the job).
SHUTDOWN_BUSY_TRIES = 20
# After a fetch that brought jobs, the heartbeat that acknowledges them goes out this soon (and
# no sooner after the previous heartbeat): well within the server's acknowledgement timeout.
ACK_HEARTBEAT_SECONDS = 0.5
# How long a drain waits for a fetch in flight to bring the jobs it claimed.
DRAIN_FETCH_WAIT_SECONDS = 5.0
# The error a cancelled job is reported with (the server answers "conflict": not stored).
CANCELLED_ERROR = "cancelled while running"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a handler run came to: the job's result, or the error to fail it with."""

    succeeded: bool
    result: Any = None
    error: str = ""
    retryable: bool = True
    # The full traceback of a failure (error is its last line), kept on the attempt.
    traceback: str = ""

    @classmethod
    def failure(cls, error: str, *, retryable: bool, traceback: str = "") -> Outcome:
        # Within the server's limits; of a traceback the end is kept: the exception itself
        # and the innermost frames.
        return cls(
            False,
            error=sendable(error)[:10_000],
            retryable=retryable,
            traceback=sendable(traceback)[-65_536:],
        )


@dataclass(eq=False)
class _Held:
    """A job this worker holds until the server acknowledged its result."""

    job: AssignedJob
    ctx: JobContext
    # Set once, by whichever of the runner and the watchdog finishes the job first.
    finished: bool = False
    # The watchdog gave up on the runner thread (timeout): it must not take more work.
    abandoned: bool = False
    outcome: Outcome | None = field(default=None, repr=False)
    # Times the server answered "busy" for the result after stop was requested.
    busy_tries: int = 0
    # time.monotonic() when the handler's outcome was queued for the reporter.
    finished_at: float = 0.0


def describe_exception(exc: BaseException) -> str:
    """The last line of the exception's traceback: ``module.Class: message``."""
    cls = type(exc)
    name = cls.__qualname__
    if cls.__module__ not in ("builtins", "__main__"):
        name = f"{cls.__module__}.{name}"
    message = str(exc)
    return f"{name}: {message}" if message else name


def parse_queues(queues: Mapping[str, int] | Iterable[str] | str | None) -> dict[str, int]:
    """Queues and weights from a mapping, a list of names, or ``"default:3,emails:1"``."""
    parsed: dict[str, int] = {}
    if queues is None:
        parsed = {"default": 1}
    elif isinstance(queues, str):
        for part in filter(None, (p.strip() for p in queues.split(","))):
            queue_name, _, raw_weight = part.partition(":")
            if not queue_name.strip():
                raise ValueError(f"queue spec {part!r}: missing queue name")
            try:
                parsed[queue_name.strip()] = int(raw_weight) if raw_weight.strip() else 1
            except ValueError:
                raise ValueError(f"queue spec {part!r}: weight must be an integer") from None
    elif isinstance(queues, Mapping):
        parsed = {str(name): int(weight) for name, weight in queues.items()}
    else:
        parsed = dict.fromkeys(queues, 1)
    if not parsed:
        raise ValueError("a worker needs at least one queue")
    for name, weight in parsed.items():
        if weight < 1:
            raise ValueError(f"queue {name!r}: weight must be at least 1")
    return parsed


def default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker:
    """Runs the handlers of this worker and of :data:`taskforge_client.registry`.

    ``client_or_url`` is a :class:`TaskForge` client, or the server URL (then ``api_key`` is
    required and the worker owns, and closes, the client it makes). The key needs the
    ``workers`` scope. ``queues`` maps queue names to weights (their share of the slots).
    The server hands the worker only jobs of the types it has handlers for (registered
    before ``run()``), unless there is a fallback handler or ``any_job_type`` is true.
    """

    def __init__(
        self,
        client_or_url: TaskForge | str,
        api_key: str | None = None,
        *,
        name: str | None = None,
        queues: Mapping[str, int] | Iterable[str] | str | None = None,
        concurrency: int = 8,
        registry: Registry | None = None,
        worker_type: str = "general",
        poll_wait: int = 20,
        heartbeat_interval: float | None = None,
        flush_interval: float = 0.005,
        flush_size: int = 100,
        metadata: Mapping[str, Any] | None = None,
        timeout: float = 30.0,
        any_job_type: bool = False,
    ) -> None:
        if isinstance(client_or_url, TaskForge):
            self.client = client_or_url
            self._owns_client = False
        else:
            if not api_key:
                raise ValueError("api_key is required when the worker is given a URL")
            self.client = TaskForge(client_or_url, api_key, timeout=timeout)
            self._owns_client = True
        if not 1 <= concurrency <= 10_000:
            raise ValueError("concurrency must be 1 to 10000")
        if not 0 <= poll_wait <= 30:
            raise ValueError("poll_wait must be 0 to 30 seconds")
        self.name = name or default_name()
        self.queues = parse_queues(queues)
        self.concurrency = concurrency
        self.registry = registry or Registry()
        self.worker_type = worker_type
        self.poll_wait = poll_wait
        self.heartbeat_interval = heartbeat_interval
        self.flush_interval = flush_interval
        self.flush_size = max(1, min(flush_size, 1000))
        self.metadata = dict(metadata or {})
        # Register as taking any job type, not only those with a handler.
        self.any_job_type = any_job_type
        self.worker_id: str | None = None

        self._lock = threading.Condition()  # guards everything below; an RLock inside
        self._held: dict[str, _Held] = {}
        self._busy = 0  # jobs handed to runners and not finished: the slots in use
        self._closed = False  # no more jobs are taken (shutdown waited for the last one)
        self._fetch_in_flight = False
        self._run_finished = False
        self._stop_requested = threading.Event()
        self._fatal: BaseException | None = None
        self._signals = 0
        self._lease_seconds = 30.0
        self._work: queue.SimpleQueue[_Held | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[_Held | None] = queue.SimpleQueue()
        self._heartbeat_stop = threading.Event()
        # Set by a fetch that brought jobs: the heartbeat acknowledging them is due now.
        self._heartbeat_due = threading.Event()
        # The reporter thread's own: results to send again, (due time, sequence, entry).
        self._busy_retries: list[tuple[float, int, _Held]] = []
        self._busy_seq = itertools.count()
        self._watch_cond = threading.Condition()
        self._watch_heap: list[tuple[float, int, _Held]] = []
        self._watch_seq = itertools.count()
        self._watch_stop = False
        self._threads: dict[str, threading.Thread] = {}
        self._register_lock = threading.Lock()

    # --- public API ---------------------------------------------------------------------------

    def handler(self, job_type: str) -> Callable[[H], H]:
        """Decorator: register a handler on this worker only."""
        return self.registry.handler(job_type)

    def run(self) -> None:
        """Register, work until drained, deregister. Blocks; returns after a clean drain.

        In the main thread SIGTERM and SIGINT start the drain (a second one exits at once).
        Raises AuthenticationError / PermissionDenied when the key is refused.
        """
        restore = self._install_signal_handlers()
        try:
            if self._register_until_stopped():
                self._start_threads()
                self._stop_requested.wait()
                self._shutdown()
        finally:
            for signum, previous in restore.items():
                signal.signal(signum, previous)
            self._release_client()
        if self._fatal is not None:
            raise self._fatal

    def stop(self) -> None:
        """Start draining (thread-safe): ``run()`` returns once the running jobs are done."""
        self._stop_requested.set()
        with self._lock:
            self._lock.notify_all()

    @property
    def running(self) -> list[str]:
        """Ids of the jobs held: running, or finished with the result not yet acknowledged."""
        with self._lock:
            return list(self._held)

    def job_types(self) -> list[str] | None:
        """The job types the worker registers with (sorted), or None for any type: with
        ``any_job_type``, or a fallback handler, which takes every type."""
        if self.any_job_type or self.registry.get_fallback() or registry.get_fallback():
            return None
        return sorted(set(self.registry.job_types()) | set(registry.job_types()))

    # --- lifecycle ----------------------------------------------------------------------------

    def _register(self) -> None:
        job_types = self.job_types()
        if job_types == []:
            logger.warning(
                "worker %s has no handlers: it will get no jobs (register handlers before "
                "run(), or pass any_job_type=True)",
                self.name,
            )
        body = {
            "name": self.name,
            "worker_type": self.worker_type,
            "capacity": self.concurrency,
            "job_types": job_types,
            "queues": [{"name": name, "weight": weight} for name, weight in self.queues.items()],
            "metadata": {
                "sdk": f"taskforge-client/{__version__}",
                "python": sys.version.split()[0],
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
                **self.metadata,
            },
        }
        # Registering a name again returns the same worker: safe to repeat.
        data = self.client.request("POST", "/workers", json=body, idempotent=True)
        self.worker_id = str(data["id"])
        logger.info(
            "worker %s registered as %s: queues %s, concurrency %d, job types %s",
            self.name,
            self.worker_id,
            ",".join(f"{n}:{w}" for n, w in self.queues.items()),
            self.concurrency,
            "any" if job_types is None else ",".join(job_types),
        )

    def _register_until_stopped(self) -> bool:
        """Register, waiting out a server that is not up yet; False if stopped first."""
        failures = 0
        while not self._stop_requested.is_set():
            try:
                self._register()
                return True
            except (TransportError, ServerError, RateLimited) as exc:
                failures += 1
                delay = self.client.retry_policy.backoff(min(failures, 6))
                logger.warning("cannot register yet (%s); retrying in %.1fs", exc, delay)
                self._stop_requested.wait(delay)
        return False

    def _reregister(self, seen_id: str | None) -> None:
        """The server no longer knows this worker (deregistered by someone): register again."""
        with self._register_lock:
            if self.worker_id != seen_id or self._stop_requested.is_set():
                return  # another thread did it already, or we are leaving anyway
            logger.warning("worker %s was deregistered on the server; registering again", seen_id)
            try:
                self._register()
            except TaskForgeError as exc:
                logger.error("could not register again: %s", exc)

    def _start_threads(self) -> None:
        for index in range(self.concurrency):
            self._spawn(f"runner-{index}", self._runner_loop)
        self._spawn("reporter", self._reporter_loop)
        self._spawn("heartbeat", self._heartbeat_loop)
        self._spawn("watchdog", self._watchdog_loop)
        self._spawn("fetcher", self._fetch_loop)

    def _spawn(self, role: str, target: Callable[[], None]) -> threading.Thread:
        thread = threading.Thread(target=target, name=f"taskforge-{role}", daemon=True)
        self._threads[role] = thread
        thread.start()
        return thread

    def _shutdown(self) -> None:
        with self._lock:
            running = self._busy
        logger.info("draining: finishing %d running job(s), fetching no more", running)
        worker_id = self.worker_id
        # Jobs reach a worker only through its own fetch (the fetch claims them), so nothing is
        # waiting for us on the server: what we hold is all there is to finish.
        self._quietly("drain", "POST", f"/workers/{worker_id}/drain")
        with self._lock:
            # A fetch in flight may bring jobs the server claimed for us before the drain:
            # they are ours to run (dropped, each would lose an attempt). The drain answers
            # a waiting long-poll at once; if the server is unreachable, give up after a while.
            deadline = time.monotonic() + DRAIN_FETCH_WAIT_SECONDS
            while self._fetch_in_flight and (left := deadline - time.monotonic()) > 0:
                self._lock.wait(left)
            while self._busy:
                self._lock.wait()
            self._closed = True
        self._results.put(None)
        self._threads["reporter"].join()
        self._heartbeat_stop.set()
        self._heartbeat_due.set()
        self._threads["heartbeat"].join()
        with self._watch_cond:
            self._watch_stop = True
            self._watch_cond.notify_all()
        self._threads["watchdog"].join()
        for _ in range(self.concurrency):
            self._work.put(None)
        # Last: deregistering frees the name, and would retry any job we still held.
        self._quietly("deregister", "DELETE", f"/workers/{worker_id}")
        logger.info("worker %s stopped", self.name)

    def _quietly(self, what: str, method: str, path: str) -> None:
        try:
            self.client.request(method, path, idempotent=True)
        except TaskForgeError as exc:
            logger.warning("%s failed: %s", what, exc)

    def _release_client(self) -> None:
        """Close our own client, unless the fetcher is mid-request (it closes it then)."""
        with self._lock:
            self._run_finished = True
            close = self._owns_client and not self._fetch_in_flight
        if close:
            self.client.close()

    # --- signals ------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._on_signal)
        return previous

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        self._signals += 1
        if self._signals > 1:
            logger.warning("second %s: exiting now; the server retries the held jobs", name)
            for handler in logging.getLogger().handlers:
                handler.flush()
            sys.stderr.flush()
            # Now, as promised: no cleanup, no waiting for a handler that may never return.
            os._exit(1)
        logger.info("received %s: draining (send it again to exit at once)", name)
        self.stop()

    # --- fetching -----------------------------------------------------------------------------

    def _fetch(self, *, wait: int, limit: int) -> list[AssignedJob]:
        data = self.client.request(
            "GET",
            f"/workers/{self.worker_id}/jobs",
            params={"wait": wait, "max": max(1, min(limit, 1000))},
            # A long-poll answers after up to `wait` seconds: don't time it out before.
            timeout=wait + self.client.timeout,
        )
        return [AssignedJob.from_dict(job) for job in data["jobs"]]

    def _fetch_loop(self) -> None:
        failures = 0
        while True:
            with self._lock:
                while not self._stop_requested.is_set() and self._busy >= self.concurrency:
                    self._lock.wait()
                self._gather_free_slots()
                if self._stop_requested.is_set():
                    return
                free = self.concurrency - self._busy
                self._fetch_in_flight = True
            jobs: list[AssignedJob] = []
            worker_id = self.worker_id
            try:
                jobs = self._fetch(wait=self.poll_wait, limit=free)
                failures = 0
                if not jobs and not self.poll_wait:
                    self._stop_requested.wait(1.0)  # plain polling: once a second
            except (AuthenticationError, PermissionDenied) as exc:
                logger.error("the server refused the API key: %s", exc)
                self._fatal = exc
                self.stop()
            except NotFound:
                self._reregister(worker_id)
            except Exception as exc:
                if not self._stop_requested.is_set():
                    failures += 1
                    delay = self.client.retry_policy.backoff(min(failures, 6))
                    logger.warning("fetching jobs failed (%s); retrying in %.1fs", exc, delay)
                    self._stop_requested.wait(delay)
            finally:
                # Handed over while the fetch still counts as in flight: a drain waits for it.
                self._hand_over(jobs)
                with self._lock:
                    self._fetch_in_flight = False
                    self._lock.notify_all()
                    close = self._run_finished and self._owns_client
                if close:
                    self.client.close()

    def _gather_free_slots(self) -> None:
        """With most slots busy, wait a moment (FETCH_GATHER_SECONDS at most) for a few more
        to free, so that one fetch takes a batch of jobs instead of one request per job
        finished: under load each fetch is a round trip to the server and a claim there.
        An idle worker (nothing running) fetches at once. Called with self._lock held."""
        enough = max(1, self.concurrency // 4)
        if not self._busy or self.concurrency - self._busy >= enough:
            return
        deadline = time.monotonic() + FETCH_GATHER_SECONDS
        while (
            not self._stop_requested.is_set()
            and self._busy
            and self.concurrency - self._busy < enough
            and (left := deadline - time.monotonic()) > 0
        ):
            self._lock.wait(left)

    def _hand_over(self, jobs: list[AssignedJob]) -> None:
        if not jobs:
            return
        with self._lock:
            if self._closed:
                # Fetched after the drain finished: deregistering makes the server retry them.
                logger.warning("dropping %d job(s) fetched after the drain", len(jobs))
                return
            held = []
            for job in jobs:
                entry = _Held(job, JobContext(job, worker_name=self.name, worker_id=self.worker_id))
                self._held[job.id] = entry
                held.append(entry)
            self._busy += len(held)
        self._note_lease(jobs)
        # Acknowledge the delivery: the next heartbeat names these jobs.
        self._heartbeat_due.set()
        for entry in held:
            self._work.put(entry)
        # Let the runner threads just woken take the interpreter now: otherwise this thread
        # keeps it while it builds its next fetch, and a runner waits for the switch interval
        # (5 ms) before its handler starts.
        time.sleep(0)

    def _note_lease(self, jobs: list[AssignedJob]) -> None:
        expires = [job.lease_expires_at for job in jobs if job.lease_expires_at is not None]
        if expires:
            left = (min(expires) - datetime.now(UTC)).total_seconds()
            if left > 0:
                self._lease_seconds = left

    # --- running ------------------------------------------------------------------------------

    def _runner_loop(self) -> None:
        while True:
            entry = self._work.get()
            if entry is None:
                return
            try:
                self._execute(entry)
            except Exception:  # a bug of ours: never lose the slot or the thread silently
                logger.exception("job %s: the worker failed to run it", entry.job.id)
                self._finish(entry, Outcome.failure("worker error", retryable=True))
            if entry.abandoned:
                return  # timed out: a fresh runner took this thread's place

    def _execute(self, entry: _Held) -> None:
        job, ctx = entry.job, entry.ctx
        if job.timeout_seconds:
            self._watch(entry, time.monotonic() + job.timeout_seconds)
        handler = self._lookup(job.job_type)
        if handler is None:
            outcome = Outcome.failure(f"no handler for job type {job.job_type!r}", retryable=False)
            logger.error("job %s: %s", job.id, outcome.error)
            self._finish(entry, outcome)
            return
        try:
            result = self._call(handler, ctx, job.payload)
        except JobCancelled as exc:
            outcome = self._cancelled(ctx, exc)
        except BaseException as exc:  # even SystemExit or KeyboardInterrupt: a failed attempt
            outcome = self._failed(ctx, exc, retryable=not is_permanent(exc))
        else:
            try:
                # Encoded as the results request will encode it: a result that cannot be
                # (a lone surrogate, NaN, a set…) fails its own job here, for good, instead of
                # failing the request that carries the results of other jobs too.
                encode_json(result)
            except EncodingError as exc:
                outcome = Outcome.failure(
                    f"the result is not JSON-serializable: {exc.details['reason']}",
                    retryable=False,
                )
            else:
                outcome = Outcome(True, result=result)
        self._finish(entry, outcome)

    def _call(self, handler: Handler, ctx: JobContext, payload: Any) -> Any:
        if inspect.iscoroutinefunction(handler):
            return asyncio.run(handler(ctx, payload))
        return handler(ctx, payload)

    def _failed(self, ctx: JobContext, exc: BaseException, *, retryable: bool) -> Outcome:
        summary = describe_exception(exc)
        if not ctx.timed_out:
            ctx._add_line(summary, level="error", retryable=retryable)
        # The traceback goes with the result, kept on the attempt (not in the log line too).
        trace = "".join(traceback.format_exception(exc))
        return Outcome.failure(summary, retryable=retryable, traceback=trace)

    def _cancelled(self, ctx: JobContext, exc: JobCancelled) -> Outcome:
        if not ctx.cancelled:
            # Raised by the handler itself, the job was not cancelled: it fails, for good.
            return self._failed(ctx, exc, retryable=False)
        # Not a failure: reported all the same (the server refuses it as "conflict"), which
        # tells the server the job no longer runs here, so it frees the slot at once.
        logger.info("job %s cancelled", ctx.job_id)
        return Outcome.failure(CANCELLED_ERROR, retryable=False)

    def _lookup(self, job_type: str) -> Handler | None:
        return (
            self.registry.get(job_type)
            or registry.get(job_type)
            or self.registry.get_fallback()
            or registry.get_fallback()
        )

    def _finish(self, entry: _Held, outcome: Outcome, *, abandon: bool = False) -> bool:
        """Report the job's outcome unless it was already reported; say if this one was."""
        with self._lock:
            if entry.finished:
                return False
            entry.finished = True
            entry.abandoned = abandon
        entry.outcome = outcome
        try:
            if entry.ctx.cancelled:
                entry.ctx.close_log()  # the server would refuse the lines (409)
            else:
                self._send_logs(entry)
        finally:
            entry.finished_at = time.monotonic()
            self._results.put(entry)
            with self._lock:
                self._busy -= 1
                self._lock.notify_all()
        return True

    def _send_logs(self, entry: _Held) -> None:
        entries = entry.ctx.close_log()
        for start in range(0, len(entries), LOG_CHUNK):
            body = {
                "lease_token": entry.job.lease_token,
                "entries": entries[start : start + LOG_CHUNK],
            }
            try:
                # Not idempotent: a repeat after a lost response would store the lines twice.
                self.client.request("POST", f"/jobs/{entry.job.id}/logs", json=body)
            except TaskForgeError as exc:
                logger.warning(
                    "job %s: could not store %d log line(s): %s", entry.job.id, len(entries), exc
                )
                return

    # --- timeouts -----------------------------------------------------------------------------

    def _watch(self, entry: _Held, deadline: float) -> None:
        with self._watch_cond:
            heap = self._watch_heap
            if len(heap) > max(1000, 4 * self.concurrency):
                # Finished jobs stay in the heap until their deadline; drop them now and then.
                heap[:] = [item for item in heap if not item[2].finished]
                heapq.heapify(heap)
            heapq.heappush(heap, (deadline, next(self._watch_seq), entry))
            self._watch_cond.notify()

    def _watchdog_loop(self) -> None:
        while True:
            with self._watch_cond:
                while True:
                    if self._watch_stop:
                        return
                    now = time.monotonic()
                    if self._watch_heap and self._watch_heap[0][0] <= now:
                        _, _, entry = heapq.heappop(self._watch_heap)
                        break
                    timeout = self._watch_heap[0][0] - now if self._watch_heap else None
                    self._watch_cond.wait(timeout)
            if not entry.finished:
                self._time_out(entry)

    def _time_out(self, entry: _Held) -> None:
        seconds = entry.job.timeout_seconds
        entry.ctx.mark_timed_out()
        outcome = Outcome.failure(f"timed out after {seconds}s", retryable=True)
        try:
            if self._finish(entry, outcome, abandon=True):
                logger.warning(
                    "job %s (%s) timed out after %ss; its thread keeps running until the "
                    "handler returns, a new runner takes the slot",
                    entry.job.id,
                    entry.job.job_type,
                    seconds,
                )
        finally:
            if entry.abandoned:
                self._spawn(f"runner-{entry.job.id}", self._runner_loop)

    # --- reporting ----------------------------------------------------------------------------

    def _reporter_loop(self) -> None:
        # One request at a time, each with everything that finished meanwhile: the results
        # queued while the previous request was in flight go at once, and a result that
        # finds the reporter idle waits until flush_interval after it finished for others
        # finishing with it (jobs fetched together tend to end together). Busy results that
        # are due go out with the next batch, and a wait for new results ends when the next
        # busy one falls due. After the sentinel (None: every job has finished), what is left
        # to send again is sent before the thread ends.
        last = False
        while True:
            batch = self._due_busy_results()
            if not last and not batch:
                try:
                    first = self._results.get(timeout=self._until_busy_results_due())
                except queue.Empty:
                    continue  # a busy result fell due
                if first is None:
                    last = True
                else:
                    batch.append(first)
            # Due flush_interval after the oldest result was queued: passed already for one
            # that waited out a request in flight, or a busy result sent again.
            deadline = min((e.finished_at for e in batch), default=0.0) + self.flush_interval
            while not last and len(batch) < self.flush_size:
                left = deadline - time.monotonic()
                try:
                    entry = (
                        self._results.get(timeout=left) if left > 0 else self._results.get_nowait()
                    )
                except queue.Empty:
                    break
                if entry is None:
                    last = True
                    break
                batch.append(entry)
            if batch:
                try:
                    self._report(batch)
                except Exception:
                    logger.exception("reporting %d result(s) failed", len(batch))
                    self._acknowledge(batch, [])
            elif last:
                if not self._busy_retries:
                    return
                time.sleep(self._until_busy_results_due() or 0.0)

    def _due_busy_results(self) -> list[_Held]:
        due: list[_Held] = []
        now = time.monotonic()
        while self._busy_retries and self._busy_retries[0][0] <= now:
            due.append(heapq.heappop(self._busy_retries)[2])
        return due

    def _until_busy_results_due(self) -> float | None:
        """Seconds until the next busy result is due again; None when there is none."""
        if not self._busy_retries:
            return None
        return max(0.0, self._busy_retries[0][0] - time.monotonic())

    def _send_again_later(self, entry: _Held) -> bool:
        """Queue a result the server answered "busy" for; False when it is given up on."""
        if self._stop_requested.is_set():
            entry.busy_tries += 1
            if entry.busy_tries > SHUTDOWN_BUSY_TRIES:
                logger.error(
                    "job %s: giving up on its result, the server stayed busy with the job",
                    entry.job.id,
                )
                return False
        due = time.monotonic() + BUSY_RETRY_SECONDS
        heapq.heappush(self._busy_retries, (due, next(self._busy_seq), entry))
        return True

    def _report(self, batch: list[_Held]) -> None:
        tries = 0
        while True:
            worker_id = self.worker_id
            body = {"results": [_result_item(entry) for entry in batch]}
            try:
                # Fenced by lease tokens: a repeat only turns into "conflict" outcomes.
                data = self.client.request(
                    "POST", f"/workers/{worker_id}/results", json=body, idempotent=True
                )
            except (ValidationError, PayloadTooLarge) as exc:
                self._refused(batch, exc)
                return
            except NotFound:
                # Deregistered by someone else: its leases ended, so these results are stale.
                logger.warning("worker unknown to the server; %d result(s) dropped", len(batch))
                self._acknowledge(batch, [])
                self._reregister(worker_id)
                return
            except (TransportError, ServerError, RateLimited) as exc:
                tries += 1
                if self._stop_requested.is_set() and tries > SHUTDOWN_REPORT_TRIES:
                    logger.error("giving up on %d result(s): %s", len(batch), exc)
                    self._acknowledge(batch, [])
                    return
                delay = self.client.retry_policy.backoff(min(tries, 6))
                logger.warning("reporting results failed (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
                continue
            except TaskForgeError as exc:
                # Refused for good (the key was revoked, say): the leases will expire.
                logger.error("the server refused %d result(s): %s", len(batch), exc)
                self._acknowledge(batch, [])
                return
            self._acknowledge(batch, data.get("results", []))
            return

    def _refused(self, batch: list[_Held], exc: TaskForgeError) -> None:
        """The server refused the batch: find the item it refuses and fail that job instead."""
        if len(batch) > 1:
            for entry in batch:
                self._report([entry])
            return
        entry = batch[0]
        if entry.outcome is not None and entry.outcome.succeeded:
            if isinstance(exc, EncodingError):
                # Changed after it was checked (by a thread the handler left running, say).
                error = f"the result is not JSON-serializable: {exc.details['reason']}"
            else:
                error = f"result refused by the server: {exc.message}"
            logger.error("job %s: %s", entry.job.id, error)
            entry.outcome = Outcome.failure(error, retryable=False)
            self._report([entry])
            return
        logger.error("job %s: the server refused its failure report: %s", entry.job.id, exc)
        self._acknowledge(batch, [])

    def _acknowledge(self, batch: list[_Held], outcomes: list[dict[str, Any]]) -> None:
        by_id = {str(o.get("job_id")): o.get("outcome") for o in outcomes}
        kept: list[_Held] = []
        for entry in batch:
            outcome = by_id.get(entry.job.id)
            if outcome == "busy":
                # Not applied and not stale: another transaction held the job's row. Still
                # held (the heartbeats keep its lease), and sent again shortly.
                logger.info(
                    "job %s: the server is busy with the job; result sent again soon", entry.job.id
                )
                if self._send_again_later(entry):
                    kept.append(entry)
            elif outcome == "conflict" and entry.ctx.cancelled:
                # Expected: the server refuses a cancelled job's result, and frees its slot.
                logger.info("job %s: result refused, the job was cancelled", entry.job.id)
            elif outcome == "conflict":
                # Not retried: the lease is no longer ours (expired and re-assigned, cancelled,
                # or the result was already recorded).
                logger.warning(
                    "job %s: result refused, the lease is no longer current", entry.job.id
                )
            elif outcome is not None:
                logger.debug("job %s: %s", entry.job.id, outcome)
        with self._lock:
            for entry in batch:
                if not any(entry is other for other in kept):
                    self._held.pop(entry.job.id, None)

    # --- heartbeats ---------------------------------------------------------------------------

    def _heartbeat_every(self) -> float:
        if self.heartbeat_interval is not None:
            return self.heartbeat_interval
        return min(MAX_HEARTBEAT_SECONDS, max(1.0, self._lease_seconds / 3))

    def _heartbeat_loop(self) -> None:
        last = time.monotonic()
        while True:
            # Every interval, or sooner when a fetch brought jobs (_heartbeat_due): naming
            # them acknowledges their delivery. At most one per ACK_HEARTBEAT_SECONDS.
            self._heartbeat_due.wait(max(0.0, last + self._heartbeat_every() - time.monotonic()))
            if self._heartbeat_due.is_set() and not self._heartbeat_stop.is_set():
                self._heartbeat_stop.wait(max(0.0, last + ACK_HEARTBEAT_SECONDS - time.monotonic()))
            if self._heartbeat_stop.is_set():
                return
            self._heartbeat_due.clear()
            last = time.monotonic()
            worker_id = self.worker_id
            try:
                data = self.client.request(
                    "POST",
                    f"/workers/{worker_id}/heartbeat",
                    json={"running": self.running},
                    idempotent=True,
                )
            except NotFound:
                self._reregister(worker_id)
                continue
            except Exception as exc:
                logger.warning("heartbeat failed: %s", exc)
                continue
            self._note_cancelled(data.get("cancelled") or [])
            if data.get("status") == "draining" and not self._stop_requested.is_set():
                logger.info("the server is draining this worker")
                self.stop()

    def _note_cancelled(self, job_ids: Iterable[Any]) -> None:
        """Tell the handlers of the jobs the server says were cancelled (ctx.cancelled)."""
        for job_id in job_ids:
            with self._lock:
                entry = self._held.get(str(job_id))
            if entry is None or entry.ctx.cancelled:
                continue
            entry.ctx.mark_cancelled()
            if not entry.finished:
                logger.info(
                    "job %s (%s) was cancelled on the server; its handler is told (ctx.cancelled)",
                    entry.job.id,
                    entry.job.job_type,
                )


def _result_item(entry: _Held) -> dict[str, Any]:
    outcome = entry.outcome
    assert outcome is not None
    item: dict[str, Any] = {"job_id": entry.job.id, "lease_token": entry.job.lease_token}
    if outcome.succeeded:
        item.update(status="succeeded", result=outcome.result)
    else:
        item.update(status="failed", error=outcome.error, retryable=outcome.retryable)
        if outcome.traceback:
            item["traceback"] = outcome.traceback
    return item
