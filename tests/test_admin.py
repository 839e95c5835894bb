import datetime

import pytest
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Group
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import ApiKey, AuditLog, Role, User
from billing.models import Invoice, UsageRecord
from jobs.models import (
    Batch,
    ExecutionLog,
    ExecutionStatus,
    Job,
    JobDependency,
    JobExecution,
    JobState,
    RunOutcome,
    Schedule,
    ScheduleRun,
)
from taskforge.lib.ids import uuid7
from workers.models import QueueWorkerAssignment, Worker

# WhiteNoise warns when STATIC_ROOT has not been collected, as in a test checkout.
pytestmark = pytest.mark.filterwarnings("ignore:No directory at:UserWarning")

PASSWORD = "correct-horse-battery"
MODELS = sorted(admin.site._registry, key=lambda model: model._meta.label)
READ_ONLY_MODELS = [AuditLog, JobExecution, ExecutionLog, ScheduleRun, UsageRecord]


def label(model):
    return model._meta.label


def url(model, view, *args):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def change_url(obj):
    return url(type(obj), "change", quote(obj.pk))


def make_job(queue, **fields):
    fields.setdefault("job_type", "email.send")
    return Job.objects.create(
        organization_id=queue.organization_id, project_id=queue.project_id, queue=queue, **fields
    )


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # Every test here creates and logs in users; Argon2 would dominate the run time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def superuser(db):
    return User.objects.create_superuser("root@taskforge.example", PASSWORD)


@pytest.fixture
def staff_client(client, superuser):
    assert client.login(username="root@taskforge.example", password=PASSWORD)
    return client


@pytest.fixture
def rows(org, project, queue, other_queue, admin, superuser, make_api_key):
    """One row of every registered model, some of them in the other tenant."""
    batch = Batch.objects.create(organization=org, project=project, total=2)
    job = make_job(queue, batch=batch, idempotency_key="order-1")
    child = make_job(queue, state=JobState.BLOCKED, pending_parents=1)
    execution = JobExecution.objects.create(
        organization=org,
        project=project,
        job=job,
        attempt=1,
        worker_id=uuid7(),
        status=ExecutionStatus.SUCCEEDED,
    )
    worker = Worker.objects.create(organization=org, project=project, name="worker-1")
    token = RefreshToken.for_user(superuser)
    blacklisted, _ = token.blacklist()
    made = [
        blacklisted,
        blacklisted.token,
        org,
        project,
        queue,
        admin,
        batch,
        execution,
        worker,
        make_api_key()[0],
        make_job(other_queue, job_type="report.build"),
        org.subscription,
        Group.objects.create(name="support"),
        AuditLog.objects.create(
            organization=org, project=project, actor_user=admin, action="job.cancel"
        ),
        JobDependency.objects.create(organization=org, parent=job, child=child),
        ExecutionLog.objects.create(organization=org, job=job, execution=execution, message="sent"),
        schedule := Schedule.objects.create(
            organization=org,
            project=project,
            queue=queue,
            name="nightly",
            cron="0 3 * * *",
            job_type="report.build",
        ),
        ScheduleRun.objects.create(
            organization=org,
            schedule=schedule,
            fire_time=datetime.datetime(2026, 1, 1, 3, tzinfo=datetime.UTC),
            outcome=RunOutcome.ENQUEUED,
            job_id=job.pk,
        ),
        QueueWorkerAssignment.objects.create(organization=org, queue=queue, worker=worker),
        UsageRecord.objects.create(
            organization=org, project=project, metric="jobs", day=datetime.date.today()
        ),
        Invoice.objects.create(
            organization=org,
            number="INV-0001",
            period_start=datetime.date(2025, 1, 1),
            period_end=datetime.date(2025, 1, 31),
            total_cents=123456,
        ),
    ]
    by_model = {}
    for obj in made:
        by_model.setdefault(type(obj), obj)
    return by_model


def can_add(model, user):
    request = RequestFactory().get("/admin/")
    request.user = user
    return admin.site._registry[model].has_add_permission(request)


@pytest.mark.parametrize("model", MODELS, ids=label)
def test_it_opens_the_empty_changelist_of_every_model(staff_client, model):
    assert staff_client.get(url(model, "changelist")).status_code == 200


@pytest.mark.parametrize("model", MODELS, ids=label)
def test_it_opens_the_changelist_of_every_model_with_rows(staff_client, rows, model):
    response = staff_client.get(url(model, "changelist"))

    assert response.status_code == 200
    assert change_url(rows[model]) in response.text


@pytest.mark.parametrize("model", MODELS, ids=label)
def test_it_opens_the_change_page_of_every_model(staff_client, rows, model):
    assert staff_client.get(change_url(rows[model])).status_code == 200


@pytest.mark.parametrize("model", MODELS, ids=label)
def test_it_opens_the_add_page_of_every_model_that_allows_adding(
    staff_client, superuser, rows, model
):
    expected = 200 if can_add(model, superuser) else 403

    assert staff_client.get(url(model, "add")).status_code == expected


@pytest.mark.parametrize("model", MODELS, ids=label)
def test_it_redirects_non_staff_to_the_admin_login(client, member, model):
    assert client.login(username=member.email, password=PASSWORD)

    response = client.get(url(model, "changelist"))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_it_redirects_anonymous_visitors_from_the_admin_index(client, db):
    response = client.get(reverse("admin:index"))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


@pytest.mark.parametrize("model", READ_ONLY_MODELS, ids=label)
def test_it_refuses_to_add_or_change_service_written_rows(staff_client, rows, model):
    obj = rows[model]

    assert staff_client.get(url(model, "add")).status_code == 403
    assert staff_client.post(change_url(obj), {}).status_code == 403
    assert staff_client.get(change_url(obj)).status_code == 200


def test_it_lists_jobs_of_every_tenant(staff_client, queue, other_queue):
    ours, theirs = make_job(queue), make_job(other_queue)

    response = staff_client.get(url(Job, "changelist"))

    assert change_url(ours) in response.text
    assert change_url(theirs) in response.text


def test_it_lists_jobs_without_a_query_per_row(staff_client, queue, django_assert_max_num_queries):
    make_job(queue)
    with django_assert_max_num_queries(20) as one_job:
        staff_client.get(url(Job, "changelist"))
    for _ in range(10):
        make_job(queue)

    with django_assert_max_num_queries(len(one_job.captured_queries)):
        staff_client.get(url(Job, "changelist"))


def test_it_opens_the_password_page_of_a_user(staff_client, member):
    # Django's UserAdmin names this URL after auth.User whatever the user model.
    response = staff_client.get(reverse("admin:auth_user_password_change", args=[member.pk]))

    assert response.status_code == 200


def test_it_finds_a_job_by_its_id(staff_client, queue):
    wanted, other = make_job(queue), make_job(queue)

    response = staff_client.get(url(Job, "changelist"), {"q": str(wanted.id)})

    assert change_url(wanted) in response.text
    assert change_url(other) not in response.text


def test_it_filters_jobs_by_job_type(staff_client, queue):
    email, report = make_job(queue), make_job(queue, job_type="report.build")

    response = staff_client.get(url(Job, "changelist"), {"job_type": "report.build"})

    assert change_url(report) in response.text
    assert change_url(email) not in response.text


def test_it_opens_the_change_page_of_a_job(staff_client, queue):
    job = make_job(queue, attempts=2, max_attempts=5)

    response = staff_client.get(change_url(job))

    assert response.status_code == 200
    assert "email.send" in response.text


def test_it_opens_the_change_page_of_an_api_key_without_its_hash(staff_client, make_api_key):
    key, raw = make_api_key(scopes=["jobs:read"])

    response = staff_client.get(change_url(key))

    assert response.status_code == 200
    assert key.prefix in response.text
    assert key.key_hash not in response.text
    assert raw not in response.text
    assert 'name="key_hash"' not in response.text
    assert 'name="scopes"' not in response.text


def test_it_shows_revoked_api_keys_as_revoked(staff_client, make_api_key):
    key, _ = make_api_key()
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())

    response = staff_client.get(url(ApiKey, "changelist"), {"status": "revoked"})

    assert change_url(key) in response.text
    assert "revoked" in response.text


def test_it_creates_a_user_from_an_email_address(staff_client, org):
    response = staff_client.post(
        url(User, "add"),
        {
            "email": "New.Person@Acme.example",
            "organization": str(org.pk),
            "role": Role.VIEWER,
            "usable_password": "true",
            "password1": "a-long-enough-passphrase",
            "password2": "a-long-enough-passphrase",
        },
    )

    assert response.status_code == 302
    user = User.objects.get(email="new.person@acme.example")
    assert user.organization == org
    assert user.role == Role.VIEWER
    assert user.check_password("a-long-enough-passphrase")


def test_it_refuses_a_user_email_that_differs_only_in_case(staff_client, member):
    response = staff_client.post(
        url(User, "add"),
        {"email": member.email.upper(), "role": Role.MEMBER, "usable_password": "false"},
    )

    assert response.status_code == 200
    assert User.objects.filter(email__iexact=member.email).count() == 1


def test_it_changes_a_users_role(staff_client, member, org):
    response = staff_client.post(
        change_url(member),
        {
            "email": member.email,
            "organization": str(org.pk),
            "role": Role.ADMIN,
            "is_active": "on",
        },
    )

    assert response.status_code == 302
    member.refresh_from_db()
    assert member.role == Role.ADMIN


def job_form(queue, **overrides):
    data = {
        "queue": str(queue.pk),
        "job_type": "email.send",
        "payload": '{"to": "someone@example.com"}',
        "tags": "",
        "idempotency_key": "",
        "priority": "5",
        "run_at_0": "2025-01-01",
        "run_at_1": "12:00:00",
        "max_attempts": "5",
        "timeout_seconds": "300",
    }
    return {**data, **overrides}


def test_it_copies_a_new_jobs_tenant_from_its_queue(staff_client, other_queue):
    response = staff_client.post(url(Job, "add"), job_form(other_queue))

    assert response.status_code == 302
    job = Job.objects.get()
    assert job.organization_id == other_queue.organization_id
    assert job.project_id == other_queue.project_id
    assert job.state == JobState.PENDING


def test_it_refuses_a_job_whose_batch_belongs_to_another_tenant(staff_client, queue, other_project):
    batch = Batch.objects.create(organization=other_project.organization, project=other_project)

    response = staff_client.post(url(Job, "add"), job_form(queue, batch=str(batch.pk)))

    assert response.status_code == 200
    assert "belong to different organizations" in response.text
    assert not Job.objects.exists()


def test_it_refuses_a_schedule_with_an_invalid_cron_expression(staff_client, queue):
    response = staff_client.post(
        url(Schedule, "add"),
        {
            "name": "broken",
            "queue": str(queue.pk),
            "cron": "every day",
            "timezone": "Mars/Olympus",
            "job_type": "report.build",
            "payload": "{}",
            "priority": "5",
            "enabled": "on",
            "overlap": "allow",
            "catch_up": "latest",
        },
    )

    assert response.status_code == 200
    assert "must have exactly five fields" in response.text
    assert "unknown IANA timezone" in response.text
    assert not Schedule.objects.exists()


def test_saving_a_schedule_in_the_admin_sets_its_next_run_and_keeps_recorded_runs(
    staff_client, queue
):
    response = staff_client.post(
        url(Schedule, "add"),
        {
            "name": "nightly",
            "queue": str(queue.pk),
            "cron": "0 3 * * *",
            "timezone": "UTC",
            "job_type": "report.build",
            "payload": "{}",
            "priority": "5",
            "enabled": "on",
            "overlap": "allow",
            "catch_up": "latest",
            "catch_up_max": "100",
        },
    )
    assert response.status_code == 302, response.text
    schedule = Schedule.objects.all_tenants().get(name="nightly")
    assert schedule.next_run_at is not None and schedule.next_run_at.hour == 3
    # The dispatcher records a run meanwhile; an edit of the name must not undo it.
    job_id = uuid7()
    Schedule.objects.all_tenants().filter(pk=schedule.pk).update(last_job_id=job_id)
    response = staff_client.post(
        url(Schedule, "change", schedule.pk),
        {
            "name": "renamed",
            "cron": "0 3 * * *",
            "timezone": "UTC",
            "job_type": "report.build",
            "payload": "{}",
            "priority": "5",
            "enabled": "on",
            "overlap": "allow",
            "catch_up": "latest",
            "catch_up_max": "100",
        },
    )
    assert response.status_code == 302, response.text
    schedule.refresh_from_db()
    assert (schedule.name, schedule.last_job_id) == ("renamed", job_id)
