"""Finding one of a project's jobs: a missing and a foreign job look the same (404)."""

from __future__ import annotations

from uuid import UUID

from django.core.exceptions import ValidationError

from accounts.models import Project
from jobs.exceptions import JobNotFound
from jobs.models import Job


def get_job(project: Project, job_id: UUID | str, *, with_queue: bool = False) -> Job:
    """The project's job with this id (``with_queue``: its queue read in the same query); a
    missing and a foreign job both raise JobNotFound."""
    jobs = Job.objects.for_project(project)
    if with_queue:
        jobs = jobs.select_related("queue")
    try:
        return jobs.get(pk=job_id)
    except (Job.DoesNotExist, ValueError, ValidationError):
        raise JobNotFound(f"job {job_id} not found") from None


def locked_job(project: Project, job_id: UUID) -> Job:
    """get_job, with the row locked FOR UPDATE until the caller's transaction ends."""
    try:
        return Job.objects.for_project(project).select_for_update().get(pk=job_id)
    except (Job.DoesNotExist, ValueError, ValidationError):
        raise JobNotFound(f"job {job_id} not found") from None
