from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.models import F, Q
from django.utils.timezone import now

from accounts.models import Organization, Project
from accounts.tenancy import TenantQuerySet
from queues.models import Queue
from taskforge.lib.ids import uuid7


class JobState(models.TextChoices):
    # Waiting for its parent jobs to succeed.
    BLOCKED = "blocked"
    # Waiting for run_at (delayed, or a retry backing off).
    SCHEDULED = "scheduled"
    # Ready; the dispatcher hands it to a worker.
    PENDING = "pending"
    # Assigned to a worker under a lease.
    PROCESSING = "processing"
    # Finished successfully.
    SUCCEEDED = "succeeded"
    # Out of attempts, or failed permanently: the dead-letter queue.
    DEAD = "dead"
    # Cancelled by a user, or because a parent ended dead or cancelled.
    CANCELLED = "cancelled"


TERMINAL_STATES = (JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED)


class Batch(models.Model):
    """Jobs submitted together; progress is counted over its jobs."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE)
    project = models.ForeignKey(Project, on_delete=models.CASCADE)
    total = models.PositiveIntegerField(default=0)
    # Optional job specs (queue, job_type, payload…) enqueued once when every job of the
    # batch has finished: on_complete whatever the outcome, on_success only if all succeeded.
    on_complete = models.JSONField(null=True, blank=True)
    on_success = models.JSONField(null=True, blank=True)
    # Set, under the batch's row lock, when the batch was first seen finished and its
    # callbacks enqueued: the guard that makes them fire exactly once.
    callback_enqueued_at = models.DateTimeField(null=True, blank=True)
    on_complete_job_id = models.UUIDField(null=True, blank=True)
    on_success_job_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(default=now)

    objects = TenantQuerySet["Batch"].as_manager()

    class Meta:
        verbose_name_plural = "batches"
        ordering = ["-created_at"]
        indexes = [
            # The dispatcher's safety sweep: batches whose callbacks are still owed.
            models.Index(
                fields=["created_at"],
                name="batch_callback_owed",
                condition=Q(callback_enqueued_at__isnull=True)
                & (Q(on_complete__isnull=False) | Q(on_success__isnull=False)),
            ),
        ]

    def __str__(self) -> str:
        return f"batch {self.id}"

    @property
    def has_callbacks(self) -> bool:
        return self.on_complete is not None or self.on_success is not None


class Job(models.Model):
    """One unit of work. Hot columns are changed only by the SQL in jobs/sql/."""

    # UUIDv7: time-ordered, so inserts append to the primary-key index.
    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    # The foreign keys' own indexes are left out: every insert pays for each index, and the
    # composite indexes below lead with project, queue and batch already.
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, db_index=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, db_index=False)
    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, related_name="jobs", db_index=False)
    job_type = models.CharField(max_length=200)
    payload = models.JSONField(default=dict)
    state = models.CharField(max_length=10, choices=JobState.choices, default=JobState.PENDING)
    priority = models.PositiveSmallIntegerField(default=5)
    # Orders jobs of one priority, higher first: a client with a finer scale than 0-9 keeps its
    # exact order (the Django Tasks backend sends Django's -100..100 here).
    sub_priority = models.SmallIntegerField(default=0, db_default=0)
    run_at = models.DateTimeField(default=now)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=5)
    timeout_seconds = models.PositiveIntegerField(default=300)
    # NULL, not "", when absent: the unique index covers only jobs that have a key.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    tags = ArrayField(models.CharField(max_length=100), default=list, blank=True)
    result = models.JSONField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    # The worker holding the job; an id, not a foreign key: workers sit above jobs.
    worker_id = models.UUIDField(null=True, blank=True)
    # Fencing token, new on every claim; a result carrying an older one is refused.
    lease_token = models.UUIDField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # When the worker's fetch claimed and delivered it (the same moment as started_at).
    delivered_at = models.DateTimeField(null=True, blank=True)
    # Parents that have not yet succeeded; the job leaves `blocked` when this reaches 0.
    pending_parents = models.PositiveIntegerField(default=0)
    batch = models.ForeignKey(
        Batch, on_delete=models.SET_NULL, null=True, blank=True, related_name="jobs", db_index=False
    )
    created_at = models.DateTimeField(default=now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = TenantQuerySet["Job"].as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(priority__lte=9), name="job_priority_0_9"),
            models.CheckConstraint(
                condition=Q(sub_priority__gte=-100, sub_priority__lte=100),
                name="job_sub_priority_range",
            ),
            models.CheckConstraint(condition=Q(state__in=JobState.values), name="job_state_valid"),
            models.CheckConstraint(condition=Q(max_attempts__gte=1), name="job_max_attempts_1"),
            models.CheckConstraint(condition=Q(timeout_seconds__gte=1), name="job_timeout_1"),
            models.CheckConstraint(
                condition=~Q(state=JobState.PROCESSING)
                | (Q(worker_id__isnull=False) & Q(lease_token__isnull=False)),
                name="job_processing_has_lease",
            ),
            models.UniqueConstraint(
                fields=["project", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="job_idempotency_key_unique",
            ),
        ]
        indexes = [
            # The claim: exactly the ORDER BY of workers/sql/claim_for_worker.sql, only pending
            # rows, so its plan does not depend on table statistics and stays small under any
            # backlog.
            models.Index(
                fields=["queue", "-priority", "-sub_priority", "run_at", "id"],
                name="job_claim_pending",
                condition=Q(state=JobState.PENDING),
            ),
            models.Index(
                fields=["run_at"], name="job_due_scheduled", condition=Q(state=JobState.SCHEDULED)
            ),
            models.Index(
                fields=["lease_expires_at"],
                name="job_lease_processing",
                condition=Q(state=JobState.PROCESSING),
            ),
            models.Index(
                fields=["worker_id"],
                name="job_worker_processing",
                condition=Q(state=JobState.PROCESSING),
            ),
            # A running job cancelled by an operator stays on its worker's slot (its
            # lease_expires_at set) until the worker reports it gone: counted busy by the claim.
            models.Index(
                fields=["worker_id"],
                name="job_worker_held_cancelled",
                condition=Q(state=JobState.CANCELLED, lease_expires_at__isnull=False),
            ),
            # Pending rows are indexed once, in claim order (job_claim_pending). These two
            # leave them out on purpose: without table statistics the planner would otherwise
            # pick (queue, state) for the claim, estimate one row, and sort the whole backlog
            # (65 ms instead of 4 ms at 100k pending). It also spares every submit two index
            # insertions.
            models.Index(
                fields=["state", "run_at", "priority"],
                name="job_state_run_at_prio",
                condition=~Q(state=JobState.PENDING),
            ),
            models.Index(
                fields=["queue", "state"],
                name="job_queue_state",
                condition=~Q(state=JobState.PENDING),
            ),
            models.Index(fields=["project", "-created_at"], name="job_project_created"),
            # The dashboard's job list filtered by state, newest first (keyset on created_at,
            # id). Pending rows stay out, as above: they are listed through
            # job_project_created, where a backlog makes them dense anyway.
            models.Index(
                fields=["project", "state", "-created_at", "-id"],
                name="job_project_state_created",
                condition=~Q(state=JobState.PENDING),
            ),
            # Search by a payload field (`payload.user_id:42` is `payload @> '{"user_id": 42}'`):
            # jsonb_path_ops indexes containment only, and is a third the size of jsonb_ops.
            GinIndex(fields=["payload"], name="job_payload_path", opclasses=["jsonb_path_ops"]),
            # The job list filtered by type, newest first: a rare type must not scan the
            # project (0.5 s at 100,000 jobs without it, 2 ms with it).
            models.Index(
                fields=["project", "job_type", "-created_at", "-id"], name="job_project_type"
            ),
            # The tag filter (`tags @> '{x}'`); most jobs have no tags, so it stays small.
            GinIndex(fields=["tags"], name="job_tags"),
            models.Index(
                fields=["batch", "state"],
                name="job_batch_state",
                condition=Q(batch__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.job_type} {self.id}"

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class ParentFailure(models.TextChoices):
    # The child is cancelled, with the failed ancestor named in its last_error.
    CANCEL = "cancel"
    # The failed parent counts as finished: the child runs once its other parents are done.
    RUN = "run"


class JobDependency(models.Model):
    """Edge of a job graph: ``child`` waits for ``parent`` to finish (succeed, by default)."""

    id = models.BigAutoField(primary_key=True)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE)
    parent = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="child_edges")
    child = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="parent_edges")
    # What happens to the child when this parent ends dead or cancelled.
    on_parent_failure = models.CharField(
        max_length=6, choices=ParentFailure.choices, default=ParentFailure.CANCEL
    )

    objects = TenantQuerySet["JobDependency"].as_manager()

    class Meta:
        verbose_name_plural = "job dependencies"
        constraints = [
            models.UniqueConstraint(fields=["parent", "child"], name="jobdependency_unique"),
            models.CheckConstraint(condition=~Q(parent=F("child")), name="jobdependency_no_self"),
            models.CheckConstraint(
                condition=Q(on_parent_failure__in=ParentFailure.values),
                name="jobdependency_on_parent_failure_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.parent_id} → {self.child_id}"


class ExecutionStatus(models.TextChoices):
    # The worker has the job.
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # The lease ran out before a result came back.
    TIMED_OUT = "timed_out"


class JobExecution(models.Model):
    """One attempt at a job."""

    id = models.BigAutoField(primary_key=True)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE)
    project = models.ForeignKey(Project, on_delete=models.CASCADE)
    # Indexed by jobexecution_claim_unique, which leads with job.
    job = models.ForeignKey(
        Job, on_delete=models.CASCADE, related_name="executions", db_index=False
    )
    # Attempt number at the time; a manual retry resets the job's count, so it can repeat.
    attempt = models.PositiveIntegerField()
    # The claim's fencing token: identifies this execution together with the job.
    lease_token = models.UUIDField(null=True, blank=True)
    worker_id = models.UUIDField(null=True, blank=True)
    status = models.CharField(
        max_length=10, choices=ExecutionStatus.choices, default=ExecutionStatus.STARTED
    )
    error = models.TextField(blank=True, default="")
    # The worker's full traceback of a failed attempt, when it sent one (error is its summary).
    # db_default: the claim's raw INSERT (claim_for_worker.sql) leaves it out.
    traceback = models.TextField(blank=True, default="", db_default="")
    started_at = models.DateTimeField(default=now)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = TenantQuerySet["JobExecution"].as_manager()

    class Meta:
        ordering = ["job", "started_at", "id"]
        constraints = [
            # One execution per claim; completion finds it by (job, lease token).
            models.UniqueConstraint(
                fields=["job", "lease_token"], name="jobexecution_claim_unique"
            ),
            models.CheckConstraint(
                condition=Q(status__in=ExecutionStatus.values), name="jobexecution_status_valid"
            ),
        ]
        indexes = [
            models.Index(fields=["worker_id", "-started_at"], name="execution_worker"),
            # The latest failures of a project (the Overview's error groups), without a scan.
            models.Index(
                fields=["project", "-finished_at"],
                name="execution_project_failed",
                condition=Q(status__in=["failed", "timed_out"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.job_id} attempt {self.attempt}"


class LogLevel(models.TextChoices):
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


class ExecutionLog(models.Model):
    """A log line a worker reported for one execution."""

    id = models.BigAutoField(primary_key=True)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="logs")
    execution = models.ForeignKey(JobExecution, on_delete=models.CASCADE, related_name="logs")
    level = models.CharField(max_length=5, choices=LogLevel.choices, default=LogLevel.INFO)
    message = models.TextField()
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=now)

    objects = TenantQuerySet["ExecutionLog"].as_manager()

    class Meta:
        ordering = ["job", "id"]
        indexes = [models.Index(fields=["job", "id"], name="executionlog_job")]
        constraints = [
            models.CheckConstraint(condition=Q(level__in=LogLevel.values), name="log_level_valid"),
        ]

    def __str__(self) -> str:
        return f"[{self.level}] {self.message[:60]}"


class Overlap(models.TextChoices):
    # Start a new run even if the previous one has not finished.
    ALLOW = "allow"
    # Skip a fire time while the previous run is unfinished.
    SKIP = "skip"


class CatchUp(models.TextChoices):
    # After downtime, skip the missed fire times.
    NONE = "none"
    # After downtime, run once for the latest missed fire time.
    LATEST = "latest"
    # After downtime, run every missed fire time (bounded).
    ALL = "all"


class Schedule(models.Model):
    """A cron schedule that enqueues a job at each fire time."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE)
    project = models.ForeignKey(Project, on_delete=models.CASCADE)
    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, related_name="schedules")
    name = models.CharField(max_length=100)
    cron = models.CharField(max_length=100)
    timezone = models.CharField(max_length=64, default="UTC")
    job_type = models.CharField(max_length=200)
    payload = models.JSONField(default=dict, blank=True)
    priority = models.PositiveSmallIntegerField(default=5)
    enabled = models.BooleanField(default=True)
    overlap = models.CharField(max_length=5, choices=Overlap.choices, default=Overlap.ALLOW)
    catch_up = models.CharField(max_length=6, choices=CatchUp.choices, default=CatchUp.LATEST)
    # With catch_up=all: at most this many missed fire times run (the most recent ones).
    catch_up_max = models.PositiveIntegerField(default=100)
    # The next fire time (UTC); null while disabled. Only the dispatcher's fire step and the
    # schedule services move it, under the schedule's row lock.
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_job_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(default=now)

    objects = TenantQuerySet["Schedule"].as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="schedule_name_unique"),
            models.CheckConstraint(condition=Q(priority__lte=9), name="schedule_priority_0_9"),
            models.CheckConstraint(
                condition=Q(overlap__in=Overlap.values), name="schedule_overlap_valid"
            ),
            models.CheckConstraint(
                condition=Q(catch_up__in=CatchUp.values), name="schedule_catch_up_valid"
            ),
            models.CheckConstraint(
                condition=Q(catch_up_max__gte=1) & Q(catch_up_max__lte=1000),
                name="schedule_catch_up_max_1_1000",
            ),
        ]
        indexes = [
            models.Index(fields=["next_run_at"], name="schedule_due", condition=Q(enabled=True)),
        ]

    def __str__(self) -> str:
        return self.name


class RunOutcome(models.TextChoices):
    # A job was enqueued for this fire time.
    ENQUEUED = "enqueued"
    # overlap=skip and the previous run had not finished: no job.
    SKIPPED_OVERLAP = "skipped_overlap"
    # The engine refused the run's job (see error); not retried.
    FAILED = "failed"


class ScheduleRun(models.Model):
    """One fire time of a schedule, recorded once: the unique constraint is what makes a
    schedule fire exactly once per fire time however many dispatchers race for it."""

    id = models.BigAutoField(primary_key=True)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE)
    # Indexed by schedulerun_history, which leads with schedule.
    schedule = models.ForeignKey(
        Schedule, on_delete=models.CASCADE, related_name="runs", db_index=False
    )
    # The cron fire time this run stands for (UTC); for a manual trigger, when it was asked.
    fire_time = models.DateTimeField()
    manual = models.BooleanField(default=False)
    outcome = models.CharField(max_length=16, choices=RunOutcome.choices)
    # The job enqueued (no foreign key: finished jobs are pruned, their runs stay).
    job_id = models.UUIDField(null=True, blank=True)
    # Why a failed run's job was refused.
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=now)

    objects = TenantQuerySet["ScheduleRun"].as_manager()

    class Meta:
        ordering = ["schedule", "-fire_time", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["schedule", "fire_time"],
                condition=Q(manual=False),
                name="schedulerun_once_per_fire_time",
            ),
            models.CheckConstraint(
                condition=Q(outcome__in=RunOutcome.values), name="schedulerun_outcome_valid"
            ),
        ]
        indexes = [models.Index(fields=["schedule", "-fire_time"], name="schedulerun_history")]

    def __str__(self) -> str:
        return f"{self.schedule_id} at {self.fire_time:%Y-%m-%d %H:%M}"


class JobThroughput(models.Model):
    """Finished attempts per queue and minute: what the dashboard's charts and rates read.

    Written by the statements that finish attempts (complete_jobs.sql, fail_jobs.sql) in the
    same transaction, so a chart never scans jobs. Each database session counts into a row of
    its own (``shard`` = its backend pid), so concurrent completions never wait for one
    another on a counter row. The dispatcher's maintenance folds the rows of a minute that is
    over into shard 0, coarsens the minutes older than a day into hour rows (shard 1) and
    deletes what is older than 8 days (jobs/services/stats.py, docs/dashboard-data.md).
    Readers sum over shards, so every folding state reads the same.
    """

    id = models.BigAutoField(primary_key=True)
    # No foreign-key constraints in the database: the check would take KEY SHARE on the
    # queue, project and organization rows inside every completion's transaction, and a queue
    # deletion holds its queue FOR UPDATE while it waits for the jobs those completions lock
    # (a deadlock). Django's collector still deletes these rows with their queue or project.
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, db_index=False, db_constraint=False
    )
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, db_index=False, db_constraint=False
    )
    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, db_index=False, db_constraint=False)
    # The start of the bucket: a minute, or an hour once coarsened (shard 1).
    minute = models.DateTimeField()
    # 0: a folded minute; 1: a coarsened hour; otherwise the pid of the backend that counted
    # into it (never 0 or 1), folded once the minute is over.
    shard = models.PositiveIntegerField(default=0)
    # Jobs that succeeded.
    succeeded = models.PositiveIntegerField(default=0)
    # Attempts that failed or timed out, whether the job was retried or not.
    failed = models.PositiveIntegerField(default=0)
    # Jobs that ended dead (out of attempts, or failed permanently).
    dead = models.PositiveIntegerField(default=0)

    objects = TenantQuerySet["JobThroughput"].as_manager()

    class Meta:
        verbose_name_plural = "job throughput"
        constraints = [
            models.UniqueConstraint(
                fields=["queue", "minute", "shard"], name="jobthroughput_bucket_unique"
            ),
        ]
        indexes = [
            models.Index(fields=["project", "minute"], name="jobthroughput_project"),
            # The maintenance's ranges: the backends' rows of past minutes (shard >= 2), the
            # folded minutes older than a day (shard 0), the hours older than 8 days (shard 1);
            # each a range of this index, never a scan of the whole table.
            models.Index(fields=["shard", "minute"], name="jobthroughput_fold"),
        ]

    def __str__(self) -> str:
        return f"{self.queue_id} {self.minute:%Y-%m-%d %H:%M}"
