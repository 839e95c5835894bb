"""The NOTIFY channel that says jobs became pending, named once for every app.

Payload: a queue's id in hex (jobs/sql/notify_ready.sql), which wakes the long-polls of the
workers serving that queue (workers/notifications.py); or empty, which wakes every waiting
long-poll, for a change whose queues are not known or that the long-polls do not listen to
yet (a resumed queue is in no waiting worker's list of queues).
"""

from __future__ import annotations

from django.db import connection

JOBS_READY = "taskforge_jobs"


def wake_every_long_poll() -> None:
    """NOTIFY every waiting long-poll, at commit of the current transaction (or at once
    outside one), to claim again: a queue was resumed or its limits were raised."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, '')", [JOBS_READY])
