"""Staff admin for jobs. The jobs tables get big: no inlines, no full counts, raw-id pickers.

Lifecycle columns (state, attempts, lease, timestamps) are read-only: they change only through
the dispatcher's SQL and the services, which keep leases, counters and dependencies consistent.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from accounts.admin import ReadOnlyTenantAdmin, TenantAdmin, TenantForm
from jobs import queries
from jobs.models import (
    Batch,
    ExecutionLog,
    Job,
    JobDependency,
    JobExecution,
    Schedule,
    ScheduleRun,
)
from jobs.schedules import cron
from jobs.specs import encode_payload
from taskforge.lib.errors import TaskForgeError, ValidationFailed

# How many of the newest jobs the job-type filter reads its choices from.
JOB_TYPE_FILTER_SAMPLE = 10_000


class JobTypeFilter(admin.SimpleListFilter):
    """Filter by job type, offering the types of the newest jobs.

    Django's AllValuesFieldListFilter runs SELECT DISTINCT over the whole table on every page
    load; the newest jobs are read through the created_at index instead.
    """

    title = "job type"
    parameter_name = "job_type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        newest = Job.objects.all_tenants().order_by("-created_at").values("pk")
        types = (
            Job.objects.all_tenants()
            .filter(pk__in=newest[:JOB_TYPE_FILTER_SAMPLE])
            .order_by("job_type")
            .values_list("job_type", flat=True)
            .distinct()
        )
        return [(job_type, job_type) for job_type in types]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(job_type=value) if value else queryset


@admin.register(Batch)
class BatchAdmin(TenantAdmin):
    list_display = ("id", "project", "organization", "total", "callback_enqueued_at", "created_at")
    list_select_related = ("project", "organization")
    list_filter = ("organization",)
    search_fields = ("project__name",)
    uuid_search_fields = ("pk",)
    raw_id_fields = ("project",)
    readonly_fields = ("id", "total", "callback_enqueued_at", "created_at")
    show_full_result_count = False


@admin.register(Job)
class JobAdmin(TenantAdmin):
    tenant_from = "queue"
    list_display = (
        "job_type",
        "id",
        "state",
        "queue",
        "priority",
        "attempts_of_max",
        "run_at",
        "created_at",
    )
    # The denormalised organization column, not queue__project__organization: the same
    # filter without two joins on the biggest table.
    list_filter = ("state", "organization", JobTypeFilter)
    list_select_related = ("queue",)
    search_fields = ("job_type", "=idempotency_key")
    uuid_search_fields = ("pk",)
    show_full_result_count = False
    raw_id_fields = ("queue", "batch")
    readonly_fields = (
        "id",
        "state",
        "attempts",
        "pending_parents",
        "result",
        "last_error",
        "worker_id",
        "lease_token",
        "lease_expires_at",
        "delivered_at",
        "created_at",
        "started_at",
        "finished_at",
    )
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "organization",
                    "project",
                    "queue",
                    "batch",
                    "job_type",
                    "payload",
                    "tags",
                    "idempotency_key",
                )
            },
        ),
        ("Scheduling", {"fields": ("priority", "run_at", "max_attempts", "timeout_seconds")}),
        (
            "Lifecycle",
            {
                "fields": (
                    "state",
                    "attempts",
                    "pending_parents",
                    "last_error",
                    "result",
                    "worker_id",
                    "lease_token",
                    "lease_expires_at",
                    "delivered_at",
                    "created_at",
                    "started_at",
                    "finished_at",
                )
            },
        ),
    )

    @admin.display(description="attempts", ordering="attempts")
    def attempts_of_max(self, obj: Job) -> str:
        return f"{obj.attempts}/{obj.max_attempts}"


@admin.register(JobDependency)
class JobDependencyAdmin(ReadOnlyTenantAdmin):
    """Read-only: an edge added or removed by hand would not update the child's
    pending_parents counter, and the child would never leave (or leave too early) blocked."""

    tenant_from = "child"
    list_display = ("id", "parent", "child", "organization")
    list_select_related = ("parent", "child", "organization")
    list_filter = ("organization",)
    search_fields = ("parent__job_type", "child__job_type")
    uuid_search_fields = ("parent", "child")
    show_full_result_count = False


@admin.register(JobExecution)
class JobExecutionAdmin(ReadOnlyTenantAdmin):
    tenant_from = "job"
    list_display = ("id", "job", "attempt", "status", "worker_id", "started_at", "finished_at")
    list_filter = ("status", "organization")
    list_select_related = ("job",)
    search_fields = ("job__job_type",)
    uuid_search_fields = ("job", "worker_id")
    ordering = ("-started_at", "-id")
    show_full_result_count = False


@admin.register(ExecutionLog)
class ExecutionLogAdmin(ReadOnlyTenantAdmin):
    tenant_from = "job"
    list_display = ("created_at", "level", "job", "execution", "short_message")
    list_filter = ("level", "organization")
    list_select_related = ("job", "execution")
    search_fields = ("message",)
    uuid_search_fields = ("job",)
    ordering = ("-id",)
    show_full_result_count = False

    @admin.display(description="message")
    def short_message(self, obj: ExecutionLog) -> str:
        return obj.message if len(obj.message) <= 100 else obj.message[:99] + "…"


class ScheduleForm(TenantForm):
    """Check the cron expression and time zone here (the API's rules: five fields, a known
    IANA zone, fires within the search horizon), not at the dispatcher's next tick."""

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        zone = "UTC"
        if "timezone" in cleaned:
            try:
                cron.parse_timezone(cleaned["timezone"])
                zone = cleaned["timezone"]
            except ValidationFailed as exc:
                self.add_error("timezone", exc.message.split(": ", 1)[-1])
        if "cron" in cleaned:
            try:
                cron.parse(cleaned["cron"], zone, reference=timezone.now())
            except ValidationFailed as exc:
                self.add_error("cron", exc.message.split(": ", 1)[-1])
        if "payload" in cleaned:
            try:
                encode_payload(None, cleaned["payload"])
            except TaskForgeError as exc:
                self.add_error("payload", exc.message.split(": ", 1)[-1])
        return cleaned


@admin.register(Schedule)
class ScheduleAdmin(TenantAdmin):
    form = ScheduleForm
    tenant_from = "queue"
    list_display = (
        "name",
        "project",
        "queue",
        "cron",
        "timezone",
        "job_type",
        "enabled",
        "next_run_at",
        "last_run_at",
    )
    list_filter = ("enabled", "overlap", "catch_up", "organization")
    list_select_related = ("project", "queue")
    search_fields = ("name", "job_type")
    uuid_search_fields = ("pk",)
    raw_id_fields = ("queue",)
    readonly_fields = ("id", "next_run_at", "last_run_at", "last_job_id", "created_at")

    def save_model(self, request: HttpRequest, obj: Schedule, form: Any, change: Any) -> None:
        """Like the API: a new cron, timezone or enabling starts the fire times from now (the
        schedules' database clock). An edit writes only the edited fields, under the row's
        lock, so it cannot undo a run the dispatcher recorded meanwhile."""
        restart = not change or {"cron", "timezone", "enabled"} & set(form.changed_data)
        with transaction.atomic():
            if change:
                Schedule.objects.all_tenants().select_for_update().filter(pk=obj.pk).first()
            if not obj.enabled:
                obj.next_run_at = None
            elif restart or obj.next_run_at is None:
                clock = queries.schedule_clock()
                expression = cron.parse(obj.cron, obj.timezone, reference=clock)
                obj.next_run_at = expression.next_after(clock)
            if change:
                obj.save(update_fields=[*form.changed_data, "next_run_at"])
            else:
                super().save_model(request, obj, form, change)


@admin.register(ScheduleRun)
class ScheduleRunAdmin(ReadOnlyTenantAdmin):
    tenant_from = "schedule"
    list_display = ("fire_time", "schedule", "manual", "outcome", "job_id", "created_at")
    list_filter = ("outcome", "manual", "organization")
    list_select_related = ("schedule",)
    search_fields = ("schedule__name",)
    uuid_search_fields = ("schedule", "job_id")
    ordering = ("-fire_time", "-id")
    show_full_result_count = False
