"""The Workers page: the project's workers with their heartbeat, load and queues; drain one.

The page reads what the API's worker list reads (workers/api.py ``WorkerListApi``): the
workers, their queue assignments, and their running jobs counted in one grouped query over
the partial index job_worker_processing. Draining calls the same service as
POST /api/v1/workers/{id}/drain (``services.drain_worker``).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db.models import (
    Case,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    IntegerField,
    QuerySet,
    When,
)
from django.db.models.functions import Now
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_POST

from accounts.dashboard import (
    actor_of,
    dashboard_page,
    done,
    get_or_404,
    is_htmx,
    partial_of,
    seat_of,
)
from accounts.models import Organization, Project
from jobs.models import Job, JobState
from queues.models import Queue
from taskforge import conf
from taskforge.lib.snippets import first_steps
from workers import services
from workers.exceptions import WorkerOffline
from workers.models import QueueWorkerAssignment, Worker, WorkerStatus, WorkerType

REGIONS = ("table",)
TEMPLATE = "dashboard/workers.html"
LIVE = (WorkerStatus.ONLINE, WorkerStatus.DRAINING)
# The table is polled every few seconds and each row is about 1 kB of HTML, so it stays short:
# at most this many online and draining workers (a fleet larger than that is a note)...
LIVE_CAP = 200
# ...and the offline ones seen most recently. Crashed processes leave their workers offline
# (a clean stop deregisters), so a project whose workers register under a new name per process
# (a pod id) accumulates thousands of them; the older ones are counted, not listed.
OFFLINE_CAP = 50
OFFLINE_COUNT_CAP = 10_000

# Short names for the table; the choices' own labels ("Specialized Io") read poorly.
TYPE_LABELS: dict[str, str] = {
    WorkerType.GENERAL: "general",
    WorkerType.SPECIALIZED_CPU: "CPU-bound",
    WorkerType.SPECIALIZED_IO: "I/O-bound",
}

# Online first, then draining, each by name, so rows do not reorder as heartbeats come in.
_LIVE_ORDER = Case(When(status=WorkerStatus.ONLINE, then=0), default=1, output_field=IntegerField())


@dataclass(frozen=True, slots=True)
class QueueChip:
    """A queue the worker serves, as the table shows it."""

    name: str
    url: str
    weight: int
    active: bool


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """One row of the table: the worker, its running jobs and its queues, active and heaviest
    first. Links are built here, once per queue, not per row in the template."""

    worker: Worker
    running: int
    queues: Sequence[QueueChip]
    # Since the last heartbeat, by the database's clock (the one the dispatcher judges by).
    heartbeat_age: float
    # "" while heartbeating on time; "silent" past the heartbeat interval; "overdue" past the
    # offline timeout, which the dispatcher should have acted on (is one running?).
    silence: str
    # Where the drain form posts; empty when the worker cannot be drained (not online).
    drain_url: str
    type_label: str

    @property
    def offline(self) -> bool:
        return self.worker.status == WorkerStatus.OFFLINE


@dataclass(frozen=True, slots=True)
class Summary:
    """The counts above the table, over all of the project's workers (not only those listed)."""

    online: int
    draining: int
    # Counted up to OFFLINE_COUNT_CAP; past it, ``offline_capped`` and the figure is a floor.
    offline: int
    offline_capped: bool
    # Slots of online and draining workers, and the project's jobs running in them.
    capacity: int
    running: int

    @property
    def total(self) -> int:
        return self.online + self.draining + self.offline


@dashboard_page(partials=REGIONS)
def worker_list(request: HttpRequest) -> HttpResponse:
    partial = partial_of(request)
    return render(request, TEMPLATE + (f"#{partial}" if partial else ""), _table_context(request))


@dashboard_page(writes=True)
@require_POST
def worker_drain(request: HttpRequest, worker_id: uuid.UUID) -> HttpResponse:
    """Drain an online worker: it finishes what it runs and gets no new jobs."""
    project = seat_of(request).project
    worker = get_or_404(request, Worker.objects.for_project(project), pk=worker_id)
    if worker.status == WorkerStatus.DRAINING:
        return _answer(request, f"{worker.name} is already draining: it gets no new jobs.")
    running = (
        Job.objects.for_project(project)
        .filter(state=JobState.PROCESSING, worker_id=worker.pk)
        .count()
    )
    try:
        services.drain_worker(project, worker, actor=actor_of(request))
    except WorkerOffline:
        return _answer(
            request,
            f"{worker.name} is offline: there is nothing to drain. "
            "It comes back online when it heartbeats again.",
        )
    jobs = "job" if running == 1 else "jobs"
    return _answer(
        request,
        f"Draining {worker.name}: it finishes its {running} running {jobs} and takes no new ones.",
    )


def _answer(request: HttpRequest, message: str) -> HttpResponse:
    """htmx: the refreshed table with a toast; a plain form post: back to the page."""
    region = None
    if is_htmx(request):
        region = render(request, f"{TEMPLATE}#table", _table_context(request))
    return done(request, message, reverse("dashboard:workers"), region)


def _table_context(request: HttpRequest) -> dict[str, Any]:
    seat = seat_of(request)
    workers = Worker.objects.for_project(seat.project)
    live = _with_heartbeat_age(workers.filter(status__in=LIVE)).order_by(_LIVE_ORDER, "name")
    offline = _with_heartbeat_age(workers.filter(status=WorkerStatus.OFFLINE))
    listed = list(live[:LIVE_CAP])
    live_shown = len(listed)
    listed += offline.order_by("-last_heartbeat")[:OFFLINE_CAP]
    # Every live worker, listed or not, for the summary; they are few (worker_project_status).
    live_facts = list(workers.filter(status__in=LIVE).values_list("pk", "status", "capacity"))
    # Offline workers hold no jobs: marking one offline ends its leases in the same transaction
    # (workers/dispatcher.py mark_silent_workers), so these are all of the project's.
    running = _running_counts(seat.project, [pk for pk, _, _ in live_facts])
    summary = _summary(seat.project, live_facts, running)
    context: dict[str, Any] = {
        "rows": _rows(seat.organization, listed, running),
        "summary": summary,
        "live_shown": live_shown,
        "live_total": summary.online + summary.draining,
        "offline_hidden": summary.offline - (len(listed) - live_shown),
    }
    if summary.total == 0:
        queues = Queue.objects.for_project(seat.project).order_by("name")
        first_queue = queues.values_list("name", flat=True).first()
        context["first_steps"] = first_steps(request, first_queue or "default")
    return context


def _with_heartbeat_age(workers: QuerySet[Worker]) -> QuerySet[Worker]:
    return workers.annotate(
        heartbeat_age=ExpressionWrapper(Now() - F("last_heartbeat"), DurationField())
    )


def _rows(
    organization: Organization, workers: list[Worker], running: dict[uuid.UUID, int]
) -> list[WorkerRow]:
    queues = _queue_chips(organization, [worker.pk for worker in workers])
    silent_after, timeout = _silence_thresholds()
    rows = []
    for worker in workers:
        age: timedelta = worker.heartbeat_age  # type: ignore[attr-defined]
        seconds = max(age.total_seconds(), 0.0)
        silence = ""
        if worker.status != WorkerStatus.OFFLINE:
            silence = "overdue" if seconds > timeout else "silent" if seconds > silent_after else ""
        online = worker.status == WorkerStatus.ONLINE
        rows.append(
            WorkerRow(
                worker=worker,
                running=running.get(worker.pk, 0),
                queues=queues.get(worker.pk, ()),
                heartbeat_age=seconds,
                silence=silence,
                drain_url=reverse("dashboard:worker-drain", args=[worker.pk]) if online else "",
                type_label=TYPE_LABELS.get(worker.worker_type, worker.worker_type),
            )
        )
    return rows


def _silence_thresholds() -> tuple[float, float]:
    """(silent after, offline after) in seconds.

    The protocol asks for a heartbeat at least every third of a lease (docs/api.md, the worker
    protocol); a worker quiet for longer, or for half the offline timeout, has missed a beat.
    """
    timeout = float(conf.worker_timeout_seconds())
    return min(conf.lease_seconds() / 3, timeout / 2), timeout


def _running_counts(project: Project, worker_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Processing jobs per worker, in one grouped query. Given as a list, the ids make the
    planner read job_worker_processing (the partial index on worker_id of processing jobs) for
    these workers only; as a subquery it reads every tenant's processing jobs instead."""
    if not worker_ids:
        return {}
    rows = (
        Job.objects.for_project(project)
        .filter(state=JobState.PROCESSING, worker_id__in=worker_ids)
        .values_list("worker_id")
        .annotate(n=Count("*"))
        .order_by()
    )
    return {worker_id: n for worker_id, n in rows if worker_id is not None}


def _queue_chips(
    organization: Organization, worker_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[QueueChip]]:
    """Each worker's queues, active ones first, heaviest first (one query, by the assignments'
    worker_id index)."""
    found: dict[uuid.UUID, list[QueueChip]] = defaultdict(list)
    if not worker_ids:
        return found
    rows = (
        QueueWorkerAssignment.objects.for_org(organization)
        .filter(worker_id__in=worker_ids)
        .order_by("-is_active", "-weight", "queue__name")
        .values_list("worker_id", "queue__name", "weight", "is_active")
    )
    urls: dict[str, str] = {}
    for worker_id, name, weight, active in rows:
        if name not in urls:
            urls[name] = reverse("dashboard:queue", args=[name])
        found[worker_id].append(QueueChip(name, urls[name], weight, active))
    return found


def _summary(
    project: Project,
    live_facts: list[tuple[uuid.UUID, str, int]],
    running: dict[uuid.UUID, int],
) -> Summary:
    statuses = [status for _, status, _ in live_facts]
    # Offline workers pile up (see OFFLINE_CAP): counted up to a bound, as job counts are.
    offline = Worker.objects.for_project(project).filter(status=WorkerStatus.OFFLINE)
    offline_count = offline[: OFFLINE_COUNT_CAP + 1].count()
    return Summary(
        online=statuses.count(WorkerStatus.ONLINE),
        draining=statuses.count(WorkerStatus.DRAINING),
        offline=min(offline_count, OFFLINE_COUNT_CAP),
        offline_capped=offline_count > OFFLINE_COUNT_CAP,
        capacity=sum(capacity for _, _, capacity in live_facts),
        running=sum(running.values()),
    )
