"""What an empty dashboard page shows a new user: commands with their own URL and queue.

In taskforge.lib so that every app's pages may use it (apps never import the top layer).
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest


def first_steps(request: HttpRequest, queue_name: str) -> dict[str, Any]:
    """What an empty page shows a new user: a job to submit with their own URL and queue."""
    base = request.build_absolute_uri("/").rstrip("/")
    job = json.dumps({"queue": queue_name, "job_type": "hello", "payload": {"name": "Ada"}})
    curl = (
        f'curl -X POST -H "Authorization: Bearer $TASKFORGE_API_KEY" \\\n'
        f'  -H "Content-Type: application/json" \\\n'
        f"  -d '{job}' \\\n"
        f"  {base}/api/v1/jobs"
    )
    handlers = (
        "# myapp/handlers.py\n"
        "from taskforge_client import handler\n\n\n"
        '@handler("hello")\n'
        "def hello(ctx, payload):\n"
        '    return {"greeting": f"Hello, {payload[\'name\']}!"}'
    )
    worker = (
        "pip install taskforge-client\n"
        f"export TASKFORGE_URL={base} TASKFORGE_API_KEY=tf_…\n"
        f"taskforge-worker --queues {queue_name}:1 myapp.handlers"
    )
    return {
        "base_url": base,
        "queue": queue_name,
        "curl": curl,
        "handlers": handlers,
        "worker": worker,
    }
