"""Concurrent single-submit benchmark (not a test): does POST /api/v1/jobs scale with clients?

    python -m bench.concurrent_submit [--clients 16] [--jobs 20000] [--baseline-jobs 2000]

Processes, all on this machine, as bench/e2e.py starts them: gunicorn (deploy/gunicorn.conf.py,
production settings) and one `manage.py rundispatcher`; no workers, so every job stays
pending and only the submit path is measured. Each client is a thread with its own SDK
`TaskForge` client (one keep-alive connection), submitting one job at a time with
`TaskForge.submit` (so each request carries an idempotency key, as the SDK always sends one).

Two phases on the same server: 1 client submits `--baseline-jobs` jobs, then `--clients`
clients submit `--jobs` jobs between them. Each phase starts with a few untimed submits per
client (connections, prepared statements), then every client starts at once. Printed, one
JSON line per phase and a summary:
* jobs/s: jobs / (first submit started → last submit answered);
* submit latency p50 / p95 / p99 ms, as each client saw it;
* gunicorn's CPU ms per job (its worker processes' utime + stime, /proc, Linux only);
* errors: submits that raised (the SDK retries 503s and rate limits first); must be 0;
* the summary: jobs/s with N clients ÷ jobs/s with 1 client.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from typing import Any

import httpx
from taskforge_client import TaskForge, TaskForgeError

import bench  # noqa: F401 - configures Django before the app imports
from bench.common import children, cpu_seconds, emit, percentiles
from bench.e2e import (
    _healthy,
    serve,
    start,
    stop,
    wait_until,
)
from jobs.models import Job

WARMUP_PER_CLIENT = 20


def run_phase(url: str, key: str, clients: int, jobs: int, web_pid: int) -> dict[str, Any]:
    """``clients`` threads submit ``jobs`` jobs between them; return the phase's figures."""
    # Spread the jobs evenly; the first clients take one more when it does not divide.
    shares = [jobs // clients + (1 if n < jobs % clients else 0) for n in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)
    go = threading.Event()

    def client_loop(n: int) -> None:
        with TaskForge(url, key) as client:
            try:
                for i in range(WARMUP_PER_CLIENT):
                    client.submit("default", "bench.record", {"i": -1 - i})
            finally:
                ready.wait()
            go.wait()
            mine = latencies[n]
            for i in range(shares[n]):
                started = time.perf_counter()
                try:
                    client.submit("default", "bench.record", {"i": n * 10_000_000 + i})
                except TaskForgeError as exc:
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                mine.append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=client_loop, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    workers = children(web_pid)
    cpu_before = sum(cpu_seconds(pid) for pid in workers)
    started = time.perf_counter()
    go.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    cpu = sum(cpu_seconds(pid) for pid in workers) - cpu_before
    samples = [ms for mine in latencies for ms in mine]
    return {
        "clients": clients,
        "jobs": jobs,
        "seconds": round(elapsed, 2),
        "jobs_per_s": round(jobs / elapsed, 1),
        "submit_ms": percentiles(samples) if len(samples) > 1 else {},
        "submit_ms_mean": round(statistics.fmean(samples), 2) if samples else None,
        "server_cpu_ms_per_job": round(1000 * cpu / jobs, 2),
        "errors": len(errors),
        "first_errors": errors[:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs the N clients submit")
    parser.add_argument(
        "--baseline-jobs", type=int, default=2_000, help="jobs the single client submits"
    )
    args = parser.parse_args()

    url, key, env, web = serve()
    procs = [web, start([sys.executable, "manage.py", "rundispatcher"], env)]
    try:
        probe = httpx.Client(base_url=url, timeout=10)
        wait_until(lambda: _healthy(probe), timeout=60, interval=0.2)
        probe.close()
        one = run_phase(url, key, 1, args.baseline_jobs, web.pid)
        emit("concurrent_submit.one_client", one)
        many = run_phase(url, key, args.clients, args.jobs, web.pid)
        emit("concurrent_submit.n_clients", many)
        expected = (1 + args.clients) * WARMUP_PER_CLIENT + args.baseline_jobs + args.jobs
        stored = Job.objects.all_tenants().count()
        emit(
            "concurrent_submit.scaling",
            {
                "clients": args.clients,
                "jobs_per_s_1_client": one["jobs_per_s"],
                "jobs_per_s_n_clients": many["jobs_per_s"],
                "ratio": round(many["jobs_per_s"] / one["jobs_per_s"], 2),
                # Every answered submit is a stored job: a lost one would flatter the rate.
                "jobs_stored": stored,
                "jobs_expected": expected - one["errors"] - many["errors"],
            },
        )
    finally:
        stop(list(reversed(procs)))


if __name__ == "__main__":
    main()
