import pytest
from rest_framework.test import APIClient


@pytest.fixture
def client(make_api_key):
    _, raw = make_api_key(scopes=["jobs:read", "jobs:write"])
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return c


@pytest.mark.django_db(transaction=True)
@pytest.mark.covers("jobs:list", "happy")
@pytest.mark.covers("jobs:detail", "happy")
def test_it_submits_and_reads_a_job(client, queue):
    r = client.post(
        "/api/v1/jobs", {"queue": "default", "job_type": "t", "payload": {"a": 1}}, format="json"
    )
    assert r.status_code == 201, r.content
    job = r.json()
    assert job["queue"] == "default" and job["state"] == "pending"
    r = client.get(f"/api/v1/jobs/{job['id']}")
    assert r.status_code == 200 and r.json()["parents"] == []
    r = client.get("/api/v1/jobs?limit=1")
    assert r.status_code == 200 and len(r.json()["results"]) == 1
    r = client.post(
        "/api/v1/jobs", {"queue": "default", "job_type": "t", "priority": 12}, format="json"
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error", r.content
    r = client.post("/api/v1/jobs", "{bad", content_type="application/json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error", r.content
    r = client.get("/api/v1/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
