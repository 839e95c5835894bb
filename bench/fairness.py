"""Tenant fairness benchmark (not a test): does a huge, busy tenant slow another one's jobs down?

    python -m bench.fairness [--pending 1000000] [--jobs 200] [--interval 0.02]

Processes, all on this machine, as bench/e2e.py starts them: gunicorn (deploy/gunicorn.conf.py,
production settings), one `manage.py rundispatcher`, and SDK `taskforge-worker` processes.
Two tenants on the enterprise plan (bench.e2e.tenant), A and B, each with its queue `default`.

B has one idle worker (100 slots) running bench/e2e_handlers.py, a no-op that records when it
started. B's latency is measured as bench/e2e.py measures it: `--jobs` single submits
`--interval` apart, from just before the POST to the handler's start record. Twice:

(i)  tenant A idle: no jobs, no workers;
(ii) tenant A with `--pending` pending jobs and its worker saturated: one SDK worker of A with
     20 slots whose handler sleeps 0.2 s, so A keeps fetching and completing all along.

A's backlog goes in with SQL, not over HTTP: one job is submitted through the API, then
copied set-based (INSERT … SELECT over generate_series, 50,000 rows per transaction, progress
on stderr), every column taken from that job but a fresh time-ordered id, no idempotency key
and the copy's number in the payload; then ANALYZE. Copying a real row keeps the insert right
whatever columns the jobs table gains.

Printed, one JSON line each: B's latency p50 / p95 / p99 ms in (i) and in (ii) (with A's
completions per second during (ii), to show A was busy), and a summary with the ratio of the
p95s (target: (ii) ≤ twice (i)).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql
from taskforge_client import TaskForge

import bench  # noqa: F401 - configures Django before the app imports
from accounts.models import Organization
from bench.common import BENCH_DB, ROOT, emit, fresh_database, percentiles, server_params
from bench.e2e import (
    _count,
    _healthy,
    free_port,
    records,
    server_env,
    start,
    start_web,
    stop,
    tenant,
    wait_until,
)
from jobs.models import Job, JobState
from workers.models import Worker, WorkerStatus

CHUNK = 50_000
A_CONCURRENCY = 20
A_SLEEP_SECONDS = 0.2
# Tenant A's handler: a module of its own in a temporary directory, so A's worker imports the
# SDK only (bench/e2e_handlers.py would also pull in Django through the bench package).
A_HANDLERS = f"""\
import time

from taskforge_client import handler


@handler("bench.sleep")
def sleep(ctx, payload):
    time.sleep({A_SLEEP_SECONDS})
"""
# A UUIDv7 (48-bit Unix milliseconds, then random bits, version 7), as taskforge.lib.ids makes
# them, so the copies land in the primary key in time order like submitted jobs do.
UUID7 = (
    "encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) placing "
    "substring(int8send(floor(extract(epoch from clock_timestamp()) * 1000)::bigint) from 3) "
    "from 1 for 6), 52, 1), 53, 1), 'hex')::uuid"
)


def new_tenant() -> tuple[str, Organization]:
    """bench.e2e.tenant(), and the organization it created."""
    before = set(Organization.objects.values_list("pk", flat=True))
    key = tenant()
    return key, Organization.objects.exclude(pk__in=before).get()


def copy_job(template: str, count: int) -> None:
    """Insert ``count`` copies of job ``template``, pending like it, in chunks; ANALYZE."""
    table = Job._meta.db_table
    overrides = {
        "id": sql.SQL(UUID7),
        "idempotency_key": sql.SQL("NULL"),
        "payload": sql.SQL("jsonb_build_object('i', g)"),
    }
    with psycopg.connect(dbname=BENCH_DB, autocommit=True, **server_params()) as conn:
        columns = [
            row[0]
            for row in conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = %s"
                " AND is_generated = 'NEVER' ORDER BY ordinal_position",
                (table,),
            )
        ]
        statement = sql.SQL(
            "INSERT INTO {table} ({columns}) SELECT {values}"
            " FROM {table} AS t, generate_series(%(first)s::int, %(last)s::int) AS g"
            " WHERE t.id = %(template)s"
        ).format(
            table=sql.Identifier(table),
            columns=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
            values=sql.SQL(", ").join(
                overrides.get(c, sql.SQL("t.{}").format(sql.Identifier(c))) for c in columns
            ),
        )
        started = time.perf_counter()
        for first in range(1, count + 1, CHUNK):
            last = min(count, first + CHUNK - 1)
            with conn.transaction():
                conn.execute(statement, {"first": first, "last": last, "template": template})
            rate = last / (time.perf_counter() - started)
            print(
                f"fairness: tenant A pending jobs {last:,}/{count:,} ({rate:,.0f} rows/s)",
                file=sys.stderr,
                flush=True,
            )
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
    print("fairness: ANALYZE done", file=sys.stderr, flush=True)


def measure_b(client: TaskForge, records_file: Path, jobs: int, interval: float, base: int) -> Any:
    """B's submit → handler start latencies (ms) for ``jobs`` submits ``interval`` apart."""
    before = _count(records_file)
    sent: dict[int, float] = {}
    for i in range(jobs):
        index = base + i
        sent[index] = time.time()
        client.submit("default", "bench.record", {"i": index, "t": sent[index]})
        time.sleep(interval)
    wait_until(lambda: _count(records_file) >= before + jobs, timeout=300)
    return [
        (started_at - sent[index]) * 1000
        for index, _, started_at in records(records_file)
        if index in sent
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pending", type=int, default=1_000_000, help="tenant A's backlog")
    parser.add_argument("--jobs", type=int, default=200, help="tenant B's jobs per phase")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between B's jobs")
    args = parser.parse_args()

    fresh_database()
    key_a, org_a = new_tenant()
    key_b, _ = new_tenant()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = server_env()
    scratch = Path(tempfile.mkdtemp())
    records_file = scratch / "records.txt"
    (scratch / "fairness_a_handlers.py").write_text(A_HANDLERS)
    bin_dir = Path(sys.executable).parent

    def worker(key: str, name: str, concurrency: int, module: str, **extra: str) -> Any:
        return start(
            [str(bin_dir / "taskforge-worker"), "--url", url, "--api-key", key,
             "--queues", "default:1", "--concurrency", str(concurrency), "--name", name, module],
            {**env, **extra},
        )  # fmt: skip

    procs = [
        start_web(port, env),
        start([sys.executable, "manage.py", "rundispatcher"], env),
    ]
    client_a = TaskForge(url, key_a)
    client_b = TaskForge(url, key_b)

    def online() -> int:
        return Worker.objects.all_tenants().filter(status=WorkerStatus.ONLINE).count()

    def a_succeeded() -> int:
        return (
            Job.objects.all_tenants().filter(organization=org_a, state=JobState.SUCCEEDED).count()
        )

    try:
        probe = httpx.Client(base_url=url, timeout=10)
        wait_until(lambda: _healthy(probe), timeout=60, interval=0.2)
        probe.close()
        procs.append(
            worker(
                key_b, "fairness-b", 100, "bench.e2e_handlers",
                TASKFORGE_BENCH_RECORDS=str(records_file), PYTHONPATH=str(ROOT),
            )
        )  # fmt: skip
        wait_until(lambda: online() >= 1, timeout=60, interval=0.2)
        # Warm-up through the whole path, then idle, as bench/e2e.py's latency phase.
        measure_b(client_b, records_file, 20, args.interval, 0)
        time.sleep(2.0)

        idle = measure_b(client_b, records_file, args.jobs, args.interval, 10_000_000)
        emit("fairness.b_latency_a_idle_ms", {"samples": len(idle), **percentiles(idle)})

        template = client_a.submit("default", "bench.sleep", {"i": 0})
        copy_job(str(template.id), args.pending - 1)
        procs.append(
            worker(
                key_a, "fairness-a", A_CONCURRENCY, "fairness_a_handlers",
                PYTHONPATH=str(scratch),
            )
        )  # fmt: skip
        # A is saturated once its slots have turned over a few times.
        wait_until(lambda: a_succeeded() >= 3 * A_CONCURRENCY, timeout=120, interval=0.2)
        time.sleep(2.0)
        done_before, started = a_succeeded(), time.perf_counter()
        busy = measure_b(client_b, records_file, args.jobs, args.interval, 20_000_000)
        a_rate = (a_succeeded() - done_before) / (time.perf_counter() - started)
        emit(
            "fairness.b_latency_a_busy_ms",
            {
                "samples": len(busy),
                **percentiles(busy),
                "a_pending_at_start": args.pending,
                "a_concurrency": A_CONCURRENCY,
                "a_handler_seconds": A_SLEEP_SECONDS,
                "a_completions_per_s": round(a_rate, 1),
            },
        )
        ratio = percentiles(busy)["p95"] / percentiles(idle)["p95"]
        emit(
            "fairness.summary",
            {
                "p95_a_idle_ms": percentiles(idle)["p95"],
                "p95_a_busy_ms": percentiles(busy)["p95"],
                "ratio": round(ratio, 2),
                "target_ratio_max": 2.0,
                "target_met": ratio <= 2.0,
            },
        )
    finally:
        client_a.close()
        client_b.close()
        stop(list(reversed(procs)))


if __name__ == "__main__":
    main()
