"""GET /queues/{name}/stats on a small world built through the services."""

from datetime import timedelta

import pytest
from django.db.models.functions import Now
from rest_framework.test import APIClient

from jobs import services as job_services
from jobs.models import Job, JobExecution, JobState
from jobs.specs import JobSpec
from taskforge.queue_ops import queue_stats
from workers import claiming
from workers import services as worker_services

pytestmark = pytest.mark.django_db(transaction=True)

EMPTY_COUNTS = dict.fromkeys(JobState.values, 0)


@pytest.fixture
def api(make_api_key):
    _, raw = make_api_key(scopes=["queues:read"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def submit(project, queue="default", **fields):
    job, _ = job_services.submit_job(project, JobSpec(queue=queue, job_type="t", **fields))
    return job


def register(project, name, *queues, active=True):
    weights = [worker_services.QueueWeight(q, active=active) for q in queues]
    worker, _ = worker_services.register_worker(project, name=name, queues=weights, capacity=10)
    return worker


def claim_all(project, workers):
    """Each worker fetches (and so claims) what is pending in its queues: {job id: lease}."""
    return {
        job.id: job.lease_token
        for worker in workers
        for job in claiming.claim(project, worker.pk, limit=100).jobs
    }


def finished_ago(project, job, minutes):
    """Move the job's finished execution back in time (the database clock decides windows)."""
    JobExecution.objects.for_project(project).filter(job=job).update(
        finished_at=Now() - timedelta(minutes=minutes)
    )


@pytest.fixture
def world(project, make_queue):
    """default: 3 succeeded, 1 dead, 1 scheduled retry, 1 processing, 2 pending, 1 blocked,
    1 cancelled; and one succeeded job in another queue that must not count."""
    make_queue("other")
    w1 = register(project, "w1", "default")
    w_other = register(project, "w-other", "other")
    a, b, c, d, e, x = (submit(project) for _ in range(6))
    stranger = submit(project, queue="other")
    tokens = claim_all(project, [w1, w_other])
    for job in (a, b, x):
        job_services.complete_job(project, job.pk, lease_token=tokens[job.pk])
    job_services.complete_job(project, stranger.pk, lease_token=tokens[stranger.pk])
    job_services.fail_job(project, c.pk, lease_token=tokens[c.pk], error="boom", retryable=False)
    job_services.fail_job(project, d.pk, lease_token=tokens[d.pk], error="flaky")
    finished_ago(project, b, 3)  # in 5m and 60m, not 1m
    finished_ago(project, c, 30)  # in 60m only
    finished_ago(project, x, 120)  # in no window
    f, _g = submit(project), submit(project)
    Job.objects.for_project(project).filter(pk=f.pk).update(run_at=Now() - timedelta(seconds=90))
    submit(project, depends_on=[e.pk])  # blocked
    job_services.cancel_job(project, submit(project).pk)
    # Workers serving default: w1 online; w2 draining; w3 online but its assignment inactive.
    worker_services.drain_worker(project, register(project, "w2", "default"))
    register(project, "w3", "default", active=False)


@pytest.mark.covers("queues:stats", "happy")
def test_it_reports_the_queues_numbers(api, world):
    response = api.get("/api/v1/queues/default/stats")
    assert response.status_code == 200
    body = response.json()
    age = body.pop("oldest_pending_age_seconds")
    assert body == {
        "queue": "default",
        "paused": False,
        "counts": {
            "blocked": 1,
            "scheduled": 1,
            "pending": 2,
            "processing": 1,
            "succeeded": 3,
            "dead": 1,
            "cancelled": 1,
        },
        "throughput": {"1m": 1, "5m": 2, "60m": 2},
        # 1m: a ok, d failed; 5m: + b ok; 60m: + c failed (dead).
        "failure_rate": {"1m": 0.5, "5m": 0.3333, "60m": 0.5},
        "workers_online": 1,
    }
    assert 90 <= age < 120


def test_it_reports_an_empty_queue(api, queue):
    body = api.get("/api/v1/queues/default/stats").json()
    assert body == {
        "queue": "default",
        "paused": False,
        "counts": EMPTY_COUNTS,
        "oldest_pending_age_seconds": None,
        "throughput": {"1m": 0, "5m": 0, "60m": 0},
        "failure_rate": {"1m": None, "5m": None, "60m": None},
        "workers_online": 0,
    }


def test_it_shows_a_paused_queue_as_paused(api, make_queue):
    make_queue("held", paused=True)
    assert api.get("/api/v1/queues/held/stats").json()["paused"] is True


def test_stats_take_three_queries(project, queue, world, django_assert_num_queries):
    with django_assert_num_queries(3):
        queue_stats(project, queue)


def test_it_answers_404_for_stats_of_a_missing_queue(api):
    response = api.get("/api/v1/queues/nope/stats")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
