from __future__ import annotations

from django.contrib import admin
from django.db import models

from accounts.admin import TenantAdmin
from workers.models import QueueWorkerAssignment, Worker


@admin.register(Worker)
class WorkerAdmin(TenantAdmin):
    list_display = (
        "name",
        "project",
        "organization",
        "worker_type",
        "status",
        "capacity",
        "last_heartbeat",
        "created_at",
    )
    list_filter = ("status", "worker_type", "organization")
    list_select_related = ("project", "organization")
    search_fields = ("name", "project__name")
    uuid_search_fields = ("pk",)
    raw_id_fields = ("project",)
    # Heartbeats come from the worker itself.
    readonly_fields = ("id", "last_heartbeat", "created_at")
    # Push endpoints are HTTPS; also Django 6's default, which 5.2 warns about.
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}


@admin.register(QueueWorkerAssignment)
class QueueWorkerAssignmentAdmin(TenantAdmin):
    tenant_from = "queue"
    list_display = ("worker", "queue", "organization", "weight", "is_active")
    list_filter = ("is_active", "organization")
    list_select_related = ("worker", "queue", "organization")
    search_fields = ("worker__name", "queue__name")
    uuid_search_fields = ("worker", "queue")
    raw_id_fields = ("queue", "worker")
