from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Organization, Project
from accounts.tenancy import TenantQuerySet
from taskforge.lib.ids import uuid7


class Jitter(models.TextChoices):
    # delay = random(0, backoff): spreads retries most, the AWS-recommended default.
    FULL = "full"
    # delay = backoff/2 + random(0, backoff/2): never retries sooner than half the backoff.
    EQUAL = "equal"
    # delay = backoff exactly.
    NONE = "none"


RATE_LIMIT_HELP = (
    "At most this many of the queue's jobs start per second, counted across all dispatchers "
    "(a job starts when it is assigned to a worker). A token bucket: idle time saves up a burst "
    "of at most max(rate, 1) jobs that may start at once; fractional rates work (0.5 = one job "
    "every 2 s). Null = no limit."
)


class QueueQuerySet(TenantQuerySet["Queue"]):
    def active(self) -> QueueQuerySet:
        return self.filter(paused=False)


class Queue(models.Model):
    """A named stream of jobs in a project, with its priority, limits and retry policy."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="queues")
    name = models.CharField(max_length=100)
    # 0-9; jobs of higher-priority queues are claimed first.
    priority = models.PositiveSmallIntegerField(default=5)
    paused = models.BooleanField(default=False)
    # At most this many of the queue's jobs run at once, across all workers; null = no cap.
    max_concurrency = models.PositiveIntegerField(null=True, blank=True)
    max_attempts = models.PositiveIntegerField(default=5)
    backoff_base_seconds = models.FloatField(default=1.0)
    backoff_max_seconds = models.FloatField(default=3600.0)
    backoff_multiplier = models.FloatField(default=2.0)
    backoff_jitter = models.CharField(max_length=8, choices=Jitter.choices, default=Jitter.FULL)
    timeout_seconds = models.PositiveIntegerField(default=300)
    rate_limit_per_second = models.FloatField(
        null=True,
        blank=True,
        help_text=RATE_LIMIT_HELP,
    )
    # The token bucket behind rate_limit_per_second, kept by the claim at fetch only
    # (jobs/sql/lock_rate_limits.sql reads it, workers/sql/claim_for_worker.sql spends it): the
    # tokens left as of rate_refilled_at. Null means a full bucket (no job started under the
    # limit yet).
    rate_tokens = models.FloatField(null=True, editable=False)
    rate_refilled_at = models.DateTimeField(null=True, editable=False)
    retention_days = models.PositiveIntegerField(default=7)
    created_at = models.DateTimeField(default=timezone.now)

    objects = QueueQuerySet.as_manager()

    class Meta:
        ordering = ["-priority", "name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="queue_name_unique"),
            models.CheckConstraint(condition=Q(priority__lte=9), name="queue_priority_0_9"),
            models.CheckConstraint(
                condition=Q(max_concurrency__isnull=True) | Q(max_concurrency__gte=1),
                name="queue_max_concurrency_positive",
            ),
            models.CheckConstraint(condition=Q(max_attempts__gte=1), name="queue_max_attempts_1"),
            models.CheckConstraint(
                condition=Q(backoff_base_seconds__gte=0)
                & Q(backoff_max_seconds__gte=0)
                & Q(backoff_multiplier__gte=1),
                name="queue_backoff_sane",
            ),
            models.CheckConstraint(
                condition=Q(backoff_jitter__in=Jitter.values), name="queue_backoff_jitter_valid"
            ),
            models.CheckConstraint(condition=Q(timeout_seconds__gte=1), name="queue_timeout_1"),
            models.CheckConstraint(
                condition=Q(rate_limit_per_second__isnull=True) | Q(rate_limit_per_second__gt=0),
                name="queue_rate_limit_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.name
