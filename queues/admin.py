from __future__ import annotations

from django.contrib import admin

from accounts.admin import TenantAdmin
from queues.models import Queue


@admin.register(Queue)
class QueueAdmin(TenantAdmin):
    list_display = (
        "name",
        "project",
        "organization",
        "priority",
        "paused",
        "max_concurrency",
        "max_attempts",
        "timeout_seconds",
        "created_at",
    )
    list_filter = ("paused", "backoff_jitter", "organization")
    list_select_related = ("project", "organization")
    search_fields = ("name", "project__name", "organization__name")
    uuid_search_fields = ("pk",)
    raw_id_fields = ("project",)
    readonly_fields = ("id", "created_at")
