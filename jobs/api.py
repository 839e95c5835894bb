"""Jobs endpoints (docs/api.md): submit, batch, list, detail, executions, logs, actions."""

from __future__ import annotations

from typing import Any

from django.db.models import prefetch_related_objects
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api_base import (
    TenantAPIView,
    actor_of,
    note_cross_tenant_attempt,
    organization_of,
    project_of,
)
from accounts.models import Project
from jobs import services
from jobs.limits import MAX_EDGES_PER_BATCH, MAX_PARENTS_PER_JOB
from jobs.models import Batch, ExecutionLog, Job, JobExecution, JobState
from jobs.serializers import (
    AppendLogsSerializer,
    BatchStatusSerializer,
    BatchSubmitSerializer,
    BatchSubmittedSerializer,
    BulkActionSerializer,
    BulkResultSerializer,
    CompleteSerializer,
    ExecutionSerializer,
    FailSerializer,
    JobDetailSerializer,
    JobSerializer,
    JobStateSerializer,
    JobSubmitSerializer,
    LogSerializer,
    batch_input,
    job_data,
    job_detail_data,
    submit_input,
    submitted_job_data,
    submitted_jobs_data,
)
from jobs.services import listing
from jobs.services.submit import submit_one, without_parents
from queues.models import Queue
from taskforge.lib.errors import NotFound, field_error
from taskforge.lib.fastjson import json_response
from taskforge.lib.pagination import paginate
from taskforge.lib.serializers import page_of

JOB_SCOPES = {"read": "jobs:read", "write": "jobs:write"}

SUBMIT_EXAMPLE = OpenApiExample(
    "An email job",
    value={
        "queue": "default",
        "job_type": "emails.send_welcome",
        "payload": {"user_id": 42},
        "priority": 7,
        "idempotency_key": "welcome-42",
        "tags": ["onboarding"],
    },
    request_only=True,
)


def _queue_names(project: Project) -> dict[Any, str]:
    return dict(Queue.objects.for_project(project).values_list("pk", "name"))


def _get_job(request: Request, job_id: str, *, with_queue: bool = False) -> Job:
    try:
        return services.get_job(project_of(request), job_id, with_queue=with_queue)
    except NotFound:
        note_cross_tenant_attempt(request, organization_of(request), Job, job_id)
        raise


class JobListApi(TenantAPIView):
    scopes = JOB_SCOPES

    @extend_schema(
        summary="Submit a job",
        request=JobSubmitSerializer,
        responses={201: JobSerializer, 200: JobSerializer},
        examples=[SUBMIT_EXAMPLE],
        parameters=[
            OpenApiParameter(
                "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER,
                description="Same as the body's idempotency_key.",
            )
        ],
        description="201 with the new job; 200 with the existing job when the idempotency key "
        "was used before in this project.",
    )  # fmt: skip
    def post(self, request: Request) -> HttpResponse:
        data = request.data
        header_key = request.META.get("HTTP_IDEMPOTENCY_KEY")
        if header_key and isinstance(data, dict) and "idempotency_key" not in data:
            data = {**data, "idempotency_key": header_key}
        spec = submit_input(data)
        project = project_of(request)
        if without_parents(spec):  # one statement, one round trip
            one = submit_one(project, spec)
            return json_response(
                submitted_job_data(one),
                status=status.HTTP_201_CREATED if one.created else status.HTTP_200_OK,
            )
        job, created = services.submit_job(project, spec)
        # A repeat returns the existing job, which may sit in another queue than the request names.
        context = {"queue_names": {job.queue_id: spec.queue}} if created else {}
        return json_response(
            JobSerializer(job, context=context).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(
        summary="List jobs",
        operation_id="v1_jobs_list",
        parameters=[
            OpenApiParameter("state", OpenApiTypes.STR, enum=JobState.values),
            OpenApiParameter("queue", OpenApiTypes.STR),
            OpenApiParameter("job_type", OpenApiTypes.STR),
            OpenApiParameter("tag", OpenApiTypes.STR),
            OpenApiParameter("created_after", OpenApiTypes.DATETIME),
            OpenApiParameter("created_before", OpenApiTypes.DATETIME),
            OpenApiParameter("id", OpenApiTypes.UUID, description="the job's id"),
            OpenApiParameter("idempotency_key", OpenApiTypes.STR),
            OpenApiParameter(
                "payload", OpenApiTypes.STR, many=True, explode=True,
                description="A payload value, `key:value` or `key.nested.key:value`; repeat "
                "the parameter to require several (`?payload=user_id:42&payload=order.currency"
                ":eur`). The value is read as JSON when it is JSON (42, true, null, "
                '"quoted text"), else as text; a number also matches the same number sent as a '
                f"string. At most {listing.MAX_PAYLOAD_TERMS}.",
            ),
            OpenApiParameter("q", OpenApiTypes.STR, description="id, job type or idempotency key"),
            OpenApiParameter(
                "search", OpenApiTypes.STR,
                description="Search box syntax, narrowing the other parameters: `state:dead "
                "queue:emails type:send_email tag:x key:<idempotency key> id:<uuid> "
                'after:<time> before:<time> payload.user_id:42 payload.name:"Ada Lovelace"`; a '
                "bare job id is that job, other words are `q`.",
            ),
            OpenApiParameter("limit", OpenApiTypes.INT, description="1-500, default 50"),
            OpenApiParameter("cursor", OpenApiTypes.STR),
        ],
        responses={200: page_of(JobSerializer)},
    )  # fmt: skip
    def get(self, request: Request) -> Response:
        project = project_of(request)
        query = services.JobQuery.from_params(request.query_params)
        jobs = services.filtered(project, query)
        names = _queue_names(project)
        return paginate(request, jobs, lambda rows: [job_data(j, names[j.queue_id]) for j in rows])


class JobBatchApi(TenantAPIView):
    scopes = JOB_SCOPES

    @extend_schema(
        summary="Submit a batch of jobs (all or nothing)",
        request=BatchSubmitSerializer,
        responses={201: BatchSubmittedSerializer},
        description="Up to 1,000 jobs. Jobs may depend on each other with `ref` and "
        "`depends_on_refs`; a cycle is refused with its path. At most "
        f"{MAX_PARENTS_PER_JOB} parents per job and {MAX_EDGES_PER_BATCH:,} per batch. "
        "Errors name the job's index. Optional `on_complete` / `on_success` callback jobs "
        "are enqueued exactly once when the whole batch has finished (docs/workflows.md).",
    )
    def post(self, request: Request) -> HttpResponse:
        specs, callbacks = batch_input(request.data)
        submitted = services.submit_jobs(project_of(request), specs, **callbacks)
        batch_id = str(submitted.batch_id) if submitted.batch_id else None
        return json_response(
            {"batch_id": batch_id, "jobs": submitted_jobs_data(submitted)},
            status=status.HTTP_201_CREATED,
        )


class JobDetailApi(TenantAPIView):
    scopes = JOB_SCOPES

    @extend_schema(
        summary="A job, with its parents and children",
        responses=JobDetailSerializer,
        parameters=[
            OpenApiParameter(
                "expand",
                OpenApiTypes.STR,
                enum=["executions"],
                description="`executions`: include the job's attempts (as GET "
                "/jobs/{id}/executions lists them) under `executions`, in the same request.",
            )
        ],
        description="`parents` / `children` list job ids; `parent_edges` / `child_edges` list "
        "the same edges with each one's `on_parent_failure`.",
    )
    def get(self, request: Request, job_id: str) -> Response:
        expand = request.query_params.getlist("expand")
        unknown = sorted(set(expand) - {"executions"})
        if unknown:
            raise field_error("expand", f"unknown value {unknown[0]!r}: only executions is")
        job = _get_job(request, job_id, with_queue=True)
        prefetch_related_objects([job], "parent_edges", "child_edges")
        data = job_detail_data(job)
        if expand:
            data["executions"] = _executions(request, job)
        return Response(data)


class JobExecutionsApi(TenantAPIView):
    scopes = JOB_SCOPES

    @extend_schema(
        summary="The job's attempts", responses=page_of(ExecutionSerializer, cursor=False)
    )
    def get(self, request: Request, job_id: str) -> Response:
        return Response({"results": _executions(request, _get_job(request, job_id))})


def _executions(request: Request, job: Job) -> Any:
    executions = JobExecution.objects.for_project(project_of(request)).filter(job=job)
    return ExecutionSerializer(executions.order_by("started_at", "id"), many=True).data


class JobLogsApi(TenantAPIView):
    # Reading logs is for anyone who reads jobs; writing them is the worker protocol.
    scopes = {"read": "jobs:read", "write": "workers"}

    @extend_schema(
        summary="Append log lines to the job's current attempt (worker protocol)",
        request=AppendLogsSerializer,
        responses={201: OpenApiTypes.OBJECT},
    )
    def post(self, request: Request, job_id: str) -> Response:
        job = _get_job(request, job_id)
        serializer = AppendLogsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        stored = services.append_logs(
            project_of(request), job.pk, lease_token=data["lease_token"], entries=data["entries"]
        )
        return Response({"stored": stored}, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="The job's log lines, oldest first", responses=page_of(LogSerializer, cursor=False)
    )
    def get(self, request: Request, job_id: str) -> Response:
        job = _get_job(request, job_id)
        logs = ExecutionLog.objects.for_org(organization_of(request)).filter(job=job).order_by("id")
        return Response({"results": LogSerializer(logs[:5000], many=True).data})


class JobCancelApi(TenantAPIView):
    scopes = JOB_SCOPES

    @extend_schema(
        summary="Cancel a job that has not finished", request=None, responses=JobSerializer
    )
    def post(self, request: Request, job_id: str) -> Response:
        job = _get_job(request, job_id)
        job = services.cancel_job(project_of(request), job.pk, actor=actor_of(request))
        return Response(JobSerializer(job).data)


class JobRetryApi(TenantAPIView):
    scopes = JOB_SCOPES

    @extend_schema(summary="Retry a dead or cancelled job", request=None, responses=JobSerializer)
    def post(self, request: Request, job_id: str) -> Response:
        job = _get_job(request, job_id)
        job = services.retry_job(project_of(request), job.pk, actor=actor_of(request))
        return Response(JobSerializer(job).data)


class JobBulkApi(TenantAPIView):
    scopes = JOB_SCOPES

    @extend_schema(
        summary="Retry, cancel or delete many jobs by ids or by filter",
        description="`filter` takes the job list's filters (GET /api/v1/jobs) as an object, "
        '`payload` a list of terms: `{"state": "dead", "payload": ["user_id:42"]}`. At most '
        f"{services.BULK_LIMIT:,} jobs per call.",
        request=BulkActionSerializer,
        responses=BulkResultSerializer,
    )
    def post(self, request: Request) -> Response:
        serializer = BulkActionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        query = services.JobQuery.from_params(data["filter"]) if "filter" in data else None
        affected = services.bulk_action(
            project_of(request),
            data["action"],
            ids=data.get("ids"),
            query=query,
            actor=actor_of(request),
        )
        return Response({"affected": affected})


class BatchDetailApi(TenantAPIView):
    scopes = JOB_SCOPES

    @extend_schema(
        summary="Progress of a batch, and its callbacks",
        responses=BatchStatusSerializer,
        description="`finished` once every job is succeeded, dead or cancelled. "
        "`callback_enqueued_at` and the `*_job_id` fields are set when the batch's callbacks "
        "were enqueued (exactly once; a job retried afterwards does not fire them again).",
    )
    def get(self, request: Request, batch_id: str) -> Response:
        try:
            batch = services.batch_status(project_of(request), batch_id)
        except NotFound:
            note_cross_tenant_attempt(request, organization_of(request), Batch, batch_id)
            raise
        return Response(BatchStatusSerializer(batch).data)


WORKER_SCOPES = {"read": "workers", "write": "workers"}


class JobCompleteApi(TenantAPIView):
    scopes = WORKER_SCOPES

    @extend_schema(
        summary="Report success (worker protocol)",
        request=CompleteSerializer,
        responses=JobStateSerializer,
        description="409 conflict when the lease token is stale: the lease expired and the "
        "job was handed to another worker, it was cancelled, or it already has a result. "
        "503 busy when another transaction holds the job's row: nothing changed, send the "
        "same request again shortly.",
    )
    def post(self, request: Request, job_id: str) -> Response:
        job = _get_job(request, job_id)
        serializer = CompleteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        job = services.complete_job(
            project_of(request), job.pk, lease_token=data["lease_token"], result=data["result"]
        )
        return Response(JobStateSerializer(job).data)


class JobFailApi(TenantAPIView):
    scopes = WORKER_SCOPES

    @extend_schema(
        summary="Report failure (worker protocol); answers with the job's next state",
        request=FailSerializer,
        responses=JobStateSerializer,
        description="A retryable failure schedules a retry after the queue's backoff while "
        "attempts remain; otherwise the job is dead. 409 for a stale lease token, 503 busy "
        "when another transaction holds the job's row (nothing changed: send it again).",
    )
    def post(self, request: Request, job_id: str) -> Response:
        job = _get_job(request, job_id)
        serializer = FailSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        job = services.fail_job(
            project_of(request),
            job.pk,
            lease_token=data["lease_token"],
            error=data["error"],
            traceback=data["traceback"],
            retryable=data["retryable"],
        )
        return Response(JobStateSerializer(job).data)
