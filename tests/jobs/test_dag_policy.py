"""on_parent_failure per job (cancel | run), the failure walk over mixed graphs, retry undo,
and the graph limits."""

import pytest

from jobs import services
from jobs.limits import MAX_EDGES_PER_BATCH, MAX_PARENTS_PER_JOB
from jobs.models import Job, JobDependency, JobState, ParentFailure
from jobs.specs import JobSpec
from taskforge import queue_ops
from taskforge.lib.errors import ValidationFailed
from tests.jobs.test_dag import claim, complete, register, state

pytestmark = pytest.mark.django_db(transaction=True)

RUN, CANCEL = ParentFailure.RUN, ParentFailure.CANCEL


def node(ref, *parents, policy=CANCEL, **fields):
    return JobSpec(
        queue="default",
        job_type="t",
        ref=ref,
        depends_on_refs=parents,
        on_parent_failure=policy,
        **fields,
    )


def graph(project, *specs):
    submitted = services.submit_jobs(project, specs)
    return {spec.ref: job for spec, job in zip(specs, submitted.jobs, strict=True)}


def kill(project, worker, job):
    """Run ``job`` to dead (a permanent failure)."""
    tokens = claim(project, worker)
    services.fail_job(project, job.pk, lease_token=tokens[job.pk], error="x", retryable=False)


def fresh(job):
    job.refresh_from_db()
    return job


@pytest.fixture
def worker(project, queue):
    return register(project, capacity=100)


# --- run ---------------------------------------------------------------------------------------


def test_a_run_child_of_a_dead_parent_runs_after_its_other_parent_succeeds(project, worker):
    g = graph(project, node("b"), node("c"), node("d", "b", "c", policy=RUN))
    tokens = claim(project, worker)
    services.fail_job(project, g["b"].pk, lease_token=tokens[g["b"].pk], error="x", retryable=False)

    d = fresh(g["d"])
    assert (d.state, d.pending_parents, d.last_error) == (JobState.BLOCKED, 1, "")
    complete(project, tokens, g["c"])
    d = fresh(g["d"])
    assert (d.state, d.pending_parents) == (JobState.PENDING, 0)
    assert set(claim(project, worker)) == {d.pk}


def test_a_run_child_whose_only_parent_is_cancelled_is_released(project, worker):
    g = graph(project, node("a"), node("b", "a", policy=RUN))
    services.cancel_job(project, g["a"].pk)
    assert (state(g["b"]), g["b"].pending_parents) == (JobState.PENDING, 0)


def test_a_released_run_child_whose_run_at_is_ahead_is_scheduled(project, worker):
    g = graph(project, node("a"), node("b", "a", policy=RUN, delay_seconds=3600))
    kill(project, worker, g["a"])
    assert state(g["b"]) == JobState.SCHEDULED


def test_the_default_policy_still_cancels_naming_the_dead_parent(project, worker):
    g = graph(project, node("b"), node("c"), node("d", "b", "c"))
    kill(project, worker, g["b"])
    d = fresh(g["d"])
    assert d.state == JobState.CANCELLED
    assert d.last_error == f"cancelled: ancestor job {g['b'].pk} ended dead"
    edge = JobDependency.objects.for_org(project.organization).get(child=d, parent=g["b"])
    assert edge.on_parent_failure == CANCEL


def test_the_policy_is_stored_on_every_incoming_edge(project, worker):
    g = graph(project, node("a"), node("b"), node("c", "a", "b", policy=RUN))
    edges = JobDependency.objects.for_org(project.organization).filter(child=g["c"])
    assert sorted(edges.values_list("on_parent_failure", flat=True)) == [RUN, RUN]


# --- mixed graphs ------------------------------------------------------------------------------


def test_the_walk_cancels_through_cancel_edges_and_releases_a_run_grandchild(project, worker):
    # a -> b (cancel) -> c (run): b is cancelled, c counts b as finished and is released.
    g = graph(project, node("a"), node("b", "a"), node("c", "b", policy=RUN))
    kill(project, worker, g["a"])
    assert state(g["b"]) == JobState.CANCELLED
    assert (state(g["c"]), g["c"].pending_parents) == (JobState.PENDING, 0)


def test_the_walk_does_not_go_through_a_run_child(project, worker):
    # a -> b (run) -> c (cancel): b did not fail, so c keeps waiting for it.
    g = graph(project, node("a"), node("b", "a", policy=RUN), node("c", "b"))
    kill(project, worker, g["a"])
    assert state(g["b"]) == JobState.PENDING
    assert (state(g["c"]), g["c"].pending_parents) == (JobState.BLOCKED, 1)

    tokens = claim(project, worker)
    complete(project, tokens, g["b"])
    assert state(g["c"]) == JobState.PENDING


def test_a_run_grandchild_of_a_cancelled_job_waits_for_its_other_parents(project, worker):
    g = graph(project, node("a"), node("x", "a"), node("y"), node("g", "x", "y", policy=RUN))
    tokens = claim(project, worker)
    services.fail_job(project, g["a"].pk, lease_token=tokens[g["a"].pk], error="x", retryable=False)
    assert state(g["x"]) == JobState.CANCELLED
    assert (state(g["g"]), g["g"].pending_parents) == (JobState.BLOCKED, 1)

    complete(project, tokens, g["y"])
    assert (state(g["g"]), g["g"].pending_parents) == (JobState.PENDING, 0)


def test_a_job_with_a_cancel_edge_from_a_cancelled_parent_is_cancelled_not_released(
    project, worker
):
    # d waits for b (cancel) and c (run); a's death cancels b and c, so d is cancelled once.
    g = graph(
        project,
        node("a"),
        node("b", "a"),
        node("c", "a"),
        JobSpec(queue="default", job_type="t", ref="d", depends_on_refs=["b"]),
    )
    run_child, _ = services.submit_job(
        project,
        JobSpec(
            queue="default", job_type="t", depends_on=[g["b"].pk, g["c"].pk],
            on_parent_failure=RUN,
        ),
    )  # fmt: skip
    kill(project, worker, g["a"])
    assert {state(g[r]) for r in "bcd"} == {JobState.CANCELLED}
    # Both of run_child's parents were cancelled by the walk: it counts both as finished.
    assert (state(run_child), run_child.pending_parents) == (JobState.PENDING, 0)


# --- at submit ---------------------------------------------------------------------------------


def test_at_submit_a_dead_parent_cancels_a_cancel_child_and_releases_a_run_child(project, worker):
    parent, _ = services.submit_job(project, JobSpec(queue="default", job_type="t"))
    other, _ = services.submit_job(project, JobSpec(queue="default", job_type="t"))
    kill(project, worker, parent)
    cancel_child, _ = services.submit_job(
        project, JobSpec(queue="default", job_type="t", depends_on=[parent.pk])
    )
    run_child, _ = services.submit_job(
        project,
        JobSpec(queue="default", job_type="t", depends_on=[parent.pk], on_parent_failure=RUN),
    )
    waiting_run_child, _ = services.submit_job(
        project,
        JobSpec(
            queue="default", job_type="t", depends_on=[parent.pk, other.pk],
            on_parent_failure=RUN,
        ),
    )  # fmt: skip
    assert cancel_child.state == JobState.CANCELLED
    assert (run_child.state, run_child.pending_parents) == (JobState.PENDING, 0)
    assert (waiting_run_child.state, waiting_run_child.pending_parents) == (JobState.BLOCKED, 1)


def test_in_a_batch_a_run_child_of_a_job_created_cancelled_is_not_waiting(project, worker):
    dead, _ = services.submit_job(project, JobSpec(queue="default", job_type="t"))
    kill(project, worker, dead)
    submitted = services.submit_jobs(
        project,
        [
            JobSpec(queue="default", job_type="t", ref="x", depends_on=[dead.pk]),
            node("y", "x", policy=RUN),
            node("z", "x"),
        ],
    )
    assert [job.state for job in submitted.jobs] == [
        JobState.CANCELLED,
        JobState.PENDING,
        JobState.CANCELLED,
    ]


# --- retry -------------------------------------------------------------------------------------


def test_retrying_a_dead_parent_makes_its_blocked_run_child_wait_for_it_again(project, worker):
    g = graph(project, node("b"), node("c"), node("d", "b", "c", policy=RUN))
    tokens = claim(project, worker)
    services.fail_job(project, g["b"].pk, lease_token=tokens[g["b"].pk], error="x", retryable=False)
    assert fresh(g["d"]).pending_parents == 1

    services.retry_job(project, g["b"].pk)
    assert (state(g["d"]), g["d"].pending_parents) == (JobState.BLOCKED, 2)

    complete(project, tokens, g["c"])
    assert (state(g["d"]), g["d"].pending_parents) == (JobState.BLOCKED, 1)
    complete(project, claim(project, worker), g["b"])
    assert (state(g["d"]), g["d"].pending_parents) == (JobState.PENDING, 0)


def test_retrying_a_parent_leaves_a_run_child_that_already_left_blocked_alone(project, worker):
    g = graph(project, node("b"), node("d", "b", policy=RUN))
    kill(project, worker, g["b"])
    assert state(g["d"]) == JobState.PENDING

    services.retry_job(project, g["b"].pk)
    assert (state(g["d"]), g["d"].pending_parents) == (JobState.PENDING, 0)


def test_bulk_retry_makes_run_children_wait_again(project, worker):
    g = graph(project, node("b"), node("c"), node("d", "b", "c", policy=RUN))
    tokens = claim(project, worker)
    services.fail_job(project, g["b"].pk, lease_token=tokens[g["b"].pk], error="x", retryable=False)

    assert services.bulk_action(project, "retry", ids=[g["b"].pk]) == 1
    assert (state(g["b"]), state(g["d"]), g["d"].pending_parents) == (
        JobState.PENDING,
        JobState.BLOCKED,
        2,
    )


def test_bulk_retry_of_a_parent_and_its_run_child_makes_the_child_wait_for_the_parent(
    project, worker
):
    g = graph(project, node("b"), node("d", "b", policy=RUN))
    kill(project, worker, g["b"])
    services.cancel_job(project, g["d"].pk)

    assert services.bulk_action(project, "retry", ids=[g["b"].pk, g["d"].pk]) == 2
    assert state(g["b"]) == JobState.PENDING
    assert (state(g["d"]), g["d"].pending_parents) == (JobState.BLOCKED, 1)
    complete(project, claim(project, worker), g["b"])
    assert state(g["d"]) == JobState.PENDING


def test_retrying_a_run_child_does_not_wait_for_its_dead_parent(project, worker):
    g = graph(project, node("b"), node("d", "b", policy=RUN))
    kill(project, worker, g["b"])
    services.cancel_job(project, g["d"].pk)
    services.retry_job(project, g["d"].pk)
    assert (state(g["d"]), g["d"].pending_parents) == (JobState.PENDING, 0)


# --- other callers of the walk ----------------------------------------------------------------


def test_purging_a_parent_releases_its_run_child_and_cancels_its_cancel_child(
    project, worker, queue
):
    g = graph(project, node("a"), node("run", "a", policy=RUN), node("cancel", "a"))
    assert queue_ops.purge_queue(queue) == 1
    assert state(g["run"]) == JobState.PENDING
    assert fresh(g["cancel"]).last_error == f"cancelled: parent job {g['a'].pk} was purged"


def test_bulk_cancel_releases_run_children(project, worker):
    g = graph(project, node("a"), node("b"), node("c", "a", "b", policy=RUN))
    assert services.bulk_action(project, "cancel", ids=[g["a"].pk, g["b"].pk]) == 2
    assert (state(g["c"]), g["c"].pending_parents) == (JobState.PENDING, 0)


def test_deleting_a_succeeded_parent_does_not_touch_its_waiting_child(project, worker):
    g = graph(project, node("a"), node("b"), node("c", "a", "b"))
    tokens = claim(project, worker)
    complete(project, tokens, g["a"])
    assert services.bulk_action(project, "delete", ids=[g["a"].pk]) == 1
    assert (state(g["c"]), g["c"].pending_parents) == (JobState.BLOCKED, 1)
    complete(project, tokens, g["b"])
    assert state(g["c"]) == JobState.PENDING


def test_deleting_an_unfinished_parent_releases_its_run_child(project, worker):
    g = graph(project, node("a"), node("b", "a", policy=RUN))
    assert services.bulk_action(project, "delete", ids=[g["a"].pk]) == 1
    assert state(g["b"]) == JobState.PENDING


def test_a_lease_expiring_into_dead_releases_a_run_child(project, worker):
    g = graph(project, node("a", max_attempts=1), node("b", "a", policy=RUN))
    claim(project, worker)
    Job.objects.for_project(project).filter(pk=g["a"].pk).update(
        lease_expires_at="2000-01-01T00:00:00Z"
    )
    assert services.expire_leases(limit=10) == 1
    assert state(g["a"]) == JobState.DEAD
    assert state(g["b"]) == JobState.PENDING


# --- limits ------------------------------------------------------------------------------------


def test_a_job_with_too_many_parents_is_refused_naming_the_field(project, worker):
    parents = [node(f"p{i}") for i in range(MAX_PARENTS_PER_JOB + 1)]
    child = node("child", *(p.ref for p in parents))
    with pytest.raises(ValidationFailed) as caught:
        services.submit_jobs(project, [*parents, child])
    assert caught.value.details == {"field": "depends_on_refs", "index": len(parents)}
    assert Job.objects.for_project(project).count() == 0


def test_parents_by_id_and_by_ref_count_together(project, worker):
    specs = [JobSpec(queue="default", job_type="t") for _ in range(MAX_PARENTS_PER_JOB + 1)]
    ids = [job.pk for job in services.submit_jobs(project, specs).jobs]
    refs = [node(f"p{i}") for i in range(41)]
    child = JobSpec(
        queue="default", job_type="t", depends_on=ids[:60], depends_on_refs=[p.ref for p in refs]
    )
    with pytest.raises(ValidationFailed) as caught:
        services.submit_jobs(project, [*refs, child])
    assert caught.value.details == {"field": "depends_on_refs", "index": 41}

    with pytest.raises(ValidationFailed) as single:
        services.submit_job(project, JobSpec(queue="default", job_type="t", depends_on=ids))
    assert single.value.details == {"field": "depends_on"}
    assert Job.objects.for_project(project).count() == len(ids)


def test_exactly_the_parent_limit_is_accepted(project, worker):
    parents = [node(f"p{i}") for i in range(MAX_PARENTS_PER_JOB)]
    child = node("child", *(p.ref for p in parents))
    submitted = services.submit_jobs(project, [*parents, child])
    assert submitted.jobs[-1].pending_parents == MAX_PARENTS_PER_JOB


def test_a_batch_with_too_many_edges_is_refused(project, worker, settings):
    settings.TASKFORGE_MAX_BATCH_JOBS = 1000
    # 200 roots, then 101 children with 100 parents each: 10,100 edges.
    roots = [node(f"r{i}") for i in range(200)]
    children = [
        node(f"c{i}", *(f"r{(i + k) % 200}" for k in range(MAX_PARENTS_PER_JOB)))
        for i in range(MAX_EDGES_PER_BATCH // MAX_PARENTS_PER_JOB + 1)
    ]
    with pytest.raises(ValidationFailed) as caught:
        services.submit_jobs(project, [*roots, *children])
    assert caught.value.details == {"field": "jobs", "limit": MAX_EDGES_PER_BATCH}
    assert Job.objects.for_project(project).count() == 0


def test_an_unknown_policy_is_refused_naming_the_field(project, worker):
    with pytest.raises(ValidationFailed) as caught:
        services.submit_job(
            project, JobSpec(queue="default", job_type="t", on_parent_failure="ignore")
        )
    assert caught.value.details == {"field": "on_parent_failure"}
