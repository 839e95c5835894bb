"""Mixed-load benchmark (not a test): many submitting clients and SDK workers at once.

    python -m bench.load [--clients 50] [--seconds 20] [--workers 2] [--concurrency 8]

Processes, all on this machine: gunicorn (deploy/gunicorn.conf.py, production settings), one
`manage.py rundispatcher` and `--workers` SDK worker processes (`taskforge-worker` running
bench/e2e_handlers.py, a no-op that appends a record of when it started), as bench/e2e.py
starts them. Once the workers have registered, `--clients` threads, each with its own
keep-alive httpx client, submit one job at a time (POST /api/v1/jobs) for `--seconds`.

Printed (one JSON line):
* submit latency p50 / p95 / p99 in ms, and submits per second;
* the jobs the workers finished per second during the load (succeeded jobs counted in the
  database at the start and at the end of the load);
* submit → handler start p50 / p99 in ms for the jobs whose handler started during the load;
* errors: submits that raised or did not answer 201 (must be 0).

The workers' fetches, results and heartbeats go through the same web server as the submits,
so the completions per second show whether worker-protocol traffic starves behind client
traffic.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

import bench  # noqa: F401 - configures Django before the app imports
from bench.common import ROOT, emit, percentiles
from bench.e2e import (
    _healthy,
    free_port,
    records,
    serve,
    start,
    start_web,
    stop,
    wait_until,
)
from jobs.models import Job, JobState
from workers.models import Worker, WorkerStatus


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--concurrency", type=int, default=8, help="slots per worker (taskforge-worker default)"
    )
    parser.add_argument(
        "--worker-server",
        action="store_true",
        help="serve the workers from a gunicorn of their own (one process), as deploy/nginx.conf "
        "can route /api/v1/workers/ to one",
    )
    args = parser.parse_args()

    url, key, env, web = serve()
    records_file = Path(tempfile.mkdtemp()) / "records.txt"
    worker_env = {**env, "TASKFORGE_BENCH_RECORDS": str(records_file), "PYTHONPATH": str(ROOT)}
    bin_dir = Path(sys.executable).parent
    procs = [web, start([sys.executable, "manage.py", "rundispatcher"], env)]
    worker_url = url
    if args.worker_server:
        worker_port = free_port()
        worker_url = f"http://127.0.0.1:{worker_port}"
        procs.append(start_web(worker_port, env, "--workers", "1"))
    try:
        for server in {url, worker_url}:
            probe = httpx.Client(base_url=server, timeout=10)
            wait_until(lambda probe=probe: _healthy(probe), timeout=60, interval=0.2)
            probe.close()
        for i in range(args.workers):
            procs.append(
                start(
                    [str(bin_dir / "taskforge-worker"), "--url", worker_url, "--api-key", key,
                     "--queues", "default:1", "--concurrency", str(args.concurrency),
                     "--name", f"load-{i}", "bench.e2e_handlers"],
                    worker_env,
                )
            )  # fmt: skip

        def online() -> int:
            return Worker.objects.all_tenants().filter(status=WorkerStatus.ONLINE).count()

        wait_until(lambda: online() >= args.workers, timeout=60, interval=0.2)

        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        go = threading.Event()
        deadline_box: list[float] = []

        def client_loop(n: int) -> None:
            mine: list[float] = []
            with httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
            ) as client:
                go.wait()
                i = 0
                while time.perf_counter() < deadline_box[0]:
                    body = {
                        "queue": "default",
                        "job_type": "bench.record",
                        "payload": {"i": n * 1_000_000 + i, "t": time.time()},
                    }
                    started = time.perf_counter()
                    try:
                        response = client.post("/api/v1/jobs", json=body)
                        if response.status_code != 201:
                            with lock:
                                errors.append(f"{response.status_code} {response.text[:100]}")
                    except httpx.HTTPError as exc:
                        with lock:
                            errors.append(f"{type(exc).__name__}: {exc}")
                    mine.append((time.perf_counter() - started) * 1000)
                    i += 1
            with lock:
                latencies.extend(mine)

        threads = [
            threading.Thread(target=client_loop, args=(n,), daemon=True)
            for n in range(args.clients)
        ]
        for thread in threads:
            thread.start()

        def succeeded() -> int:
            return Job.objects.all_tenants().filter(state=JobState.SUCCEEDED).count()

        done_before = succeeded()
        load_started = time.time()
        deadline_box.append(time.perf_counter() + args.seconds)
        go.set()
        for thread in threads:
            thread.join()
        load_seconds = time.time() - load_started
        done_after = succeeded()

        started_during = [
            (started_at - enqueued) * 1000
            for _, enqueued, started_at in (records(records_file) if records_file.exists() else [])
            if load_started <= started_at <= load_started + load_seconds
        ]
        emit(
            "load.mixed",
            {
                "clients": args.clients,
                "workers": args.workers,
                "concurrency": args.concurrency,
                "worker_server": args.worker_server,
                "seconds": round(load_seconds, 1),
                "submits": len(latencies),
                "submits_per_s": round(len(latencies) / load_seconds),
                "submit_ms": percentiles(latencies) if len(latencies) > 1 else {},
                "worker_completions_per_s": round((done_after - done_before) / load_seconds, 1),
                "submit_to_start_ms": (
                    percentiles(started_during) if len(started_during) > 1 else {}
                ),
                "errors": len(errors),
                "first_errors": errors[:3],
            },
        )
    finally:
        stop(list(reversed(procs)))


if __name__ == "__main__":
    main()
