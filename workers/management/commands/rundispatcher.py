import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from workers.dispatcher import Dispatcher


class Command(BaseCommand):
    help = (
        "Run the TaskForge dispatcher: promote due jobs, fire cron schedules, expire leases "
        "of silent workers (workers claim their jobs themselves when they fetch). Run as many "
        "as you like against one database. "
        "First SIGTERM/SIGINT finishes the current step and exits 0; a second exits at once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="Run one tick and exit.")
        parser.add_argument(
            "--poll-interval",
            type=float,
            default=None,
            help="Seconds between ticks when no step is behind (default TASKFORGE_POLL_INTERVAL).",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=None,
            help="Most rows one step handles per transaction (default TASKFORGE_BATCH_SIZE).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] is not None and options["batch_size"] < 1:
            self.stderr.write("--batch-size must be at least 1")
            raise SystemExit(2)
        if options["poll_interval"] is not None and options["poll_interval"] <= 0:
            self.stderr.write("--poll-interval must be positive")
            raise SystemExit(2)
        logging.getLogger("taskforge").setLevel(logging.INFO)
        dispatcher = Dispatcher(
            poll_interval=options["poll_interval"], batch_size=options["batch_size"]
        )
        dispatcher.run(once=options["once"])
