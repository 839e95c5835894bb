from __future__ import annotations

from django.contrib import admin

from accounts.admin import ReadOnlyTenantAdmin, TenantAdmin
from billing.models import Invoice, Subscription, UsageRecord


@admin.register(Subscription)
class SubscriptionAdmin(TenantAdmin):
    tenant_from = "organization"
    list_display = ("organization", "tier", "status", "period_start", "period_end", "external_id")
    list_filter = ("tier", "status")
    list_select_related = ("organization",)
    search_fields = ("organization__name", "organization__slug", "=external_id")
    raw_id_fields = ("organization",)
    readonly_fields = ("id", "created_at")


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyTenantAdmin):
    list_display = ("day", "organization", "project", "metric", "quantity")
    list_filter = ("metric", "organization")
    list_select_related = ("organization", "project")
    search_fields = ("metric", "organization__name", "project__name")
    date_hierarchy = "day"
    show_full_result_count = False


@admin.register(Invoice)
class InvoiceAdmin(TenantAdmin):
    tenant_from = "organization"
    list_display = (
        "number",
        "organization",
        "status",
        "period_start",
        "period_end",
        "total",
        "issued_at",
    )
    list_filter = ("status", "organization")
    list_select_related = ("organization",)
    search_fields = ("=number", "organization__name")
    raw_id_fields = ("organization",)
    readonly_fields = ("id", "created_at")

    @admin.display(description="total", ordering="total_cents")
    def total(self, obj: Invoice) -> str:
        units, cents = divmod(obj.total_cents, 100)
        return f"{units:,}.{cents:02d} {obj.currency.upper()}"
