"""Submitting jobs through jobs.services: defaults, validation, tenancy, batches, idempotency."""

import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from jobs import services
from jobs.models import Batch, Job, JobDependency, JobState
from jobs.specs import JobSpec
from taskforge.lib.errors import PayloadTooLarge, ValidationFailed


def spec(**fields):
    return JobSpec(**{"queue": "default", "job_type": "email.send", **fields})


@pytest.mark.django_db(transaction=True)
def test_it_takes_max_attempts_and_timeout_from_the_queue(project, make_queue):
    make_queue("reports", max_attempts=7, timeout_seconds=42)
    job, _ = services.submit_job(project, spec(queue="reports"))
    assert (job.max_attempts, job.timeout_seconds) == (7, 42)


@pytest.mark.django_db(transaction=True)
def test_it_prefers_the_specs_own_max_attempts_and_timeout(project, make_queue):
    make_queue("reports", max_attempts=7, timeout_seconds=42)
    job, _ = services.submit_job(project, spec(queue="reports", max_attempts=2, timeout_seconds=9))
    assert (job.max_attempts, job.timeout_seconds) == (2, 9)


@pytest.mark.django_db(transaction=True)
def test_it_schedules_a_delayed_job_at_now_plus_the_delay(project, queue):
    before = timezone.now()
    job, _ = services.submit_job(project, spec(delay_seconds=120))
    after = timezone.now()
    assert job.state == JobState.SCHEDULED
    slack = timedelta(seconds=2)
    assert (
        before + timedelta(seconds=120) - slack
        <= job.run_at
        <= after + timedelta(seconds=120) + slack
    )


@pytest.mark.django_db(transaction=True)
def test_it_makes_a_job_with_a_past_run_at_pending(project, queue):
    run_at = timezone.now() - timedelta(hours=1)
    job, _ = services.submit_job(project, spec(run_at=run_at))
    assert job.state == JobState.PENDING
    assert job.run_at == run_at


@pytest.mark.django_db(transaction=True)
def test_it_makes_a_job_with_a_future_run_at_scheduled(project, queue):
    run_at = timezone.now() + timedelta(hours=1)
    job, _ = services.submit_job(project, spec(run_at=run_at))
    assert job.state == JobState.SCHEDULED


@pytest.mark.parametrize("priority", [12, -1, "5"])
@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_priority_outside_0_to_9_or_not_an_integer(project, queue, priority):
    with pytest.raises(ValidationFailed) as caught:
        services.submit_job(project, spec(priority=priority))
    assert caught.value.details["field"] == "priority"
    assert "priority" in caught.value.message
    assert Job.objects.all_tenants().count() == 0


@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_payload_over_the_size_limit_and_writes_nothing(project, queue, settings):
    settings.TASKFORGE_MAX_PAYLOAD_BYTES = 100
    with pytest.raises(PayloadTooLarge) as caught:
        services.submit_job(project, spec(payload={"body": "x" * 200}))
    assert caught.value.details["limit_bytes"] == 100
    assert caught.value.details["size_bytes"] > 100
    assert Job.objects.all_tenants().count() == 0


@pytest.mark.django_db(transaction=True)
def test_it_accepts_a_payload_just_under_the_size_limit(project, queue, settings):
    settings.TASKFORGE_MAX_PAYLOAD_BYTES = 100
    job, created = services.submit_job(project, spec(payload={"body": "x" * 80}))
    assert created and job.payload == {"body": "x" * 80}


@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_nul_character_in_the_job_type(project, queue):
    with pytest.raises(ValidationFailed) as caught:
        services.submit_job(project, spec(job_type="email\x00send"))
    assert caught.value.details["field"] == "job_type"
    assert Job.objects.all_tenants().count() == 0


@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_nul_character_in_a_payload_string(project, queue):
    with pytest.raises(ValidationFailed) as caught:
        services.submit_job(project, spec(payload={"to": "a@b.example\x00"}))
    assert caught.value.details["field"] == "payload"
    assert Job.objects.all_tenants().count() == 0


@pytest.mark.django_db(transaction=True)
def test_it_accepts_a_payload_with_a_literal_backslash_u0000_text(project, queue):
    # Six ordinary characters, as in a Windows path or a JSON snippet: "\" "u" "0" "0" "0" "0".
    job, _ = services.submit_job(project, spec(payload={"path": "C:\\u0000\\file"}))
    assert job.payload == {"path": "C:\\u0000\\file"}


@pytest.mark.django_db(transaction=True)
def test_it_refuses_an_unknown_queue(project, queue):
    with pytest.raises(ValidationFailed) as caught:
        services.submit_job(project, spec(queue="nope"))
    assert caught.value.details["field"] == "queue"


@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_queue_of_another_project(project, queue, other_project, make_queue):
    make_queue("theirs", project=other_project)
    with pytest.raises(ValidationFailed) as caught:
        services.submit_job(project, spec(queue="theirs"))
    assert caught.value.details["field"] == "queue"
    assert Job.objects.all_tenants().count() == 0


@pytest.mark.django_db(transaction=True)
def test_it_refuses_to_depend_on_a_job_of_another_project_as_unknown(
    project, queue, other_project, other_queue
):
    theirs, _ = services.submit_job(other_project, spec())
    with pytest.raises(ValidationFailed) as caught:
        services.submit_job(project, spec(depends_on=[theirs.pk]))
    assert caught.value.details["field"] == "depends_on"
    assert f"no job {theirs.pk} in this project" in caught.value.message
    assert Job.objects.for_project(project).count() == 0
    assert JobDependency.objects.all_tenants().count() == 0


@pytest.mark.django_db(transaction=True)
def test_it_writes_nothing_of_a_batch_whose_third_job_is_invalid(project, queue):
    specs = [spec(), spec(), spec(priority=12), spec()]
    with pytest.raises(ValidationFailed) as caught:
        services.submit_jobs(project, specs)
    assert caught.value.details == {"field": "priority", "index": 2}
    assert caught.value.message.startswith("jobs[2].priority")
    assert Job.objects.all_tenants().count() == 0
    assert Batch.objects.all_tenants().count() == 0


@pytest.mark.django_db(transaction=True)
def test_it_writes_nothing_of_a_batch_whose_third_job_names_an_unknown_queue(project, queue):
    specs = [spec(), spec(), spec(queue="nope")]
    with pytest.raises(ValidationFailed) as caught:
        services.submit_jobs(project, specs)
    assert caught.value.details == {"field": "queue", "index": 2}
    assert Job.objects.all_tenants().count() == 0
    assert Batch.objects.all_tenants().count() == 0


@pytest.mark.django_db(transaction=True)
def test_it_returns_the_same_job_for_a_repeated_idempotency_key(project, queue):
    first, first_created = services.submit_job(project, spec(idempotency_key="order-1"))
    again, again_created = services.submit_job(
        project, spec(idempotency_key="order-1", payload={"other": True})
    )
    assert (first_created, again_created) == (True, False)
    assert again.pk == first.pk
    assert again.payload == {}
    assert Job.objects.all_tenants().count() == 1


@pytest.mark.django_db(transaction=True)
def test_it_creates_one_job_for_fifty_concurrent_submits_with_one_key(project, queue):
    threads_count = 50
    barrier = threading.Barrier(threads_count)
    results: list[tuple] = []
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            barrier.wait(timeout=10)
            job, created = services.submit_job(project, spec(idempotency_key="once"))
            results.append((job.pk, created))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=submit) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    job = Job.objects.all_tenants().get()
    assert [job_id for job_id, _ in results] == [job.pk] * threads_count
    assert sum(created for _, created in results) == 1


@pytest.mark.django_db(transaction=True)
def test_a_batch_repeated_entirely_returns_the_first_batch_and_creates_no_new_one(project, queue):
    specs = [JobSpec(queue="default", job_type="t", idempotency_key=f"k{i}") for i in range(3)]
    first = services.submit_jobs(project, specs)
    again = services.submit_jobs(project, specs)
    assert again.batch_id == first.batch_id
    assert again.created == [False, False, False]
    assert Batch.objects.for_project(project).count() == 1
    assert Batch.objects.for_project(project).get().total == 3
