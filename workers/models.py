from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Organization, Project
from accounts.tenancy import TenantQuerySet
from queues.models import Queue
from taskforge.lib.ids import uuid7


class WorkerType(models.TextChoices):
    GENERAL = "general"
    SPECIALIZED_CPU = "specialized_cpu"
    SPECIALIZED_IO = "specialized_io"


class WorkerStatus(models.TextChoices):
    # Heartbeating; gets new jobs.
    ONLINE = "online"
    # Finishing what it holds; gets no new jobs.
    DRAINING = "draining"
    # Silent past the timeout, or deregistered.
    OFFLINE = "offline"


class WorkerQuerySet(TenantQuerySet["Worker"]):
    def online(self) -> WorkerQuerySet:
        return self.filter(status=WorkerStatus.ONLINE)


class Worker(models.Model):
    """A customer process that runs jobs, identified by name within its project."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="workers")
    name = models.CharField(max_length=200)
    worker_type = models.CharField(
        max_length=16, choices=WorkerType.choices, default=WorkerType.GENERAL
    )
    status = models.CharField(
        max_length=10, choices=WorkerStatus.choices, default=WorkerStatus.ONLINE
    )
    # Concurrent job slots.
    capacity = models.PositiveIntegerField(default=1)
    last_heartbeat = models.DateTimeField(default=timezone.now)
    # Reserved for push delivery (jobs POSTed to the worker), which TaskForge does not offer
    # yet: stored and shown as registered, never called. Workers long-poll for their jobs.
    endpoint_url = models.URLField(blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    # The job types this worker has handlers for (sent at registration); a fetch claims only
    # jobs of these types. NULL: any type (a worker that dispatches on its own).
    job_types = ArrayField(models.CharField(max_length=200), null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = WorkerQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="worker_name_unique"),
            models.CheckConstraint(condition=Q(capacity__gte=1), name="worker_capacity_1"),
            models.CheckConstraint(
                condition=Q(status__in=WorkerStatus.values), name="worker_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(worker_type__in=WorkerType.values), name="worker_type_valid"
            ),
        ]
        indexes = [
            models.Index(fields=["status", "last_heartbeat"], name="worker_status_heartbeat"),
            models.Index(fields=["project", "status"], name="worker_project_status"),
        ]

    def __str__(self) -> str:
        return self.name


class QueueWorkerAssignment(models.Model):
    """A worker serves a queue; weights split its slots between busy queues."""

    id = models.BigAutoField(primary_key=True)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE)
    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, related_name="assignments")
    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="assignments")
    weight = models.PositiveIntegerField(default=1)
    is_active = models.BooleanField(default=True)

    objects = TenantQuerySet["QueueWorkerAssignment"].as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["queue", "worker"], name="assignment_unique"),
            models.CheckConstraint(condition=Q(weight__gte=1), name="assignment_weight_1"),
        ]

    def __str__(self) -> str:
        return f"{self.worker_id} ← {self.queue_id} weight {self.weight}"


class WebProcess(models.Model):
    """A running web process and when it last said so (its beacon, workers/webtier.py).

    Not a tenant's row: the web tier's own liveness, read by the dispatcher so that it blames no
    worker for a silence the server caused (the web tier down, or just back).
    """

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["last_seen"], name="webprocess_last_seen")]

    def __str__(self) -> str:
        return f"web {self.hostname}:{self.pid}"
