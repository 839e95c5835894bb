"""Schedule API shapes (docs/schedules.md): input serializers check types and ranges;
the cron expression, timezone, queue and plan limits are checked by
jobs/schedules/services.py, which answers 400 naming the field."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from jobs import limits
from jobs.models import CatchUp, Overlap, Schedule, ScheduleRun
from taskforge.lib.serializers import StrictBooleanField, StrictCharField, StrictSerializer


class ScheduleInputSerializer(StrictSerializer):
    """A schedule's settings. On create ``name, cron, queue, job_type`` are required; PATCH
    takes any subset (``partial=True``)."""

    name = StrictCharField(max_length=100)
    cron = StrictCharField(
        max_length=100,
        help_text="Five fields (minute hour day-of-month month day-of-week) or an alias: "
        "@hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually.",
    )
    timezone = StrictCharField(
        max_length=64, required=False, help_text="IANA name, e.g. Europe/Berlin. Default UTC."
    )
    queue = StrictCharField(max_length=limits.QUEUE_NAME_MAX_LENGTH)
    job_type = StrictCharField(max_length=limits.JOB_TYPE_MAX_LENGTH)
    payload = serializers.JSONField(required=False)
    priority = serializers.IntegerField(
        min_value=limits.PRIORITY_MIN, max_value=limits.PRIORITY_MAX, required=False
    )
    enabled = StrictBooleanField(required=False)
    overlap = serializers.ChoiceField(
        choices=Overlap.choices,
        required=False,
        help_text="skip: no new run while the previous one is unfinished. Default allow.",
    )
    catch_up = serializers.ChoiceField(
        choices=CatchUp.choices,
        required=False,
        help_text="After downtime: none skips missed fire times, latest runs the most recent "
        "one (default), all runs them all, up to catch_up_max.",
    )
    catch_up_max = serializers.IntegerField(min_value=1, max_value=1000, required=False)

    def to_fields(self) -> dict[str, Any]:
        return dict(self.validated_data)


class ScheduleSerializer(serializers.ModelSerializer):
    queue = serializers.CharField(source="queue.name")
    next_run_at = serializers.DateTimeField(
        allow_null=True, help_text="The next fire time (UTC); null while disabled."
    )

    class Meta:
        model = Schedule
        fields = [
            "id", "name", "cron", "timezone", "queue", "job_type", "payload", "priority",
            "enabled", "overlap", "catch_up", "catch_up_max", "next_run_at", "last_run_at",
            "last_job_id", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class PreviewSerializer(serializers.Serializer):
    timezone = serializers.CharField()
    fire_times = serializers.ListField(
        child=serializers.DateTimeField(), help_text="UTC, ascending."
    )
    local_times = serializers.ListField(
        child=serializers.CharField(), help_text="The same instants in the schedule's timezone."
    )


class ScheduleRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = ScheduleRun
        fields = ["id", "fire_time", "manual", "outcome", "job_id", "error", "created_at"]
        read_only_fields = fields
