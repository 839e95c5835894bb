"""The dashboard's statistics (jobs/services/stats.py): the per-minute rollup that results
write, its folding, capped counts and estimates, queue health and failure groups."""

import itertools
import threading
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from django.db import connection

from jobs import services
from jobs.models import Job, JobExecution, JobState, JobThroughput
from jobs.services import stats
from jobs.specs import JobSpec
from taskforge import queue_ops
from taskforge.lib.errors import ValidationFailed
from workers import claiming
from workers import services as worker_services
from workers.dispatcher import Dispatcher

# A fixed clock for the tests that write the rollup themselves: the readers and the fold take
# ``now``, so nothing depends on when the test runs.
NOW = datetime(2026, 3, 10, 12, 34, 56, tzinfo=UTC)
THIS_MINUTE = NOW.replace(second=0)


def register(project, queues=("default",), name="w1"):
    worker, _ = worker_services.register_worker(
        project,
        name=name,
        queues=[worker_services.QueueWeight(q) for q in queues],
        capacity=100,
    )
    return worker


def submit(project, queue="default", job_type="t", **fields):
    job, _ = services.submit_job(project, JobSpec(queue=queue, job_type=job_type, **fields))
    return job


def claim(project, worker):
    """The worker fetches (and so claims) what is pending: {job id: AssignedJob}."""
    return {a.id: a for a in claiming.claim(project, worker.pk, limit=100).jobs}


def take(project):
    """A new worker of the project takes every pending job: {job id: lease token}."""
    worker = register(project, name=f"w-{uuid.uuid4().hex[:8]}")
    return {job_id: a.lease_token for job_id, a in claim(project, worker).items()}


def fail(project, taken, job, error):
    """Report ``error`` for a job taken by take() (not retryable: one attempt)."""
    services.fail_job(project, job.pk, lease_token=taken[job.pk], error=error, retryable=False)


def rollup(queue):
    """{(minute, shard): (succeeded, failed, dead)} of the queue's rollup rows."""
    return {
        (row.minute, row.shard): (row.succeeded, row.failed, row.dead)
        for row in JobThroughput.objects.all_tenants().filter(queue=queue)
    }


def database_minute():
    with connection.cursor() as cursor:
        cursor.execute("SELECT date_trunc('minute', now()), pg_backend_pid()")
        return cursor.fetchone()


def count_into(queue, minute, *, shard, succeeded=0, failed=0, dead=0):
    JobThroughput.objects.create(
        organization_id=queue.organization_id,
        project_id=queue.project_id,
        queue=queue,
        minute=minute,
        shard=shard,
        succeeded=succeeded,
        failed=failed,
        dead=dead,
    )


def make_job(queue, state, **fields):
    if state == JobState.PROCESSING:
        fields.setdefault("worker_id", uuid.uuid4())
        fields.setdefault("lease_token", uuid.uuid4())
    fields.setdefault("job_type", "t")
    return Job.objects.create(
        organization_id=queue.organization_id,
        project_id=queue.project_id,
        queue=queue,
        state=state,
        **fields,
    )


# --- The rollup written by results -----------------------------------------------------------


@pytest.mark.django_db
def test_results_count_into_the_rollup_per_queue_and_minute(project, queue, make_queue):
    mail = make_queue("mail")
    worker = register(project, queues=("default", "mail"))
    ok = [submit(project) for _ in range(3)]
    retried, dead = submit(project, "mail"), submit(project, "mail")
    assigned = claim(project, worker)

    results = [services.ResultItem(j.pk, assigned[j.pk].lease_token, True) for j in ok]
    results += [
        services.ResultItem(retried.pk, assigned[retried.pk].lease_token, False, error="x"),
        services.ResultItem(
            dead.pk, assigned[dead.pk].lease_token, False, error="x", retryable=False
        ),
    ]
    services.report_results(project, results)

    minute, pid = database_minute()
    assert rollup(queue) == {(minute, pid): (3, 0, 0)}
    assert rollup(mail) == {(minute, pid): (0, 2, 1)}


@pytest.mark.django_db
def test_a_second_batch_of_results_adds_to_the_sessions_row_of_the_minute(project, queue):
    worker = register(project)
    first, second = submit(project), submit(project)
    assigned = claim(project, worker)

    services.complete_job(project, first.pk, lease_token=assigned[first.pk].lease_token)
    services.complete_job(project, second.pk, lease_token=assigned[second.pk].lease_token)

    minute, pid = database_minute()
    assert rollup(queue) == {(minute, pid): (2, 0, 0)}


@pytest.mark.django_db
def test_an_expired_lease_counts_as_a_failed_attempt_and_dead_when_it_was_the_last(project, queue):
    worker = register(project)
    job = submit(project, max_attempts=1)
    claim(project, worker)
    Job.objects.all_tenants().filter(pk=job.pk).update(
        lease_expires_at=datetime(2000, 1, 1, tzinfo=UTC)
    )

    assert Dispatcher(batch_size=100).expire_leases() == 1

    minute, pid = database_minute()
    assert rollup(queue) == {(minute, pid): (0, 1, 1)}


@pytest.mark.django_db
def test_a_stale_result_counts_nothing(project, queue):
    worker = register(project)
    job = submit(project)
    claim(project, worker)

    outcomes = services.report_results(project, [services.ResultItem(job.pk, uuid.uuid4(), True)])

    assert outcomes[job.pk] is None
    assert rollup(queue) == {}


@pytest.mark.django_db
def test_a_deleted_queue_takes_its_rollup_rows_with_it(project, queue, make_queue):
    mail = make_queue("mail")
    count_into(mail, THIS_MINUTE, shard=0, succeeded=1)
    count_into(queue, THIS_MINUTE, shard=0, succeeded=1)

    queue_ops.delete_queue(mail, force=True)

    assert rollup(mail) == {}
    assert rollup(queue) == {(THIS_MINUTE, 0): (1, 0, 0)}


# --- Throughput series ----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("window", "length", "step"),
    [
        ("1h", 60, timedelta(minutes=1)),
        ("24h", 144, timedelta(minutes=10)),
        ("7d", 168, timedelta(hours=1)),
    ],
)
def test_every_window_is_a_gapless_series_ending_with_the_bucket_of_now(
    project, window, length, step
):
    series = stats.throughput(project, window=window, now=NOW)

    starts = [b.start for b in series.buckets]
    assert len(starts) == length
    assert all(later - earlier == step for earlier, later in itertools.pairwise(starts))
    assert starts[-1] <= NOW < starts[-1] + step
    assert series.total_succeeded == series.total_failed == series.total_dead == 0


@pytest.mark.django_db
def test_the_series_sums_the_shards_of_a_bucket_and_the_queues_of_the_project(
    project, queue, make_queue
):
    mail = make_queue("mail")
    count_into(queue, THIS_MINUTE, shard=0, succeeded=5, failed=1)
    count_into(queue, THIS_MINUTE, shard=4242, succeeded=2, failed=1, dead=1)
    count_into(mail, THIS_MINUTE - timedelta(minutes=3), shard=0, succeeded=7)

    series = stats.throughput(project, window="1h", now=NOW)
    only_mail = stats.throughput(project, window="1h", queue=mail, now=NOW)

    last, three_ago = series.buckets[-1], series.buckets[-4]
    assert (last.succeeded, last.failed, last.dead) == (7, 2, 1)
    assert three_ago.succeeded == 7
    assert only_mail.total_succeeded == 7 and only_mail.total_failed == 0


@pytest.mark.django_db
def test_an_unknown_window_is_refused(project):
    with pytest.raises(ValidationFailed):
        stats.throughput(project, window="5y")


# --- Folding --------------------------------------------------------------------------------


def fill_a_week_and_more(queue):
    """Rows in every folding state: backends' shards of past minutes and of now, folded
    minutes past the day, and rows older than the longest window."""
    for minutes_ago in [0, 0, 1, 7, 59, 61, 600, 1439, 1441, 1500, 3000, 9000, 10079, 11600, 12000]:
        minute = THIS_MINUTE - timedelta(minutes=minutes_ago)
        for shard in (0, 3141, 2718):
            if (
                not JobThroughput.objects.all_tenants()
                .filter(queue=queue, minute=minute, shard=shard)
                .exists()
            ):
                count_into(
                    queue,
                    minute,
                    shard=shard,
                    succeeded=minutes_ago % 7 + 1,
                    failed=shard % 5,
                    dead=shard % 2,
                )
                break


def other_session():
    """Connection parameters for a second session on the test database."""
    params = connection.get_connection_params()
    keep = {k: v for k, v in params.items() if k in {"user", "password", "host", "port"}}
    return {**keep, "dbname": connection.settings_dict["NAME"]}


def every_series(project):
    return {
        window: [
            (b.start, b.succeeded, b.failed, b.dead)
            for b in stats.throughput(project, window=window, now=NOW).buckets
        ]
        for window in stats.WINDOWS
    }


@pytest.mark.django_db
def test_folding_leaves_every_series_and_the_health_table_as_they_were(project, queue, make_queue):
    fill_a_week_and_more(queue)
    fill_a_week_and_more(make_queue("mail"))
    before = every_series(project)
    health_before = [(h.sparkline, h.failure_rate) for h in stats.queue_health(project, now=NOW)]
    rows_before = JobThroughput.objects.all_tenants().count()

    folded = stats.fold_throughput(now=NOW)

    assert folded > 0
    assert JobThroughput.objects.all_tenants().count() < rows_before
    assert every_series(project) == before
    assert [(h.sparkline, h.failure_rate) for h in stats.queue_health(project, now=NOW)] == (
        health_before
    )


@pytest.mark.django_db
def test_folding_keeps_shards_only_for_the_current_minute_and_hours_past_the_day(project, queue):
    fill_a_week_and_more(queue)

    stats.fold_throughput(now=NOW)

    day_ago = NOW - timedelta(hours=24)
    for row in JobThroughput.objects.all_tenants().filter(queue=queue):
        if row.minute == THIS_MINUTE:
            continue
        if row.minute < day_ago.replace(minute=0, second=0):
            assert row.shard == 1 and row.minute.minute == 0, row
            assert row.minute >= NOW - timedelta(days=8)
        else:
            assert row.shard == 0, row
    # The minute that is not over yet keeps its shards.
    assert {r.shard for r in JobThroughput.objects.all_tenants().filter(minute=THIS_MINUTE)} == {
        0,
        3141,
    }


@pytest.mark.django_db
def test_folding_twice_changes_nothing_more(project, queue):
    fill_a_week_and_more(queue)
    stats.fold_throughput(now=NOW)
    after_first = rollup(queue)

    assert stats.fold_throughput(now=NOW) == 0
    assert rollup(queue) == after_first


@pytest.mark.django_db(transaction=True)
def test_folding_skips_a_row_another_transaction_is_counting_into(project, queue):
    past = THIS_MINUTE - timedelta(minutes=5)
    count_into(queue, past, shard=2000, succeeded=1)
    count_into(queue, past, shard=3000, succeeded=2)
    with psycopg.connect(**other_session()) as holder:
        holder.execute(
            "SELECT 1 FROM jobs_jobthroughput WHERE shard = 2000 FOR UPDATE"
        )  # a completion still in its transaction

        assert stats.fold_throughput(now=NOW) == 1

    assert rollup(queue) == {(past, 0): (2, 0, 0), (past, 2000): (1, 0, 0)}
    assert stats.throughput(project, window="1h", now=NOW).buckets[-6].succeeded == 3


@pytest.mark.django_db(transaction=True)
def test_the_dispatchers_maintenance_folds_the_rollup(project, queue):
    count_into(queue, datetime(2000, 1, 1, tzinfo=UTC), shard=1234, succeeded=1)
    count_into(queue, datetime(2000, 1, 1, 0, 1, tzinfo=UTC), shard=1234, succeeded=1)

    done = Dispatcher(batch_size=100).maintain()

    # Coarsened into one hour row, which is older than 8 days and goes.
    assert any("folded 3 throughput" in action for action in done)
    assert rollup(queue) == {}


@pytest.mark.django_db
def test_fold_runs_in_one_session_at_a_time(project, queue):
    count_into(queue, THIS_MINUTE - timedelta(minutes=2), shard=999, succeeded=1)
    with psycopg.connect(**other_session(), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [stats._FOLD_LOCK])

        assert stats.fold_throughput(now=NOW) == 0

        # Released here rather than by closing: a backend frees its locks when it exits,
        # a moment after its client hung up.
        other.execute("SELECT pg_advisory_unlock(%s)", [stats._FOLD_LOCK])

    assert stats.fold_throughput(now=NOW) == 1


# --- Counts ---------------------------------------------------------------------------------


def test_a_count_is_labelled_by_its_kind():
    assert stats.Count(1234).label == "1,234"
    assert stats.Count(0).label == "0"
    assert stats.Count(10_000, "at_least").label == "10,000+"
    assert stats.Count(1_234_567, "estimate").label == "≈ 1.2M"
    assert stats.Count(45_321, "estimate").label == "≈ 45K"
    assert stats.Count(999_700, "estimate").label == "≈ 1M"
    assert stats.Count(3_400_000_000, "estimate").label == "≈ 3.4B"
    assert stats.Count(950, "estimate").label == "≈ 950"


@pytest.mark.django_db
def test_counts_are_exact_under_the_cap_for_every_state(project, queue, other_queue):
    for state, n in [("succeeded", 3), ("dead", 2), ("processing", 1), ("scheduled", 4)]:
        for _ in range(n):
            make_job(queue, state)
            make_job(other_queue, state)
    for _ in range(5):
        submit(project)

    counts = stats.state_counts(project)

    assert set(counts) == set(JobState.values)
    assert {s: (c.value, c.kind) for s, c in counts.items()} == {
        "pending": (5, "exact"),
        "succeeded": (3, "exact"),
        "dead": (2, "exact"),
        "processing": (1, "exact"),
        "scheduled": (4, "exact"),
        "blocked": (0, "exact"),
        "cancelled": (0, "exact"),
    }


@pytest.mark.django_db
def test_counts_of_one_queue_leave_the_other_queues_out(project, queue, make_queue):
    mail = make_queue("mail")
    make_job(queue, "dead")
    make_job(mail, "dead")
    make_job(mail, "dead")
    submit(project, "mail")

    counts = stats.state_counts(project, queue=mail)

    assert counts["dead"] == stats.Count(2)
    assert counts["pending"] == stats.Count(1)


@pytest.mark.django_db
def test_past_the_cap_a_count_is_the_planners_estimate(project, queue, other_queue, settings):
    settings.TASKFORGE_DASHBOARD_EXACT_COUNT_LIMIT = 5
    Job.objects.bulk_create(
        Job(
            organization_id=queue.organization_id,
            project_id=queue.project_id,
            queue=queue,
            job_type="t",
            state="succeeded",
        )
        for _ in range(300)
    )
    make_job(other_queue, "succeeded")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE jobs_job")

    counts = stats.state_counts(project)

    assert counts["succeeded"].kind == "estimate"
    assert 150 < counts["succeeded"].value < 600
    assert counts["succeeded"].label.startswith("≈ ")


@pytest.mark.django_db
def test_past_the_cap_a_count_is_at_least_the_cap_when_the_planner_guesses_lower(
    project, queue, settings
):
    settings.TASKFORGE_DASHBOARD_EXACT_COUNT_LIMIT = 5
    for _ in range(20):
        make_job(queue, "succeeded")
    # Statistics that know no dead job: the planner's guess for them is a row or so.
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE jobs_job")
    for _ in range(8):
        make_job(queue, "dead")

    counts = stats.state_counts(project)

    assert counts["dead"] == stats.Count(5, "at_least")
    assert counts["dead"].label == "5+"


@pytest.mark.django_db
def test_queue_depths_count_each_queue_by_state(project, queue, make_queue, other_queue):
    mail = make_queue("mail")
    make_job(queue, "dead")
    make_job(mail, "blocked", pending_parents=1)
    make_job(mail, "processing")
    make_job(other_queue, "dead")
    submit(project, "mail")
    submit(project, "mail")

    depths = stats.queue_depths(project)

    assert set(depths) == {queue.pk, mail.pk}
    assert {s: c.value for s, c in depths[queue.pk].items()} == {
        "pending": 0,
        "scheduled": 0,
        "blocked": 0,
        "processing": 0,
        "dead": 1,
    }
    assert {s: c.value for s, c in depths[mail.pk].items()} == {
        "pending": 2,
        "scheduled": 0,
        "blocked": 1,
        "processing": 1,
        "dead": 0,
    }


# --- Queue health ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_oldest_pending_age_is_the_earliest_run_at_over_every_priority(project, queue):
    young = submit(project, priority=9)
    old = submit(project, priority=1)
    older_but_not_pending = make_job(queue, "scheduled")
    Job.objects.all_tenants().filter(pk=young.pk).update(run_at=NOW - timedelta(minutes=10))
    Job.objects.all_tenants().filter(pk=old.pk).update(run_at=NOW - timedelta(minutes=30))
    Job.objects.all_tenants().filter(pk=older_but_not_pending.pk).update(
        run_at=NOW - timedelta(days=1)
    )

    [row] = stats.queue_health(project, now=NOW)

    assert row.oldest_pending_seconds == pytest.approx(1800)
    assert row.pending == stats.Count(2)


@pytest.mark.django_db
def test_the_oldest_pending_age_covers_every_sub_priority_of_a_priority(project, queue):
    ages = {(5, 50): 5, (5, 0): 40, (5, -7): 20, (2, 100): 10, (2, -100): 25}
    for (priority, sub_priority), minutes in ages.items():
        job = submit(project, priority=priority, sub_priority=sub_priority)
        Job.objects.all_tenants().filter(pk=job.pk).update(run_at=NOW - timedelta(minutes=minutes))

    [row] = stats.queue_health(project, now=NOW)

    # The oldest sits behind a younger job of a higher sub_priority in the same priority.
    assert row.oldest_pending_seconds == pytest.approx(40 * 60)


@pytest.mark.django_db
def test_queue_health_reads_rates_and_the_sparkline_from_the_rollup(project, queue, make_queue):
    idle = make_queue("idle", paused=True)
    make_job(queue, "processing")
    for minutes_ago in range(1, 6):  # the five whole minutes before this one
        count_into(
            queue, THIS_MINUTE - timedelta(minutes=minutes_ago), shard=0, succeeded=8, failed=2
        )
    count_into(queue, THIS_MINUTE, shard=77, succeeded=100)  # this minute: not in the rate
    count_into(queue, THIS_MINUTE - timedelta(minutes=59), shard=0, failed=10)
    count_into(queue, THIS_MINUTE - timedelta(minutes=60), shard=0, failed=1000)  # too old

    rows = {row.queue.name: row for row in stats.queue_health(project, now=NOW)}

    busy = rows["default"]
    assert busy.running == 1
    assert busy.throughput_per_minute == 10
    assert busy.failure_rate == pytest.approx(20 / 160)
    assert len(busy.sparkline) == 60
    assert busy.sparkline[-1] == 100 and busy.sparkline[0] == 10 and busy.sparkline[-2] == 10
    assert busy.oldest_pending_seconds is None
    assert rows["idle"].paused is True
    assert rows["idle"].failure_rate is None and rows["idle"].sparkline == (0,) * 60
    assert rows["idle"].queue == idle


# --- Failure groups -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ("Timeout after 30.5s talking to 10.0.0.7", "Timeout after <n>s talking to <n>.<n>"),
        (
            "user 0b8e3a3c-7f7e-4c1e-9d55-1f0f5b7c2a10 not found\nTraceback ...",
            "user <uuid> not found",
        ),
        (
            "object at 0x7f3a9c2b1d90 has sha 3f786850e387550fdab836ed7e6dc881de23001b",
            "object at <hex> has sha <hex>",
        ),
        ("\n\n  KeyError:   'user_id'  \n", "KeyError: 'user_id'"),
        ("upload to s3 bucket v23 failed with 503", "upload to s3 bucket v23 failed with <n>"),
        ("a decade is 3650 days, 87600 h", "a decade is <n> days, <n> h"),
        ("order 123456789 not found (deadbeef)", "order <hex> not found (<hex>)"),
        ("id=42 ABCDEF0123 utf8\r\nnext", "id=<n> <hex> utf8"),
        ("", ""),
        ("x" * 500, "x" * 200),
    ],
)
@pytest.mark.django_db
def test_an_error_is_grouped_by_its_first_line_without_ids_and_numbers(queue, error, message):
    failed_attempt(queue, error)

    [group] = stats.failure_groups(queue.project)

    assert group.message == message


def failed_attempt(queue, error, *, job_type="t", finished_at=None):
    """A failed attempt as fail_jobs.sql leaves it (for what only the grouping reads)."""
    job = make_job(queue, "dead", job_type=job_type)
    return JobExecution.objects.create(
        organization_id=queue.organization_id,
        project_id=queue.project_id,
        job=job,
        attempt=1,
        lease_token=uuid.uuid4(),
        status="failed",
        error=error,
        finished_at=finished_at or db_now(),
    )


def db_now():
    """The database's now(): the test's transaction began then, and so did every statement
    in it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_only_the_newest_thousand_attempts_are_grouped_and_then_none_is_new(queue):
    now = db_now()
    job = make_job(queue, "dead")
    JobExecution.objects.bulk_create(
        JobExecution(
            organization_id=queue.organization_id,
            project_id=queue.project_id,
            job=job,
            attempt=n,
            lease_token=uuid.uuid4(),
            status="timed_out",
            error="flood",
            finished_at=now - timedelta(seconds=n),
        )
        for n in range(stats.FAILURE_SAMPLE)
    )
    failed_attempt(queue, "older", finished_at=now - timedelta(minutes=30))

    groups = stats.failure_groups(queue.project, now=now)

    assert [(g.message, g.count, g.new) for g in groups] == [("flood", 1000, False)]


@pytest.mark.django_db
def test_a_group_first_seen_in_the_last_hour_is_new_when_the_sample_reaches_back(queue):
    now = db_now()
    failed_attempt(queue, "old one", finished_at=now - timedelta(hours=3))
    failed_attempt(queue, "old one", finished_at=now - timedelta(minutes=5))
    failed_attempt(queue, "fresh one", finished_at=now - timedelta(minutes=10))

    groups = {g.message: g for g in stats.failure_groups(queue.project, now=now)}

    assert groups["old one"].new is False and groups["old one"].count == 2
    assert groups["fresh one"].new is True


@pytest.mark.django_db(transaction=True)  # each failure its own transaction, its own now()
def test_failures_are_grouped_by_job_type_and_normalised_message(project, queue):
    jobs = [submit(project, job_type="email") for _ in range(3)]
    other = submit(project, job_type="resize")
    taken = take(project)
    for n, job in enumerate(jobs):
        fail(project, taken, job, f"SMTP error {500 + n} for user {uuid.uuid4()}\n  at line 7")
    fail(project, taken, other, "SMTP error 501 for user 42")

    groups = stats.failure_groups(project)

    assert all(type(g.count) is int for g in groups)
    assert [(g.job_type, g.message, g.count) for g in groups] == [
        ("email", "SMTP error <n> for user <uuid>", 3),
        ("resize", "SMTP error <n> for user <n>", 1),
    ]
    email = groups[0]
    assert email.latest_job_id == jobs[-1].pk
    assert email.first_seen < email.last_seen
    assert email.new is True


@pytest.mark.django_db
def test_a_failure_first_seen_over_an_hour_ago_is_not_new_and_past_the_window_is_gone(
    project, queue
):
    job = submit(project)
    fail(project, take(project), job, "boom")
    seen = JobExecution.objects.all_tenants().get(status="failed").finished_at

    [group] = stats.failure_groups(project, now=seen + timedelta(hours=2))

    assert group.new is False
    assert stats.failure_groups(project, now=seen + timedelta(hours=25)) == []
    assert stats.failure_groups(project, hours=1, now=seen + timedelta(hours=2)) == []


@pytest.mark.django_db
def test_limit_keeps_the_largest_groups(project, queue):
    jobs = [submit(project, job_type=t) for t in ("type0", "type1", "type2", "type1")]
    taken = take(project)
    for job in jobs:
        fail(project, taken, job, "boom")

    groups = stats.failure_groups(project, limit=1)

    assert [(g.job_type, g.count) for g in groups] == [("type1", 2)]


# --- Tenancy --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_another_projects_jobs_and_rollup_are_never_counted(
    project, queue, other_project, other_queue
):
    make_job(other_queue, "dead")
    make_job(other_queue, "processing")
    theirs = submit(other_project)
    count_into(other_queue, THIS_MINUTE, shard=0, succeeded=9, failed=9)
    fail(other_project, take(other_project), theirs, "theirs")

    assert all(c == stats.Count(0) for c in stats.state_counts(project).values())
    assert all(c == stats.Count(0) for c in stats.state_counts(project, queue=other_queue).values())
    assert set(stats.queue_depths(project)) == {queue.pk}
    assert stats.throughput(project, window="1h", now=NOW).total_succeeded == 0
    assert stats.throughput(project, window="1h", queue=other_queue, now=NOW).total_failed == 0
    [row] = stats.queue_health(project, now=NOW)
    assert row.queue == queue and row.sparkline == (0,) * 60 and row.running == 0
    assert stats.failure_groups(project) == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_sessions_count_into_rows_of_their_own_that_add_up(project, queue):
    worker = register(project)
    jobs = [submit(project) for _ in range(4)]
    assigned = claim(project, worker)
    halves = [jobs[:2], jobs[2:]]

    def complete(half):
        try:
            services.report_results(
                project,
                [services.ResultItem(j.pk, assigned[j.pk].lease_token, True) for j in half],
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=complete, args=(half,)) for half in halves]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    rows = JobThroughput.objects.all_tenants().filter(queue=queue)
    assert sorted(row.succeeded for row in rows) == [2, 2]
    assert len({row.shard for row in rows}) == 2
    assert stats.throughput(project, window="1h").total_succeeded == 4
