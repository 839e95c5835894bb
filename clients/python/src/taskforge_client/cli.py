"""``taskforge-worker``: run a worker for the handlers in one or more Python modules."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from taskforge_client import __version__
from taskforge_client.errors import TaskForgeError
from taskforge_client.handlers import registry
from taskforge_client.worker import Worker, default_name, parse_queues

DESCRIPTION = """\
Run a TaskForge worker. It imports the given modules, registers with the server, long-polls
for jobs of its queues and runs their handlers in a pool of threads until stopped.

A module registers its handlers on taskforge_client.registry when imported:

    # myapp/handlers.py
    from taskforge_client import handler

    @handler("emails.send_welcome")
    def send_welcome(ctx, payload):
        ctx.log("sending", user_id=payload["user_id"])
        return {"sent": True}

    $ taskforge-worker --queues default:3,emails:1 myapp.handlers

The worker takes only jobs of the types its modules have handlers for (unless a module
installs a fallback handler, or --any-job-type is given): a job of another type waits for a
worker that handles it.

The current directory is importable, as with `python -m`. Try it with the demo handlers
(demo.sleep, demo.fail_sometimes, demo.echo, demo.noop): taskforge-worker taskforge_client.demo.
Django tasks run through the module taskforge_client.django_worker (with
DJANGO_SETTINGS_MODULE set).
"""

EPILOG = """\
SIGTERM or SIGINT drains: no new jobs, running ones finish, results are flushed, the worker
deregisters and exits 0. A second signal exits at once (status 1); the server retries the
jobs that were still running. Exit status 2: bad arguments or a module that fails to import;
1: the server refused the API key or the registration (an unknown queue, say). While the
server cannot be reached the worker keeps trying to register.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskforge-worker",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "modules",
        nargs="+",
        metavar="MODULE",
        help="dotted module path to import, e.g. myapp.handlers",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("TASKFORGE_URL"),
        help="TaskForge server URL, e.g. https://taskforge.example.com (env TASKFORGE_URL)",
    )
    parser.add_argument(
        "--api-key",
        metavar="KEY",
        default=os.environ.get("TASKFORGE_API_KEY"),
        help="API key with the `workers` scope (env TASKFORGE_API_KEY)",
    )
    parser.add_argument(
        "--queues",
        default="default:1",
        metavar="NAME:WEIGHT,...",
        help="queues to serve and their weights (share of the slots), default: %(default)s",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=8,
        metavar="N",
        help="jobs run at once, one thread each (default: %(default)s)",
    )
    parser.add_argument(
        "--name",
        help="worker name; the same name registers as the same worker "
        f"(default: host-pid, here {default_name()})",
    )
    parser.add_argument(
        "--poll-wait",
        type=int,
        default=20,
        metavar="SECONDS",
        help="how long one long-poll for jobs waits, 0-30 (default: %(default)s)",
    )
    parser.add_argument(
        "--any-job-type",
        action="store_true",
        help="take jobs of any type, not only those the modules have handlers for (jobs "
        "without a handler then fail for good); with a fallback handler this is the default",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("TASKFORGE_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="logging level (default: %(default)s, env TASKFORGE_LOG_LEVEL)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.url:
        parser.error("--url is required (or set TASKFORGE_URL)")
    if not args.api_key:
        parser.error("--api-key is required (or set TASKFORGE_API_KEY)")
    try:
        queues = parse_queues(args.queues)
    except ValueError as exc:
        parser.error(f"--queues: {exc}")
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Console scripts start with their own directory on sys.path, not the current one.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in args.modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            parser.error(f"cannot import {module}: {exc}")
    if not registry.job_types() and registry.get_fallback() is None:
        parser.error(
            f"no handlers registered by {', '.join(args.modules)}: decorate them with "
            "@taskforge_client.handler('job_type')"
        )
    try:
        worker = Worker(
            args.url,
            args.api_key,
            name=args.name,
            queues=queues,
            concurrency=args.concurrency,
            poll_wait=args.poll_wait,
            any_job_type=args.any_job_type,
        )
    except ValueError as exc:
        parser.error(str(exc))
    logging.getLogger("taskforge_client.worker").info(
        "handlers: %s", ", ".join(registry.job_types()) or "(fallback only)"
    )
    try:
        worker.run()
    except TaskForgeError as exc:
        logging.getLogger("taskforge_client.worker").error("stopped: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
