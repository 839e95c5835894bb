"""The dispatcher outlives its database connections (a PostgreSQL restart, a failover)."""

import pytest
from django.db import connection

from jobs import services
from jobs.models import Job, JobState
from jobs.specs import JobSpec
from tests.processes import running, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def promoted() -> int:
    return Job.objects.all_tenants().filter(state=JobState.PENDING).count()


def kill_other_backends() -> int:
    """Terminate every other session on the test database: the dispatcher's connection."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


def test_the_dispatcher_reconnects_after_its_connections_are_killed(project, queue, tmp_path):
    # Delayed jobs: promoting them when they are due is the dispatcher's work.
    spec = JobSpec(queue="default", job_type="t", delay_seconds=1)
    with running(("rundispatcher", "--poll-interval", "0.2"), log_dir=tmp_path) as children:
        services.submit_job(project, spec)
        wait_until(lambda: promoted() == 1, message="the first job promoted", children=children)
        assert kill_other_backends() >= 1
        services.submit_job(project, spec)
        wait_until(
            lambda: promoted() == 2,
            timeout=60,
            message="a job promoted after the connections were killed",
            children=children,
        )
        assert children[0].process.poll() is None  # still running
    assert "database error" in children[0].log()
