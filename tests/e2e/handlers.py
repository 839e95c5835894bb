"""Handlers the end-to-end tests run in a real SDK worker process."""

from __future__ import annotations

import os
import time
from typing import Any

from taskforge_client import PermanentError, handler


@handler("e2e.ok")
def ok(ctx: Any, payload: Any) -> Any:
    ctx.log(f"ok {payload['i']}", i=payload["i"])
    return {"i": payload["i"]}


@handler("e2e.flaky")
def flaky(ctx: Any, payload: Any) -> Any:
    if ctx.attempt < payload["succeed_on"]:
        raise RuntimeError(f"flaky attempt {ctx.attempt}")
    ctx.log("flaky done")
    return {"attempt": ctx.attempt}


@handler("e2e.fail")
def fail(ctx: Any, payload: Any) -> Any:
    raise RuntimeError("always fails")


@handler("e2e.permanent")
def permanent(ctx: Any, payload: Any) -> Any:
    raise PermanentError("bad input, do not retry")


@handler("e2e.slow_first")
def slow_first(ctx: Any, payload: Any) -> Any:
    # The first attempt hangs (its worker gets SIGKILLed); a retry elsewhere is quick.
    if ctx.attempt == 1:
        ctx.sleep(120)
    return {"attempt": ctx.attempt}


@handler("e2e.record")
def record(ctx: Any, payload: Any) -> Any:
    # Sleeps payload["sleep"] seconds, then appends "<job id> <attempt> <unix time>" to the file
    # $TASKFORGE_E2E_RECORDS: one line per run, so a test sees a job that ran twice, and when.
    ctx.sleep(payload.get("sleep", 0))
    with open(os.environ["TASKFORGE_E2E_RECORDS"], "a") as records:
        records.write(f"{ctx.job_id} {ctx.attempt} {time.time()}\n")
    return {"attempt": ctx.attempt}
