"""The Overview: the project at a glance (counters, throughput, queue health, workers, errors).

It spans apps (jobs' statistics, queues, workers), so it lives in the top layer. Every figure
comes from jobs/services/stats.py, which reads indexes and the per-minute rollup, never a
scan of the jobs table (docs/dashboard.md "Fast on big tables").
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.dashboard import dashboard_page, partial_of, seat_of
from jobs.models import JobState
from jobs.services import stats
from queues.models import Queue
from taskforge.views.common import first_steps, window_of
from workers.models import Worker

REGIONS = ("counters", "chart", "queues", "failures")


@dashboard_page(partials=REGIONS)
def overview(request: HttpRequest) -> HttpResponse:
    seat = seat_of(request)
    project = seat.project
    window = window_of(request)
    partial = partial_of(request)
    context: dict[str, Any] = {"window": window, "windows": stats.WINDOWS}
    if partial in (None, "counters"):
        counts = stats.state_counts(project)
        context["counts"] = [(state, counts[state]) for state in JobState.values]
        context["workers_online"] = Worker.objects.for_project(project).online().count()
        context["workers_total"] = Worker.objects.for_project(project).count()
        context["no_jobs"] = all(count.value == 0 for count in counts.values())
    if partial in (None, "chart"):
        context["series"] = stats.throughput(project, window=window)
    if partial in (None, "queues"):
        context["queues"] = stats.queue_health(project)
    if partial in (None, "failures"):
        context["failure_groups"] = stats.failure_groups(project)
    if partial is None:
        queue = Queue.objects.for_project(project).order_by("name").first()
        context["first_steps"] = first_steps(request, queue.name if queue else "default")
    template = "dashboard/overview.html" + (f"#{partial}" if partial else "")
    return render(request, template, context)
