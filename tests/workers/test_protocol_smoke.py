import time

import pytest
from rest_framework.test import APIClient

from jobs.models import Job
from tests.workers.conftest import InThread, long_polls_waiting, wait_until


@pytest.fixture
def worker_client(make_api_key):
    _, raw = make_api_key(scopes=["workers", "jobs:write", "jobs:read"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.mark.django_db(transaction=True)
def test_a_worker_registers_long_polls_and_reports(worker_client, queue):
    reg = worker_client.post(
        "/api/v1/workers",
        {"name": "w1", "capacity": 4, "queues": [{"name": "default", "weight": 1}]},
        format="json",
    )
    assert reg.status_code == 201, reg.content
    worker_id = reg.json()["id"]
    again = worker_client.post(
        "/api/v1/workers",
        {"name": "w1", "capacity": 4, "queues": [{"name": "default"}]},
        format="json",
    )
    assert again.status_code == 200 and again.json()["id"] == worker_id

    empty = worker_client.get(f"/api/v1/workers/{worker_id}/jobs?wait=0")
    assert empty.json() == {"jobs": []}

    # A client submits while the long-poll waits: the submit's NOTIFY wakes it, and the poll
    # claims the job.
    def submit_once_the_poll_waits() -> dict:
        wait_until(lambda: long_polls_waiting(worker_id) == 1)
        body = {"queue": "default", "job_type": "t"}
        submitted: dict = worker_client.post("/api/v1/jobs", body, format="json").json()
        return submitted

    submitter = InThread(submit_once_the_poll_waits)
    submitter.start()
    started = time.monotonic()
    fetched = worker_client.get(f"/api/v1/workers/{worker_id}/jobs?wait=10").json()["jobs"]
    job = submitter.join_result()
    assert [j["id"] for j in fetched] == [job["id"]]
    assert time.monotonic() - started < 9
    stored = Job.objects.all_tenants().get(pk=job["id"])
    assert (stored.state, str(stored.worker_id)) == ("processing", worker_id)

    stale = worker_client.post(
        f"/api/v1/jobs/{job['id']}/complete",
        {"lease_token": "00000000-0000-0000-0000-000000000000"},
        format="json",
    )
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "conflict"
    done = worker_client.post(
        f"/api/v1/workers/{worker_id}/results",
        {
            "results": [
                {
                    "job_id": job["id"],
                    "lease_token": fetched[0]["lease_token"],
                    "status": "succeeded",
                    "result": {"ok": 1},
                }
            ]
        },
        format="json",
    )
    assert done.json() == {"results": [{"job_id": job["id"], "outcome": "succeeded"}]}
    assert Job.objects.all_tenants().get(pk=job["id"]).result == {"ok": 1}
