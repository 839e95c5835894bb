"""POST /api/v1/jobs/{id}/cancel and /retry: state rules, 409s, audit rows, access."""

import pytest

from accounts.models import AuditLog
from jobs.models import ExecutionStatus, Job, JobExecution, JobState

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/jobs"


def act(client, job_id, action):
    return client.post(f"{URL}/{job_id}/{action}")


def audit_rows(org, action):
    return list(
        AuditLog.objects.for_org(org)
        .filter(action=action)
        .values_list("target_type", "target_id", "actor_api_key_id", "actor_user_id")
    )


# --- cancel -----------------------------------------------------------------------------------


@pytest.mark.covers("jobs:cancel", "happy")
def test_it_cancels_a_pending_job_and_audits_it(api, engine, org, project):
    job = engine.submit()
    response = act(api, job.pk, "cancel")
    assert response.status_code == 200, response.content
    data = response.json()
    assert (data["id"], data["state"]) == (str(job.pk), "cancelled")
    assert data["finished_at"] is not None
    assert Job.objects.for_project(project).get(pk=job.pk).state == JobState.CANCELLED
    ((target_type, target_id, key_id, user_id),) = audit_rows(org, "job.cancelled")
    assert (target_type, target_id, user_id) == ("job", str(job.pk), None)
    assert key_id is not None


def test_it_cancels_a_scheduled_and_a_blocked_job(api, engine):
    scheduled = engine.submit(delay_seconds=3600)
    blocked = engine.submit(depends_on=[engine.submit().pk])
    for job in (scheduled, blocked):
        response = act(api, job.pk, "cancel")
        assert (response.status_code, response.json()["state"]) == (200, "cancelled")


def test_cancelling_a_processing_job_fails_its_running_attempt(api, engine, project):
    job = engine.processing()
    response = act(api, job.pk, "cancel")
    assert (response.status_code, response.json()["state"]) == (200, "cancelled")
    execution = JobExecution.objects.for_project(project).get(job_id=job.pk)
    assert execution.status == ExecutionStatus.FAILED


def test_cancelling_a_parent_cancels_its_blocked_children(api, engine, project):
    parent = engine.submit()
    child = engine.submit(depends_on=[parent.pk])
    act(api, parent.pk, "cancel")
    assert Job.objects.for_project(project).get(pk=child.pk).state == JobState.CANCELLED


def test_a_member_cancels_and_the_audit_row_names_the_user(member_jwt, engine, org, member):
    job = engine.submit()
    assert act(member_jwt, job.pk, "cancel").status_code == 200
    ((_, target_id, key_id, user_id),) = audit_rows(org, "job.cancelled")
    assert (target_id, key_id, user_id) == (str(job.pk), None, member.pk)


@pytest.mark.parametrize("state", ["succeeded", "dead", "cancelled"])
def test_cancelling_a_finished_job_is_409_and_changes_nothing(
    api, engine, org, snapshot, refused, state
):
    job = getattr(engine, state)()
    before, audited = snapshot(), audit_rows(org, "job.cancelled")
    error = refused(act(api, job.pk, "cancel"), 409, "conflict")
    assert state in error["message"]
    assert snapshot() == before
    assert audit_rows(org, "job.cancelled") == audited


# --- retry ------------------------------------------------------------------------------------


@pytest.mark.covers("jobs:retry", "happy")
def test_it_retries_a_dead_job_from_attempt_zero_and_audits_it(api, engine, org, project):
    job = engine.dead()
    assert (job.state, job.attempts) == (JobState.DEAD, 1)
    response = act(api, job.pk, "retry")
    assert response.status_code == 200, response.content
    data = response.json()
    assert (data["state"], data["attempts"], data["finished_at"]) == ("pending", 0, None)
    ((target_type, target_id, key_id, _),) = audit_rows(org, "job.retried")
    assert (target_type, target_id) == ("job", str(job.pk))
    assert key_id is not None


def test_a_retried_job_runs_again(api, engine, project):
    job = engine.dead()
    act(api, job.pk, "retry")
    assert job.pk in engine.claim()
    assert Job.objects.for_project(project).get(pk=job.pk).state == JobState.PROCESSING


def test_it_retries_a_cancelled_job(api, engine):
    job = engine.cancelled()
    response = act(api, job.pk, "retry")
    assert (response.status_code, response.json()["state"]) == (200, "pending")


def test_a_retried_child_of_an_unfinished_parent_is_blocked(api, engine):
    parent = engine.submit()
    child = engine.submit(depends_on=[parent.pk])
    act(api, child.pk, "cancel")
    response = act(api, child.pk, "retry")
    assert (response.status_code, response.json()["state"]) == (200, "blocked")


@pytest.mark.parametrize("state", ["pending", "processing", "succeeded", "scheduled"])
def test_retrying_a_job_that_is_not_dead_or_cancelled_is_409(
    api, engine, org, snapshot, refused, state
):
    if state == "pending":
        job = engine.submit()
    elif state == "scheduled":
        job = engine.submit(delay_seconds=3600)
    else:
        job = getattr(engine, state)()
    before = snapshot()
    error = refused(act(api, job.pk, "retry"), 409, "conflict")
    assert state in error["message"]
    assert snapshot() == before
    assert audit_rows(org, "job.retried") == []


# --- unknown and foreign jobs -----------------------------------------------------------------


@pytest.mark.parametrize("action", ["cancel", "retry"])
@pytest.mark.parametrize("job_id", ["9d72f23b-1b6d-4f3c-a09a-41b482e55b6c", "not-a-uuid"])
def test_an_unknown_job_is_404(api, refused, snapshot, action, job_id):
    before = snapshot()
    refused(act(api, job_id, action), 404, "not_found")
    assert snapshot() == before


@pytest.mark.parametrize("action", ["cancel", "retry"])
@pytest.mark.covers("jobs:cancel", "cross_tenant")
@pytest.mark.covers("jobs:retry", "cross_tenant")
def test_another_projects_job_is_404_untouched_and_logged_for_staff(
    api, refused, snapshot, org, other_engine, action, cross_tenant_denials
):
    theirs = other_engine.dead() if action == "retry" else other_engine.submit()
    before = snapshot()
    refused(act(api, theirs.pk, action), 404, "not_found")
    assert snapshot() == before
    assert cross_tenant_denials(org) == [("job", str(theirs.pk))]
    assert not AuditLog.objects.for_org(org).exists()


# --- access -----------------------------------------------------------------------------------

CALLS = ["cancel", "retry"]


@pytest.mark.parametrize("name", CALLS)
def test_it_refuses_anonymous_callers(name, call_for, access):
    access.refuses_anonymous(call_for(name))


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.covers("jobs:cancel", "access")
@pytest.mark.covers("jobs:retry", "access")
def test_a_jobs_read_key_is_refused(name, call_for, access):
    access.checks_the_key_scope(call_for(name))


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.covers("jobs:cancel", "access")
@pytest.mark.covers("jobs:retry", "access")
def test_a_viewer_is_refused(name, call_for, access):
    access.lets_a_viewer_only_read(call_for(name))


@pytest.mark.parametrize("name", CALLS)
def test_a_member_may_act(name, call_for, access):
    access.lets_a_member_in(call_for(name))


@pytest.mark.parametrize("name", CALLS)
def test_a_user_must_name_the_project(name, call_for, access):
    access.needs_the_project_header(call_for(name))


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.covers("jobs:cancel", "cross_tenant")
@pytest.mark.covers("jobs:retry", "cross_tenant")
def test_a_user_cannot_name_another_organizations_project(name, call_for, access):
    access.hides_a_foreign_project(call_for(name))


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.covers("jobs:cancel", "cross_tenant")
@pytest.mark.covers("jobs:retry", "cross_tenant")
def test_an_outsider_gets_404_and_changes_nothing(
    name, call_for, outsider, snapshot, refused, other_org, cross_tenant_denials
):
    call = call_for(name)
    before = snapshot()
    refused(call.send(outsider), 404, "not_found")
    assert snapshot() == before
    assert [kind for kind, _ in cross_tenant_denials(other_org)] == ["job"]
    assert not AuditLog.objects.for_org(other_org).exists()
