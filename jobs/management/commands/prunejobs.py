import logging
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from jobs import claiming

logger = logging.getLogger("taskforge.prune")


class Command(BaseCommand):
    help = (
        "Delete finished jobs (succeeded, dead, cancelled) older than their queue's "
        "retention_days, with their executions, logs and dependency edges, in batches. "
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
                deleted = claiming.prune_jobs(limit=batch, days=days)
            total += deleted
            if deleted:
                self.stdout.write(
                    f"deleted {total} jobs so far ({time.monotonic() - started:.1f} s)"
                )
            if deleted < batch:
                break
        self.stdout.write(f"pruned {total} finished job(s) in {time.monotonic() - started:.1f} s")
