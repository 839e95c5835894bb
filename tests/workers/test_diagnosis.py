"""Why isn't this job running? (workers/diagnosis.py): each situation built for real, with
workers' own fetches (claiming.claim) where it matters, and the outsider's jobs never in the
answer."""

from datetime import timedelta

import pytest
from django.db.models.functions import Now
from django.utils import timezone

from accounts.models import Project
from billing.models import Subscription
from jobs import services
from jobs.models import Job, JobState
from jobs.specs import JobSpec
from queues.models import Queue
from workers import claiming
from workers import services as worker_services
from workers.diagnosis import AHEAD_CAP, NAMED_JOBS, explain_job
from workers.models import Worker, WorkerStatus

pytestmark = pytest.mark.django_db(transaction=True)


def submit(project, queue="default", **fields):
    job, _ = services.submit_job(project, JobSpec(queue=queue, job_type="t", **fields))
    return job


def register(project, name="w1", capacity=4, queues=("default",)):
    worker, _ = worker_services.register_worker(
        project,
        name=name,
        queues=[worker_services.QueueWeight(q) for q in queues],
        capacity=capacity,
    )
    return worker


def claim(*workers):
    """Each worker fetches, and so claims, what it may: how many jobs they got in all."""
    return sum(len(claiming.claim(w.project, w.pk, limit=100).jobs) for w in workers)


def fresh(project, job):
    return Job.objects.for_project(project).get(pk=job.pk)


def reasons(project, job):
    return explain_job(project, fresh(project, job))


def codes(project, job):
    return [reason.code for reason in reasons(project, job)]


def reason(project, job, code):
    [found] = [r for r in reasons(project, job) if r.code == code]
    return found


# --- scheduled and blocked ----------------------------------------------------------------------


def test_a_delayed_job_is_scheduled_until_its_run_at(project, queue):
    job = submit(project, delay_seconds=3600)
    [why] = reasons(project, job)
    assert why.code == "scheduled"
    assert why.at == fresh(project, job).run_at
    assert why.at > timezone.now() + timedelta(minutes=59)


def test_a_failed_attempt_waits_to_retry_and_says_which_attempt_failed(project, queue):
    Queue.objects.for_project(project).filter(pk=queue.pk).update(
        backoff_base_seconds=600, backoff_jitter="none"
    )
    worker = register(project)
    job = submit(project)
    [claimed] = claiming.claim(project, worker.pk, limit=10).jobs
    services.fail_job(project, job.pk, lease_token=claimed.lease_token, error="smtp down\nmore")
    [why] = reasons(project, job)
    assert why.code == "retrying"
    assert why.message == "Waiting to retry after attempt 1 failed: smtp down"
    assert why.at == fresh(project, job).run_at


def test_a_scheduled_job_past_its_run_at_is_due(project, queue):
    job = submit(project, delay_seconds=3600)
    Job.objects.for_project(project).filter(pk=job.pk).update(run_at=Now() - timedelta(seconds=5))
    assert codes(project, job) == ["due"]


def test_a_blocked_job_names_the_parents_it_waits_for(project, queue):
    worker = register(project, capacity=1)
    running = submit(project)
    assert claim(worker) == 1
    waiting = submit(project)
    done = submit(project)
    Job.objects.for_project(project).filter(pk=done.pk).update(state=JobState.SUCCEEDED)
    child = submit(project, depends_on=[running.pk, waiting.pk])
    Job.objects.for_project(project).filter(pk=child.pk).update(state=JobState.BLOCKED)
    why = reason(project, child, "blocked")
    assert set(why.job_ids) == {running.pk, waiting.pk}
    assert why.message == "Waiting for 2 parent jobs to finish (1 pending, 1 processing)"


def test_a_blocked_job_names_at_most_twenty_parents(project, queue):
    parents = services.submit_jobs(project, [JobSpec(queue="default", job_type="t")] * 25).ids
    child = submit(project, depends_on=parents)
    assert fresh(project, child).state == JobState.BLOCKED
    why = reason(project, child, "blocked")
    assert len(why.job_ids) == NAMED_JOBS
    assert set(why.job_ids) <= set(parents)
    assert why.message.startswith("Waiting for 25 parent jobs to finish (25 pending)")
    assert f"the first {NAMED_JOBS} are listed" in why.message


# --- pending --------------------------------------------------------------------------------------


def test_a_pending_job_with_a_free_worker_is_next_in_line(project, queue):
    register(project)
    job = submit(project)
    assert codes(project, job) == ["next_in_line"]


def test_a_paused_queue_holds_its_jobs(project, queue):
    worker = register(project)
    Queue.objects.for_project(project).filter(pk=queue.pk).update(paused=True)
    job = submit(project)
    assert codes(project, job) == ["queue_paused"]
    assert claim(worker) == 0


def test_no_online_worker_names_the_draining_and_offline_ones(project, queue):
    job = submit(project)
    assert codes(project, job) == ["no_worker"]
    draining = register(project, "drainer")
    worker_services.drain_worker(project, draining)
    gone = register(project, "ghost")
    Worker.objects.for_project(project).filter(pk=gone.pk).update(status=WorkerStatus.OFFLINE)
    why = reason(project, job, "no_worker")
    assert why.message == (
        "No online worker serves queue default (drainer is draining, ghost is offline)"
    )
    assert claim(draining) == 0
    # The offline one fetching is proof of life: it is online again and takes the job.
    assert claim(gone) == 1


def test_a_worker_of_another_queue_does_not_serve_this_one(project, queue, make_queue):
    make_queue("other")
    register(project, queues=("other",))
    job = submit(project)
    assert codes(project, job) == ["no_worker"]


def test_a_full_worker_is_named_with_its_slots(project, queue):
    solo = register(project, "solo", capacity=1)
    submit(project)
    assert claim(solo) == 1
    job = submit(project)
    assert claim(solo) == 0
    why = reason(project, job, "workers_busy")
    assert why.message == (
        "Every online worker serving queue default is at capacity: solo (1 of 1 slots busy)"
    )


def test_free_slots_go_to_higher_priority_queues_first(project, queue, make_queue):
    make_queue("urgent", priority=9)
    worker = register(project, capacity=1, queues=("default", "urgent"))
    job = submit(project)
    submit(project, queue="urgent")
    why = reason(project, job, "higher_priority_queues")
    assert why.message.endswith("higher-priority queues with jobs waiting: urgent")
    assert claim(worker) == 1
    assert fresh(project, job).state == JobState.PENDING


def test_a_higher_priority_queue_at_its_cap_takes_no_slot(project, queue, make_queue):
    make_queue("urgent", priority=9, max_concurrency=1)
    worker = register(project, capacity=2, queues=("default", "urgent"))
    submit(project, queue="urgent")
    assert claim(worker) == 1
    submit(project, queue="urgent")
    job = submit(project)
    assert codes(project, job) == ["next_in_line"]
    assert claim(worker) == 1
    assert fresh(project, job).state == JobState.PROCESSING


def test_a_queue_at_its_max_concurrency_names_the_running_jobs(project, make_queue):
    make_queue("capped", max_concurrency=1)
    worker = register(project, capacity=5, queues=("capped",))
    first = submit(project, "capped")
    assert claim(worker) == 1
    second = submit(project, "capped")
    assert claim(worker) == 0
    why = reason(project, second, "concurrency_limit")
    assert why.job_ids == (first.pk,)
    assert why.message == "Queue capped runs at most 1 job at once, and 1 is running"
    assert codes(project, second) == ["concurrency_limit"]


def test_a_rate_limited_queue_says_when_its_next_start_is_due(project, make_queue):
    make_queue("slow", rate_limit_per_second=0.01)
    worker = register(project, capacity=5, queues=("slow",))
    submit(project, "slow")
    before = timezone.now()
    assert claim(worker) == 1
    job = submit(project, "slow")
    assert claim(worker) == 0
    why = reason(project, job, "rate_limited")
    # The claim spent the bucket's one token: the next one is 100 s (1 / 0.01) later.
    assert before + timedelta(seconds=95) < why.at < timezone.now() + timedelta(seconds=101)


def test_a_full_rate_bucket_is_no_reason(project, make_queue):
    make_queue("slow", rate_limit_per_second=0.01)
    register(project, capacity=5, queues=("slow",))
    job = submit(project, "slow")
    assert codes(project, job) == ["next_in_line"]


def test_jobs_ahead_follow_the_claim_order(project, queue):
    solo = register(project, "solo", capacity=1)
    submit(project)
    assert claim(solo) == 1
    first, second = submit(project), submit(project)
    urgent = submit(project, priority=9)
    job = submit(project)
    submit(project, priority=1)
    submit(project)
    assert reason(project, job, "jobs_ahead").message == "3 jobs are ahead of it in queue default"
    assert reason(project, first, "jobs_ahead").message == "1 job is ahead of it in queue default"
    assert "jobs_ahead" not in codes(project, urgent)
    assert reason(project, second, "jobs_ahead").message.startswith("2 jobs are")


def test_jobs_ahead_are_counted_up_to_the_cap(project, queue):
    for _ in range(2):
        services.submit_jobs(project, [JobSpec(queue="default", job_type="t", priority=9)] * 501)
    job = submit(project)
    why = reason(project, job, "jobs_ahead")
    assert why.message == f"{AHEAD_CAP:,}+ jobs are ahead of it in queue default"


def test_several_reasons_are_all_given(project, make_queue):
    make_queue("stuck", paused=True, max_concurrency=1)
    job = submit(project, "stuck")
    Job.objects.for_project(project).filter(pk=job.pk).update(
        state=JobState.PROCESSING, worker_id=job.pk, lease_token=job.pk
    )
    waiting = submit(project, "stuck")
    assert codes(project, waiting) == ["queue_paused", "no_worker", "concurrency_limit"]


# --- processing and finished ----------------------------------------------------------------------


def test_a_claimed_job_runs_on_its_worker_at_once_and_says_when_its_lease_ends(project, queue):
    # The fetch that claims a job delivers it: there is no "assigned, not fetched yet" any more.
    solo = register(project, "solo")
    job = submit(project)
    assert claim(solo) == 1
    assert codes(project, job) == ["running", "lease"]
    running = reason(project, job, "running")
    assert running.message == "Running on solo"
    assert running.at == fresh(project, job).delivered_at
    assert reason(project, job, "lease").at == fresh(project, job).lease_expires_at


def test_a_fetched_job_runs_on_its_worker(project, queue):
    worker = register(project, "solo")
    job = submit(project)
    assert claim(worker) == 1
    worker_services.drain_worker(project, worker)
    running = reason(project, job, "running")
    assert running.message == "Running on solo (now draining)"
    assert running.at == fresh(project, job).delivered_at
    Job.objects.for_project(project).filter(pk=job.pk).update(
        lease_expires_at=Now() - timedelta(seconds=1)
    )
    assert codes(project, job) == ["running", "lease_expired"]


def test_a_finished_job_has_nothing_to_explain(project, queue):
    job = services.cancel_job(project, submit(project).pk)
    assert reasons(project, job) == []


# --- tenancy --------------------------------------------------------------------------------------


def test_another_projects_jobs_and_workers_never_show(project, queue, other_project, other_queue):
    # The outsider has a queue of the same name with a busy worker and a backlog.
    spy = register(other_project, "spy", capacity=1)
    theirs = [submit(other_project, priority=9) for _ in range(3)]
    assert claim(spy) == 1
    job = submit(project)
    found = reasons(project, job)
    assert [r.code for r in found] == ["no_worker"]
    assert "spy" not in found[0].message
    register(project, "ours", capacity=1)
    assert codes(project, job) == ["next_in_line"]
    parent = submit(project)
    child = submit(project, depends_on=[parent.pk])
    for r in reasons(project, child):
        assert not set(r.job_ids) & {t.pk for t in theirs}


# --- the plan's max_concurrency -------------------------------------------------------------------


def set_plan_concurrency(org, limit):
    Subscription.objects.for_org(org).update(limits={"max_concurrency": limit})


def test_an_organization_at_its_plan_limit_says_the_job_starts_when_one_finishes(
    org, project, queue
):
    set_plan_concurrency(org, 2)
    worker = register(project, capacity=5)
    submit(project)
    submit(project)
    assert claim(worker) == 2
    job = submit(project)
    assert claim(worker) == 0
    why = reason(project, job, "plan_limit")
    assert why.message == (
        "Your organization's plan allows 2 running jobs at once, and 2 are running: "
        "it starts when one finishes"
    )
    assert codes(project, job) == ["plan_limit"]


def test_the_plan_limit_counts_the_running_jobs_of_the_organizations_other_projects(
    org, project, queue
):
    set_plan_concurrency(org, 1)
    second = Project.objects.create(organization=org, name="second")
    Queue.objects.create(organization=org, project=second, name="default")
    theirs = register(second, "theirs")
    submit(second)
    assert claim(theirs) == 1
    register(project, "ours")
    job = submit(project)
    assert codes(project, job) == ["plan_limit"]
    assert "1 running job at once, and 1 is running" in reason(project, job, "plan_limit").message


def test_an_organization_under_its_plan_limit_has_no_plan_reason(
    org, project, queue, other_project, other_queue
):
    set_plan_concurrency(org, 1)
    # Another organization's running job is not ours.
    spy = register(other_project, "spy")
    submit(other_project)
    assert claim(spy) == 1
    register(project)
    job = submit(project)
    assert codes(project, job) == ["next_in_line"]
