"""Schedule endpoints (docs/schedules.md): list, create, detail, update, delete, preview,
trigger, and the run history."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api_base import TenantAPIView, actor_of, get_or_404, project_of
from jobs.models import Schedule, ScheduleRun
from jobs.schedules import cron
from jobs.schedules import services as scheduling
from jobs.schedules.serializers import (
    PreviewSerializer,
    ScheduleInputSerializer,
    ScheduleRunSerializer,
    ScheduleSerializer,
)
from jobs.serializers import JobSerializer, job_data
from queues.serializers import EmptyBodySerializer
from taskforge.lib.errors import NotFound, ValidationFailed
from taskforge.lib.ids import is_uuid
from taskforge.lib.pagination import paginate
from taskforge.lib.serializers import page_of

SCHEDULE_SCOPES = {"read": "schedules:read", "write": "schedules:write"}

CREATE_EXAMPLE = OpenApiExample(
    "A nightly report in Berlin time",
    value={
        "name": "nightly-report",
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "queue": "default",
        "job_type": "reports.nightly",
        "payload": {"format": "pdf"},
        "overlap": "skip",
        "catch_up": "latest",
    },
    request_only=True,
)

BAD_INPUT = (
    "Bad input answers 400 naming the field: an invalid or never-firing `cron` (such as "
    "`0 0 30 2 *`), an unknown `timezone`, a `queue` not in the project, or a `cron` that "
    "fires more often than the plan allows."
)


def _schedule(request: Request, schedule_id: str) -> Schedule:
    if not is_uuid(schedule_id):
        raise NotFound(f"schedule {schedule_id} not found")
    schedules = Schedule.objects.for_project(project_of(request)).select_related("queue")
    found: Schedule = get_or_404(request, schedules, schedule_id, f"schedule {schedule_id}")
    return found


class ScheduleListApi(TenantAPIView):
    scopes = SCHEDULE_SCOPES

    @extend_schema(
        summary="List the project's schedules, newest first",
        operation_id="v1_schedules_list",
        parameters=[
            OpenApiParameter("limit", OpenApiTypes.INT, description="1-500, default 50"),
            OpenApiParameter("cursor", OpenApiTypes.STR),
        ],
        responses=page_of(ScheduleSerializer),
    )
    def get(self, request: Request) -> Response:
        schedules = Schedule.objects.for_project(project_of(request)).select_related("queue")
        return paginate(request, schedules, lambda rows: ScheduleSerializer(rows, many=True).data)

    @extend_schema(
        summary="Create a cron schedule",
        description="The dispatcher enqueues one job per fire time, exactly once even with "
        "several dispatchers. " + BAD_INPUT + " A name already used in the project is 409; "
        "more schedules than the plan allows is 402.",
        request=ScheduleInputSerializer,
        responses={201: ScheduleSerializer},
        examples=[CREATE_EXAMPLE],
    )
    def post(self, request: Request) -> Response:
        serializer = ScheduleInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        schedule = scheduling.create_schedule(
            project_of(request), serializer.to_fields(), actor=actor_of(request)
        )
        return Response(ScheduleSerializer(schedule).data, status=status.HTTP_201_CREATED)


class ScheduleDetailApi(TenantAPIView):
    scopes = SCHEDULE_SCOPES

    @extend_schema(summary="A schedule", responses=ScheduleSerializer)
    def get(self, request: Request, schedule_id: str) -> Response:
        return Response(ScheduleSerializer(_schedule(request, schedule_id)).data)

    @extend_schema(
        summary="Change a schedule (enable or disable it with `enabled`)",
        description="Send only what changes. A new cron or timezone, or enabling a disabled "
        "schedule, starts its fire times from now (the disabled time is not caught up). "
        + BAD_INPUT,
        request=ScheduleInputSerializer(partial=True),
        responses=ScheduleSerializer,
    )
    def patch(self, request: Request, schedule_id: str) -> Response:
        schedule = _schedule(request, schedule_id)
        serializer = ScheduleInputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        schedule = scheduling.update_schedule(
            schedule, serializer.to_fields(), actor=actor_of(request)
        )
        return Response(ScheduleSerializer(schedule).data)

    @extend_schema(
        summary="Delete a schedule",
        description="Its run history goes with it; jobs it enqueued stay.",
        responses={204: None},
    )
    def delete(self, request: Request, schedule_id: str) -> Response:
        scheduling.delete_schedule(_schedule(request, schedule_id), actor=actor_of(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class SchedulePreviewApi(TenantAPIView):
    scopes = SCHEDULE_SCOPES

    @extend_schema(
        summary="The schedule's next fire times",
        description="From now, as if enabled, following the daylight-saving rule of "
        "docs/schedules.md.",
        parameters=[OpenApiParameter("n", OpenApiTypes.INT, description="1-100, default 5")],
        responses=PreviewSerializer,
    )
    def get(self, request: Request, schedule_id: str) -> Response:
        schedule = _schedule(request, schedule_id)
        raw = request.query_params.get("n", "5")
        if not (raw.isascii() and raw.isdigit()):
            raise ValidationFailed("n: must be an integer from 1 to 100", details={"field": "n"})
        times = scheduling.preview(schedule, int(raw))
        tz = cron.parse_timezone(schedule.timezone)
        return Response(
            PreviewSerializer(
                {
                    "timezone": schedule.timezone,
                    "fire_times": times,
                    "local_times": [t.astimezone(tz).isoformat() for t in times],
                }
            ).data
        )


class ScheduleTriggerApi(TenantAPIView):
    scopes = SCHEDULE_SCOPES

    @extend_schema(
        summary="Enqueue one run now",
        description="Outside the cron times, even while disabled; `overlap` does not apply "
        "(it was asked for). Returns the job.",
        request=EmptyBodySerializer,
        responses={201: JobSerializer},
    )
    def post(self, request: Request, schedule_id: str) -> Response:
        schedule = _schedule(request, schedule_id)
        EmptyBodySerializer(data=request.data).is_valid(raise_exception=True)
        job = scheduling.trigger_schedule(schedule, actor=actor_of(request))
        return Response(job_data(job, schedule.queue.name), status=status.HTTP_201_CREATED)


class ScheduleRunsApi(TenantAPIView):
    scopes = SCHEDULE_SCOPES

    @extend_schema(
        summary="The schedule's runs, newest first",
        description="One row per fire time (and per manual trigger): `enqueued` with its job, "
        "`skipped_overlap`, or `failed` with the reason in `error` (the engine refused the job).",
        parameters=[
            OpenApiParameter("limit", OpenApiTypes.INT, description="1-500, default 50"),
            OpenApiParameter("cursor", OpenApiTypes.STR),
        ],
        responses=page_of(ScheduleRunSerializer),
    )
    def get(self, request: Request, schedule_id: str) -> Response:
        schedule = _schedule(request, schedule_id)
        runs = ScheduleRun.objects.for_org(project_of(request).organization).filter(
            schedule=schedule
        )
        return paginate(request, runs, lambda rows: ScheduleRunSerializer(rows, many=True).data)
