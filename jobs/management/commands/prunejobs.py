import logging
import time
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.db.models import DurationField, ExpressionWrapper, F, Value
from django.db.models.functions import Now

from jobs import queries
from jobs.models import ScheduleRun

logger = logging.getLogger("taskforge.prune")


class Command(BaseCommand):
    help = (
        "Delete finished jobs (succeeded, dead, cancelled) older than their queue's "
        "retention_days, with their executions, logs and dependency edges, in batches; and "
        "schedule run records older than their schedule's queue's retention. "
        "Run it from cron (daily is plenty); it is safe beside running dispatchers."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=int,
            metavar="DAYS",
            help="Use this retention for every queue instead of each queue's retention_days.",
        )
        parser.add_argument(
            "--batch-size", type=int, default=5000, help="Jobs deleted per transaction."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days, batch = options["older_than"], options["batch_size"]
        if days is not None and days < 0:
            raise CommandError("--older-than must be 0 or more days")
        if batch < 1:
            raise CommandError("--batch-size must be at least 1")
        total, started = 0, time.monotonic()
        while True:
            with transaction.atomic(durable=True):
                deleted = queries.prune_jobs(limit=batch, days=days)
            total += deleted
            if deleted:
                self.stdout.write(
                    f"deleted {total} jobs so far ({time.monotonic() - started:.1f} s)"
                )
            if deleted < batch:
                break
        self.stdout.write(f"pruned {total} finished job(s) in {time.monotonic() - started:.1f} s")
        runs = self._prune_schedule_runs(days, batch)
        self.stdout.write(f"pruned {runs} schedule run record(s)")

    def _prune_schedule_runs(self, days: int | None, batch: int) -> int:
        """The run history of schedules, by the same retention (a */1 schedule adds 1,440 a day)."""
        retention = (
            Value(timedelta(days=days))
            if days is not None
            else ExpressionWrapper(
                F("schedule__queue__retention_days") * Value(timedelta(days=1)),
                output_field=DurationField(),
            )
        )
        # An operator command over every tenant, on purpose.
        runs = ScheduleRun.objects.all_tenants()
        total = 0
        while True:
            with transaction.atomic(durable=True):
                doomed = list(
                    runs.alias(cutoff=Now() - retention)
                    .filter(created_at__lt=F("cutoff"))
                    .order_by("created_at")
                    .values_list("pk", flat=True)[:batch]
                )
                runs.filter(pk__in=doomed).delete()
            total += len(doomed)
            if len(doomed) < batch:
                return total
