"""Job graphs: children wait for their parents, failures cascade, cycles are refused."""

import itertools
import threading

import pytest
from django.db import connections

from jobs import services
from jobs.exceptions import DependencyCycle
from jobs.models import Batch, Job, JobDependency, JobState
from jobs.specs import JobSpec
from workers import claiming
from workers import services as worker_services


def register(project, capacity=10):
    worker, _ = worker_services.register_worker(
        project, name="w1", queues=[worker_services.QueueWeight("default")], capacity=capacity
    )
    return worker


def node(ref, *parents):
    return JobSpec(queue="default", job_type="t", ref=ref, depends_on_refs=parents)


def submit_graph(project, *specs):
    """Submit a batch; return {ref: job}."""
    submitted = services.submit_jobs(project, specs)
    return {spec.ref: job for spec, job in zip(specs, submitted.jobs, strict=True)}


def claim(project, worker):
    """The worker fetches (and so claims) what is pending: {job id: lease token}."""
    return {a.id: a.lease_token for a in claiming.claim(project, worker.pk, limit=100).jobs}


def complete(project, tokens, job):
    services.complete_job(project, job.pk, lease_token=tokens[job.pk])


def state(job):
    job.refresh_from_db()
    return job.state


@pytest.mark.django_db(transaction=True)
def test_it_blocks_a_child_until_its_parent_succeeds(project, queue):
    worker = register(project)
    graph = submit_graph(project, node("a"), node("b", "a"))
    assert (graph["a"].state, graph["b"].state) == (JobState.PENDING, JobState.BLOCKED)
    assert set(claim(project, worker)) == {graph["a"].pk}


@pytest.mark.django_db(transaction=True)
def test_it_releases_the_diamonds_last_job_only_after_both_middle_jobs_succeed(project, queue):
    worker = register(project)
    graph = submit_graph(project, node("a"), node("b", "a"), node("c", "a"), node("d", "b", "c"))
    complete(project, claim(project, worker), graph["a"])
    assert (state(graph["b"]), state(graph["c"]), state(graph["d"])) == (
        JobState.PENDING,
        JobState.PENDING,
        JobState.BLOCKED,
    )

    tokens = claim(project, worker)
    assert set(tokens) == {graph["b"].pk, graph["c"].pk}
    complete(project, tokens, graph["b"])
    assert state(graph["d"]) == JobState.BLOCKED
    assert graph["d"].pending_parents == 1

    complete(project, tokens, graph["c"])
    assert state(graph["d"]) == JobState.PENDING
    assert graph["d"].pending_parents == 0


@pytest.mark.django_db(transaction=True)
def test_it_releases_a_child_whose_run_at_is_still_ahead_as_scheduled(project, queue):
    worker = register(project)
    parent, _ = services.submit_job(project, JobSpec(queue="default", job_type="t"))
    child, _ = services.submit_job(
        project,
        JobSpec(queue="default", job_type="t", depends_on=[parent.pk], delay_seconds=3600),
    )
    assert child.state == JobState.BLOCKED
    complete(project, claim(project, worker), parent)
    assert state(child) == JobState.SCHEDULED


@pytest.mark.django_db(transaction=True)
def test_it_creates_a_child_of_an_already_succeeded_parent_pending(project, queue):
    worker = register(project)
    parent, _ = services.submit_job(project, JobSpec(queue="default", job_type="t"))
    complete(project, claim(project, worker), parent)
    child, _ = services.submit_job(
        project, JobSpec(queue="default", job_type="t", depends_on=[parent.pk])
    )
    assert child.state == JobState.PENDING


@pytest.mark.django_db(transaction=True)
def test_it_cancels_every_blocked_descendant_of_a_dead_job_naming_the_ancestor(project, queue):
    worker = register(project)
    graph = submit_graph(
        project, node("a"), node("b", "a"), node("c", "b"), node("d", "c"), node("e", "b")
    )
    root = graph["a"]
    services.fail_job(
        project, root.pk, lease_token=claim(project, worker)[root.pk], error="x", retryable=False
    )

    descendants = Job.objects.all_tenants().filter(pk__in=[graph[r].pk for r in "bcde"])
    assert {job.state for job in descendants} == {JobState.CANCELLED}
    assert {job.last_error for job in descendants} == {
        f"cancelled: ancestor job {root.pk} ended dead"
    }
    assert all(job.finished_at is not None for job in descendants)


@pytest.mark.django_db(transaction=True)
def test_it_leaves_jobs_outside_the_dead_jobs_subgraph_alone(project, queue):
    worker = register(project)
    graph = submit_graph(project, node("a"), node("b", "a"), node("x"), node("y", "x"))
    root = graph["a"]
    services.fail_job(
        project, root.pk, lease_token=claim(project, worker)[root.pk], error="x", retryable=False
    )
    assert state(graph["b"]) == JobState.CANCELLED
    assert state(graph["y"]) == JobState.BLOCKED


@pytest.mark.django_db(transaction=True)
def test_it_creates_a_child_of_a_dead_parent_cancelled(project, queue):
    worker = register(project)
    parent, _ = services.submit_job(project, JobSpec(queue="default", job_type="t"))
    services.fail_job(
        project,
        parent.pk,
        lease_token=claim(project, worker)[parent.pk],
        error="x",
        retryable=False,
    )
    child, _ = services.submit_job(
        project, JobSpec(queue="default", job_type="t", depends_on=[parent.pk])
    )
    assert child.state == JobState.CANCELLED
    assert child.last_error == "cancelled: a parent job ended dead"


@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_three_job_cycle_and_writes_nothing(project, queue):
    with pytest.raises(DependencyCycle) as caught:
        services.submit_jobs(project, [node("a", "c"), node("b", "a"), node("c", "b")])
    cycle = caught.value.details["cycle"]
    # A closed path through all three jobs, each step going from a job to the one it waits for.
    assert cycle[0] == cycle[-1]
    assert sorted(cycle[:-1]) == ["a", "b", "c"]
    waits_for = {"a": "c", "b": "a", "c": "b"}
    assert all(waits_for[child] == parent for child, parent in itertools.pairwise(cycle))
    assert " -> ".join(cycle) in caught.value.message
    assert Job.objects.all_tenants().count() == 0
    assert JobDependency.objects.all_tenants().count() == 0
    assert Batch.objects.all_tenants().count() == 0


@pytest.mark.django_db(transaction=True)
def test_it_accepts_a_full_batch_that_is_one_long_chain(project, queue):
    size = 1000
    chain = [node(f"j{i}", *([f"j{i - 1}"] if i else [])) for i in range(size)]
    submitted = services.submit_jobs(project, chain[::-1])
    assert Job.objects.all_tenants().filter(state=JobState.BLOCKED).count() == size - 1
    assert len(submitted.jobs) == size


@pytest.mark.django_db(transaction=True)
def test_it_releases_a_child_once_when_both_parents_complete_at_the_same_time(project, queue):
    worker = register(project)
    graph = submit_graph(project, node("p1"), node("p2"), node("child", "p1", "p2"))
    tokens = claim(project, worker)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def finish(parent) -> None:
        try:
            barrier.wait(timeout=10)
            services.complete_job(project, parent.pk, lease_token=tokens[parent.pk])
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=finish, args=(graph[ref],)) for ref in ("p1", "p2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    child = graph["child"]
    assert state(child) == JobState.PENDING
    assert child.pending_parents == 0
    assert set(claim(project, worker)) == {child.pk}
