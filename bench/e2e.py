"""End-to-end benchmark (not a test): HTTP API + dispatcher + SDK workers. Prints JSON lines.

    python -m bench.e2e [--jobs 20000] [--workers 2] [--concurrency 100]

Processes, all on this machine: gunicorn (deploy/gunicorn.conf.py, production settings),
one `manage.py rundispatcher`, and `--workers` SDK worker processes (`taskforge-worker`
running bench/e2e_handlers.py: a no-op that appends a record of when it started). Figures:
(a) submit throughput through the API, one POST /api/v1/jobs at a time (one client, keep-alive),
    then the same from 16 clients at once (bench/concurrent_submit.py's phase) and the ratio;
(b) batch submit through the API, POST /api/v1/jobs/batch in chunks of 1,000;
(c) draining a pre-filled backlog: jobs / (last record - first handler start), worker start-up
    excluded, and end to end with submits running: from the first batch submitted to the last
    job succeeded;
(d) submit → handler start latency with an idle worker: 500 single submits 10 ms apart, from
    just before the POST to the handler's start record;
(e) peak PSS of the SDK worker processes.
"""

from __future__ import annotations

import argparse
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

import bench  # noqa: F401 - configures Django before the app imports
from accounts.models import Organization, Project
from bench.common import ROOT, child_env, children, emit, fresh_database, percentiles
from billing.models import Subscription, Tier
from jobs.models import Job, JobState
from queues.models import Queue
from taskforge.onboarding import create_api_key

CHUNK = 1000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env() -> dict[str, str]:
    return {
        **child_env(),
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",
        "LOG_LEVEL": "WARNING",
    }


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def start_web(port: int, env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    """gunicorn as production runs it (deploy/gunicorn.conf.py) on 127.0.0.1:``port``, its
    access log off; ``extra`` arguments go after (``--workers 1``)."""
    gunicorn = Path(sys.executable).parent / "gunicorn"
    return start(
        [str(gunicorn), "-c", "deploy/gunicorn.conf.py", "taskforge.wsgi",
         "--bind", f"127.0.0.1:{port}", "--access-logfile", "/dev/null", *extra],
        env,
    )  # fmt: skip


def serve() -> tuple[str, str, dict[str, str], subprocess.Popen[bytes]]:
    """A fresh benchmark database with one tenant, and gunicorn as production runs it on it:
    (url, the tenant's API key, the server's environment, the gunicorn process)."""
    fresh_database()
    key = tenant()
    port = free_port()
    env = server_env()
    return f"http://127.0.0.1:{port}", key, env, start_web(port, env)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_until(predicate: Any, timeout: float = 300.0, interval: float = 0.05) -> float:
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError("benchmark step did not finish in time")
        time.sleep(interval)
    return time.perf_counter()


def tenant() -> str:
    org = Organization.objects.create(name="Bench", slug=f"bench-{time.time_ns()}")
    Subscription.objects.create(organization=org, tier=Tier.ENTERPRISE)  # no rate limit
    project = Project.objects.create(organization=org, name="bench")
    Queue.objects.create(organization=org, project=project, name="default")
    _, raw = create_api_key(project, name="bench", scopes=["admin"])
    return raw


def records(path: Path) -> list[tuple[int, float, float]]:
    rows = []
    for line in path.read_text().splitlines():
        index, enqueued, started = line.split()
        rows.append((int(index), float(enqueued), float(started)))
    return rows


def pss_mb(pid: int) -> float:
    """PSS of a process and its children, from /proc (Linux)."""
    total = 0
    for p in [pid, *children(pid)]:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return round(total / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument(
        "--single", type=int, default=2_000, help="jobs for the one-at-a-time submit"
    )
    parser.add_argument(
        "--clients", type=int, default=16, help="clients submitting at once in (a')"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()

    url, key, env, web = serve()
    records_file = Path(tempfile.mkdtemp()) / "records.txt"
    worker_env = {**env, "TASKFORGE_BENCH_RECORDS": str(records_file), "PYTHONPATH": str(ROOT)}
    bin_dir = Path(sys.executable).parent
    dispatcher = start([sys.executable, "manage.py", "rundispatcher"], env)
    procs = [web, dispatcher]
    workers: list[subprocess.Popen[bytes]] = []

    def start_workers() -> None:
        for i in range(args.workers):
            workers.append(
                start(
                    [
                        str(bin_dir / "taskforge-worker"),
                        "--url",
                        url,
                        "--api-key",
                        key,
                        "--queues",
                        "default:1",
                        "--concurrency",
                        str(args.concurrency),
                        "--name",
                        f"bench-{i}",
                        "bench.e2e_handlers",
                    ],
                    worker_env,
                )
            )
        procs.extend(workers)

    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    try:
        wait_until(lambda: _healthy(client), timeout=60, interval=0.2)

        # (a) one at a time
        started = time.perf_counter()
        for i in range(args.single):
            client.post(
                "/api/v1/jobs",
                json={"queue": "default", "job_type": "bench.record", "payload": {"i": i}},
            ).raise_for_status()
        single_rate = args.single / (time.perf_counter() - started)
        emit("e2e.submit_single", {"jobs": args.single, "jobs_per_s": round(single_rate)})

        # (a') the same single submits from 16 clients at once (SDK clients, keep-alive)
        from bench.concurrent_submit import run_phase

        before = Job.objects.all_tenants().order_by("-id").values_list("id", flat=True).first()
        concurrent = run_phase(url, key, args.clients, args.single * 2, web.pid)
        concurrent["ratio_to_one_client"] = round(concurrent["jobs_per_s"] / single_rate, 2)
        emit("e2e.submit_concurrent", concurrent)
        # Not part of the backlog the later phases count (ids are time-ordered).
        Job.objects.all_tenants().filter(id__gt=before).delete()

        # (b) batches of 1,000
        started = time.perf_counter()
        for offset in range(0, args.jobs, CHUNK):
            batch = [
                {"queue": "default", "job_type": "bench.record", "payload": {"i": offset + i}}
                for i in range(CHUNK)
            ]
            client.post("/api/v1/jobs/batch", json={"jobs": batch}).raise_for_status()
        emit(
            "e2e.submit_batch",
            {
                "jobs": args.jobs,
                "chunk": CHUNK,
                "jobs_per_s": round(args.jobs / (time.perf_counter() - started)),
            },
        )

        # (c1) drain the backlog
        backlog = args.single + args.jobs
        start_workers()
        wait_until(lambda: records_file.exists() and _count(records_file) >= backlog, timeout=600)
        rows = records(records_file)
        first, last = min(r[2] for r in rows), max(r[2] for r in rows)
        emit(
            "e2e.drain_backlog",
            {
                "jobs": backlog,
                "workers": args.workers,
                "concurrency": args.concurrency,
                "jobs_per_s": round(backlog / (last - first)),
            },
        )
        wait_until(
            lambda: Job.objects.all_tenants().filter(state=JobState.SUCCEEDED).count() >= backlog
        )

        # (c2) submit -> succeeded while submitting
        started = time.perf_counter()
        for offset in range(0, args.jobs, CHUNK):
            batch = [
                {"queue": "default", "job_type": "bench.record", "payload": {"i": offset + i}}
                for i in range(CHUNK)
            ]
            client.post("/api/v1/jobs/batch", json={"jobs": batch}).raise_for_status()
        target = backlog + args.jobs
        finished = wait_until(
            lambda: Job.objects.all_tenants().filter(state=JobState.SUCCEEDED).count() >= target,
            timeout=600,
        )
        emit(
            "e2e.submit_to_succeeded",
            {"jobs": args.jobs, "jobs_per_s": round(args.jobs / (finished - started))},
        )

        # (d) latency with an idle worker
        time.sleep(2.0)
        before = _count(records_file)
        sent: dict[int, float] = {}
        for i in range(500):
            index = 10_000_000 + i
            sent[index] = time.time()
            client.post(
                "/api/v1/jobs",
                json={
                    "queue": "default",
                    "job_type": "bench.record",
                    "payload": {"i": index, "t": sent[index]},
                },
            ).raise_for_status()
            time.sleep(0.01)
        wait_until(lambda: _count(records_file) >= before + 500, timeout=120)
        latencies = [
            (started_at - sent[index]) * 1000
            for index, _, started_at in records(records_file)
            if index in sent
        ]
        emit(
            "e2e.submit_to_handler_start_ms", {"samples": len(latencies), **percentiles(latencies)}
        )

        # (e) memory
        emit("e2e.worker_pss_mb", {"per_worker": [pss_mb(w.pid) for w in workers]})
    finally:
        client.close()
        stop(list(reversed(procs)))


def _healthy(client: httpx.Client) -> bool:
    try:
        return client.get("/health").status_code == 200
    except httpx.HTTPError:
        return False


def _count(path: Path) -> int:
    return path.stat().st_size // 53 if path.exists() else 0


if __name__ == "__main__":
    main()
