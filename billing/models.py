from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Organization, Project
from accounts.tenancy import TenantQuerySet
from taskforge.lib.ids import uuid7


class Tier(models.TextChoices):
    STARTER = "starter"
    PRO = "pro"
    ENTERPRISE = "enterprise"


# Default limits per tier; a subscription may override any of them in its `limits` JSON.
# requests_per_minute counts API requests; workers long-poll and report in batches, so a busy
# worker fleet makes a few requests per second, not one per job.
TIER_LIMITS: dict[str, dict[str, int | None]] = {
    Tier.STARTER: {
        "jobs_per_month": 100_000,
        "max_concurrency": 50,
        "requests_per_minute": 6_000,
        "max_schedules": 20,
        # The shortest interval a cron schedule may fire at.
        "min_schedule_interval_seconds": 300,
    },
    Tier.PRO: {
        "jobs_per_month": 5_000_000,
        "max_concurrency": 500,
        "requests_per_minute": 60_000,
        "max_schedules": 500,
        "min_schedule_interval_seconds": 60,
    },
    Tier.ENTERPRISE: {
        "jobs_per_month": None,
        "max_concurrency": None,
        "requests_per_minute": None,
        "max_schedules": None,
        "min_schedule_interval_seconds": 60,
    },
}


class SubscriptionStatus(models.TextChoices):
    ACTIVE = "active"
    PAST_DUE = "past_due"
    CANCELED = "canceled"


class Subscription(models.Model):
    """An organization's plan: its tier, limits and current billing period."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    organization = models.OneToOneField(
        Organization, on_delete=models.CASCADE, related_name="subscription"
    )
    tier = models.CharField(max_length=12, choices=Tier.choices, default=Tier.STARTER)
    status = models.CharField(
        max_length=10, choices=SubscriptionStatus.choices, default=SubscriptionStatus.ACTIVE
    )
    limits = models.JSONField(default=dict, blank=True)
    period_start = models.DateTimeField(default=timezone.now)
    period_end = models.DateTimeField(null=True, blank=True)
    external_id = models.CharField(max_length=100, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantQuerySet["Subscription"].as_manager()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(tier__in=Tier.values), name="subscription_tier_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization_id} {self.tier}"


class UsageRecord(models.Model):
    """How much of a metric a project used on one day (one row per org, project, metric, day)."""

    id = models.BigAutoField(primary_key=True)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE)
    project = models.ForeignKey(Project, on_delete=models.CASCADE)
    metric = models.CharField(max_length=50)
    day = models.DateField()
    quantity = models.BigIntegerField(default=0)

    objects = TenantQuerySet["UsageRecord"].as_manager()

    class Meta:
        ordering = ["-day", "metric"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "project", "metric", "day"], name="usage_unique_day"
            ),
            models.CheckConstraint(condition=Q(quantity__gte=0), name="usage_quantity_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.metric}={self.quantity}"


class InvoiceStatus(models.TextChoices):
    DRAFT = "draft"
    OPEN = "open"
    PAID = "paid"
    VOID = "void"


class Invoice(models.Model):
    """A bill for one period, with its line items."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE)
    number = models.CharField(max_length=32, unique=True)
    status = models.CharField(
        max_length=6, choices=InvoiceStatus.choices, default=InvoiceStatus.DRAFT
    )
    period_start = models.DateField()
    period_end = models.DateField()
    currency = models.CharField(max_length=3, default="usd")
    total_cents = models.BigIntegerField(default=0)
    line_items = models.JSONField(default=list, blank=True)
    issued_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = TenantQuerySet["Invoice"].as_manager()

    class Meta:
        ordering = ["-period_start"]
        constraints = [
            models.CheckConstraint(
                condition=Q(period_end__gte=models.F("period_start")), name="invoice_period_order"
            ),
            models.CheckConstraint(condition=Q(total_cents__gte=0), name="invoice_total_positive"),
        ]

    def __str__(self) -> str:
        return self.number
