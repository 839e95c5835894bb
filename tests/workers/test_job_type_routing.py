"""Job types in routing: a worker that declared its job types at registration claims only
those, and a job whose type no online worker handles waits, saying why."""

import pytest

from jobs.models import Job
from tests.workers.conftest import API
from workers.diagnosis import explain_job

pytestmark = pytest.mark.django_db(transaction=True)


def register(fleet, name, job_types, capacity=50):
    body = {"name": name, "capacity": capacity, "queues": [{"name": "default"}]}
    if job_types != "any":
        body["job_types"] = job_types
    response = fleet.workers.post(f"{API}/workers", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def test_two_workers_on_one_queue_each_claim_only_their_own_job_types(fleet, project):
    mailer = register(fleet, "mailer", ["emails.send"])
    billing = register(fleet, "billing", ["invoices.render", "invoices.send"])
    submitted = {
        job_type: {fleet.submit(job_type=job_type) for _ in range(5)}
        for job_type in ("emails.send", "invoices.render", "invoices.send")
    }
    # The mailer asks first and has room for everything: it still takes only its own type.
    got_mailer = {j["id"] for j in fleet.poll(mailer, max=50).json()["jobs"]}
    got_billing = {j["id"] for j in fleet.poll(billing, max=50).json()["jobs"]}
    assert got_mailer == submitted["emails.send"]
    assert got_billing == submitted["invoices.render"] | submitted["invoices.send"]


def test_a_worker_without_declared_types_takes_any_type(fleet):
    anything = register(fleet, "anything", "any")
    jobs = {fleet.submit(job_type=t) for t in ("a", "b", "c")}
    assert {j["id"] for j in fleet.poll(anything, max=10).json()["jobs"]} == jobs


def test_a_job_whose_type_no_online_worker_handles_waits_and_says_so(fleet, project):
    mailer = register(fleet, "mailer", ["emails.send"])
    job_id = fleet.submit(job_type="reports.build")
    assert fleet.poll(mailer, max=10).json() == {"jobs": []}
    job = Job.objects.for_project(project).get(pk=job_id)
    assert job.state == "pending"
    reasons = explain_job(project, job)
    assert reasons[0].code == "no_handler"
    assert "reports.build" in reasons[0].message and "mailer handles emails.send" in (
        reasons[0].message
    )
    # A worker that handles it comes: it is claimed, and the reason is gone.
    builder = register(fleet, "builder", ["reports.build"])
    assert [j["id"] for j in fleet.poll(builder).json()["jobs"]] == [job_id]


def test_a_job_type_behind_other_types_in_the_queue_is_still_found(fleet):
    """The claim reads the queue in claim order and skips types the worker lacks: a worker
    whose type sits behind a run of other jobs still gets it."""
    mailer = register(fleet, "mailer", ["emails.send"])
    for _ in range(30):
        fleet.submit(job_type="reports.build", priority=9)
    wanted = fleet.submit(job_type="emails.send", priority=0)
    assert [j["id"] for j in fleet.poll(mailer, max=5).json()["jobs"]] == [wanted]
