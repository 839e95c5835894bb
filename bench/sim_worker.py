"""A simulated worker for bench/engine.py: fetch (and so claim) jobs, complete them all in one
batch.

Talks to the engine's services directly (no HTTP): its fetch is workers.claiming.claim, the
claim the long-poll makes, so the engine's own throughput is what is measured. With nothing to
claim it waits for a NOTIFY on the jobs channel (a submit or a promotion), at most 0.2 s. Runs
until SIGTERM.
"""

from __future__ import annotations

import signal
import sys

import bench  # noqa: F401 - configures Django before the app imports
from accounts.models import Project
from bench.common import listen
from jobs.queries import JOBS_READY_CHANNEL
from jobs.services import ResultItem, report_results
from workers import claiming
from workers.models import Worker

stopping = False


def stop(signum: int, frame: object) -> None:
    global stopping
    stopping = True


def main(worker_id: str, capacity: int) -> None:
    signal.signal(signal.SIGTERM, stop)
    worker = Worker.objects.all_tenants().get(pk=worker_id)
    project = Project.objects.all_tenants().get(pk=worker.project_id)
    channel = listen(JOBS_READY_CHANNEL)
    while not stopping:
        jobs = claiming.claim(project, worker.pk, limit=capacity).jobs
        if jobs:
            report_results(project, [ResultItem(j.id, j.lease_token, True) for j in jobs])
            continue
        for _ in channel.notifies(timeout=0.2, stop_after=1):
            pass


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
