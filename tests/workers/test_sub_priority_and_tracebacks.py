"""sub_priority (an order within a priority), a failed attempt's full traceback, and a job
read with its attempts in one request (GET /jobs/{id}?expand=executions)."""

import pytest

from jobs.models import Job, JobExecution
from tests.workers.conftest import API
from workers.diagnosis import explain_job

pytestmark = pytest.mark.django_db(transaction=True)

TRACE = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app/tasks.py", line 3, in charge\n'
    "    raise CardDeclined(402)\n"
    "app.CardDeclined: 402\n"
)


def claim_order(fleet, worker, count):
    response = fleet.poll(worker, max=count)
    assert response.status_code == 200, response.content
    return [job["id"] for job in response.json()["jobs"]]


@pytest.mark.covers("jobs:list", "happy")
def test_jobs_of_one_priority_are_claimed_by_sub_priority_then_in_submit_order(fleet):
    worker = fleet.register(capacity=1)
    jobs = {
        name: fleet.submit(priority=5, sub_priority=sub, job_type=name)
        for name, sub in (("lower", -2), ("low", 2), ("plain", 0), ("high", 10), ("high2", 10))
    }
    urgent = fleet.submit(priority=6, sub_priority=-100, job_type="urgent")

    order = []
    for _ in range(6):
        (job_id,) = claim_order(fleet, worker, 1)
        order.append(job_id)
        done = {"job_id": job_id, "lease_token": _token(job_id), "status": "succeeded"}
        response = fleet.workers.post(
            f"{API}/workers/{worker}/results", {"results": [done]}, format="json"
        )
        assert response.status_code == 200, response.content

    assert order == [
        urgent, jobs["high"], jobs["high2"], jobs["low"], jobs["plain"], jobs["lower"]
    ]  # fmt: skip


def _token(job_id):
    return str(Job.objects.all_tenants().get(pk=job_id).lease_token)


@pytest.mark.covers("jobs:list", "happy")
def test_sub_priority_is_stored_returned_and_defaults_to_zero(fleet):
    response = fleet.jobs.post(
        f"{API}/jobs", {"queue": "default", "job_type": "t", "sub_priority": -100}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["sub_priority"] == -100
    plain = fleet.jobs.post(f"{API}/jobs", {"queue": "default", "job_type": "t"}, format="json")
    assert plain.json()["sub_priority"] == 0
    batch = fleet.jobs.post(
        f"{API}/jobs/batch",
        {"jobs": [{"queue": "default", "job_type": "t", "sub_priority": 100}]},
        format="json",
    )
    assert batch.status_code == 201, batch.content
    (job,) = batch.json()["jobs"]
    assert job["sub_priority"] == 100
    assert Job.objects.all_tenants().get(pk=job["id"]).sub_priority == 100
    detail = fleet.jobs.get(f"{API}/jobs/{job['id']}")
    assert detail.json()["sub_priority"] == 100


@pytest.mark.parametrize("value", [-101, 101, 1.5, "high", True, None])
def test_a_sub_priority_out_of_range_or_not_an_integer_is_a_400(fleet, value):
    for url, body in (
        (f"{API}/jobs", {"queue": "default", "job_type": "t", "sub_priority": value}),
        (
            f"{API}/jobs/batch",
            {"jobs": [{"queue": "default", "job_type": "t", "sub_priority": value}]},
        ),
    ):
        response = fleet.jobs.post(url, body, format="json")
        assert response.status_code == 400, (url, response.content)
        assert "sub_priority" in response.json()["error"]["message"]
    assert not Job.objects.all_tenants().exists()


def test_why_is_this_job_waiting_counts_higher_sub_priorities_ahead(fleet, project):
    fleet.submit(priority=5, sub_priority=50)
    fleet.submit(priority=5, sub_priority=50)
    waiting = fleet.submit(priority=5, sub_priority=0)
    fleet.submit(priority=5, sub_priority=-50)
    job = Job.objects.for_project(project).get(pk=waiting)
    reasons = {reason.code: reason for reason in explain_job(project, job)}
    assert reasons["jobs_ahead"].message.startswith("2 jobs are ahead of it")


@pytest.mark.covers("workers:results", "happy")
def test_a_failure_keeps_its_full_traceback_on_the_attempt(fleet, project):
    worker = fleet.register()
    (job,) = fleet.running(worker, max_attempts=1)
    body = {
        "results": [
            {"job_id": job["id"], "lease_token": job["lease_token"], "status": "failed",
             "error": "app.CardDeclined: 402", "traceback": TRACE, "retryable": False}
        ]
    }  # fmt: skip
    response = fleet.workers.post(f"{API}/workers/{worker}/results", body, format="json")
    assert response.status_code == 200, response.content

    (execution,) = JobExecution.objects.for_project(project).filter(job_id=job["id"])
    assert execution.traceback == TRACE  # whole, trailing newline included
    listed = fleet.jobs.get(f"{API}/jobs/{job['id']}/executions").json()["results"]
    assert [(e["error"], e["traceback"]) for e in listed] == [("app.CardDeclined: 402", TRACE)]


@pytest.mark.covers("jobs:fail", "happy")
def test_the_single_fail_endpoint_takes_a_traceback_too(fleet, project):
    worker = fleet.register()
    (job,) = fleet.running(worker)
    body = {"lease_token": job["lease_token"], "error": "ValueError: x", "traceback": TRACE}
    response = fleet.workers.post(f"{API}/jobs/{job['id']}/fail", body, format="json")
    assert response.status_code == 200, response.content
    assert JobExecution.objects.for_project(project).get(job_id=job["id"]).traceback == TRACE


@pytest.mark.parametrize("traceback", ["a\x00b", "x" * 65_537, None])
def test_a_traceback_with_nul_too_long_or_null_is_a_400_and_changes_nothing(
    fleet, project, traceback
):
    worker = fleet.register()
    (job,) = fleet.running(worker)
    body = {
        "results": [
            {"job_id": job["id"], "lease_token": job["lease_token"], "status": "failed",
             "error": "boom", "traceback": traceback}
        ]
    }  # fmt: skip
    response = fleet.workers.post(f"{API}/workers/{worker}/results", body, format="json")
    assert response.status_code == 400, response.content
    assert "traceback" in response.json()["error"]["message"]
    assert Job.objects.for_project(project).get(pk=job["id"]).state == "processing"


@pytest.mark.covers("jobs:detail", "happy")
def test_a_job_is_read_with_its_attempts_in_one_request(fleet):
    worker = fleet.register()
    (job,) = fleet.running(worker)
    fail = {"lease_token": job["lease_token"], "error": "ValueError: x", "traceback": TRACE}
    response = fleet.workers.post(f"{API}/jobs/{job['id']}/fail", fail, format="json")
    assert response.status_code == 200, response.content

    plain = fleet.jobs.get(f"{API}/jobs/{job['id']}").json()
    expanded = fleet.jobs.get(f"{API}/jobs/{job['id']}", {"expand": "executions"}).json()
    assert "executions" not in plain
    assert {k: v for k, v in expanded.items() if k != "executions"} == plain
    listed = fleet.jobs.get(f"{API}/jobs/{job['id']}/executions").json()["results"]
    assert expanded["executions"] == listed
    assert [(e["attempt"], e["status"], e["worker"]) for e in listed] == [(1, "failed", worker)]


def test_an_unknown_expand_is_a_400_naming_it(fleet):
    job = fleet.submit()
    response = fleet.jobs.get(f"{API}/jobs/{job}", {"expand": "logs"})
    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "expand"


@pytest.mark.covers("jobs:detail", "cross_tenant")
def test_expand_does_not_open_another_tenants_job(fleet, other_fleet):
    theirs = other_fleet.submit()
    response = fleet.jobs.get(f"{API}/jobs/{theirs}", {"expand": "executions"})
    assert response.status_code == 404
