"""Enqueue the sample tasks, wait (with a deadline) until a worker ran them, print the results."""

import json
import sys
import time

import django

django.setup()

from django.core import checks  # noqa: E402
from sample_django.tasks import add, explode, greet  # noqa: E402


def describe(result):
    fresh = result.task.get_result(result.id)
    return {
        "id": fresh.id,
        "status": str(fresh.status),
        "return_value": fresh.return_value if fresh.status == "SUCCESSFUL" else None,
        "errors": [error.exception_class_path for error in fresh.errors],
        "exception_classes": [error.exception_class.__name__ for error in fresh.errors],
        "attempts": fresh.attempts,
        "finished": fresh.is_finished,
    }


def main():
    problems = [str(message) for message in checks.run_checks()]
    results = [add.enqueue(2, 3), greet.enqueue("ada", punctuation="?"), explode.enqueue()]
    print(
        json.dumps(
            {"enqueued": [r.id for r in results], "statuses": [str(r.status) for r in results]}
        )
    )
    sys.stdout.flush()
    deadline = time.monotonic() + 60
    while not all(r.is_finished for r in results):
        if time.monotonic() > deadline:
            print(json.dumps({"timeout": [str(r.status) for r in results]}))
            return 1
        time.sleep(0.05)
        for result in results:
            if not result.is_finished:
                result.refresh()
    print(json.dumps({"results": [describe(r) for r in results], "checks": problems}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
