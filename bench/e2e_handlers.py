"""Handlers for bench/e2e.py: a no-op that records when it started, as the queue comparison does.

Each job appends one fixed-width line "index enqueue_time start_time" to the file named by
TASKFORGE_BENCH_RECORDS (O_APPEND writes of one line are atomic), so the harness counts
records instead of polling the queue.
"""

from __future__ import annotations

import os
import time
from typing import Any

from taskforge_client import handler

_fd = os.open(os.environ["TASKFORGE_BENCH_RECORDS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


@handler("bench.record")
def record(ctx: Any, payload: Any) -> None:
    started = time.time()
    os.write(_fd, f"{payload['i']:>10} {payload.get('t', 0.0):>20.6f} {started:>20.6f}\n".encode())
