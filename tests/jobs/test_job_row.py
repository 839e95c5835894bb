"""The model, JobRow and the two insert statements name the same columns in the same order.

Submission writes rows positionally (COPY) and builds Job instances from them without a read
back (Job.from_db), so a field added to the model but not to JobRow, or a column moved in one
statement only, would store values in the wrong columns. These tests fail first.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jobs.models import Job
from jobs.queries import JOB_COLUMNS, JobRow

SQL = Path(__file__).resolve().parents[2] / "jobs" / "sql"


def _columns(text: str) -> tuple[str, ...]:
    """The names inside the first parenthesised column list after the table name."""
    body = re.sub(r"--[^\n]*", "", text)  # comments mention column names too
    match = re.search(r"jobs_job\s*\(([^)]*)\)", body)
    assert match, "no column list after jobs_job"
    return tuple(name.strip() for name in match.group(1).split(","))


def test_job_row_has_every_concrete_field_of_the_model_in_model_order():
    assert JobRow._fields == tuple(field.attname for field in Job._meta.concrete_fields)


def test_the_copy_statement_names_the_job_row_columns_in_order():
    assert _columns((SQL / "insert_jobs.sql").read_text()) == JOB_COLUMNS


def test_the_single_insert_names_the_job_row_columns_and_a_placeholder_for_each():
    text = (SQL / "insert_job.sql").read_text()
    assert _columns(text) == JOB_COLUMNS
    values = re.search(r"VALUES\s*\((.*?)\)\s*RETURNING", text, re.S)
    assert values
    assert tuple(re.findall(r"%\((\w+)\)s", values.group(1))) == JOB_COLUMNS


def test_the_checks_catch_a_column_out_of_order():
    text = (SQL / "insert_jobs.sql").read_text().replace("job_type, payload", "payload, job_type")
    assert _columns(text) != JOB_COLUMNS


@pytest.mark.django_db
def test_a_submitted_job_built_from_its_row_equals_the_job_read_back(project, queue):
    from jobs import services
    from jobs.specs import JobSpec

    submitted = services.submit_jobs(
        project,
        [
            JobSpec(queue=queue.name, job_type="a", payload={"n": 1}, tags=["x"], priority=7),
            JobSpec(queue=queue.name, job_type="b", idempotency_key="k", delay_seconds=60),
        ],
    )
    built = submitted.jobs
    stored = Job.objects.for_project(project).in_bulk([job.pk for job in built])
    for job in built:
        for name in JOB_COLUMNS:
            assert getattr(job, name) == getattr(stored[job.pk], name), name
