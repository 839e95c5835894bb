"""The queue endpoints that reach a queue's jobs or workers (docs/api.md): delete, purge, stats.

Served from ``taskforge/`` because their services (taskforge/queue_ops.py) span the queues,
jobs and workers apps. taskforge/queue_urls.py mounts them beside the queues app's own
endpoints (queues/api.py), under the same ``/api/v1/queues/…`` paths.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api_base import TenantAPIView, actor_of, project_of
from queues import api as queues_api
from queues.serializers import DeleteParamsSerializer, EmptyBodySerializer
from queues.services import get_queue
from taskforge import queue_ops


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


# GET and PATCH from the queues app; DELETE here, because it deletes the queue's jobs. (A
# comment, not a docstring: drf-spectacular would publish a docstring as GET's description.)
class QueueDetailApi(queues_api.QueueDetailApi):
    @extend_schema(
        summary="Delete a queue with its jobs",
        description="Refused with 409 while the queue has unfinished (blocked, scheduled, "
        "pending or processing) jobs, unless `?force=true`; refused even with it while an "
        "unfinished job has dependent jobs in another queue.",
        parameters=[OpenApiParameter("force", OpenApiTypes.BOOL, default=False)],
        responses={204: None},
    )
    def delete(self, request: Request, name: str) -> Response:
        queue = get_queue(project_of(request), name)
        params = DeleteParamsSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        force = params.validated_data["force"]
        queue_ops.delete_queue(queue, force=force, actor=actor_of(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class QueuePurgeApi(TenantAPIView):
    scopes = queues_api.QUEUE_SCOPES

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
        deleted = queue_ops.purge_queue(queue, actor=actor_of(request))
        return Response({"deleted": deleted})


class QueueStatsApi(TenantAPIView):
    scopes = queues_api.QUEUE_SCOPES

    @extend_schema(summary="A queue's live numbers", responses=QueueStatsSerializer)
    def get(self, request: Request, name: str) -> Response:
        project = project_of(request)
        stats = queue_ops.queue_stats(project, get_queue(project, name))
        return Response(QueueStatsSerializer(stats).data)
