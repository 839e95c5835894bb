"""Cron expressions in a timezone: parsing, validation and fire times.

croniter only walks wall-clock times; this module turns them into instants (UTC) under our
daylight-saving rule, the classic cron one (docs/schedules.md):

* Fixed-hour schedules (the hour field is not ``*``, e.g. ``30 2 * * *``) fire once per wall-clock
  fire time. A time skipped by spring-forward fires as if the clock had not jumped (02:30 fires
  at 03:30 new time, the same instant); a time repeated by fall-back fires at its first
  occurrence only.
* Wildcard-hour schedules (``*/5 * * * *``, ``@hourly``) follow elapsed time: every instant whose
  local time matches fires, so both passes of a repeated hour run and a skipped hour simply
  does not exist.
* Two wall-clock times that land on one instant fire once.

Every search is bounded (``HORIZON_YEARS``), so a never-firing expression such as
``0 0 30 2 *`` is refused in about a millisecond instead of searching forever.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterNotAlphaError, croniter

from taskforge.lib.errors import ValidationFailed

# No fire time within this many years means the expression never fires (Feb 29 comes at
# least every 8 years).
HORIZON_YEARS = 10

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# Wall-clock and UTC differ by at most 14 h, and one DST jump moves a wall time by at most
# 2 h: candidates within this margin of a bound are examined so none is missed at the edges.
_MARGIN = timedelta(hours=3)


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", details={"field": field})


# Names in the tz database that are not places: the host's own zone (it differs between the
# API host and each dispatcher host) and placeholders.
_NOT_PLACES = frozenset({"localtime", "Factory", "posixrules"})


@cache
def _timezones() -> frozenset[str]:
    return frozenset(
        name
        for name in zoneinfo.available_timezones()
        if name not in _NOT_PLACES and not name.startswith(("posix/", "right/"))
    )


def parse_timezone(name: object) -> zoneinfo.ZoneInfo:
    """An IANA timezone by name (``Europe/Berlin``, ``UTC``); 400 naming ``timezone`` if unknown."""
    if not isinstance(name, str) or name not in _timezones():
        raise _invalid("timezone", f"unknown IANA timezone {name!r} (e.g. 'Europe/Berlin', 'UTC')")
    return zoneinfo.ZoneInfo(name)


@dataclass(frozen=True)
class Cron:
    """A validated five-field cron expression (aliases expanded) in a timezone."""

    expression: str
    tz: zoneinfo.ZoneInfo
    minutes: tuple[int, ...]
    hours: tuple[int, ...]

    @property
    def wildcard_hour(self) -> bool:
        return len(self.hours) == 24

    # --- fire times ---------------------------------------------------------------------------

    def next_after(self, moment: datetime) -> datetime | None:
        """The first fire instant strictly after ``moment`` (None: none within the horizon)."""
        following = self.upcoming(moment, 1)
        return following[0] if following else None

    def upcoming(self, moment: datetime, count: int) -> list[datetime]:
        """The next ``count`` fire instants strictly after ``moment``, ascending (UTC)."""
        found: set[datetime] = set()
        stop: datetime | None = None
        for wall in self._walk(self._wall(moment) - _MARGIN, forward=True):
            if stop is not None and wall > stop:
                break
            found.update(i for i in self._instants(wall) if i > moment)
            if stop is None and len(found) >= count:
                # Later wall times map to later instants, give or take a DST jump: look one
                # margin past the count-th instant, then stop.
                stop = self._wall(sorted(found)[count - 1]) + _MARGIN
        return sorted(found)[:count]

    def latest_between(self, start: datetime, end: datetime, count: int) -> list[datetime]:
        """The last ``count`` fire instants in (start, end], ascending (UTC)."""
        found: set[datetime] = set()
        stop = self._wall(start) - _MARGIN
        for wall in self._walk(self._wall(end) + _MARGIN, forward=False):
            if wall < stop:
                break
            found.update(i for i in self._instants(wall) if start < i <= end)
            if len(found) >= count:
                stop = max(stop, self._wall(sorted(found)[-count]) - _MARGIN)
        return sorted(found)[-count:] if count > 0 else []

    def min_interval_seconds(self) -> int:
        """The shortest time between two consecutive fire times (at least 60, at most 3600:
        a single minute value fires at most hourly)."""
        if len(self.minutes) < 2:
            return 3600
        gaps = [b - a for a, b in zip(self.minutes, self.minutes[1:], strict=False)]
        hours = set(self.hours)
        if any((h + 1) % 24 in hours for h in hours):
            gaps.append(60 - self.minutes[-1] + self.minutes[0])
        return 60 * min(gaps)

    # --- internals ----------------------------------------------------------------------------

    def _wall(self, moment: datetime) -> datetime:
        """``moment``'s local wall-clock time, naive."""
        return moment.astimezone(self.tz).replace(tzinfo=None)

    def _walk(self, start: datetime, *, forward: bool) -> Iterator[datetime]:
        """Wall-clock fire times from ``start`` (naive); stops after HORIZON_YEARS without one."""
        it = croniter(self.expression, start, max_years_between_matches=HORIZON_YEARS)
        step = it.get_next if forward else it.get_prev
        while True:
            try:
                yield step(datetime)
            except (CroniterBadDateError, OverflowError, ValueError):
                return

    def _instants(self, wall: datetime) -> list[datetime]:
        """The instants (UTC) a wall-clock fire time stands for, under the DST rule above."""
        first = wall.replace(tzinfo=self.tz, fold=0)
        second = wall.replace(tzinfo=self.tz, fold=1)
        if first.utcoffset() == second.utcoffset():
            return [first.astimezone(UTC)]
        exists = first.astimezone(UTC).astimezone(self.tz).replace(tzinfo=None) == wall
        if exists:  # repeated by fall-back
            if self.wildcard_hour:
                return [first.astimezone(UTC), second.astimezone(UTC)]
            return [first.astimezone(UTC)]
        # Skipped by spring-forward: fold=0 reads it with the old offset, i.e. shifted forward
        # by the jump (02:30 -> 03:30 new time).
        return [] if self.wildcard_hour else [first.astimezone(UTC)]


def parse(expression: object, timezone: object, *, reference: datetime) -> Cron:
    """Validate ``expression`` in ``timezone``; 400 naming ``cron`` or ``timezone`` if bad.

    ``reference`` is now: an expression with no fire time within HORIZON_YEARS of it never
    fires and is refused.
    """
    cron = compile_cron(expression, timezone)
    if not cron.upcoming(reference, 1):
        raise _invalid(
            "cron", f"{cron.expression!r} never fires (no fire time within {HORIZON_YEARS} years)"
        )
    return cron


def compile_cron(expression: object, timezone: object) -> Cron:
    """``parse`` without the never-fires search: for expressions validated when stored."""
    tz = parse_timezone(timezone)
    if not isinstance(expression, str) or not expression.strip():
        raise _invalid("cron", "must be a five-field cron expression such as '*/5 * * * *'")
    text = " ".join(expression.split())
    if len(text) > 100:
        raise _invalid("cron", "must be at most 100 characters")
    normalized = ALIASES.get(text.lower(), text)
    if normalized.startswith("@"):
        raise _invalid("cron", f"unknown alias {text!r}; use one of {', '.join(sorted(ALIASES))}")
    if len(normalized.split(" ")) != 5:
        raise _invalid(
            "cron", "must have exactly five fields: minute hour day-of-month month day-of-week"
        )
    normalized = " ".join(_checked_field(i, f) for i, f in enumerate(normalized.split(" ")))
    _check_day_fields(normalized)
    try:
        fields, _ = croniter.expand(normalized)
    except (CroniterBadCronError, CroniterNotAlphaError, ValueError, KeyError) as exc:
        raise _invalid("cron", f"invalid expression {text!r} ({exc})") from None
    minutes = tuple(range(60)) if fields[0] == ["*"] else tuple(sorted(int(m) for m in fields[0]))
    hours = tuple(range(24)) if fields[1] == ["*"] else tuple(sorted(int(h) for h in fields[1]))
    return Cron(normalized, tz, minutes, hours)


FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
# What each field may hold besides numbers: croniter also knows R (random) and H (hashed),
# which would give a different schedule each time the expression is read.
_FIELD_SYNTAX = (
    re.compile(r"[0-9*,/-]+"),
    re.compile(r"[0-9*,/-]+"),
    re.compile(r"[0-9*,/?LW-]+"),
    re.compile(r"[0-9*,/-]+"),
    re.compile(r"[0-9*,/?L#-]+"),
)
_MONTHS = re.compile(r"JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC")
_DAYS = re.compile(r"SUN|MON|TUE|WED|THU|FRI|SAT")
_SINGLE_RANGE = re.compile(r"(\w+)-(\w+)(?:/\d+)?")


def _checked_field(index: int, field: str) -> str:
    """One field, upper-cased, with only documented syntax, and ``a-a`` ranges as ``a``:
    croniter 7 reads a range whose ends are equal (``1-1``, ``FRI-FRI``) as ``*``."""
    field = field.upper()
    bare = _MONTHS.sub("0", field) if index == 3 else field
    bare = _DAYS.sub("0", bare) if index == 4 else bare
    if not _FIELD_SYNTAX[index].fullmatch(bare):
        raise _invalid("cron", f"the {FIELD_NAMES[index]} field {field!r} is not valid cron syntax")
    parts = []
    for part in field.split(","):
        single = _SINGLE_RANGE.fullmatch(part)
        parts.append(single[1] if single and single[1] == single[2] else part)
    return ",".join(parts)


def _check_day_fields(normalized: str) -> None:
    """croniter ignores a restricted day-of-month next to ``#`` or ``L`` in day-of-week
    (``0 0 13 * 5#2`` would fire on the second Friday only): refuse the combination."""
    _, _, day_of_month, _, day_of_week = normalized.split(" ")
    if day_of_month not in ("*", "?") and ("#" in day_of_week or "L" in day_of_week):
        raise _invalid(
            "cron",
            "a day-of-month cannot be combined with # or L in the day-of-week field; "
            "use one of the two",
        )
