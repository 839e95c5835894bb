"""jobs/schedules/cron.py: parsing, the bounded never-firing check, and fire times under the
DST rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobs.schedules.cron import HORIZON_YEARS, parse
from taskforge.lib.errors import ValidationFailed

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local(times: list[datetime], tz: str) -> list[str]:
    cron = parse("* * * * *", tz, reference=NOW)
    return [f"{t.astimezone(cron.tz):%m-%d %H:%M %Z}" for t in times]


@pytest.mark.parametrize(
    ("alias", "expression"),
    [("@hourly", "0 * * * *"), ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"),
     ("@weekly", "0 0 * * 0"), ("@monthly", "0 0 1 * *"), ("@yearly", "0 0 1 1 *"),
     ("@ANNUALLY", "0 0 1 1 *")],
)  # fmt: skip
def test_aliases_expand_to_five_fields(alias, expression):
    assert parse(alias, "UTC", reference=NOW).expression == expression


@pytest.mark.parametrize(
    ("expression", "timezone", "field"),
    [
        ("", "UTC", "cron"),
        ("not a cron", "UTC", "cron"),
        ("61 * * * *", "UTC", "cron"),
        ("* * * * * *", "UTC", "cron"),
        ("* * * *", "UTC", "cron"),
        ("@reboot", "UTC", "cron"),
        ("0 0 30 2 *", "UTC", "cron"),
        ("0 0 31 4,6,9,11 *", "UTC", "cron"),
        (5, "UTC", "cron"),
        ("0 * * * *", "Mars/Base", "timezone"),
        ("0 * * * *", "", "timezone"),
        ("0 * * * *", "../etc/passwd", "timezone"),
        ("0 * * * *", None, "timezone"),
    ],
)
def test_bad_input_names_the_field(expression, timezone, field):
    with pytest.raises(ValidationFailed) as caught:
        parse(expression, timezone, reference=NOW)
    assert caught.value.details == {"field": field}


def test_a_never_firing_expression_is_refused_with_the_horizon_named():
    with pytest.raises(ValidationFailed, match=f"never fires .*{HORIZON_YEARS} years"):
        parse("0 0 30 2 *", "UTC", reference=NOW)


def test_february_29th_fires_every_leap_year_and_skips_2100():
    cron = parse("0 0 29 2 *", "UTC", reference=NOW)
    assert cron.upcoming(NOW, 3) == [utc(2028, 2, 29), utc(2032, 2, 29), utc(2036, 2, 29)]
    # 2100 is not a leap year: 8 years between 2096 and 2104, within the search horizon.
    assert cron.next_after(utc(2096, 3, 1)) == utc(2104, 2, 29)


def test_fixed_hours_fire_once_per_wall_clock_time_across_berlin_changes():
    cron = parse("30 2 * * *", "Europe/Berlin", reference=NOW)
    spring = cron.upcoming(utc(2026, 3, 28, 12), 2)
    assert local(spring, "Europe/Berlin") == ["03-29 03:30 CEST", "03-30 02:30 CEST"]
    fall = cron.upcoming(utc(2026, 10, 24, 12), 2)
    assert local(fall, "Europe/Berlin") == ["10-25 02:30 CEST", "10-26 02:30 CET"]


def test_times_skipped_by_spring_forward_that_meet_real_ones_fire_once():
    # 02:00 and 02:30 do not exist on 2026-03-29 in Berlin; shifted by the jump they are the
    # same instants as 03:00 and 03:30.
    cron = parse("0,30 2,3 * * *", "Europe/Berlin", reference=NOW)
    times = cron.upcoming(utc(2026, 3, 28, 12), 4)
    assert local(times, "Europe/Berlin") == [
        "03-29 03:00 CEST", "03-29 03:30 CEST", "03-30 02:00 CEST", "03-30 02:30 CEST",
    ]  # fmt: skip


def test_wildcard_hours_follow_elapsed_time_across_new_york_changes():
    cron = parse("*/30 * * * *", "America/New_York", reference=NOW)
    fall = cron.upcoming(utc(2026, 11, 1, 4, 45), 6)
    assert [t - fall[0] for t in fall] == [timedelta(minutes=30 * i) for i in range(6)]
    assert local(fall, "America/New_York") == [
        "11-01 01:00 EDT", "11-01 01:30 EDT", "11-01 01:00 EST", "11-01 01:30 EST",
        "11-01 02:00 EST", "11-01 02:30 EST",
    ]  # fmt: skip
    spring = cron.upcoming(utc(2026, 3, 8, 6, 15), 3)
    assert local(spring, "America/New_York") == [
        "03-08 01:30 EST", "03-08 03:00 EDT", "03-08 03:30 EDT",
    ]  # fmt: skip


def test_half_hour_offsets_are_honoured():
    cron = parse("0 9 * * *", "Asia/Kolkata", reference=NOW)
    assert cron.next_after(NOW) == utc(2026, 11, 25, 3, 30)


def test_latest_between_returns_the_most_recent_fire_times_oldest_first():
    cron = parse("*/5 * * * *", "UTC", reference=NOW)
    found = cron.latest_between(utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 1, 0), 3)
    assert found == [utc(2026, 1, 1, 0, 50), utc(2026, 1, 1, 0, 55), utc(2026, 1, 1, 1, 0)]
    # The start is exclusive, the end inclusive.
    assert cron.latest_between(utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 0, 5), 10) == [
        utc(2026, 1, 1, 0, 5)
    ]


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [("* * * * *", 60), ("*/5 * * * *", 300), ("0,1 3 * * *", 60), ("0,59 3 * * *", 3540),
     ("0,59 3,4 * * *", 60), ("15,45 * * * *", 1800), ("0 * * * *", 3600), ("@daily", 3600)],
)  # fmt: skip
def test_min_interval_is_the_shortest_gap_between_fire_times(expression, seconds):
    assert parse(expression, "UTC", reference=NOW).min_interval_seconds() == seconds


@pytest.mark.parametrize(
    ("expression", "same_as"),
    [("0 9 * * 1-1", "0 9 * * 1"), ("5-5 * * * *", "5 * * * *"), ("1-1,3 * * * *", "1,3 * * * *"),
     ("0 3-3 * * *", "0 3 * * *"), ("0 0 * * fri-fri", "0 0 * * 5"), ("5-5/2 * * * *", "5 * * * *"),
     ("0 0 29 FEB-FEB *", "0 0 29 2 *")],
)  # fmt: skip
def test_a_range_whose_ends_are_equal_is_that_one_value(expression, same_as):
    # croniter 7 reads such a range as "*" (every day, every minute…).
    assert parse(expression, "UTC", reference=NOW).upcoming(NOW, 5) == parse(
        same_as, "UTC", reference=NOW
    ).upcoming(NOW, 5)


@pytest.mark.parametrize(
    "expression",
    ["R R * * *", "H * * * *", "0 0 13 * 5#2", "0 0 1 * 1#1", "0 0 13 * L5", "0 0 * * MON|TUE"],
)
def test_random_hashed_and_ambiguous_day_syntax_is_refused(expression):
    with pytest.raises(ValidationFailed) as caught:
        parse(expression, "UTC", reference=NOW)
    assert caught.value.details == {"field": "cron"}


@pytest.mark.parametrize("name", ["localtime", "Factory", "posixrules", "posix/Europe/Berlin"])
def test_zone_names_that_are_not_places_are_refused(name):
    with pytest.raises(ValidationFailed) as caught:
        parse("0 0 * * *", name, reference=NOW)
    assert caught.value.details == {"field": "timezone"}
