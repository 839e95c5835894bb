"""manage.py schedules: the operator's list of schedules and their next fire times."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from jobs.schedules import services as scheduling
from tests.schedules.conftest import utc

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: str) -> str:
    out = StringIO()
    call_command("schedules", *args, stdout=out)
    return out.getvalue()


def test_it_lists_enabled_schedules_with_their_next_run_in_utc_and_local_time(
    clock, make_schedule, other_project, other_queue
):
    clock(utc(2026, 3, 28, 12))
    make_schedule("30 2 * * *", name="nightly", timezone="Europe/Berlin")
    paused = make_schedule("0 * * * *", name="hourly")
    scheduling.update_schedule(paused, {"enabled": False})
    scheduling.create_schedule(
        other_project,
        {"name": "theirs", "cron": "@daily", "queue": other_queue.name, "job_type": "x"},
    )
    out = run()
    assert "nightly" in out
    assert "2026-03-29 01:30Z (03:30 CEST)" in out
    assert "theirs" in out  # an operator command: every tenant
    assert "hourly" not in out
    assert out.strip().endswith("2 schedule(s)")
    assert "hourly" in run("--disabled")
    assert "theirs" not in run("--project", str(paused.project_id))


def test_preview_prints_the_next_fire_times_across_the_dst_change(clock, make_schedule):
    clock(utc(2026, 3, 28, 12))
    make_schedule("30 2 * * *", name="nightly", timezone="Europe/Berlin")
    out = run("--preview", "2")
    assert "2026-03-29 01:30Z  (2026-03-29 03:30 CEST)" in out
    assert "2026-03-30 00:30Z  (2026-03-30 02:30 CEST)" in out


def test_it_says_so_when_there_are_none(db):
    assert run().strip() == "no schedules"


def test_bad_options_are_refused_with_a_message(db):
    with pytest.raises(CommandError, match="--preview"):
        run("--preview", "101")
    with pytest.raises(CommandError, match="--project: 'nope' is not a project id"):
        run("--project", "nope")
