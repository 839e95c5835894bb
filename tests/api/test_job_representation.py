"""job_data() is the fast path for job lists; it must stay identical to JobSerializer."""

import json

import pytest
from django.db.models import prefetch_related_objects
from rest_framework.renderers import JSONRenderer

from jobs import services
from jobs.serializers import JobDetailSerializer, JobSerializer, job_data, job_detail_data
from jobs.specs import JobSpec


@pytest.mark.django_db(transaction=True)
def test_job_data_matches_the_serializer_for_new_and_finished_jobs(project, queue):
    submitted = services.submit_jobs(
        project,
        [
            JobSpec(queue="default", job_type="a", payload={"x": [1, "é"]}, tags=["t"]),
            JobSpec(queue="default", job_type="b", idempotency_key="k", delay_seconds=60),
        ],
    )
    job = submitted.jobs[0]
    services.cancel_job(project, job.pk)
    for fresh in [*submitted.jobs, services.get_job(project, job.pk)]:
        expected = JobSerializer(fresh, context={"queue_names": {queue.pk: "default"}}).data
        assert rendered(job_data(fresh, "default")) == rendered(expected)


@pytest.mark.django_db(transaction=True)
def test_job_detail_data_matches_the_detail_serializer_with_and_without_edges(project, queue):
    parent = services.submit_jobs(project, [JobSpec(queue="default", job_type="p")]).jobs[0]
    child = services.submit_jobs(
        project,
        [JobSpec(queue="default", job_type="c", depends_on=[parent.pk], on_parent_failure="run")],
    ).jobs[0]
    lone = services.submit_jobs(project, [JobSpec(queue="default", job_type="l")]).jobs[0]
    for job in (parent, child, lone):
        fresh = services.get_job(project, job.pk, with_queue=True)
        prefetch_related_objects([fresh], "parent_edges", "child_edges")
        assert rendered(job_detail_data(fresh)) == rendered(JobDetailSerializer(fresh).data)
    assert rendered(job_detail_data(fresh))["parents"] == []


def rendered(data):
    return json.loads(JSONRenderer().render(data))
