"""Fault cases found by the chaos test, each in real processes against the test database.

* A worker SIGKILLed and restarted under its name gets new work at once: re-registering
  releases what the dead process held (item 8).
* A row lock another transaction holds on one processing job delays no other completion:
  the batched results skip the locked row, answer ``busy`` for it, and the SDK sends it again
  (item 7).
* A job delivered to a worker that never acknowledges it (no heartbeat names it) goes back
  after the acknowledgement timeout, not after a whole lease (item 9).
* Restarting the web process (gunicorn, deploy/gunicorn.conf.py) runs no finished job twice:
  the long-polls end at once on SIGTERM, and the dispatcher does not blame workers for the
  silence of a web tier that is down or has just come back (item 10).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from jobs.models import Job, JobExecution, JobState
from tests.e2e.support import start_worker, stop_worker, wait_until
from tests.processes import REPO_ROOT, child_database_url, child_env, running
from workers.models import Worker

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

DISPATCHER = ("rundispatcher", "--poll-interval", "0.2")
GUNICORN = Path(sys.executable).parent / "gunicorn"


def submit(api: httpx.Client, job_type: str, count: int = 1, **fields: object) -> list[str]:
    jobs = [{"queue": "default", "job_type": job_type, **fields} for _ in range(count)]
    response = api.post("/api/v1/jobs/batch", json={"jobs": jobs})
    assert response.status_code == 201, response.text
    return [job["id"] for job in response.json()["jobs"]]


def jobs(ids: list[str]):
    return Job.objects.all_tenants().filter(pk__in=ids)


def count_in(ids: list[str], state: str) -> int:
    return jobs(ids).filter(state=state).count()


def records(path: Path) -> list[tuple[str, int, float]]:
    """What tests/e2e/handlers.py's e2e.record wrote: (job id, attempt, unix time) per run."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        job_id, attempt, at = line.split()
        rows.append((job_id, int(attempt), float(at)))
    return rows


def runs_per_job(path: Path) -> Counter[str]:
    return Counter(job_id for job_id, _, _ in records(path))


# --- item 8: restart under the same name -----------------------------------------------------


def test_a_worker_killed_with_sigkill_and_restarted_under_its_name_gets_new_work_within_5s(
    api, live_server, quick_retries, tmp_path
):
    log = tmp_path / "records.txt"
    env = {"TASKFORGE_E2E_RECORDS": str(log)}
    hung = submit(api, "e2e.slow_first", 2, max_attempts=5)
    with running(DISPATCHER, log_dir=tmp_path) as children:
        first = start_worker(live_server.url, api.key, "phoenix", tmp_path, concurrency=2, **env)
        try:
            wait_until(
                lambda: (
                    jobs(hung).filter(state="processing", delivered_at__isnull=False).count() == 2
                ),
                timeout=30,
                what="the first process to hold both of its slots",
            )
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        fresh = submit(api, "e2e.record", 3, payload={"sleep": 0})

        restarted_at = time.monotonic()
        second = start_worker(live_server.url, api.key, "phoenix", tmp_path, concurrency=2, **env)
        try:
            # Today the dead process's two jobs fill both slots until their lease runs out.
            wait_until(
                lambda: count_in(fresh, JobState.SUCCEEDED) == 3,
                timeout=5,
                what="the restarted worker to run new jobs within 5 s of its restart",
            )
            took = time.monotonic() - restarted_at
            # The jobs the dead process held were failed attempts, retried (quick_retries).
            wait_until(
                lambda: count_in(hung, JobState.SUCCEEDED) == 2,
                timeout=20,
                what="the dead process's jobs to be retried and succeed",
            )
        finally:
            stop_worker(second)
        assert all(child.process.poll() is None for child in children)

    assert took < 5
    assert Worker.objects.all_tenants().filter(name="phoenix").count() <= 1
    for job_id in hung:
        first_run, *rest = JobExecution.objects.all_tenants().filter(job_id=job_id)
        assert first_run.status == "failed"
        assert first_run.error.startswith("worker restarted"), first_run.error
        assert [run.status for run in rest] == ["succeeded"]
    assert jobs(hung).filter(attempts=2).count() == 2


# --- item 7: one locked row ------------------------------------------------------------------


@contextlib.contextmanager
def row_lock(job_id: str) -> Iterator[None]:
    """Hold FOR UPDATE on one job row from another connection until the block ends."""
    with psycopg.connect(child_database_url()) as conn:
        conn.execute("SELECT 1 FROM jobs_job WHERE id = %s FOR UPDATE", [job_id])
        try:
            yield
        finally:
            conn.rollback()


def test_a_row_lock_on_one_processing_job_delays_no_other_completion_by_more_than_1s(
    api, live_server, tmp_path
):
    log = tmp_path / "records.txt"
    (locked,) = submit(api, "e2e.record", payload={"sleep": 3})
    with running(DISPATCHER, log_dir=tmp_path) as children:
        worker = start_worker(
            live_server.url, api.key, "locksmith", tmp_path, TASKFORGE_E2E_RECORDS=str(log)
        )
        try:
            wait_until(
                lambda: (
                    jobs([locked]).filter(state="processing", delivered_at__isnull=False).exists()
                ),
                timeout=30,
                what="the job to be delivered",
            )
            with row_lock(locked):
                # Its handler returns while the row is locked: its result cannot be applied.
                wait_until(lambda: runs_per_job(log)[locked] == 1, what="the locked job to run")
                others = submit(api, "e2e.record", 20, payload={"sleep": 0})
                # Today the results request carrying the locked job waits on the lock, and
                # every result after it waits behind that request.
                wait_until(
                    lambda: count_in(others, JobState.SUCCEEDED) == 20,
                    timeout=10,
                    what="the other jobs to complete while one row is locked",
                )
                finished = dict(jobs(others).values_list("pk", "finished_at"))
                ran = {job_id: at for job_id, _, at in records(log)}
                delays = [finished[job_id].timestamp() - ran[str(job_id)] for job_id in finished]
                assert max(delays) < 1.0, sorted(delays)
                # Not refused as stale: still the worker's, waiting to be reported.
                held = Job.objects.all_tenants().get(pk=locked)
                assert (held.state, held.attempts) == (JobState.PROCESSING, 1)
            # Lock released: the SDK's next try applies the result.
            wait_until(
                lambda: count_in([locked], JobState.SUCCEEDED) == 1,
                timeout=10,
                what="the locked job's result to be applied once the lock is gone",
            )
        finally:
            stop_worker(worker)
        assert all(child.process.poll() is None for child in children)

    assert runs_per_job(log) == Counter({job_id: 1 for job_id in [locked, *others]})
    assert JobExecution.objects.all_tenants().filter(job_id=locked).count() == 1


# --- item 9: a delivery nobody acknowledges --------------------------------------------------


def test_a_job_delivered_to_a_worker_that_never_acknowledges_it_runs_elsewhere_within_seconds(
    api, live_server, quick_retries, settings, tmp_path
):
    settings.TASKFORGE_ACK_TIMEOUT_SECONDS = 2
    log = tmp_path / "records.txt"
    ghost = api.post(
        "/api/v1/workers", json={"name": "ghost", "capacity": 1, "queues": [{"name": "default"}]}
    ).json()["id"]
    (job_id,) = submit(api, "e2e.record", payload={"sleep": 0})
    env = child_env(TASKFORGE_ACK_TIMEOUT_SECONDS="2")
    with running(DISPATCHER, log_dir=tmp_path, env=env) as children:
        # The ghost's long-poll claims the job and the worker is never heard of again: its
        # process died before reading the answer. (Drained, so nothing more goes to it; the
        # test's children never mark a worker offline for silence, tests/processes.py.)
        delivered = api.get(f"/api/v1/workers/{ghost}/jobs", params={"wait": 0}).json()["jobs"]
        assert [job["id"] for job in delivered] == [job_id]
        assert count_in([job_id], JobState.PROCESSING) == 1
        assert api.post(f"/api/v1/workers/{ghost}/drain").status_code == 200
        delivered_at = time.monotonic()
        worker = start_worker(
            live_server.url, api.key, "alive", tmp_path, TASKFORGE_E2E_RECORDS=str(log)
        )
        try:
            # Today the job keeps its whole lease (60 s) on the ghost.
            wait_until(
                lambda: count_in([job_id], JobState.SUCCEEDED) == 1,
                timeout=15,
                what="the unacknowledged job to run on the live worker",
            )
        finally:
            stop_worker(worker)
        assert all(child.process.poll() is None for child in children)
    assert time.monotonic() - delivered_at < 15
    first, second = JobExecution.objects.all_tenants().filter(job_id=job_id)
    assert (first.worker_id, first.status) == (
        Worker.objects.all_tenants().get(name="ghost").pk,
        "timed_out",
    )
    assert second.status == "succeeded"


# --- item 10: restarting the web process -----------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Web:
    """gunicorn with deploy/gunicorn.conf.py on one port, started and stopped like production."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_dir = log_dir
        self.env = {**env, "WEB_CONCURRENCY": "1", "TASKFORGE_WEB_THREADS": "16"}
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with (self.log_dir / f"gunicorn-{self.starts}.log").open("wb") as log:
            self.process = subprocess.Popen(
                [str(GUNICORN), "-c", "deploy/gunicorn.conf.py", "taskforge.wsgi",
                 "--bind", f"127.0.0.1:{self.port}"],
                cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_until(self.healthy, timeout=30, what="gunicorn to answer /health")

    def healthy(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.logs()
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, timeout: float = 60) -> float:
        """SIGTERM (gunicorn's graceful stop); return how long it took to exit."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=timeout)
        return time.monotonic() - started

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(
            path.read_text(errors="replace") for path in sorted(self.log_dir.glob("gunicorn-*"))
        )


# Short timeouts, so that a web outage of a few seconds is long enough to make workers look
# dead: the dispatcher marks a worker offline after 8 s of silence and ends its leases.
SHORT = {
    "TASKFORGE_WORKER_TIMEOUT_SECONDS": "8",
    "TASKFORGE_LEASE_SECONDS": "8",
    "TASKFORGE_WEB_RESTART_GRACE_SECONDS": "20",
}


@contextlib.contextmanager
def web_and_worker(api, tmp_path: Path, log: Path) -> Iterator[tuple[Web, list]]:
    env = child_env(**SHORT)
    web = Web(tmp_path, env)
    web.start()
    with running(DISPATCHER, log_dir=tmp_path, env=env) as children:
        # Long-polls of 20 s (the SDK's default): one is waiting when the web process stops.
        worker = start_worker(
            web.url, api.key, "steady", tmp_path, poll_wait=20, TASKFORGE_E2E_RECORDS=str(log)
        )
        try:
            yield web, children
        finally:
            stop_worker(worker)
            web.kill()
            print(web.logs())


def test_a_graceful_restart_of_the_web_process_runs_no_finished_job_twice(api, tmp_path):
    log = tmp_path / "records.txt"
    # Six jobs on eight slots: the worker's long-poll for the other two is open at the stop.
    ids = submit(api, "e2e.record", 6, payload={"sleep": 3})
    with web_and_worker(api, tmp_path, log) as (web, children):
        wait_until(
            lambda: jobs(ids).filter(state="processing", delivered_at__isnull=False).count() == 6,
            timeout=30,
            what="the worker to run all six jobs",
        )
        took = web.stop()
        web.start()
        wait_until(
            lambda: count_in(ids, JobState.SUCCEEDED) == 6,
            timeout=30,
            what="the six jobs to succeed after the restart",
        )
        assert all(child.process.poll() is None for child in children)
    # Today the stop waits for the open long-poll (up to 20 s), the worker looks dead for
    # longer than its timeout, and its finished jobs are retried and run again.
    assert took < 10, f"gunicorn took {took:.1f}s to stop"
    assert runs_per_job(log) == Counter(dict.fromkeys(ids, 1))
    assert JobExecution.objects.all_tenants().filter(job_id__in=ids).count() == 6


def test_a_web_outage_longer_than_the_worker_timeout_runs_no_finished_job_twice(api, tmp_path):
    log = tmp_path / "records.txt"
    # Long enough that the handlers are still running when the web process is gone, even on a
    # loaded machine where stopping it takes a few seconds.
    ids = submit(api, "e2e.record", 6, payload={"sleep": 5})
    with web_and_worker(api, tmp_path, log) as (web, children):
        wait_until(
            lambda: jobs(ids).filter(state="processing", delivered_at__isnull=False).count() == 6,
            timeout=30,
            what="the worker to run all six jobs",
        )
        web.stop()
        down_since = time.monotonic()
        # The web process stays down for longer than the worker timeout and the lease (8 s
        # each) while the handlers finish: the worker cannot report, through no fault of its
        # own, and its jobs must stay its own.
        outage = 12
        while time.monotonic() - down_since < outage:
            # Processing, or succeeded by a result that got in while the web process stopped;
            # never back to scheduled, pending or dead, which only an ended lease does.
            ended = jobs(ids).exclude(state__in=[JobState.PROCESSING, JobState.SUCCEEDED])
            assert not ended.exists(), "a lease ended while the web was down"
            time.sleep(0.2)
        assert len(records(log)) == 6
        web.start()
        wait_until(
            lambda: count_in(ids, JobState.SUCCEEDED) == 6,
            timeout=30,
            what="the six finished jobs to be reported after the outage",
        )
        assert all(child.process.poll() is None for child in children)
    assert runs_per_job(log) == Counter(dict.fromkeys(ids, 1))
    assert JobExecution.objects.all_tenants().filter(job_id__in=ids).count() == 6
