"""Demo handlers for trying TaskForge out: ``taskforge-worker … taskforge_client.demo``.

* ``demo.sleep``: sleeps ``payload["seconds"]`` (default 0.1), returns ``{"slept": seconds}``;
* ``demo.fail_sometimes``: fails (retryably) with probability ``payload["p"]`` (default 0.3);
* ``demo.echo``: returns the payload;
* ``demo.noop``: does nothing, returns null.
"""

from __future__ import annotations

import random
from typing import Any

from taskforge_client.handlers import JobContext, handler


def _options(payload: Any) -> dict[str, Any]:
    return payload if isinstance(payload, dict) else {}


@handler("demo.sleep")
def sleep(ctx: JobContext, payload: Any) -> dict[str, float]:
    seconds = float(_options(payload).get("seconds", 0.1))
    ctx.log(f"sleeping {seconds}s", seconds=seconds)
    ctx.sleep(seconds)
    return {"slept": seconds}


@handler("demo.fail_sometimes")
def fail_sometimes(ctx: JobContext, payload: Any) -> dict[str, bool]:
    p = float(_options(payload).get("p", 0.3))
    if random.random() < p:  # noqa: S311 (a demo, not security)
        raise RuntimeError(f"demo failure (p={p}, attempt {ctx.attempt})")
    return {"ok": True}


@handler("demo.echo")
def echo(ctx: JobContext, payload: Any) -> Any:
    ctx.log("echo", keys=sorted(_options(payload)))
    return payload


@handler("demo.noop")
def noop(ctx: JobContext, payload: Any) -> None:
    return None
