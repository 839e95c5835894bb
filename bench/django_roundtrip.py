"""A Django task's round trip (not a test): ``enqueue()``, then ``get_result()`` until it is
SUCCESSFUL, as a Django view waiting for a task would. Prints JSON lines.

    python -m bench.django_roundtrip [--round-trips 300] [--poll-ms 2]

gunicorn as in production on the benchmark's own database, one ``taskforge-worker`` running
Django tasks (``taskforge_client.django_worker``, settings bench/django_settings.py), and this
process as the Django project: TaskForgeBackend with its SDK client, one keep-alive
connection. Each round trip enqueues ``bench.roundtrip_tasks.add(i, 1)`` and polls
``get_result`` every ``--poll-ms`` until the result is SUCCESSFUL (checking its value):

* ``django.roundtrip_ms``: enqueue → SUCCESSFUL seen, p50 / p95 / p99;
* ``django.enqueue_ms`` / ``django.get_result_ms``: one call of each;
* ``django.requests_per_get_result``: HTTP requests one ``get_result`` makes (counted on the
  client).

Run on an idle machine: ``DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres
TASKFORGE_DB_NAME=tf_bench_django .venv/bin/python -m bench.django_roundtrip``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx

import bench  # noqa: F401 - configures Django before the app imports
from bench.common import ROOT, emit, percentiles
from bench.e2e import serve, start, stop, wait_until


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--round-trips", type=int, default=300)
    parser.add_argument("--poll-ms", type=float, default=2.0)
    args = parser.parse_args()

    url, key, env, web = serve()
    worker_env = {
        **env,
        "DJANGO_SETTINGS_MODULE": "bench.django_settings",
        "TASKFORGE_URL": url,
        "TASKFORGE_API_KEY": key,
        "PYTHONPATH": str(ROOT),
    }
    worker = start(
        [str(Path(sys.executable).parent / "taskforge-worker"), "--concurrency", "4",
         "--name", "django-bench", "taskforge_client.django_worker"],
        worker_env,
    )  # fmt: skip
    try:
        wait_until(lambda: _healthy(url), timeout=60, interval=0.2)
        emit_round_trips(url, key, args.round_trips, args.poll_ms / 1000)
    finally:
        stop([worker, web])


def emit_round_trips(url: str, key: str, count: int, poll: float) -> None:
    # This process plays the Django project (its settings are the server's: TASKS is set
    # before the first use of the backends).
    from django.conf import settings

    settings.TASKS = {
        "default": {
            "BACKEND": "taskforge_client.django.TaskForgeBackend",
            "OPTIONS": {"url": url, "api_key": key},
        }
    }
    from django_tasks import TaskResultStatus, task_backends

    from bench.roundtrip_tasks import add

    backend = task_backends["default"]
    requests = _count_requests(backend.client)
    round_trips, enqueues, reads, per_read = [], [], [], []
    for i in range(count + 20):  # the first 20 warm up
        started = time.perf_counter()
        result = add.enqueue(i, 1)
        enqueued = time.perf_counter()
        while True:
            before = requests[0]
            read_started = time.perf_counter()
            result = add.get_result(result.id)
            reads.append((time.perf_counter() - read_started) * 1000)
            per_read.append(requests[0] - before)
            if result.status == TaskResultStatus.SUCCESSFUL:
                break
            if result.status == TaskResultStatus.FAILED:
                raise RuntimeError(f"task {result.id} failed: {result.errors}")
            time.sleep(poll)
        done = time.perf_counter()
        assert result.return_value == i + 1
        if i >= 20:
            round_trips.append((done - started) * 1000)
            enqueues.append((enqueued - started) * 1000)
    emit("django.roundtrip_ms", {"round_trips": count, **percentiles(round_trips)})
    emit("django.enqueue_ms", percentiles(enqueues))
    emit("django.get_result_ms", {"calls": len(reads), **percentiles(reads)})
    emit("django.requests_per_get_result", {"max": max(per_read), "min": min(per_read)})


def _count_requests(client) -> list[int]:
    """Count the client's HTTP requests (a wrapper around its transport)."""
    counter = [0]
    transport = client._http
    send = transport.request

    def counted(*args, **kwargs):
        counter[0] += 1
        return send(*args, **kwargs)

    transport.request = counted
    return counter


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
