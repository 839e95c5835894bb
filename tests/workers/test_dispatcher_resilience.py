"""The dispatcher outlives its database connections (a PostgreSQL restart, a failover)."""

import pytest
from django.db import connection

from jobs import services
from jobs.models import Job, JobState
from jobs.specs import JobSpec
from tests.processes import running, wait_until
from workers import services as worker_services

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def processing() -> int:
    return Job.objects.all_tenants().filter(state=JobState.PROCESSING).count()


def kill_other_backends() -> int:
    """Terminate every other session on the test database: the dispatcher's two connections."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


def test_the_dispatcher_reconnects_after_its_connections_are_killed(project, queue, tmp_path):
    worker_services.register_worker(
        project, name="w", queues=[worker_services.QueueWeight("default")], capacity=10
    )
    spec = JobSpec(queue="default", job_type="t")
    with running(("rundispatcher", "--poll-interval", "0.2"), log_dir=tmp_path) as children:
        services.submit_job(project, spec)
        wait_until(lambda: processing() == 1, message="the first job assigned", children=children)
        assert kill_other_backends() >= 1
        services.submit_job(project, spec)
        wait_until(
            lambda: processing() == 2,
            timeout=60,
            message="a job assigned after the connections were killed",
            children=children,
        )
        assert children[0].process.poll() is None  # still running
    assert "database error" in children[0].log() or "LISTEN connection lost" in children[0].log()
