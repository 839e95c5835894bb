"""Queue endpoints (docs/api.md): list, create, detail, update, pause, resume.

Delete, purge and stats work on the queue's jobs (and stats on its workers), which sit in
higher apps: they live in taskforge/queue_api.py, whose QueueDetailApi adds DELETE to the one
here. taskforge/queue_urls.py lists every queue route.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api_base import TenantAPIView, actor_of, project_of
from queues import services
from queues.models import Queue
from queues.serializers import (
    EmptyBodySerializer,
    QueueInputSerializer,
    QueuePageSerializer,
    QueueSerializer,
)
from taskforge.lib.pagination import paginate

QUEUE_SCOPES = {"read": "queues:read", "write": "queues:write"}

CREATE_EXAMPLE = OpenApiExample(
    "An email queue",
    value={
        "name": "emails",
        "priority": 7,
        "max_concurrency": 20,
        "max_attempts": 8,
        "backoff": {"base_seconds": 2, "max_seconds": 600, "multiplier": 2, "jitter": "full"},
        "timeout_seconds": 60,
        "rate_limit_per_second": None,
        "retention_days": 14,
    },
    request_only=True,
)


class QueueListApi(TenantAPIView):
    scopes = QUEUE_SCOPES

    @extend_schema(
        summary="List the project's queues, newest first",
        operation_id="v1_queues_list",
        parameters=[
            OpenApiParameter("limit", OpenApiTypes.INT, description="1-500, default 50"),
            OpenApiParameter("cursor", OpenApiTypes.STR),
        ],
        responses=QueuePageSerializer,
    )
    def get(self, request: Request) -> Response:
        queues = Queue.objects.for_project(project_of(request))
        return paginate(request, queues, lambda rows: QueueSerializer(rows, many=True).data)

    @extend_schema(
        summary="Create a queue",
        description="Only `name` is required; other settings default. A name already used in "
        "the project is refused with 409.",
        request=QueueInputSerializer,
        responses={201: QueueSerializer},
        examples=[CREATE_EXAMPLE],
    )
    def post(self, request: Request) -> Response:
        serializer = QueueInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        fields = serializer.to_fields()
        queue = services.create_queue(
            project_of(request), name=fields.pop("name"), settings=fields, actor=actor_of(request)
        )
        return Response(QueueSerializer(queue).data, status=status.HTTP_201_CREATED)


# GET and PATCH; the route's view, taskforge.queue_api.QueueDetailApi, adds DELETE.
class QueueDetailApi(TenantAPIView):
    scopes = QUEUE_SCOPES

    @extend_schema(summary="A queue", responses=QueueSerializer)
    def get(self, request: Request, name: str) -> Response:
        queue = services.get_queue(project_of(request), name)
        return Response(QueueSerializer(queue).data)

    @extend_schema(
        summary="Change a queue's settings",
        description="Send only what changes; `backoff` may be partial too. Renaming keeps the "
        "queue's jobs. Use /pause and /resume for `paused`.",
        request=QueueInputSerializer(partial=True),
        responses=QueueSerializer,
    )
    def patch(self, request: Request, name: str) -> Response:
        queue = services.get_queue(project_of(request), name)
        serializer = QueueInputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        queue = services.update_queue(
            queue, changes=serializer.to_fields(), actor=actor_of(request)
        )
        return Response(QueueSerializer(queue).data)


class QueuePauseApi(TenantAPIView):
    scopes = QUEUE_SCOPES

    @extend_schema(
        summary="Pause a queue",
        description="No new assignments; running jobs finish and submissions are still accepted.",
        request=EmptyBodySerializer,
        responses=QueueSerializer,
    )
    def post(self, request: Request, name: str) -> Response:
        queue = services.get_queue(project_of(request), name)
        EmptyBodySerializer(data=request.data).is_valid(raise_exception=True)
        queue = services.pause_queue(queue, actor=actor_of(request))
        return Response(QueueSerializer(queue).data)


class QueueResumeApi(TenantAPIView):
    scopes = QUEUE_SCOPES

    @extend_schema(
        summary="Resume a paused queue", request=EmptyBodySerializer, responses=QueueSerializer
    )
    def post(self, request: Request, name: str) -> Response:
        queue = services.get_queue(project_of(request), name)
        EmptyBodySerializer(data=request.data).is_valid(raise_exception=True)
        queue = services.resume_queue(queue, actor=actor_of(request))
        return Response(QueueSerializer(queue).data)
