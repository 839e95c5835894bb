"""The queue endpoints that work on a queue's jobs: purge and stats (shared/API.md "Queues").

They live in jobs because jobs sits above queues; jobs/urls.py mounts them under
``queues/<name>/``. Workers sit above jobs, so the online workers are counted through the
queue's reverse relation ``assignments`` instead of an import of workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Count, Min, Q
from django.db.models.functions import Extract, Now
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api_base import TenantAPIView, actor_of, project_of
from accounts.models import Project
from jobs import services
from jobs.models import ExecutionStatus, Job, JobExecution, JobState
from queues.models import Queue
from queues.serializers import EmptyBodySerializer
from queues.services import get_queue

QUEUE_SCOPES = {"read": "queues:read", "write": "queues:write"}
# The stats windows: label -> minutes.
WINDOWS = {"1m": 1, "5m": 5, "60m": 60}
# An expired lease is a failed attempt too (ARCHITECTURE.md "Job lifecycle").
FAILED_EXECUTIONS = (ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT)


class PurgedSerializer(serializers.Serializer):
    deleted = serializers.IntegerField(help_text="Pending and scheduled jobs deleted")


def _per_window(child: serializers.Field, help_text: str) -> serializers.DictField:
    return serializers.DictField(child=child, help_text=f"{help_text}; keys 1m, 5m, 60m")


class QueueStatsSerializer(serializers.Serializer):
    queue = serializers.CharField()
    paused = serializers.BooleanField()
    counts = serializers.DictField(
        child=serializers.IntegerField(), help_text="Jobs by state (every state, zeros included)"
    )
    oldest_pending_age_seconds = serializers.FloatField(
        allow_null=True, help_text="How long the oldest pending job has been due; null if none"
    )
    throughput = _per_window(serializers.IntegerField(), "Executions succeeded in the window")
    failure_rate = _per_window(
        serializers.FloatField(allow_null=True),
        "Failed or timed-out executions / finished executions in the window; null if none",
    )
    workers_online = serializers.IntegerField(help_text="Online workers actively serving it")


@dataclass(frozen=True, slots=True)
class QueueStats:
    queue: str
    paused: bool
    counts: dict[str, int]
    oldest_pending_age_seconds: float | None
    throughput: dict[str, int]
    failure_rate: dict[str, float | None]
    workers_online: int


def queue_stats(project: Project, queue: Queue) -> QueueStats:
    """Counts, oldest pending age, recent throughput and failure rate, online workers.

    Three aggregate queries whatever the queue's size. Ages and windows use the database's
    now(), like every other time comparison in the engine, so a skewed web clock cannot
    distort them.
    """
    jobs = Job.objects.for_project(project).filter(queue=queue)
    job_row = jobs.aggregate(
        **{state: Count("pk", filter=Q(state=state)) for state in JobState.values},
        oldest_age=Extract(Now() - Min("run_at", filter=Q(state=JobState.PENDING)), "epoch"),
    )
    oldest = job_row.pop("oldest_age")
    executions = JobExecution.objects.for_project(project).filter(
        job__queue=queue, finished_at__gte=Now() - timedelta(minutes=max(WINDOWS.values()))
    )
    counts = {}
    for label, minutes in WINDOWS.items():
        recent = Q(finished_at__gte=Now() - timedelta(minutes=minutes))
        counts[f"{label}_ok"] = Count("pk", filter=recent & Q(status=ExecutionStatus.SUCCEEDED))
        counts[f"{label}_failed"] = Count("pk", filter=recent & Q(status__in=FAILED_EXECUTIONS))
        counts[f"{label}_all"] = Count("pk", filter=recent)
    execution_row = executions.aggregate(**counts)
    workers = queue.assignments.filter(is_active=True, worker__status="online").count()
    return QueueStats(
        queue=queue.name,
        paused=queue.paused,
        counts=job_row,
        oldest_pending_age_seconds=None if oldest is None else max(0.0, float(oldest)),
        throughput={label: execution_row[f"{label}_ok"] for label in WINDOWS},
        failure_rate={
            label: _ratio(execution_row[f"{label}_failed"], execution_row[f"{label}_all"])
            for label in WINDOWS
        },
        workers_online=workers,
    )


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


class QueuePurgeApi(TenantAPIView):
    scopes = QUEUE_SCOPES

    @extend_schema(
        summary="Delete the queue's pending and scheduled jobs",
        description="Processing jobs are left alone; jobs waiting on a purged job are "
        "cancelled. Returns how many jobs were deleted.",
        request=EmptyBodySerializer,
        responses=PurgedSerializer,
    )
    def post(self, request: Request, name: str) -> Response:
        queue = get_queue(project_of(request), name)
        EmptyBodySerializer(data=request.data).is_valid(raise_exception=True)
        deleted = services.purge_queue(queue, actor=actor_of(request))
        return Response({"deleted": deleted})


class QueueStatsApi(TenantAPIView):
    scopes = QUEUE_SCOPES

    @extend_schema(summary="A queue's live numbers", responses=QueueStatsSerializer)
    def get(self, request: Request, name: str) -> Response:
        project = project_of(request)
        stats = queue_stats(project, get_queue(project, name))
        return Response(QueueStatsSerializer(stats).data)
