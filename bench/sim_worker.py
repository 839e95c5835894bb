"""A simulated worker for bench/engine.py: fetch assigned jobs, complete them all in one batch.

Talks to the engine's services directly (no HTTP), so the engine's own throughput is what is
measured. Runs until SIGTERM.
"""

from __future__ import annotations

import signal
import sys

import bench  # noqa: F401 - configures Django before the app imports
from accounts.models import Project
from bench.common import listen
from jobs.queries import worker_channel
from jobs.services import ResultItem, report_results
from workers.models import Worker
from workers.services import fetch_jobs

stopping = False


def stop(signum: int, frame: object) -> None:
    global stopping
    stopping = True


def main(worker_id: str, capacity: int) -> None:
    signal.signal(signal.SIGTERM, stop)
    worker = Worker.objects.all_tenants().get(pk=worker_id)
    project = Project.objects.all_tenants().get(pk=worker.project_id)
    channel = listen(worker_channel(worker.pk))
    while not stopping:
        jobs = fetch_jobs(project, worker, limit=capacity)
        if jobs:
            report_results(project, [ResultItem(j.id, j.lease_token, True) for j in jobs])
            continue
        for _ in channel.notifies(timeout=0.2, stop_after=1):
            pass


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
