from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs import queries
from jobs.models import Schedule
from jobs.schedules.cron import parse
from taskforge.lib.errors import ValidationFailed
from taskforge.lib.ids import is_uuid


class Command(BaseCommand):
    help = (
        "List cron schedules with their next fire time (UTC and the schedule's own timezone), "
        "across every organization unless --project is given. --preview N also shows the "
        "next N fire times of each."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", metavar="ID", help="Only this project's schedules.")
        parser.add_argument(
            "--preview", type=int, default=0, metavar="N", help="Show the next N fire times."
        )
        parser.add_argument("--disabled", action="store_true", help="Include disabled schedules.")

    def handle(self, *args: Any, **options: Any) -> None:
        count = options["preview"]
        if not 0 <= count <= 100:
            raise CommandError("--preview must be from 0 to 100")
        # An operator command: it sees every tenant on purpose.
        schedules = Schedule.objects.all_tenants().select_related("queue", "project")
        if options["project"]:
            if not is_uuid(options["project"]):
                raise CommandError(f"--project: {options['project']!r} is not a project id")
            schedules = schedules.filter(project_id=options["project"])
        if not options["disabled"]:
            schedules = schedules.filter(enabled=True)
        rows = list(schedules.order_by("next_run_at", "name"))
        if not rows:
            self.stdout.write("no schedules")
            return
        clock = queries.schedule_clock()
        header = f"{'NAME':<30} {'CRON':<16} {'TIMEZONE':<20} {'QUEUE':<16} NEXT RUN"
        self.stdout.write(header)
        for schedule in rows:
            self.stdout.write(
                f"{schedule.name[:30]:<30} {schedule.cron[:16]:<16} {schedule.timezone[:20]:<20} "
                f"{schedule.queue.name[:16]:<16} {self._next(schedule)}"
            )
            if count:
                try:
                    expression = parse(schedule.cron, schedule.timezone, reference=clock)
                except ValidationFailed as exc:
                    self.stdout.write(f"    cannot preview: {exc}")
                    continue
                for moment in expression.upcoming(clock, count):
                    local = moment.astimezone(expression.tz)
                    self.stdout.write(f"    {moment:%Y-%m-%d %H:%M}Z  ({local:%Y-%m-%d %H:%M %Z})")
        self.stdout.write(f"{len(rows)} schedule(s)")

    def _next(self, schedule: Schedule) -> str:
        if not schedule.enabled:
            return "disabled"
        if schedule.next_run_at is None:
            return "never"
        try:
            tz = parse(schedule.cron, schedule.timezone, reference=schedule.next_run_at).tz
        except ValidationFailed:
            return f"{schedule.next_run_at:%Y-%m-%d %H:%M}Z"
        local = schedule.next_run_at.astimezone(tz)
        return f"{schedule.next_run_at:%Y-%m-%d %H:%M}Z ({local:%H:%M %Z})"
