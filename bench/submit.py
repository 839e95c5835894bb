"""Job submission over HTTP (not a test): single submits and batches of 1,000. Prints JSON lines.

    python -m bench.submit [--single 3000] [--batches 20] [--round-trips 200]

gunicorn started as in production (deploy/gunicorn.conf.py, DEBUG off, access log off) on
this benchmark's own database, with an enterprise tenant (no request-rate limit) and one
queue. The client is the SDK, one keep-alive connection, one request at a time:

* ``submit.single``: ``TaskForge(url, key).submit("default", "bench.record", {"i": i})``,
  jobs/s and ms per request (p50 / p95 / p99), after a warm-up;
* ``submit.batch``: ``submit_batch`` of 1,000 such jobs per call, jobs/s and ms per call;
* each with the server's CPU per request: utime + stime of the gunicorn processes (from
  /proc/<pid>/stat, before and after) and of the PostgreSQL backends serving them, divided by
  the requests;
* ``submit.round_trips``: database round trips per request, counted by a second gunicorn that
  reaches PostgreSQL through a counting proxy in this process (one round trip = one Sync,
  simple Query or CopyDone message the client sends and then waits on). Measured apart from
  the timings, since the proxy adds its own latency.

Producer, web server and PostgreSQL share this machine's cores. Run on an idle machine:
``DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres TASKFORGE_DB_NAME=tf_bench
.venv/bin/python -m bench.submit``.
"""

from __future__ import annotations

import argparse
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from taskforge_client import TaskForge

import bench  # noqa: F401 - configures Django before the app imports
from bench.common import (
    BENCH_DB,
    children,
    cpu_seconds,
    emit,
    fresh_database,
    percentiles,
    server_params,
)
from bench.e2e import free_port, server_env, start_web, stop, tenant, wait_until

CHUNK = 1000
# Startup-phase requests that carry no message type byte.
_SSL_REQUEST, _GSSENC_REQUEST = 80877103, 80877104


# --- CPU from /proc ---------------------------------------------------------------------------


def backend_pids() -> list[int]:
    """The PostgreSQL backends connected to the benchmark database (the web server's)."""
    with psycopg.connect(dbname=BENCH_DB, autocommit=True, **server_params()) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [BENCH_DB],
        ).fetchall()
    return [pid for (pid,) in rows]


class CpuMeter:
    """CPU seconds spent by the web server's processes and its database backends."""

    def __init__(self, web_pid: int) -> None:
        self.web_pid = web_pid

    def sample(self) -> tuple[dict[int, float], dict[int, float]]:
        web = [self.web_pid, *children(self.web_pid)]
        return (
            {pid: cpu_seconds(pid) for pid in web},
            {pid: cpu_seconds(pid) for pid in backend_pids()},
        )

    @staticmethod
    def spent(
        before: tuple[dict[int, float], dict[int, float]],
        after: tuple[dict[int, float], dict[int, float]],
    ) -> tuple[float, float]:
        web = sum(t - before[0].get(pid, 0.0) for pid, t in after[0].items())
        db = sum(t - before[1].get(pid, 0.0) for pid, t in after[1].items())
        return web, db


# --- round trips: a counting proxy in front of PostgreSQL -------------------------------------


class CountingProxy:
    """Forwards TCP to PostgreSQL and counts the clients' round trips: every Sync ('S'),
    simple Query ('Q') and CopyDone ('c') message is followed by a wait for the server.

    Each web process also renews its beacon row every second on a connection of its own
    (workers/webtier.py): a connection that ever names workers_webprocess is background
    traffic, and its round trips are left out.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.counts: dict[int, int] = {}
        self.background: set[int] = set()
        self.connections = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._upstream, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()

    def _upstream(self, client: socket.socket, server: socket.socket) -> None:
        with self.lock:
            self.connections += 1
            conn = self.connections
        buffer = bytearray()
        started = False  # past the untyped start-up messages
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                data = b""
            if not data:
                server.close()
                return
            server.sendall(data)
            buffer += data
            while True:
                if not started:
                    if len(buffer) < 8:
                        break
                    (length,) = struct.unpack("!I", buffer[:4])
                    if len(buffer) < length:
                        break
                    (code,) = struct.unpack("!I", buffer[4:8])
                    del buffer[:length]
                    started = code not in (_SSL_REQUEST, _GSSENC_REQUEST)
                    continue
                if len(buffer) < 5:
                    break
                (length,) = struct.unpack("!I", buffer[1:5])
                if len(buffer) < length + 1:
                    break
                kind = buffer[0]
                with self.lock:
                    if kind in b"PQ" and b"workers_webprocess" in buffer[: length + 1]:
                        self.background.add(conn)
                    if kind in b"SQc":
                        self.counts[conn] = self.counts.get(conn, 0) + 1
                del buffer[: length + 1]

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                sink.close()
                return
            sink.sendall(data)

    def take(self) -> int:
        """Round trips of the request-serving connections since the last take()."""
        with self.lock:
            count = sum(n for conn, n in self.counts.items() if conn not in self.background)
            self.counts = {}
        return count


# --- the server -------------------------------------------------------------------------------


def start_server(env: dict[str, str]) -> tuple[Any, str]:
    port = free_port()
    web = start_web(port, env)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _ready(url), timeout=60, interval=0.2)
    return web, url


def _ready(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/ready", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def job(i: int) -> dict[str, Any]:
    return {"queue": "default", "job_type": "bench.record", "payload": {"i": i}}


def single(client: TaskForge, count: int, offset: int = 0) -> list[float]:
    samples = []
    for i in range(count):
        started = time.perf_counter()
        client.submit("default", "bench.record", {"i": offset + i})
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def batches(client: TaskForge, count: int, offset: int = 0) -> list[float]:
    samples = []
    for n in range(count):
        items = [job(offset + n * CHUNK + i) for i in range(CHUNK)]
        started = time.perf_counter()
        client.submit_batch(items)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def measured(
    meter: CpuMeter, run: Callable[[], list[float]]
) -> tuple[list[float], float, float, float]:
    """Run; return its samples, wall seconds, and web and database CPU seconds."""
    before = meter.sample()
    started = time.perf_counter()
    samples = run()
    elapsed = time.perf_counter() - started
    web, db = CpuMeter.spent(before, meter.sample())
    return samples, elapsed, web, db


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--single", type=int, default=3000, help="single submits timed")
    parser.add_argument("--batches", type=int, default=20, help="batches of 1,000 timed")
    parser.add_argument("--round-trips", type=int, default=200, help="single submits counted")
    args = parser.parse_args()

    fresh_database()
    key = tenant()
    env = server_env()
    web, url = start_server(env)
    procs = [web]
    try:
        meter = CpuMeter(web.pid)
        with TaskForge(url, key) as client:
            single(client, 300, offset=10_000_000)  # warm-up: connections, caches, code paths
            samples, elapsed, web_cpu, db_cpu = measured(meter, lambda: single(client, args.single))
            emit(
                "submit.single",
                {
                    "requests": args.single,
                    "jobs_per_s": round(args.single / elapsed),
                    "ms": percentiles(samples),
                    "web_cpu_ms_per_request": round(web_cpu * 1000 / args.single, 3),
                    "db_cpu_ms_per_request": round(db_cpu * 1000 / args.single, 3),
                },
            )
            batches(client, 2, offset=20_000_000)
            samples, elapsed, web_cpu, db_cpu = measured(
                meter, lambda: batches(client, args.batches)
            )
            jobs = args.batches * CHUNK
            emit(
                "submit.batch",
                {
                    "requests": args.batches,
                    "chunk": CHUNK,
                    "jobs_per_s": round(jobs / elapsed),
                    "ms": {
                        "p50": round(sorted(samples)[len(samples) // 2], 1),
                        "max": round(max(samples), 1),
                    },
                    "web_cpu_ms_per_request": round(web_cpu * 1000 / args.batches, 2),
                    "db_cpu_ms_per_request": round(db_cpu * 1000 / args.batches, 2),
                },
            )
        stop([web])
        procs = []

        # Round trips, through the counting proxy (its latency must not touch the timings).
        params = server_params()
        proxy = CountingProxy(params.get("host") or "127.0.0.1", int(params.get("port") or 5432))
        user = params.get("user") or "postgres"
        password = f":{params['password']}" if params.get("password") else ""
        counted_env = {
            **env,
            "DATABASE_URL": f"postgresql://{user}{password}@127.0.0.1:{proxy.port}/{BENCH_DB}"
            "?sslmode=disable",
        }
        web, url = start_server(counted_env)
        procs = [web]
        with TaskForge(url, key) as client:
            single(client, 50, offset=30_000_000)
            batches(client, 1, offset=31_000_000)
            proxy.take()
            single(client, args.round_trips, offset=32_000_000)
            per_single = proxy.take() / args.round_trips
            batches(client, 3, offset=33_000_000)
            per_batch = proxy.take() / 3
        emit(
            "submit.round_trips",
            {"single": round(per_single, 2), "batch_of_1000": round(per_batch, 2)},
        )
    finally:
        stop(procs)


if __name__ == "__main__":
    main()
