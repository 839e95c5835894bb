"""TaskForge (the client) against the real server: submit, batch, get, wait, errors."""

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from taskforge_client import (
    AuthenticationError,
    Conflict,
    NotFound,
    PermissionDenied,
    TaskForge,
    ValidationError,
    WaitTimeout,
)

from jobs.models import Job as JobRow


def test_it_submits_a_job_and_reads_it_back(api):
    job = api.submit(
        "default", "emails.send", {"to": "a@example.com"}, priority=7, tags=["x"], max_attempts=2
    )

    assert job.state == "pending" and job.queue == "default" and job.job_type == "emails.send"
    assert job.priority == 7 and job.tags == ("x",) and job.max_attempts == 2
    assert job.payload == {"to": "a@example.com"}
    assert job.created_at is not None and job.created_at.tzinfo is not None
    assert job.raw["id"] == job.id
    again = api.get_job(job.id)
    assert again == job


def test_submit_sends_a_fresh_idempotency_key_and_honours_a_given_one(api):
    first, second = api.submit("default", "t"), api.submit("default", "t")
    assert first.id != second.id
    assert uuid.UUID(first.idempotency_key) and first.idempotency_key != second.idempotency_key

    mine = api.submit("default", "t", idempotency_key="order-42")
    repeat = api.submit("default", "t", {"ignored": True}, idempotency_key="order-42")

    assert repeat.id == mine.id
    assert JobRow.objects.all_tenants().filter(idempotency_key="order-42").count() == 1


def test_it_submits_delayed_and_dependent_jobs(api):
    later = api.submit("default", "t", run_at=datetime.now(UTC) + timedelta(hours=1))
    delayed = api.submit("default", "t", delay_seconds=3600)
    child = api.submit("default", "t", depends_on=[later, delayed.id])

    assert later.state == "scheduled" and delayed.state == "scheduled"
    assert child.state == "blocked"
    assert sorted(api.get_job(child.id).raw["parents"]) == sorted([later.id, delayed.id])


def test_it_submits_a_batch_whose_jobs_depend_on_each_other_by_ref(api):
    batch_id, jobs = api.submit_batch(
        [
            {"queue": "default", "job_type": "extract", "ref": "a", "payload": {"n": 1}},
            {"queue": "default", "job_type": "load", "depends_on_refs": ["a"], "priority": 9},
        ]
    )

    assert uuid.UUID(batch_id)
    assert [j.job_type for j in jobs] == ["extract", "load"]
    assert [j.state for j in jobs] == ["pending", "blocked"]
    assert {j.batch_id for j in jobs} == {batch_id}
    assert all(j.idempotency_key for j in jobs)


def test_it_submits_a_run_policy_and_batch_callbacks(api):
    parent = api.submit("default", "t")
    child = api.submit("default", "t", depends_on=[parent], on_parent_failure="run")
    edges = api.get_job(child.id).raw["parent_edges"]
    assert edges == [{"job": parent.id, "on_parent_failure": "run"}]

    batch_id, jobs = api.submit_batch(
        [{"queue": "default", "job_type": "t", "ref": "a"},
         {"queue": "default", "job_type": "t", "depends_on_refs": ["a"],
          "on_parent_failure": "run"}],
        on_complete={"queue": "default", "job_type": "done", "payload": {"n": 1}},
        on_success={"queue": "default", "job_type": "ok", "tags": ("cb",)},
    )  # fmt: skip
    batch = api.request("GET", f"/batches/{batch_id}")
    assert batch["on_complete"]["payload"] == {"n": 1}
    assert (batch["on_success"]["job_type"], batch["on_success"]["tags"]) == ("ok", ["cb"])
    assert [j.state for j in jobs] == ["pending", "blocked"]


def test_a_bad_callback_raises_validation_error_naming_the_field(api):
    with pytest.raises(ValidationError) as caught:
        api.submit_batch(
            [{"queue": "default", "job_type": "t"}],
            on_complete={"queue": "nope", "job_type": "done"},
        )
    assert caught.value.details == {"field": "on_complete.queue"}


def test_wait_returns_the_job_once_it_is_terminal(api):
    job = api.submit("default", "t")
    api.cancel(job.id)

    done = api.wait(job.id, timeout=5)

    assert done.state == "cancelled" and done.is_terminal


def test_wait_gives_up_after_its_timeout(api):
    job = api.submit("default", "t")  # no worker serves it

    with pytest.raises(WaitTimeout) as caught:
        api.wait(job.id, timeout=0.2, poll=0.05)

    assert caught.value.details == {"job_id": job.id, "state": "pending"}
    assert isinstance(caught.value, TimeoutError)


def test_an_unknown_job_raises_not_found_with_the_envelope(api):
    with pytest.raises(NotFound) as caught:
        api.get_job(uuid.uuid4())

    assert caught.value.status == 404 and caught.value.code == "not_found"
    assert caught.value.message


def test_a_bad_submission_raises_validation_error_naming_the_field(api):
    with pytest.raises(ValidationError) as caught:
        api.submit("no-such-queue", "t")

    assert caught.value.status == 400 and caught.value.details["field"] == "queue"
    assert "no-such-queue" in caught.value.message


def test_a_batch_error_names_the_index(api):
    with pytest.raises(ValidationError) as caught:
        api.submit_batch(
            [{"queue": "default", "job_type": "t"}, {"queue": "nope", "job_type": "t"}]
        )

    assert caught.value.details == {"field": "queue", "index": 1}
    assert JobRow.objects.all_tenants().count() == 0


def test_a_cancelled_job_cannot_be_cancelled_again(api):
    job = api.submit("default", "t")
    api.cancel(job.id)

    with pytest.raises(Conflict) as caught:
        api.cancel(job.id)

    assert caught.value.status == 409 and caught.value.code == "conflict"


def test_a_stale_lease_token_raises_conflict(api):
    job = api.submit("default", "t")

    with pytest.raises(Conflict) as caught:
        api.request("POST", f"/jobs/{job.id}/complete", json={"lease_token": str(uuid.uuid4())})

    assert caught.value.details == {"job_id": job.id}


def test_a_wrong_key_raises_authentication_error(sdk_server):
    with (
        TaskForge(sdk_server.url, "tf_not_a_real_key") as client,
        pytest.raises(AuthenticationError) as caught,
    ):
        client.get_job(uuid.uuid4())

    assert caught.value.status == 401


def test_a_key_without_the_scope_raises_permission_denied(sdk_server, make_api_key):
    _, raw = make_api_key(scopes=["jobs:read"])
    with TaskForge(sdk_server.url, raw) as client, pytest.raises(PermissionDenied) as caught:
        client.submit("default", "t")

    assert caught.value.status == 403 and caught.value.code == "permission_denied"


def test_it_manages_schedules(api):
    created = api.create_schedule(
        "nightly", "30 2 * * *", "default", "reports.nightly", {"f": 1}, timezone="Europe/Berlin"
    )
    assert created["timezone"] == "Europe/Berlin" and created["enabled"] is True
    assert [s["id"] for s in api.schedules()] == [created["id"]]
    times = api.preview_schedule(created["id"], n=3)
    assert len(times) == 3 and times == sorted(times) and times[0].tzinfo is not None
    assert all(t.astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M") == "02:30" for t in times)
    paused = api.update_schedule(created["id"], enabled=False)
    assert paused["enabled"] is False and paused["next_run_at"] is None
    job = api.trigger_schedule(created["id"])
    assert job.job_type == "reports.nightly" and job.payload == {"f": 1}
    assert api.get_schedule(created["id"])["last_job_id"] == job.id
    with pytest.raises(ValidationError) as caught:
        api.create_schedule("bad", "0 0 30 2 *", "default", "t")
    assert caught.value.details["field"] == "cron"
    api.delete_schedule(created["id"])
    with pytest.raises(NotFound):
        api.get_schedule(created["id"])
