"""POST /api/v1/jobs/{id}/complete, /fail, /logs and /workers/{id}/results: lease fencing."""

import json
from datetime import timedelta

import pytest
from django.db.models.functions import Now

from jobs.models import ExecutionLog, ExecutionStatus, Job, JobExecution, JobState
from workers.dispatcher import Dispatcher

pytestmark = pytest.mark.django_db(transaction=True)

JOBS = "/api/v1/jobs"
STALE = "00000000-0000-0000-0000-000000000000"


def post(client, path, body):
    return client.post(path, json.dumps(body), content_type="application/json")


def job_row(job_id):
    return Job.objects.all_tenants().get(pk=job_id)


def execution_of(job_id):
    return JobExecution.objects.all_tenants().get(job_id=job_id)


# --- complete --------------------------------------------------------------------------------


@pytest.mark.covers("jobs:complete", "happy")
def test_complete_stores_the_result_and_closes_the_attempt(wapi, fleet):
    worker = fleet.register()
    (job,) = fleet.running(worker)
    body = {"lease_token": job["lease_token"], "result": {"sent": 3}}
    response = post(wapi, f"{JOBS}/{job['id']}/complete", body)
    assert response.status_code == 200, response.content
    data = response.json()
    assert (data["id"], data["state"], data["attempts"]) == (job["id"], "succeeded", 1)
    stored = job_row(job["id"])
    assert (stored.state, stored.result, stored.lease_token) == (
        JobState.SUCCEEDED,
        {"sent": 3},
        None,
    )
    assert stored.finished_at is not None
    assert execution_of(job["id"]).status == ExecutionStatus.SUCCEEDED


def test_complete_without_a_result_stores_null(wapi, fleet):
    worker = fleet.register()
    (job,) = fleet.running(worker)
    response = post(wapi, f"{JOBS}/{job['id']}/complete", {"lease_token": job["lease_token"]})
    assert response.status_code == 200, response.content
    assert job_row(job["id"]).result is None


def test_complete_with_a_stale_token_is_409_and_changes_nothing(wapi, fleet, refused, snapshot):
    worker = fleet.register()
    (job, other) = fleet.running(worker, 2)
    path = f"{JOBS}/{job['id']}/complete"
    before = snapshot()
    for token in (STALE, other["lease_token"]):
        error = refused(post(wapi, path, {"lease_token": token}), 409, "conflict")
        assert error["details"] == {"job_id": job["id"]}
    assert snapshot() == before
    # A second report of the same lease is stale too: the first one won.
    assert post(wapi, path, {"lease_token": job["lease_token"], "result": 1}).status_code == 200
    refused(post(wapi, path, {"lease_token": job["lease_token"], "result": 2}), 409, "conflict")
    assert job_row(job["id"]).result == 1


def test_complete_of_a_cancelled_job_is_409(wapi, fleet, submitter, refused):
    worker = fleet.register()
    (job,) = fleet.running(worker)
    assert submitter.post(f"{JOBS}/{job['id']}/cancel").status_code == 200
    refused(
        post(wapi, f"{JOBS}/{job['id']}/complete", {"lease_token": job["lease_token"]}),
        409,
        "conflict",
    )
    assert job_row(job["id"]).state == JobState.CANCELLED


def test_a_result_over_the_payload_cap_is_413_and_the_job_keeps_running(
    wapi, fleet, refused, snapshot, settings
):
    settings.TASKFORGE_MAX_PAYLOAD_BYTES = 100
    worker = fleet.register()
    (job,) = fleet.running(worker)
    before = snapshot()
    body = {"lease_token": job["lease_token"], "result": {"s": "x" * 200}}
    error = refused(post(wapi, f"{JOBS}/{job['id']}/complete", body), 413, "payload_too_large")
    assert error["details"]["limit_bytes"] == 100
    assert snapshot() == before
    assert job_row(job["id"]).state == JobState.PROCESSING


def test_a_bad_complete_body_is_400_and_changes_nothing(wapi, fleet, refused, snapshot):
    worker = fleet.register()
    (job,) = fleet.running(worker)
    path = f"{JOBS}/{job['id']}/complete"
    before = snapshot()
    for body in (
        {},
        {"lease_token": "not-a-uuid"},
        {"lease_token": job["lease_token"], "colour": "red"},
        [job["lease_token"]],
    ):
        refused(post(wapi, path, body), 400, "validation_error")
    nul = f'{{"lease_token": "{job["lease_token"]}", "result": "a\\u0000b"}}'
    refused(wapi.post(path, nul, content_type="application/json"), 400, "validation_error")
    refused(wapi.post(path, "{", content_type="application/json"), 400, "validation_error")
    missing = f"{JOBS}/9d72f23b-1b6d-4f3c-a09a-41b482e55b6c/complete"
    refused(post(wapi, missing, {"lease_token": job["lease_token"]}), 404, "not_found")
    assert snapshot() == before


# --- fail ------------------------------------------------------------------------------------


@pytest.mark.covers("jobs:fail", "happy")
def test_a_retryable_failure_schedules_a_retry_until_attempts_run_out(wapi, fleet, project):
    worker = fleet.register()
    (job,) = fleet.running(worker, max_attempts=2)
    body = {"lease_token": job["lease_token"], "error": "smtp down", "retryable": True}
    response = post(wapi, f"{JOBS}/{job['id']}/fail", body)
    assert response.status_code == 200, response.content
    data = response.json()
    assert (data["state"], data["attempts"]) == ("scheduled", 1)
    assert data["run_at"]
    stored = job_row(job["id"])
    assert (stored.last_error, stored.lease_token) == ("smtp down", None)
    assert execution_of(job["id"]).status == ExecutionStatus.FAILED

    # The second and last attempt fails too: dead.
    Job.objects.for_project(project).update(run_at=Now() - timedelta(seconds=1))
    assert Dispatcher(batch_size=10).promote_due() == 1
    (again,) = fleet.poll(worker).json()["jobs"]
    assert again["attempt"] == 2
    body = {"lease_token": again["lease_token"], "error": "still down"}
    response = post(wapi, f"{JOBS}/{job['id']}/fail", body)
    assert (response.json()["state"], response.json()["attempts"]) == ("dead", 2)


@pytest.mark.covers("jobs:fail", "happy")
def test_a_non_retryable_failure_is_dead_at_once(wapi, fleet):
    worker = fleet.register()
    (job,) = fleet.running(worker, max_attempts=5)
    body = {"lease_token": job["lease_token"], "error": "bad input", "retryable": False}
    response = post(wapi, f"{JOBS}/{job['id']}/fail", body)
    assert response.status_code == 200, response.content
    assert (response.json()["state"], response.json()["attempts"]) == ("dead", 1)
    stored = job_row(job["id"])
    assert (stored.last_error, stored.finished_at is not None) == ("bad input", True)


def test_fail_with_a_stale_token_or_a_bad_body_changes_nothing(wapi, fleet, refused, snapshot):
    worker = fleet.register()
    (job,) = fleet.running(worker)
    path = f"{JOBS}/{job['id']}/fail"
    before = snapshot()
    error = refused(post(wapi, path, {"lease_token": STALE, "error": "x"}), 409, "conflict")
    assert error["details"] == {"job_id": job["id"]}
    for body in (
        {"lease_token": job["lease_token"]},
        {"lease_token": job["lease_token"], "error": "x", "retryable": "maybe"},
        {"lease_token": job["lease_token"], "error": "x" * 10_001},
        {"lease_token": job["lease_token"], "error": "a\u0000b"},
        {"lease_token": job["lease_token"], "error": "x", "colour": "red"},
    ):
        refused(post(wapi, path, body), 400, "validation_error")
    assert snapshot() == before


# --- logs ------------------------------------------------------------------------------------


@pytest.mark.covers("jobs:logs", "happy")
def test_posted_log_lines_are_stored_on_the_current_attempt(wapi, fleet, submitter):
    worker = fleet.register()
    (job,) = fleet.running(worker)
    entries = [
        {"level": "info", "message": "starting"},
        {"level": "warn", "message": "slow smtp", "metadata": {"ms": 900}},
        {"message": "default level"},
    ]
    body = {"lease_token": job["lease_token"], "entries": entries}
    response = post(wapi, f"{JOBS}/{job['id']}/logs", body)
    assert (response.status_code, response.json()) == (201, {"stored": 3})
    lines = submitter.get(f"{JOBS}/{job['id']}/logs").json()["results"]
    assert [(line["level"], line["message"]) for line in lines] == [
        ("info", "starting"),
        ("warn", "slow smtp"),
        ("info", "default level"),
    ]
    assert lines[1]["metadata"] == {"ms": 900}
    assert {line["execution_id"] for line in lines} == {execution_of(job["id"]).pk}


def test_a_thousand_log_lines_fit_in_one_request(wapi, fleet):
    worker = fleet.register()
    (job,) = fleet.running(worker)
    body = {"lease_token": job["lease_token"], "entries": [{"message": "x"}] * 1000}
    response = post(wapi, f"{JOBS}/{job['id']}/logs", body)
    assert (response.status_code, response.json()) == (201, {"stored": 1000})


def test_bad_or_stale_log_lines_are_refused_and_nothing_is_stored(wapi, fleet, refused, snapshot):
    worker = fleet.register()
    (job,) = fleet.running(worker)
    path = f"{JOBS}/{job['id']}/logs"
    lease = job["lease_token"]
    before = snapshot()
    stale = post(wapi, path, {"lease_token": STALE, "entries": [{"message": "x"}]})
    error = refused(stale, 409, "conflict")
    assert error["details"] == {"job_id": job["id"]}
    for entries in (
        [{"level": "bogus", "message": "x"}],
        [{"message": "x"}] * 1001,
        [],
        [{"level": "info"}],
        [{"message": "x", "colour": "red"}],
        [{"message": "a\u0000b"}],
        [{"message": "x", "metadata": "not an object"}],
        "x",
    ):
        response = post(wapi, path, {"lease_token": lease, "entries": entries})
        error = refused(response, 400, "validation_error")
        assert "entries" in error["details"]["fields"], entries
    refused(post(wapi, path, {"entries": [{"message": "x"}]}), 400, "validation_error")
    assert snapshot() == before


def test_log_lines_for_a_finished_job_are_409(wapi, fleet, refused):
    worker = fleet.register()
    (job,) = fleet.running(worker)
    post(wapi, f"{JOBS}/{job['id']}/complete", {"lease_token": job["lease_token"]})
    body = {"lease_token": job["lease_token"], "entries": [{"message": "late"}]}
    refused(post(wapi, f"{JOBS}/{job['id']}/logs", body), 409, "conflict")
    assert not ExecutionLog.objects.all_tenants().exists()


def test_log_lines_with_the_token_of_an_earlier_attempt_are_409(wapi, fleet, refused):
    # The first attempt's execution row still carries its token: the job must be processing
    # under that token, not merely processing.
    worker = fleet.register()
    (first,) = fleet.running(worker)
    Job.objects.all_tenants().filter(pk=first["id"]).update(
        lease_expires_at=Now() - timedelta(seconds=1)
    )
    assert Dispatcher(batch_size=100).expire_leases() == 1
    Job.objects.all_tenants().filter(pk=first["id"]).update(run_at=Now() - timedelta(seconds=1))
    assert Dispatcher(batch_size=100).promote_due() == 1
    (second,) = fleet.poll(worker).json()["jobs"]
    assert second["lease_token"] != first["lease_token"]

    body = {"lease_token": first["lease_token"], "entries": [{"message": "from the past"}]}
    error = refused(post(wapi, f"{JOBS}/{first['id']}/logs", body), 409, "conflict")
    assert error["details"] == {"job_id": first["id"]}
    assert not ExecutionLog.objects.all_tenants().exists()
    body = {"lease_token": second["lease_token"], "entries": [{"message": "current"}]}
    assert post(wapi, f"{JOBS}/{first['id']}/logs", body).status_code == 201


# --- results (batch) -------------------------------------------------------------------------


@pytest.mark.covers("workers:results", "happy")
def test_one_results_call_applies_mixed_outcomes(wapi, fleet):
    worker = fleet.register(capacity=5)
    done, retry, dead, stale = fleet.running(worker, 4, max_attempts=3)
    items = [
        {"job_id": done["id"], "lease_token": done["lease_token"], "status": "succeeded",
         "result": {"n": 1}},
        {"job_id": retry["id"], "lease_token": retry["lease_token"], "status": "failed",
         "error": "flaky"},
        {"job_id": dead["id"], "lease_token": dead["lease_token"], "status": "failed",
         "error": "bad", "retryable": False},
        {"job_id": stale["id"], "lease_token": STALE, "status": "succeeded"},
    ]  # fmt: skip
    response = post(wapi, f"/api/v1/workers/{worker}/results", {"results": items})
    assert response.status_code == 200, response.content
    outcomes = response.json()["results"]
    assert [(o["job_id"], o["outcome"]) for o in outcomes] == [
        (done["id"], "succeeded"),
        (retry["id"], "scheduled"),
        (dead["id"], "dead"),
        (stale["id"], "conflict"),
    ]
    assert outcomes[1]["run_at"].endswith("Z")
    assert job_row(done["id"]).result == {"n": 1}
    assert (job_row(retry["id"]).state, job_row(retry["id"]).attempts) == (JobState.SCHEDULED, 1)
    assert job_row(retry["id"]).last_error == "flaky"
    assert job_row(dead["id"]).state == JobState.DEAD
    assert job_row(stale["id"]).state == JobState.PROCESSING


def test_a_bad_results_call_is_400_and_changes_nothing(wapi, fleet, refused, snapshot):
    worker = fleet.register()
    (job,) = fleet.running(worker)
    path = f"/api/v1/workers/{worker}/results"
    item = {"job_id": job["id"], "lease_token": job["lease_token"], "status": "succeeded"}
    before = snapshot()
    for body in (
        {"results": [item] * 1001},
        {"results": []},
        {},
        {"results": [{**item, "status": "maybe"}]},
        {"results": [{**item, "job_id": "not-a-uuid"}]},
        {"results": [{**item, "colour": "red"}]},
        {"results": [item], "colour": "red"},
        [item],
    ):
        refused(post(wapi, path, body), 400, "validation_error")
    refused(wapi.post(path, "{", content_type="application/json"), 400, "validation_error")
    assert snapshot() == before


def test_an_oversized_result_in_a_batch_is_413_and_nothing_is_applied(
    wapi, fleet, refused, snapshot, settings
):
    settings.TASKFORGE_MAX_PAYLOAD_BYTES = 100
    worker = fleet.register()
    small, big = fleet.running(worker, 2)
    items = [
        {"job_id": small["id"], "lease_token": small["lease_token"], "status": "succeeded"},
        {"job_id": big["id"], "lease_token": big["lease_token"], "status": "succeeded",
         "result": "x" * 200},
    ]  # fmt: skip
    before = snapshot()
    response = post(wapi, f"/api/v1/workers/{worker}/results", {"results": items})
    refused(response, 413, "payload_too_large")
    assert snapshot() == before


@pytest.mark.covers("workers:results", "cross_tenant")
def test_an_outsiders_results_cannot_touch_our_jobs_even_with_the_lease_token(
    outsider, fleet, other_fleet, snapshot
):
    ours = fleet.register()
    (job,) = fleet.running(ours)
    theirs = other_fleet.register()
    before = snapshot()
    items = [
        {"job_id": job["id"], "lease_token": job["lease_token"], "status": "succeeded"},
        {"job_id": job["id"], "lease_token": job["lease_token"], "status": "failed",
         "error": "x", "retryable": False},
    ]  # fmt: skip
    response = post(outsider, f"/api/v1/workers/{theirs}/results", {"results": items[:1]})
    assert response.json() == {"results": [{"job_id": job["id"], "outcome": "conflict"}]}
    response = post(outsider, f"/api/v1/workers/{theirs}/results", {"results": items[1:]})
    assert response.json() == {"results": [{"job_id": job["id"], "outcome": "conflict"}]}
    assert snapshot() == before


# --- results of jobs cancelled while they ran ------------------------------------------------


def cancel(client, job_id):
    assert client.post(f"{JOBS}/{job_id}/cancel").status_code == 200


def item(job, status="succeeded", token=None):
    return {"job_id": job["id"], "lease_token": token or job["lease_token"], "status": status}


def results(client, worker, *items):
    response = post(client, f"/api/v1/workers/{worker}/results", {"results": list(items)})
    assert response.status_code == 200, response.content
    return [o["outcome"] for o in response.json()["results"]]


@pytest.mark.covers("workers:results", "happy")
def test_a_cancelled_jobs_result_is_conflict_and_frees_the_slot_it_kept(wapi, fleet, submitter):
    worker = fleet.register(capacity=2)
    cancelled, failed = fleet.running(worker, 2)
    cancel(submitter, cancelled["id"])
    cancel(submitter, failed["id"])
    assert job_row(cancelled["id"]).lease_expires_at is not None  # held

    outcomes = results(wapi, worker, item(cancelled), item(failed, "failed"))

    assert outcomes == ["conflict", "conflict"]
    for job in (cancelled, failed):
        row = job_row(job["id"])
        assert (row.state, row.result, row.lease_expires_at) == (JobState.CANCELLED, None, None)
        assert str(row.worker_id) == worker


def test_the_single_complete_and_fail_endpoints_free_the_slot_too(wapi, fleet, submitter, refused):
    worker = fleet.register(capacity=2)
    completed, failed = fleet.running(worker, 2)
    cancel(submitter, completed["id"])
    cancel(submitter, failed["id"])

    body = {"lease_token": completed["lease_token"], "result": 1}
    refused(post(wapi, f"{JOBS}/{completed['id']}/complete", body), 409, "conflict")
    body = {"lease_token": failed["lease_token"], "error": "x"}
    refused(post(wapi, f"{JOBS}/{failed['id']}/fail", body), 409, "conflict")

    assert job_row(completed["id"]).lease_expires_at is None
    assert job_row(failed["id"]).lease_expires_at is None


def test_only_the_cancelled_attempts_own_result_from_its_worker_frees_the_slot(
    wapi, fleet, submitter, project
):
    worker = fleet.register("w1")
    other = fleet.register("w2")
    (first,) = fleet.running(worker, max_attempts=3)
    # Attempt 1 fails; attempt 2 runs on the same worker and is cancelled while it runs.
    body = {"lease_token": first["lease_token"], "error": "flaky"}
    assert post(wapi, f"{JOBS}/{first['id']}/fail", body).status_code == 200
    Job.objects.for_project(project).update(run_at=Now() - timedelta(seconds=1))
    assert Dispatcher(batch_size=10).promote_due() == 1
    (second,) = fleet.poll(worker).json()["jobs"]
    assert second["attempt"] == 2
    cancel(submitter, second["id"])

    # The token of attempt 1, a made-up token, or the right one from another worker: refused,
    # and the job still holds its slot.
    assert results(wapi, worker, item(first)) == ["conflict"]
    assert results(wapi, worker, item(second, token=STALE)) == ["conflict"]
    assert results(wapi, other, item(second)) == ["conflict"]
    assert job_row(second["id"]).lease_expires_at is not None

    assert results(wapi, worker, item(second)) == ["conflict"]
    assert job_row(second["id"]).lease_expires_at is None


def test_a_held_job_keeps_the_slot_busy_until_its_result_frees_it(wapi, fleet, submitter):
    worker = fleet.register(capacity=1)
    (job,) = fleet.running(worker)
    cancel(submitter, job["id"])
    waiting = fleet.submit()

    # The cancelled job's handler may still run: the worker's one slot is taken.
    assert fleet.poll(worker).json()["jobs"] == []
    assert results(wapi, worker, item(job)) == ["conflict"]
    assert [j["id"] for j in fleet.poll(worker).json()["jobs"]] == [waiting]
