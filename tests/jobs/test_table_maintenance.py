"""The dispatcher's table maintenance (jobs/queries.py maintain_tables), on a real server.

autovacuum may be off (it is on this project's test machine): the maintenance step is then
what refreshes statistics and the visibility map. A table that only grew (a bulk load, a
day of submissions) has no dead rows, but until a VACUUM marks its pages all-visible every
index-only scan reads the table as well, which the dashboard's capped counts pay for.
"""

from __future__ import annotations

import time

import pytest
from django.db import connection

from jobs import queries
from jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


def flush_statistics() -> None:
    with connection.cursor() as cursor:
        # Table statistics reach pg_stat_user_tables when a backend flushes them; force it.
        cursor.execute("SELECT pg_stat_force_next_flush()")


def all_visible_pages(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT relallvisible FROM pg_class WHERE relname = %s", [table])
        return int(cursor.fetchone()[0])


def wait_for_no_older_snapshot(timeout: float = 30.0) -> None:
    """Wait until no other session of this database holds a snapshot (an earlier test's
    lingering thread or process, mid-transaction): VACUUM marks a page all-visible only when
    every transaction could see all its rows, so such a session would make the visibility
    assertion below fail for reasons that are not the maintenance step's."""
    deadline = time.monotonic() + timeout
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid, state, left(query, 120) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_xmin IS NOT NULL"
            )
            holders = cursor.fetchall()
        if not holders:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"sessions holding snapshots in this database: {holders}")
        time.sleep(0.1)


def test_a_table_that_only_grew_is_vacuumed_for_index_only_scans(project, queue):
    table = Job._meta.db_table
    queries.maintain_tables([table])  # whatever an earlier test left
    Job.objects.bulk_create(
        Job(organization=project.organization, project=project, queue=queue, job_type="t")
        for _ in range(3000)
    )
    flush_statistics()
    wait_for_no_older_snapshot()

    done = queries.maintain_tables([table])

    assert done == [f"VACUUM (ANALYZE) {table}"]
    assert all_visible_pages(table) > 0
    flush_statistics()
    assert queries.maintain_tables([table]) == []  # nothing new since
