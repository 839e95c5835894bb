"""DAGs and batch callbacks in real processes: live HTTP server, dispatcher, SDK workers.

The acceptance of issue 6 (items 3 and 4): a diamond runs its last job once, after both middle
jobs succeeded, even when the worker running one of them is SIGKILLed; a dead middle job
cancels it with a reason; a cycle is refused with its path; a batch of 1,000 jobs finished by
4 concurrent workers enqueues its callback exactly once.
"""

from __future__ import annotations

import signal

import pytest

from jobs.models import Batch, Job, JobDependency, JobExecution, JobState
from tests.e2e.support import start_worker, stop_worker, wait_until
from tests.processes import child_env, running
from workers.models import Worker, WorkerStatus

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TERMINAL = (JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED)


def job(job_id: str) -> Job:
    return Job.objects.all_tenants().get(pk=job_id)


def executions(job_id: str) -> list[JobExecution]:
    return list(JobExecution.objects.all_tenants().filter(job_id=job_id).order_by("started_at"))


def terminal(job_id: str) -> bool:
    return job(job_id).state in TERMINAL


def diamond(api, *, b_type: str = "e2e.ok", **d_fields) -> dict[str, str]:
    """Submit A -> B, C -> D; return {ref: job id}."""
    specs = [
        {"ref": "a", "job_type": "e2e.ok", "payload": {"i": 1}},
        {"ref": "b", "job_type": b_type, "payload": {"i": 2}, "depends_on_refs": ["a"],
         "max_attempts": 20},
        {"ref": "c", "job_type": "e2e.ok", "payload": {"i": 3}, "depends_on_refs": ["a"]},
        {"ref": "d", "job_type": "e2e.ok", "payload": {"i": 4}, "depends_on_refs": ["b", "c"],
         **d_fields},
    ]  # fmt: skip
    response = api.post(
        "/api/v1/jobs/batch", json={"jobs": [{"queue": "default", **s} for s in specs]}
    )
    assert response.status_code == 201, response.text
    return dict(zip("abcd", (j["id"] for j in response.json()["jobs"]), strict=True))


def test_a_diamond_runs_its_last_job_once_after_both_middle_jobs_succeeded(
    api, live_server, tmp_path
):
    ids = diamond(api)
    with running(("rundispatcher", "--poll-interval", "0.2"), log_dir=tmp_path):
        workers = [start_worker(live_server.url, api.key, f"w{i}", tmp_path) for i in range(2)]
        try:
            wait_until(lambda: terminal(ids["d"]), what="D to finish")
        finally:
            for worker in workers:
                stop_worker(worker)

    a, b, c, d = (job(ids[r]) for r in "abcd")
    assert {j.state for j in (a, b, c, d)} == {JobState.SUCCEEDED}
    assert [len(executions(ids[r])) for r in "abcd"] == [1, 1, 1, 1]
    assert a.finished_at <= min(b.started_at, c.started_at)
    assert max(b.finished_at, c.finished_at) <= d.started_at


def test_a_sigkilled_worker_running_b_does_not_release_d_early(
    api, live_server, quick_retries, settings, tmp_path
):
    settings.TASKFORGE_LEASE_SECONDS = 2
    short = {"TASKFORGE_LEASE_SECONDS": "2", "TASKFORGE_WORKER_TIMEOUT_SECONDS": "6"}
    # B's first attempt hangs (e2e.slow_first); its retry on another worker is quick.
    ids = diamond(api, b_type="e2e.slow_first")
    early: list[tuple[str, str]] = []

    def d_waits_for_b() -> bool:
        b_state, d_state = job(ids["b"]).state, job(ids["d"]).state
        if d_state != JobState.BLOCKED and b_state != JobState.SUCCEEDED:
            early.append((b_state, d_state))
        return d_state in TERMINAL

    with running(
        ("rundispatcher", "--poll-interval", "0.2"), log_dir=tmp_path, env=child_env(**short)
    ):
        doomed = start_worker(live_server.url, api.key, "doomed", tmp_path)
        try:
            wait_until(
                lambda: (
                    Job.objects.all_tenants()
                    .filter(pk=ids["b"], state=JobState.PROCESSING, delivered_at__isnull=False)
                    .exists()
                ),
                what="the first worker to run B",
            )
            wait_until(lambda: terminal(ids["c"]), what="C to finish")
            assert job(ids["d"]).state == JobState.BLOCKED
        finally:
            doomed.send_signal(signal.SIGKILL)
            doomed.wait(timeout=10)
        assert job(ids["d"]).state == JobState.BLOCKED
        # The dead worker fetches nothing more, but B stays on it until the dispatcher sees it
        # silent and ends its lease (B is then retried); D must still wait for B meanwhile.
        wait_until(
            lambda: Worker.objects.all_tenants().get(name="doomed").status == WorkerStatus.OFFLINE,
            what="the killed worker to be marked offline",
        )
        assert job(ids["d"]).state == JobState.BLOCKED
        survivor = start_worker(live_server.url, api.key, "survivor", tmp_path)
        try:
            wait_until(d_waits_for_b, what="D to finish")
        finally:
            stop_worker(survivor)

    assert early == []
    b, d = job(ids["b"]), job(ids["d"])
    assert (b.state, d.state) == (JobState.SUCCEEDED, JobState.SUCCEEDED)
    runs = executions(ids["b"])
    assert (runs[0].status, runs[-1].status) == ("timed_out", "succeeded")
    (d_run,) = executions(ids["d"])
    assert d_run.status == "succeeded"
    assert b.finished_at <= d.started_at


def test_a_dead_b_cancels_d_with_a_reason_and_a_run_child_still_runs(api, live_server, tmp_path):
    ids = diamond(api, b_type="e2e.permanent")
    run_child = api.post(
        "/api/v1/jobs",
        json={"queue": "default", "job_type": "e2e.ok", "payload": {"i": 5},
              "depends_on": [ids["b"], ids["c"]], "on_parent_failure": "run"},
    )  # fmt: skip
    assert run_child.status_code == 201, run_child.text
    run_id = run_child.json()["id"]

    with running(("rundispatcher", "--poll-interval", "0.2"), log_dir=tmp_path):
        worker = start_worker(live_server.url, api.key, "w", tmp_path)
        try:
            wait_until(lambda: terminal(ids["d"]) and terminal(run_id), what="D and E to finish")
        finally:
            stop_worker(worker)

    b, c, d, e = job(ids["b"]), job(ids["c"]), job(ids["d"]), job(run_id)
    assert (b.state, c.state) == (JobState.DEAD, JobState.SUCCEEDED)
    assert d.state == JobState.CANCELLED
    assert d.last_error == f"cancelled: ancestor job {ids['b']} ended dead"
    assert executions(ids["d"]) == []
    assert e.state == JobState.SUCCEEDED
    assert max(b.finished_at, c.finished_at) <= e.started_at


def test_a_three_job_cycle_is_refused_with_its_path_and_nothing_is_written(api):
    def counts():
        return (
            Job.objects.all_tenants().count(),
            Batch.objects.all_tenants().count(),
            JobDependency.objects.all_tenants().count(),
        )

    before = counts()
    jobs = [
        {"queue": "default", "job_type": "t", "ref": "a", "depends_on_refs": ["c"]},
        {"queue": "default", "job_type": "t", "ref": "b", "depends_on_refs": ["a"]},
        {"queue": "default", "job_type": "t", "ref": "c", "depends_on_refs": ["b"]},
    ]
    response = api.post("/api/v1/jobs/batch", json={"jobs": jobs})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    cycle = error["details"]["cycle"]
    assert cycle[0] == cycle[-1] and sorted(cycle[:-1]) == ["a", "b", "c"]
    assert " -> ".join(cycle) in error["message"]
    assert counts() == before


def test_a_batch_of_1000_jobs_finished_by_4_workers_enqueues_its_callbacks_once(
    api, live_server, tmp_path
):
    jobs = [{"queue": "default", "job_type": "e2e.ok", "payload": {"i": i}} for i in range(1000)]
    callbacks = {
        name: {"queue": "default", "job_type": "e2e.ok", "payload": {"i": -1}, "tags": [name]}
        for name in ("on_complete", "on_success")
    }

    def callbacks_done() -> bool:
        return (
            Job.objects.all_tenants().filter(tags__overlap=list(callbacks)).count() == 2
            and not Job.objects.all_tenants().exclude(state__in=TERMINAL).exists()
        )

    with running(("rundispatcher", "--poll-interval", "0.2"), log_dir=tmp_path):
        workers = [start_worker(live_server.url, api.key, f"w{i}", tmp_path) for i in range(4)]
        try:
            # Submit once all four are polling, so no early starter drains the batch alone.
            wait_until(
                lambda: (
                    Worker.objects.all_tenants().filter(status=WorkerStatus.ONLINE).count() == 4
                ),
                what="the four workers to register",
            )
            response = api.post("/api/v1/jobs/batch", json={"jobs": jobs, **callbacks})
            assert response.status_code == 201, response.text
            batch_id = response.json()["batch_id"]
            wait_until(callbacks_done, timeout=300, what="the batch and its callbacks to finish")
        finally:
            for worker in workers:
                stop_worker(worker)

    assert Job.objects.all_tenants().filter(batch_id=batch_id, state="succeeded").count() == 1000
    # Every worker took part, so completions really were concurrent.
    assert JobExecution.objects.all_tenants().values("worker_id").distinct().count() == 4
    batch = Batch.objects.all_tenants().get(pk=batch_id)
    (on_complete,) = Job.objects.all_tenants().filter(tags__contains=["on_complete"])
    (on_success,) = Job.objects.all_tenants().filter(tags__contains=["on_success"])
    assert (batch.on_complete_job_id, batch.on_success_job_id) == (on_complete.pk, on_success.pk)
    assert batch.callback_enqueued_at is not None
    counts = dict.fromkeys(JobState.values, 0) | {"succeeded": 1000}
    summary = {"id": batch_id, "total": 1000, "counts": counts, "succeeded": True}
    assert on_complete.payload == {"i": -1, "batch": summary}
    assert on_success.payload == {"i": -1, "batch": summary}
    assert (on_complete.state, on_success.state) == (JobState.SUCCEEDED, JobState.SUCCEEDED)
    detail = api.get(f"/api/v1/batches/{batch_id}").json()
    assert detail["on_complete_job_id"] == str(on_complete.pk)
    assert detail["finished"] is True
