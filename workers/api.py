"""Worker protocol endpoints (docs/api.md#the-worker-protocol): API keys with scope `workers`.

The long-poll (GET /workers/{id}/jobs?wait=) claims pending jobs for its worker
(workers/claiming.py); with none to claim, it sleeps on this process's notification hub until
jobs become pending in one of the worker's queues (or the worker is drained) or ``wait`` runs
out, claiming again every few seconds in case a NOTIFY was lost.
"""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from django.db import close_old_connections
from django.db.models import Count, Prefetch
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
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
from jobs.models import Job, JobState
from jobs.services import BUSY, AssignedJob, Outcome, report_results
from taskforge.lib.errors import NotFound, ValidationFailed
from taskforge.lib.pagination import paginate
from taskforge.lib.serializers import page_of
from workers import claiming, services
from workers.models import QueueWorkerAssignment, Worker
from workers.notifications import hub, long_polls_ending
from workers.serializers import (
    FetchResponseSerializer,
    HeartbeatAnswerSerializer,
    HeartbeatResponseSerializer,
    HeartbeatSerializer,
    QueueWeightSerializer,
    RegisterWorkerSerializer,
    ResultsResponseSerializer,
    ResultsSerializer,
    WorkerSerializer,
    results_input,
)

WORKER_SCOPES = {"read": "workers", "write": "workers"}
MAX_WAIT_SECONDS = 30
# A long-poll re-checks the database this often even without a NOTIFY (a lost notification,
# a hub reconnecting), so a job is never stranded for the whole wait.
RECHECK_SECONDS = 5.0


def _worker(request: Request, worker_id: str) -> Worker:
    try:
        return services.get_worker(project_of(request), worker_id)
    except NotFound:
        note_cross_tenant_attempt(request, organization_of(request), Worker, worker_id)
        raise


def _uuid_or_none(raw: str) -> UUID | None:
    try:
        return UUID(raw)
    except ValueError:
        return None


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise ValidationFailed(
            f"{name}: must be an integer from {low} to {high}", details={"field": name}
        )
    return int(raw)


def _running_counts(project: Any, worker_ids: list[Any]) -> dict[Any, int]:
    rows = (
        Job.objects.for_project(project)
        .filter(state=JobState.PROCESSING, worker_id__in=worker_ids)
        .values("worker_id")
        .annotate(n=Count("*"))
    )
    return {row["worker_id"]: row["n"] for row in rows}


class WorkerListApi(TenantAPIView):
    scopes = WORKER_SCOPES

    @extend_schema(
        summary="Register a worker (the same name again re-registers it: 200, same id)",
        request=RegisterWorkerSerializer,
        responses={201: WorkerSerializer, 200: WorkerSerializer},
    )
    def post(self, request: Request) -> Response:
        serializer = RegisterWorkerSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        weights = QueueWeightSerializer()
        worker, created = services.register_worker(
            project_of(request),
            name=data["name"],
            queues=[weights.to_weight(q) for q in data["queues"]],
            capacity=data["capacity"],
            worker_type=data["worker_type"],
            endpoint_url=data["endpoint_url"],
            metadata=data["metadata"],
            running=data["running"],
            job_types=data["job_types"],
        )
        running = _running_counts(project_of(request), [worker.pk])
        body = WorkerSerializer(
            self._with_assignments(request, worker), context={"running": running}
        ).data
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(
        summary="Workers with status, last heartbeat, running count and queues",
        responses=page_of(WorkerSerializer),
    )
    def get(self, request: Request) -> Response:
        def serialize(workers: list[Worker]) -> Any:
            running = _running_counts(project_of(request), [w.pk for w in workers])
            return WorkerSerializer(workers, many=True, context={"running": running}).data

        return paginate(request, self._queryset(request), serialize)

    def _queryset(self, request: Request) -> Any:
        assignments = QueueWorkerAssignment.objects.for_org(
            organization_of(request)
        ).select_related("queue")
        return Worker.objects.for_project(project_of(request)).prefetch_related(
            Prefetch("assignments", queryset=assignments)
        )

    def _with_assignments(self, request: Request, worker: Worker) -> Worker:
        refreshed: Worker = self._queryset(request).get(pk=worker.pk)
        return refreshed


class WorkerDetailApi(TenantAPIView):
    scopes = WORKER_SCOPES

    @extend_schema(
        summary="Deregister a worker; jobs it still holds are retried", responses={204: None}
    )
    def delete(self, request: Request, worker_id: str) -> Response:
        services.deregister_worker(project_of(request), _worker(request, worker_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class WorkerHeartbeatApi(TenantAPIView):
    scopes = WORKER_SCOPES

    @extend_schema(
        summary="Heartbeat: extends the leases of the jobs the worker says it runs, and lists "
        "those of them that were cancelled",
        description="One statement: the worker's status and heartbeat time, the leases of the "
        "named jobs, and the cancelled ones. A job cancelled while it runs keeps its slot "
        "counted busy while the heartbeats name it; once they stop naming it (or its result "
        "is reported) the slot is free.",
        request=HeartbeatSerializer,
        responses=HeartbeatAnswerSerializer,
    )
    def post(self, request: Request, worker_id: str) -> Response:
        worker = _worker(request, worker_id)
        serializer = HeartbeatSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        answer = services.heartbeat(
            project_of(request), worker, running=serializer.validated_data["running"]
        )
        return Response(
            {"status": answer.status, "cancelled": [str(job_id) for job_id in answer.cancelled]}
        )


class WorkerDrainApi(TenantAPIView):
    scopes = WORKER_SCOPES

    @extend_schema(
        summary="Stop new assignments; the worker finishes what it holds",
        description="Draining a draining worker changes nothing; an offline worker is refused "
        "with 409 (it holds nothing). Recorded in the audit log as `worker.drained`.",
        request=None,
        responses=HeartbeatResponseSerializer,
    )
    def post(self, request: Request, worker_id: str) -> Response:
        worker = services.drain_worker(
            project_of(request), _worker(request, worker_id), actor=actor_of(request)
        )
        return Response({"status": worker.status})


class WorkerQueuesApi(TenantAPIView):
    scopes = WORKER_SCOPES

    @extend_schema(
        summary="Replace the worker's queue assignments",
        request=QueueWeightSerializer(many=True),
        responses=WorkerSerializer,
    )
    def put(self, request: Request, worker_id: str) -> Response:
        worker = _worker(request, worker_id)
        serializer = QueueWeightSerializer(data=request.data, many=True)
        serializer.is_valid(raise_exception=True)
        weights = QueueWeightSerializer()
        services.set_queue_assignments(
            project_of(request), worker, [weights.to_weight(q) for q in serializer.validated_data]
        )
        running = _running_counts(project_of(request), [worker.pk])
        refreshed = WorkerListApi()._with_assignments(request, worker)
        return Response(WorkerSerializer(refreshed, context={"running": running}).data)


class WorkerJobsApi(TenantAPIView):
    scopes = WORKER_SCOPES
    # Fetching claims jobs (they become the worker's): a write, though it is a GET.
    get_changes_state = True

    @extend_schema(
        summary="Long-poll for jobs: claims up to `max` jobs for this worker",
        description="The fetch is the claim: pending jobs of the worker's queues (and job "
        "types, if it declared them) become its own, split between its queues by priority and "
        "weight within every limit (queue max_concurrency and rate limit, the plan's "
        "max_concurrency, the worker's free slots). With none pending it waits up to `wait` "
        "seconds for one. Each job's lease lasts TASKFORGE_ACK_TIMEOUT_SECONDS until a "
        "heartbeat names it.",
        parameters=[
            OpenApiParameter(
                "wait", OpenApiTypes.INT, description="seconds to wait, 0-30 (default 20)"
            ),
            OpenApiParameter(
                "max", OpenApiTypes.INT,
                description="most jobs to claim, 1-1000 (default: the worker's capacity); a "
                "worker asks for its free slots",
            ),
        ],
        responses=FetchResponseSerializer,
    )  # fmt: skip
    def get(self, request: Request, worker_id: str) -> Response:
        wait = _int_param(request, "wait", 20, 0, MAX_WAIT_SECONDS)
        limit = _int_param(request, "max", 0, 1, 1000) or None  # None: the worker's capacity
        project = project_of(request)
        # The claim finds the worker itself (scoped to the project): no lookup before it, as
        # this is the path every job takes to its worker.
        pk = _uuid_or_none(worker_id)
        claimed = claiming.claim(project, pk, limit=limit) if pk else claiming.Claim()
        if claimed.status is None:
            _worker(request, worker_id)  # a 404, logged when it names another tenant's worker
        # A draining worker gets nothing and no wait: nothing more will come. Nor does anyone
        # wait on a process that is shutting down (long_polls_ending).
        jobs = claimed.jobs
        if not jobs and wait and claimed.serving and not long_polls_ending():
            assert pk is not None
            jobs = self._wait_for_jobs(project, pk, claimed, limit, wait)
        return Response({"jobs": [_assigned(job) for job in jobs]})

    def _wait_for_jobs(
        self, project: Any, worker_id: UUID, claimed: claiming.Claim, limit: int | None, wait: int
    ) -> list[Any]:
        deadline = time.monotonic() + wait
        keys = claiming.channels_of(worker_id, claimed.queue_ids)
        event = hub().subscribe(keys)
        try:
            while True:
                # Subscribed first, then claimed: a NOTIFY sent in between is not missed.
                claimed = claiming.claim(project, worker_id, limit=limit)
                left = deadline - time.monotonic()
                if claimed.jobs or left <= 0 or long_polls_ending() or not claimed.serving:
                    return claimed.jobs
                wanted = claiming.channels_of(worker_id, claimed.queue_ids)
                if wanted != keys:  # its queues changed (assigned, paused, resumed)
                    hub().unsubscribe(keys, event)
                    keys = wanted
                    hub().subscribe(keys, event=event)
                    continue
                timeout = min(left, RECHECK_SECONDS)
                if claimed.retry_in is not None:  # a rate-limited queue earns a token then
                    timeout = min(timeout, claimed.retry_in + 0.001)
                event.wait(timeout)
                event.clear()
        finally:
            hub().unsubscribe(keys, event)
            # The thread slept for seconds: let Django drop a connection that aged meanwhile.
            close_old_connections()


def _assigned(job: AssignedJob) -> dict[str, Any]:
    return {
        "id": str(job.id),
        "job_type": job.job_type,
        "payload": job.payload,
        "attempt": job.attempt,
        "lease_token": str(job.lease_token),
        "lease_expires_at": job.lease_expires_at.isoformat().replace("+00:00", "Z"),
        "timeout_seconds": job.timeout_seconds,
        "queue": job.queue,
        "priority": job.priority,
        "sub_priority": job.sub_priority,
        "created_at": job.created_at.isoformat().replace("+00:00", "Z"),
    }


class WorkerResultsApi(TenantAPIView):
    scopes = WORKER_SCOPES

    @extend_schema(
        summary="Report many results at once (the fast path for busy workers)",
        request=ResultsSerializer,
        responses=ResultsResponseSerializer,
        description="Each item is fenced by its lease token; a stale one gets outcome "
        "`conflict` and changes nothing, except that the result of a job cancelled while it "
        "ran on this worker frees the slot the job kept. The others are applied in one "
        "transaction, which waits for no row lock: an item whose job's row another "
        "transaction holds gets outcome `busy`, is not applied, and should be sent again "
        "shortly.",
    )
    def post(self, request: Request, worker_id: str) -> Response:
        worker = _worker(request, worker_id)
        items = results_input(request.data)
        outcomes = report_results(project_of(request), items, worker_id=worker.pk)
        return Response(
            {"results": [_outcome(item.job_id, outcomes[item.job_id]) for item in items]}
        )


def _outcome(job_id: Any, outcome: Outcome | None) -> dict[str, Any]:
    if outcome is None:
        return {"job_id": str(job_id), "outcome": "conflict"}
    if outcome.state == BUSY:
        return {"job_id": str(job_id), "outcome": "busy"}
    body: dict[str, Any] = {"job_id": str(job_id), "outcome": outcome.state}
    if outcome.state == JobState.SCHEDULED and outcome.run_at is not None:
        body["run_at"] = outcome.run_at.isoformat().replace("+00:00", "Z")
    return body
