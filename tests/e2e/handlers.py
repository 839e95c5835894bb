"""Handlers the end-to-end tests run in a real SDK worker process."""

from __future__ import annotations

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
