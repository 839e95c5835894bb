"""Engine benchmark (not a test): prints one JSON line per figure.

    python -m bench.engine [--jobs 20000] [--only STEP] [--callbacks]

(a) batch submit, jobs/s: submit_jobs in chunks of 1,000 from one process;
(b) submit -> succeeded, jobs/s: one `rundispatcher` process and 2 simulated worker processes
    (bench/sim_worker.py: fetch, and so claim, jobs, complete them in one batch) while the
    jobs are submitted in chunks of 1,000; and the same workers draining a pre-filled backlog;
(c) enqueue -> claimed latency: 500 single submits 10 ms apart, time from just before
    submit_job to the end of the claim a waiting worker makes on the submit's NOTIFY;
(d) claim time with 1,000 vs 100,000 pending jobs: median of 20 fetches (workers.claiming.claim,
    what the long-poll runs) that each claim 100 jobs, without table statistics and after
    ANALYZE.
With --callbacks every batch names an on_complete callback, so (a) and (b) include the
batch-finish check of each completion.
See bench/README.md for the figures measured on this machine.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import time

from django.db import connection

import bench  # noqa: F401 - configures Django before the app imports
from accounts.models import Organization, Project
from bench.common import emit, fresh_database, listen, percentiles, start
from billing.models import Subscription, Tier
from jobs import services
from jobs.models import Job, JobExecution, JobState
from jobs.queries import JOBS_READY_CHANNEL
from jobs.specs import JobSpec
from queues.models import Queue
from workers import claiming
from workers.models import Worker
from workers.services import QueueWeight, register_worker

CHUNK = 1000


def make_project() -> Project:
    org = Organization.objects.create(name="Bench", slug=f"bench-{time.time_ns()}")
    # Enterprise: no plan cap on running jobs, so the figures are the engine's, not a plan's.
    Subscription.objects.create(organization=org, tier=Tier.ENTERPRISE)
    project = Project.objects.create(organization=org, name="bench")
    Queue.objects.create(organization=org, project=project, name="default")
    return project


# --callbacks: every batch of CHUNK jobs names an on_complete callback (enqueued on a queue no
# worker serves), so each completion also checks whether it finished its batch.
CALLBACKS = False


def submit_all(project: Project, n: int) -> float:
    specs = [JobSpec(queue="default", job_type="noop", payload={"i": i}) for i in range(n)]
    callback = None
    if CALLBACKS:
        Queue.objects.get_or_create(
            organization=project.organization, project=project, name="callbacks"
        )
        callback = JobSpec(queue="callbacks", job_type="batch.done")
    started = time.perf_counter()
    for offset in range(0, n, CHUNK):
        services.submit_jobs(project, specs[offset : offset + CHUNK], on_complete=callback)
    return time.perf_counter() - started


def count(state: str) -> int:
    return Job.objects.all_tenants().filter(state=state).count()


def wait_until(predicate, timeout: float = 600.0, interval: float = 0.02) -> float:
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError("benchmark did not finish in time")
        time.sleep(interval)
    return time.perf_counter()


def bench_submit(n: int) -> None:
    fresh_database()
    project = make_project()
    elapsed = submit_all(project, n)
    emit("engine.batch_submit", {"jobs": n, "chunk": CHUNK, "jobs_per_s": round(n / elapsed)})


def start_workers(project: Project, processes: int, capacity: int) -> list:
    workers = []
    for i in range(processes):
        worker, _ = register_worker(
            project, name=f"sim-{i}", queues=[QueueWeight("default")], capacity=capacity
        )
        workers.append(start(["-m", "bench.sim_worker", str(worker.pk), str(capacity)]))
    return workers


def stop_all(procs: list) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except Exception:
            proc.kill()


def bench_throughput(n: int) -> None:
    fresh_database()
    project = make_project()
    dispatcher = start(["manage.py", "rundispatcher", "--batch-size", "1000"])
    workers = start_workers(project, processes=2, capacity=1000)
    try:
        time.sleep(1.5)  # let every process start and LISTEN
        started = time.perf_counter()
        submit_all(project, n)
        finished = wait_until(lambda: count(JobState.SUCCEEDED) >= n)
        emit(
            "engine.submit_to_succeeded",
            {
                "jobs": n,
                "dispatchers": 1,
                "worker_processes": 2,
                "jobs_per_s": round(n / (finished - started)),
            },
        )
    finally:
        stop_all([dispatcher, *workers])

    fresh_database()
    project = make_project()
    submit_all(project, n)
    dispatcher = start(["manage.py", "rundispatcher", "--batch-size", "1000"])
    workers = start_workers(project, processes=2, capacity=1000)
    try:
        first = wait_until(lambda: JobExecution.objects.all_tenants().exists(), interval=0.005)
        finished = wait_until(lambda: count(JobState.SUCCEEDED) >= n)
        emit("engine.drain_backlog", {"jobs": n, "jobs_per_s": round(n / (finished - first))})
    finally:
        stop_all([dispatcher, *workers])


def bench_latency(samples: int = 500) -> None:
    fresh_database()
    project = make_project()
    worker, _ = register_worker(
        project, name="listener", queues=[QueueWeight("default")], capacity=samples + 10
    )
    # The waiting worker: what its long-poll does, in this process (no HTTP): wake on the
    # NOTIFY about its queue, then claim.
    channel = listen(JOBS_READY_CHANNEL)
    try:
        latencies = []
        spec = JobSpec(queue="default", job_type="noop")
        for _ in range(samples):
            started = time.perf_counter()
            services.submit_job(project, spec)
            for _ in channel.notifies(timeout=5, stop_after=1):
                claimed = claiming.claim(project, worker.pk, limit=1).jobs
                assert len(claimed) == 1, claimed
                latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(0.01)
        emit("engine.enqueue_to_claimed_ms", {"samples": len(latencies), **percentiles(latencies)})
    finally:
        channel.close()


def claim_times(project: Project, worker: Worker, claims: int = 20) -> float:
    durations = []
    for _ in range(claims):
        durations.append(time.perf_counter())
        claimed = len(claiming.claim(project, worker.pk, limit=100).jobs)
        durations[-1] = (time.perf_counter() - durations[-1]) * 1000
        assert claimed == 100, claimed
        # Put the claimed jobs back (not timed) so every claim sees the same backlog.
        JobExecution.objects.all_tenants().all().delete()
        Job.objects.all_tenants().filter(state=JobState.PROCESSING).update(
            state=JobState.PENDING,
            worker_id=None,
            lease_token=None,
            lease_expires_at=None,
            delivered_at=None,
            started_at=None,
            attempts=0,
        )
    return statistics.median(durations)


def bench_claim() -> None:
    results = {}
    for backlog in (1_000, 100_000):
        fresh_database()
        with connection.cursor() as cursor:
            # Keep the embedded server's autovacuum from analyzing behind our back.
            cursor.execute("ALTER TABLE jobs_job SET (autovacuum_enabled = false)")
        project = make_project()
        submit_all(project, backlog)
        worker, _ = register_worker(
            project, name="claimer", queues=[QueueWeight("default")], capacity=100
        )
        no_stats = claim_times(project, worker)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        analyzed = claim_times(project, worker)
        results[backlog] = (no_stats, analyzed)
    emit(
        "engine.claim_ms",
        {
            "pending_1k": {
                "no_stats": round(results[1_000][0], 2),
                "analyzed": round(results[1_000][1], 2),
            },
            "pending_100k": {
                "no_stats": round(results[100_000][0], 2),
                "analyzed": round(results[100_000][1], 2),
            },
            "ratio_no_stats": round(results[100_000][0] / results[1_000][0], 2),
            "ratio_analyzed": round(results[100_000][1] / results[1_000][1], 2),
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs for (a) and (b)")
    parser.add_argument(
        "--only", choices=["submit", "throughput", "latency", "claim"], help="run one figure"
    )
    parser.add_argument(
        "--callbacks",
        action="store_true",
        help="give every batch of 1,000 an on_complete callback (the batch-finish check)",
    )
    args = parser.parse_args()
    global CALLBACKS
    CALLBACKS = args.callbacks
    steps = {
        "submit": lambda: bench_submit(args.jobs),
        "throughput": lambda: bench_throughput(args.jobs),
        "latency": bench_latency,
        "claim": bench_claim,
    }
    for name, step in steps.items():
        if args.only in (None, name):
            print(f"# running {name} …", file=sys.stderr, flush=True)
            step()


if __name__ == "__main__":
    main()
