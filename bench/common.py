"""Shared set-up for the benchmarks: a database of their own, tenants, child processes.

Benchmarks run against DATABASE_URL's server when set, else the embedded server, always in
a separate database (TASKFORGE_DB_NAME, default taskforge_bench) that is dropped and migrated
afresh, so figures never depend on leftovers and never touch real data.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from django.core.management import call_command
from django.db import connection, connections
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = os.environ["TASKFORGE_DB_NAME"]


def server_params() -> dict[str, Any]:
    params = connection.get_connection_params()
    return {k: v for k, v in params.items() if k in {"user", "password", "host", "port"}}


def fresh_database() -> None:
    """Drop and recreate the benchmark database, then migrate it."""
    connections.close_all()
    # get_connection_params() starts the embedded server when there is no DATABASE_URL.
    with psycopg.connect(dbname="postgres", autocommit=True, **server_params()) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DB)))
    call_command("migrate", verbosity=0)


def listen(channel: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(dbname=BENCH_DB, autocommit=True, **server_params())
    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    return conn


def child_env() -> dict[str, str]:
    return {**os.environ, "TASKFORGE_DB_NAME": BENCH_DB}


def start(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start ``python ARGS`` from the repository root against the benchmark database."""
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=child_env(), **kwargs)


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50": round(q[49], 2), "p95": round(q[94], 2), "p99": round(q[98], 2)}


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def emit(name: str, figures: dict[str, Any]) -> None:
    print(json.dumps({"benchmark": name, **figures}), flush=True)


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds, from /proc (0 when it is gone; Linux only)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The process's children (a gunicorn master's workers), from /proc."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
