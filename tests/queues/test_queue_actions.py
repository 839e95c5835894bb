"""POST /queues/{name}/pause, /resume and /purge: effects on dispatch, counts, audit."""

import pytest
from rest_framework.test import APIClient

from accounts.models import AuditLog
from jobs import services as job_services
from jobs.models import Job, JobState
from jobs.specs import JobSpec
from queues.models import Queue
from workers import claiming
from workers import services as worker_services

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def api(make_api_key):
    _, raw = make_api_key(scopes=["queues:read", "queues:write"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def submit(project, queue="default", **fields):
    job, _ = job_services.submit_job(project, JobSpec(queue=queue, job_type="t", **fields))
    return job


def register(project, queues=("default",)):
    worker, _ = worker_services.register_worker(
        project, name="w1", queues=[worker_services.QueueWeight(q) for q in queues], capacity=10
    )
    return worker


def state_of(project, job):
    return Job.objects.for_project(project).get(pk=job.pk).state


def audit_rows(org, action):
    return list(AuditLog.objects.for_org(org).filter(action=action))


@pytest.mark.covers("queues:pause", "happy")
def test_it_pauses_a_queue(api, org, queue):
    response = api.post("/api/v1/queues/default/pause")
    assert response.status_code == 200
    assert response.json()["paused"] is True
    assert response.json()["name"] == "default"
    queue.refresh_from_db()
    assert queue.paused
    [row] = audit_rows(org, "queue.paused")
    assert row.target_id == "default"
    assert row.actor_api_key is not None


@pytest.mark.covers("queues:resume", "happy")
def test_it_resumes_a_queue(api, org, make_queue):
    make_queue("held", paused=True)
    response = api.post("/api/v1/queues/held/resume", {}, format="json")
    assert response.status_code == 200
    assert response.json()["paused"] is False
    [row] = audit_rows(org, "queue.resumed")
    assert row.target_id == "held"


def test_pausing_stops_claims_and_resuming_restarts_them(api, project, queue):
    worker = register(project)
    job = submit(project)
    api.post("/api/v1/queues/default/pause")

    assert claiming.claim(project, worker.pk, limit=10).jobs == []
    assert state_of(project, job) == JobState.PENDING

    api.post("/api/v1/queues/default/resume")
    assert [j.id for j in claiming.claim(project, worker.pk, limit=10).jobs] == [job.pk]
    assert state_of(project, job) == JobState.PROCESSING


def test_a_paused_queue_still_accepts_submissions(api, project, queue):
    api.post("/api/v1/queues/default/pause")
    assert submit(project).state == JobState.PENDING


@pytest.mark.parametrize("action", ["pause", "resume", "purge"])
@pytest.mark.parametrize(
    ("raw", "content_type"),
    [('{"now": true}', "application/json"), ("{", "application/json"), ("[]", "application/json")],
)
def test_actions_refuse_a_body_and_change_nothing(
    api, org, project, queue, action, raw, content_type
):
    job = submit(project)
    response = api.post(f"/api/v1/queues/default/{action}", raw, content_type=content_type)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    queue.refresh_from_db()
    assert not queue.paused
    assert state_of(project, job) == JobState.PENDING
    assert not AuditLog.objects.for_org(org).filter(action__startswith="queue.").exists()


@pytest.mark.parametrize("action", ["pause", "resume", "purge"])
def test_actions_answer_404_for_a_missing_queue(api, action):
    response = api.post(f"/api/v1/queues/nope/{action}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.covers("queues:purge", "happy")
def test_purge_deletes_pending_and_scheduled_jobs_and_leaves_the_rest(
    api, org, project, make_queue
):
    make_queue("other")
    worker = register(project)
    running = submit(project)
    # The worker's fetch claims it: running is now processing.
    assert [j.id for j in claiming.claim(project, worker.pk, limit=10).jobs] == [running.pk]
    pending = [submit(project), submit(project)]
    scheduled = submit(project, delay_seconds=3600)
    elsewhere = submit(project, queue="other", delay_seconds=3600)

    response = api.post("/api/v1/queues/default/purge")

    assert response.status_code == 200
    assert response.json() == {"deleted": 3}
    left = set(Job.objects.for_project(project).values_list("pk", flat=True))
    assert left == {running.pk, elsewhere.pk}
    assert not {j.pk for j in [*pending, scheduled]} & left
    assert state_of(project, running) == JobState.PROCESSING
    [row] = audit_rows(org, "queue.purged")
    assert row.target_id == "default"
    assert row.metadata == {"deleted": 3}


def test_purge_cancels_jobs_waiting_on_a_purged_job(api, project, make_queue):
    make_queue("later")
    parent = submit(project)
    child = submit(project, queue="later", depends_on=[parent.pk])
    api.post("/api/v1/queues/default/purge")
    assert state_of(project, child) == JobState.CANCELLED


def test_purging_an_empty_queue_deletes_nothing(api, org, queue):
    response = api.post("/api/v1/queues/default/purge")
    assert response.json() == {"deleted": 0}
    assert Queue.objects.for_project(queue.project).filter(pk=queue.pk).exists()
    [row] = audit_rows(org, "queue.purged")
    assert row.metadata == {"deleted": 0}
