"""The whole product in real processes: live HTTP server, dispatcher, SDK worker processes."""

from __future__ import annotations

import signal
from collections import Counter

import pytest

from jobs.models import ExecutionLog, Job, JobExecution, JobState
from tests.e2e.support import start_worker, wait_until
from tests.processes import child_env, running
from workers.models import Worker

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def all_terminal(n: int) -> bool:
    return (
        Job.objects.all_tenants().filter(state__in=("succeeded", "dead", "cancelled")).count() >= n
    )


def test_500_mixed_jobs_end_in_the_right_state_with_the_right_attempts_and_logs(
    api, live_server, quick_retries, tmp_path
):
    specs = (
        [{"job_type": "e2e.ok", "payload": {"i": i}} for i in range(430)]
        + [{"job_type": "e2e.flaky", "payload": {"succeed_on": 2}} for _ in range(30)]
        + [{"job_type": "e2e.fail", "payload": {}, "max_attempts": 3} for _ in range(20)]
        + [{"job_type": "e2e.permanent", "payload": {}} for _ in range(14)]
        + [{"job_type": "e2e.ok", "payload": {"i": -1}, "delay_seconds": 3600, "ref": "later"}]
        + [
            {"ref": "a", "job_type": "e2e.ok", "payload": {"i": 1001}},
            {"ref": "b", "job_type": "e2e.ok", "payload": {"i": 1002}, "depends_on_refs": ["a"]},
            {"ref": "c", "job_type": "e2e.ok", "payload": {"i": 1003}, "depends_on_refs": ["a"]},
            {
                "ref": "d",
                "job_type": "e2e.ok",
                "payload": {"i": 1004},
                "depends_on_refs": ["b", "c"],
            },
            {"ref": "e", "job_type": "e2e.ok", "payload": {"i": 1005}, "depends_on_refs": ["d"]},
        ]
    )
    assert len(specs) == 500
    submitted = api.post(
        "/api/v1/jobs/batch", json={"jobs": [{"queue": "default", **s} for s in specs]}
    )
    assert submitted.status_code == 201, submitted.text
    ids = [job["id"] for job in submitted.json()["jobs"]]
    later, dag = ids[494], dict(zip("abcde", ids[495:], strict=True))
    assert api.post(f"/api/v1/jobs/{later}/cancel").json()["state"] == "cancelled"

    with running(("rundispatcher", "--poll-interval", "0.2"), log_dir=tmp_path):
        worker = start_worker(live_server.url, api.key, "e2e-1", tmp_path)
        try:
            wait_until(lambda: all_terminal(500), what="every job to finish")
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0, (tmp_path / "worker-e2e-1.log").read_text()

    jobs = {str(job.pk): job for job in Job.objects.all_tenants()}
    ok = ids[:430] + list(dag.values())
    assert {jobs[i].state for i in ok} == {JobState.SUCCEEDED}
    assert {jobs[i].attempts for i in ok} == {1}
    assert all(jobs[i].result == {"i": jobs[i].payload["i"]} for i in ok)
    flaky = ids[430:460]
    assert {(jobs[i].state, jobs[i].attempts) for i in flaky} == {(JobState.SUCCEEDED, 2)}
    failing = ids[460:480]
    assert {(jobs[i].state, jobs[i].attempts) for i in failing} == {(JobState.DEAD, 3)}
    assert all("always fails" in jobs[i].last_error for i in failing)
    permanent = ids[480:494]
    assert {(jobs[i].state, jobs[i].attempts) for i in permanent} == {(JobState.DEAD, 1)}
    assert (jobs[later].state, jobs[later].attempts) == (JobState.CANCELLED, 0)

    # Every attempt is an execution row with the matching outcome.
    executions = Counter(JobExecution.objects.all_tenants().values_list("status", flat=True))
    assert executions == {"succeeded": 465, "failed": 30 + 20 * 3 + 14}
    # One log line per successful e2e.ok job and per finished flaky job.
    logs = ExecutionLog.objects.all_tenants()
    assert logs.filter(message__startswith="ok ").count() == 435
    assert logs.filter(message="flaky done").count() == 30
    # The DAG ran in dependency order.
    a, b, c, d, e = (jobs[dag[r]] for r in "abcde")
    assert a.finished_at <= b.started_at and a.finished_at <= c.started_at
    assert max(b.finished_at, c.finished_at) <= d.started_at <= d.finished_at <= e.started_at


def test_a_sigkilled_workers_jobs_run_again_on_another_worker_after_the_lease_expires(
    api, live_server, quick_retries, settings, tmp_path
):
    settings.TASKFORGE_LEASE_SECONDS = 2
    short = {"TASKFORGE_LEASE_SECONDS": "2", "TASKFORGE_WORKER_TIMEOUT_SECONDS": "6"}
    jobs = [
        {"queue": "default", "job_type": "e2e.slow_first", "max_attempts": 20} for _ in range(4)
    ]
    ids = [j["id"] for j in api.post("/api/v1/jobs/batch", json={"jobs": jobs}).json()["jobs"]]

    with running(
        ("rundispatcher", "--poll-interval", "0.2"), log_dir=tmp_path, env=child_env(**short)
    ):
        doomed = start_worker(live_server.url, api.key, "doomed", tmp_path)
        wait_until(
            lambda: (
                Job.objects.all_tenants()
                .filter(state="processing", delivered_at__isnull=False)
                .count()
                == 4
            ),
            what="the first worker to hold all four jobs",
        )
        doomed_id = Worker.objects.all_tenants().get(name="doomed").pk
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
        survivor = start_worker(live_server.url, api.key, "survivor", tmp_path)
        try:
            wait_until(
                lambda: Job.objects.all_tenants().filter(state="succeeded").count() == 4,
                what="the jobs to succeed on the second worker",
            )
            # It deregisters when it stops: note its id while it is registered.
            survivor_id = Worker.objects.all_tenants().get(name="survivor").pk
        finally:
            survivor.send_signal(signal.SIGTERM)
            survivor.wait(timeout=30)

    for job_id in ids:
        runs = list(JobExecution.objects.all_tenants().filter(job_id=job_id).order_by("started_at"))
        assert runs[0].worker_id == doomed_id and runs[0].status == "timed_out"
        assert runs[-1].worker_id == survivor_id and runs[-1].status == "succeeded"
        assert Job.objects.all_tenants().get(pk=job_id).result == {"attempt": runs[-1].attempt}
