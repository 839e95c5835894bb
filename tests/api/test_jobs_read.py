"""GET /api/v1/jobs (filters, cursor pages), /jobs/{id}, /executions, /logs; the outsider."""

import base64
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db.models.functions import Now

from accounts.models import AuditLog, Role, User
from jobs import services
from jobs.models import Job, JobExecution

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/jobs"


def ids(response):
    assert response.status_code == 200, response.content
    return {job["id"] for job in response.json()["results"]}


def created(job, when):
    Job.objects.all_tenants().filter(pk=job.pk).update(created_at=when)


# --- list and filters -------------------------------------------------------------------------


@pytest.fixture
def four_jobs(engine, make_queue):
    """Jobs that differ in every filterable field, created a month apart."""
    make_queue("reports")
    jobs = {
        "welcome": engine.submit(
            job_type="emails.send", tags=["onboarding"], idempotency_key="welcome-1"
        ),
        "report": engine.submit(queue="reports", job_type="reports.build", tags=["monthly"]),
        "digest": engine.cancelled(job_type="emails.digest"),
        "load": engine.succeeded(job_type="etl.load", tags=["onboarding", "etl"]),
    }
    for month, job in enumerate(jobs.values(), start=1):
        created(job, datetime(2024, month, 1, tzinfo=UTC))
    return {name: str(job.pk) for name, job in jobs.items()}


@pytest.mark.covers("jobs:list", "happy", "cross_tenant")
def test_the_list_shows_the_projects_jobs_newest_first(api, four_jobs, other_engine):
    other_engine.submit()
    response = api.get(URL)
    assert response.status_code == 200, response.content
    listed = [job["id"] for job in response.json()["results"]]
    assert listed == [four_jobs[name] for name in ("load", "digest", "report", "welcome")]
    assert response.json()["next"] is None


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"state": "pending"}, {"welcome", "report"}),
        ({"state": "cancelled"}, {"digest"}),
        ({"state": "succeeded"}, {"load"}),
        ({"queue": "reports"}, {"report"}),
        ({"queue": "default"}, {"welcome", "digest"}),
        ({"queue": "nope"}, set()),
        ({"job_type": "emails.send"}, {"welcome"}),
        ({"tag": "onboarding"}, {"welcome", "load"}),
        ({"tag": "etl"}, {"load"}),
        ({"created_after": "2024-02-15T00:00:00Z"}, {"digest", "load"}),
        ({"created_after": "2024-02-01T00:00:00+00:00"}, {"report", "digest", "load"}),
        ({"created_before": "2024-02-15T00:00:00Z"}, {"welcome", "report"}),
        ({"created_before": "2024-02-01T02:00:00+02:00"}, {"welcome"}),
        (
            {"created_after": "2024-01-15T00:00:00Z", "created_before": "2024-03-15T00:00:00Z"},
            {"report", "digest"},
        ),
        ({"q": "emails"}, {"welcome", "digest"}),
        ({"q": "welcome-1"}, {"welcome"}),
        ({"q": "REPORTS.b"}, {"report"}),
        ({"state": "pending", "tag": "onboarding"}, {"welcome"}),
    ],
)
def test_each_filter_narrows_the_list(api, four_jobs, params, expected):
    assert ids(api.get(URL, params)) == {four_jobs[name] for name in expected}


def test_q_finds_a_job_by_its_id(api, four_jobs):
    assert ids(api.get(URL, {"q": four_jobs["digest"]})) == {four_jobs["digest"]}


@pytest.mark.parametrize(
    "params",
    [
        {"state": "bogus"},
        {"state": "PENDING"},
        {"created_after": "2024-01-01T00:00:00"},
        {"created_before": "2024-01-01T00:00:00"},
        {"created_after": "yesterday"},
        {"created_after": "2024-13-45T00:00:00Z"},
        {"limit": "0"},
        {"limit": "501"},
        {"limit": "x"},
        {"limit": "-1"},
        {"limit": "1.5"},
    ],
    ids=lambda params: "&".join(f"{k}={v}" for k, v in params.items()),
)
def test_a_bad_filter_or_limit_is_400_naming_the_parameter(api, refused, four_jobs, params):
    error = refused(api.get(URL, params), 400, "validation_error")
    (name,) = params
    assert error["details"]["field"] == name
    assert error["message"].startswith(name)


@pytest.mark.parametrize("name", ["q", "job_type", "queue", "tag"])
def test_a_nul_character_in_a_filter_is_400(api, refused, engine, name):
    engine.submit()
    error = refused(api.get(f"{URL}?{name}=a%00b"), 400, "validation_error")
    assert error["details"]["field"] == name


def test_a_unicode_superscript_limit_is_400(api, refused, engine):
    engine.submit()
    refused(api.get(URL, {"limit": "\u00b2"}), 400, "validation_error")


@pytest.mark.parametrize("limit", ["1", "500"])
def test_limit_accepts_1_to_500(api, four_jobs, limit):
    response = api.get(URL, {"limit": limit})
    assert len(ids(response)) == min(int(limit), 4)


def test_cursor_pages_walk_120_jobs_without_duplicates_or_gaps(api, engine, project):
    # 70 jobs share one created_at (one batch, one transaction), so the id breaks the ties.
    engine.batch(70)
    for _ in range(50):
        engine.submit()
    expected = list(
        Job.objects.for_project(project).order_by("-created_at", "-pk").values_list("pk", flat=True)
    )
    assert len(expected) == 120
    pages, url = [], f"{URL}?limit=50"
    while url:
        response = api.get(url)
        assert response.status_code == 200, response.content
        pages.append([job["id"] for job in response.json()["results"]])
        url = response.json()["next"]
        assert len(pages) <= 3
    assert [len(page) for page in pages] == [50, 50, 20]
    walked = [job_id for page in pages for job_id in page]
    assert walked == [str(pk) for pk in expected]


def test_the_next_link_keeps_the_filters(api, engine):
    for _ in range(3):
        engine.submit(tags=["keep"])
    engine.submit(tags=["other"])
    first = api.get(URL, {"tag": "keep", "limit": "2"}).json()
    assert "tag=keep" in first["next"]
    second = api.get(first["next"]).json()
    assert len(first["results"]) + len(second["results"]) == 3
    assert second["next"] is None


def cursor(text):
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "!!!",
        cursor("hello"),
        cursor("not-a-date|01a20ec4-8823-71e4-9d2d-06a56a43a1c8"),
        cursor("2024-01-01T00:00:00+00:00|not-a-uuid"),
    ],
)
def test_a_garbage_cursor_is_400(api, refused, engine, value):
    engine.submit()
    error = refused(api.get(URL, {"cursor": value}), 400, "validation_error")
    assert error["details"]["field"] == "cursor"


def test_a_cursor_whose_id_is_not_a_uuid_is_400(api, refused, engine):
    engine.submit()
    value = cursor("2024-01-01T00:00:00+00:00|zzz")
    refused(api.get(URL, {"cursor": value}), 400, "validation_error")


# --- detail -----------------------------------------------------------------------------------


@pytest.mark.covers("jobs:detail", "happy")
def test_the_detail_has_attempts_result_and_last_error(api, engine):
    done = api.get(f"{URL}/{engine.succeeded(result={'sent': 3}).pk}").json()
    assert (done["state"], done["attempts"], done["result"]) == ("succeeded", 1, {"sent": 3})
    assert done["parents"] == [] and done["children"] == []
    assert done["started_at"] and done["finished_at"]
    dead = api.get(f"{URL}/{engine.dead(error='smtp down').pk}").json()
    assert (dead["state"], dead["attempts"], dead["last_error"]) == ("dead", 1, "smtp down")


@pytest.mark.parametrize("job_id", ["9d72f23b-1b6d-4f3c-a09a-41b482e55b6c", "not-a-uuid", "1"])
def test_an_unknown_job_is_404_and_not_logged(api, refused, org, job_id, cross_tenant_denials):
    refused(api.get(f"{URL}/{job_id}"), 404, "not_found")
    assert cross_tenant_denials(org) == []


@pytest.mark.covers("jobs:detail", "cross_tenant")
def test_another_projects_job_is_404_like_a_missing_one_and_logged_for_staff(
    api, refused, org, other_org, other_engine, caplog
):
    caplog.set_level("WARNING", logger="taskforge.security")
    theirs = other_engine.submit(job_type="secret.job")
    foreign = refused(api.get(f"{URL}/{theirs.pk}"), 404, "not_found")
    missing_id = uuid.uuid4()
    missing = refused(api.get(f"{URL}/{missing_id}"), 404, "not_found")
    assert foreign["message"].replace(str(theirs.pk), "<id>") == missing["message"].replace(
        str(missing_id), "<id>"
    )
    assert foreign["details"] == missing["details"]
    [record] = [r for r in caplog.records if r.name == "taskforge.security"]
    assert record.levelname == "WARNING"
    assert (record.target_type, record.target_id) == ("job", str(theirs.pk))
    assert (record.path, record.method) == (f"{URL}/{theirs.pk}", "GET")
    assert (record.asker_organization_id, record.owner_organization_id) == (
        str(org.pk),
        str(other_org.pk),
    )
    assert record.actor.startswith("api_key:")
    assert not AuditLog.objects.for_org(org).exists()
    assert not AuditLog.objects.for_org(other_org).exists()


# --- executions and logs ------------------------------------------------------------------------


@pytest.mark.covers("jobs:executions", "happy")
def test_executions_list_every_attempt_in_order(api, engine, project):
    job, first = engine.start(max_attempts=3)
    services.fail_job(project, job.pk, lease_token=first.lease_token, error="timeout")
    Job.objects.for_project(project).filter(pk=job.pk).update(run_at=Now() - timedelta(seconds=1))
    second = engine.claim()[job.pk]
    assert second.lease_token != first.lease_token
    services.complete_job(project, job.pk, lease_token=second.lease_token, result=1)

    response = api.get(f"{URL}/{job.pk}/executions")
    assert response.status_code == 200, response.content
    runs = response.json()["results"]
    assert [(r["attempt"], r["status"], r["error"]) for r in runs] == [
        (1, "failed", "timeout"),
        (2, "succeeded", ""),
    ]
    assert {r["worker"] for r in runs} == {str(engine.worker.pk)}
    assert all(r["started_at"] and r["finished_at"] for r in runs)


@pytest.mark.covers("jobs:logs", "happy")
def test_logs_list_the_workers_lines_oldest_first(api, engine, project):
    job, assigned = engine.start()
    entries = [
        {"level": "info", "message": "starting"},
        {"level": "warn", "message": "slow smtp", "metadata": {"ms": 900}},
        {"level": "error", "message": "retrying"},
    ]
    services.append_logs(project, job.pk, lease_token=assigned.lease_token, entries=entries)
    services.complete_job(project, job.pk, lease_token=assigned.lease_token)

    response = api.get(f"{URL}/{job.pk}/logs")
    assert response.status_code == 200, response.content
    lines = response.json()["results"]
    assert [(line["level"], line["message"]) for line in lines] == [
        ("info", "starting"),
        ("warn", "slow smtp"),
        ("error", "retrying"),
    ]
    assert lines[1]["metadata"] == {"ms": 900}
    execution = JobExecution.objects.for_project(project).get(job_id=job.pk)
    assert {line["execution_id"] for line in lines} == {execution.pk}


def test_a_job_that_never_ran_has_no_executions_or_logs(api, engine):
    job = engine.submit()
    assert api.get(f"{URL}/{job.pk}/executions").json() == {"results": []}
    assert api.get(f"{URL}/{job.pk}/logs").json() == {"results": []}


@pytest.mark.parametrize("suffix", ["executions", "logs"])
@pytest.mark.parametrize("job_id", ["9d72f23b-1b6d-4f3c-a09a-41b482e55b6c", "not-a-uuid"])
def test_executions_and_logs_of_an_unknown_job_are_404(api, refused, suffix, job_id):
    refused(api.get(f"{URL}/{job_id}/{suffix}"), 404, "not_found")


# --- access -----------------------------------------------------------------------------------

CALLS = ["list", "detail", "executions", "logs"]


@pytest.mark.parametrize("name", CALLS)
def test_it_refuses_anonymous_callers(name, call_for, access):
    access.refuses_anonymous(call_for(name))


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.covers("jobs:list", "access")
@pytest.mark.covers("jobs:detail", "access")
@pytest.mark.covers("jobs:executions", "access")
@pytest.mark.covers("jobs:logs", "access")
def test_a_jobs_read_key_may_read(name, call_for, access):
    access.checks_the_key_scope(call_for(name))


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.covers("jobs:list", "access")
@pytest.mark.covers("jobs:detail", "access")
@pytest.mark.covers("jobs:executions", "access")
@pytest.mark.covers("jobs:logs", "access")
def test_a_viewer_may_read(name, call_for, access):
    access.lets_a_viewer_only_read(call_for(name))


@pytest.mark.parametrize("name", CALLS)
def test_a_member_may_read(name, call_for, access):
    access.lets_a_member_in(call_for(name))


@pytest.mark.parametrize("name", CALLS)
def test_a_user_must_name_the_project(name, call_for, access):
    access.needs_the_project_header(call_for(name))


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.covers("jobs:list", "cross_tenant")
@pytest.mark.covers("jobs:detail", "cross_tenant")
@pytest.mark.covers("jobs:executions", "cross_tenant")
@pytest.mark.covers("jobs:logs", "cross_tenant")
def test_a_user_cannot_name_another_organizations_project(name, call_for, access):
    access.hides_a_foreign_project(call_for(name))


@pytest.mark.covers("jobs:list", "access")
@pytest.mark.covers("jobs:detail", "access")
def test_a_key_without_any_jobs_scope_cannot_read(key_client, refused, engine):
    client = key_client("queues:read")
    refused(client.get(URL), 403, "permission_denied")
    refused(client.get(f"{URL}/{engine.submit().pk}"), 403, "permission_denied")


# --- the outsider on every path -----------------------------------------------------------------


@pytest.fixture
def other_admin_jwt(jwt_client, other_org, other_project):
    user = User.objects.create_user(
        "admin@globex.example", "correct-horse-battery", organization=other_org, role=Role.ADMIN
    )
    return jwt_client(user, project_id=other_project.pk)


@pytest.mark.covers("jobs:list", "cross_tenant")
@pytest.mark.covers("jobs:detail", "cross_tenant")
@pytest.mark.covers("jobs:executions", "cross_tenant")
@pytest.mark.covers("jobs:logs", "cross_tenant")
@pytest.mark.covers("jobs:cancel", "cross_tenant")
@pytest.mark.covers("jobs:retry", "cross_tenant")
@pytest.mark.covers("jobs:batch", "cross_tenant")
@pytest.mark.covers("jobs:batch-detail", "cross_tenant")
@pytest.mark.covers("jobs:bulk", "cross_tenant")
def test_an_outsider_gets_404_on_every_path_and_changes_nothing(
    engine,
    outsider,
    other_admin_jwt,
    other_org,
    other_project,
    snapshot,
    refused,
    cross_tenant_denials,
):
    """Other_org's API key and other_org's admin (JWT, own project) try our ids everywhere."""
    pending = engine.submit(idempotency_key="ours")
    dead = engine.dead()
    done = engine.succeeded(logs=("secret line",))
    batch = engine.batch(2).batch_id
    before = snapshot()
    checked = 0
    for client in (outsider, other_admin_jwt):
        for job in (pending, dead, done):
            for suffix in ("", "/executions", "/logs"):
                refused(client.get(f"{URL}/{job.pk}{suffix}"), 404, "not_found")
                checked += 1
            for action in ("cancel", "retry"):
                refused(client.post(f"{URL}/{job.pk}/{action}"), 404, "not_found")
                checked += 1
        refused(client.get(f"/api/v1/batches/{batch}"), 404, "not_found")
        checked += 1
        for query in (str(pending.pk), "ours", "t"):
            assert ids(client.get(URL, {"q": query})) == set()
            checked += 1
        ours = [str(job.pk) for job in (pending, dead, done)]
        error = refused(
            client.post(
                URL, {"queue": "default", "job_type": "t", "depends_on": ours[:1]}, format="json"
            ),
            400,
            "validation_error",
        )
        assert error["details"] == {"field": "depends_on"}
        checked += 1
        batch_item = {"queue": "default", "job_type": "t", "depends_on": ours[:1]}
        refused(
            client.post(f"{URL}/batch", {"jobs": [batch_item]}, format="json"),
            400,
            "validation_error",
        )
        checked += 1
        for action in ("cancel", "retry", "delete"):
            for target in ({"ids": ours}, {"filter": {"state": "pending"}}):
                body = {"action": action, **target}
                response = client.post(f"{URL}/bulk", body, format="json")
                assert response.status_code == 200, response.content
                assert response.json() == {"affected": 0}
                checked += 1
    assert snapshot() == before
    denied = [kind for kind, _ in cross_tenant_denials(other_org)]
    assert denied.count("job") == 2 * 3 * 5
    print(f"cross-tenant attempts checked: {checked}")


@pytest.mark.covers("jobs:list", "cross_tenant")
def test_an_outsiders_own_job_is_invisible_to_us_in_the_list(api, engine, other_engine):
    ours, theirs = engine.submit(), other_engine.submit()
    assert ids(api.get(URL)) == {str(ours.pk)}
    assert ids(api.get(URL, {"q": str(theirs.pk)})) == set()
