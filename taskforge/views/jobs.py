"""The Jobs pages: the list (filters, search, keyset pages, bulk actions, the dead letters) and
one job's page (payload, timeline, attempts with their logs, graph, and why it is not running).

They span apps (jobs, queues, the workers' names and the diagnosis in workers/diagnosis.py), so
they live in the top layer. Filters, search and pages go through jobs/services/listing.py, the
same code as the API's job list: keyset pages read one index range, counts stop at a cap, and
nothing here runs an OFFSET or a COUNT over a project's jobs. Actions call the services the API
calls (jobs/api.py): ``bulk_action``, ``retry_job``, ``cancel_job``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from django.db.models import Count, F, Window
from django.db.models.functions import RowNumber
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_POST

from accounts.dashboard import (
    Seat,
    actor_of,
    dashboard_page,
    done,
    get_or_404,
    is_htmx,
    partial_of,
    seat_of,
    with_toast,
)
from accounts.models import Project
from jobs import services
from jobs.models import (
    TERMINAL_STATES,
    ExecutionLog,
    Job,
    JobDependency,
    JobExecution,
    JobState,
)
from jobs.services import listing, stats
from queues.models import Queue
from taskforge.lib.errors import NotFound, TaskForgeError, ValidationFailed
from taskforge.lib.snippets import first_steps
from workers.diagnosis import explain_job
from workers.models import Worker

LIST_REGIONS = ("table",)
DETAIL_REGIONS = ("summary", "why", "timeline", "executions", "graph")
PAGE_SIZE = 50
# "all N matching" counts no further than this ("1,000+"): see _count. A bulk action on all
# matches still acts on up to BULK_LIMIT of them at a time.
COUNT_CAP = 1_000
# What one job's page shows at most: a job retried for weeks, a fan-out of thousands or a
# chatty handler must not make the page (polled every few seconds) heavy. Each cap is said on
# the page with the full count.
EXECUTIONS_SHOWN = 50
LOG_LINES_SHOWN = 200
EDGES_SHOWN = 50
# The list's parameters that are a filter (kept in the URL, in hidden inputs of the bulk form,
# and in every link of the page) and the two cursors.
FILTER_PARAMS = (*listing.SINGLE_PARAMS, "payload", "search")
CURSOR_PARAMS = ("before", "after")
# <input type=datetime-local> sends a time without a timezone; its label says UTC.
_LOCAL_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?")
ACTIONS = {
    "retry": ("Retry", "Retried"),
    "cancel": ("Cancel", "Cancelled"),
    "delete": ("Delete", "Deleted"),
}
# What each bulk action skips, said in its confirmation (bulk_action skips, never fails).
SKIPPED = {
    "retry": "Only dead and cancelled jobs are retried; the others are left as they are.",
    "cancel": "Finished jobs are left as they are; a running attempt's result will be refused.",
    "delete": "Running jobs are not deleted. Deleting cannot be undone.",
}


def _failed(message: str, region: HttpResponse) -> HttpResponse:
    """The htmx answer to a refused action: the region as it now is, with an error toast.

    Status 200 on purpose: htmx swaps no 4xx answer and would add its own "the server answered
    409" toast to ours; the plain-form path answers with the real status.
    """
    return with_toast(region, message, error=True)


# --- Filters in words ---------------------------------------------------------------------------


def describe(query: listing.JobQuery) -> str:
    """The jobs a filter matches, in words: "dead jobs in queue emails of type send_email"."""
    parts = [f"{query.state} jobs" if query.state else "jobs"]
    if query.queue:
        parts.append(f"in queue {query.queue}")
    if query.job_type:
        parts.append(f"of type {query.job_type}")
    if query.tag:
        parts.append(f"tagged {query.tag}")
    for path, value in query.payload:
        parts.append(f"whose payload {'.'.join(path)} is {json.dumps(value)}")
    if query.idempotency_key:
        parts.append(f"with idempotency key {query.idempotency_key}")
    if query.id:
        parts.append(f"with id {query.id}")
    if query.q:
        parts.append(f"matching “{query.q}”")
    after, before = query.created_after, query.created_before
    if after and before:
        parts.append(f"created between {_utc(after)} and {_utc(before)}")
    elif after:
        parts.append(f"created after {_utc(after)}")
    elif before:
        parts.append(f"created before {_utc(before)}")
    return " ".join(parts)


def bulk_sentence(action: str, count: int, query: listing.JobQuery, *, more: bool = False) -> str:
    """What a bulk action on every match will do: "Retry 1,204 dead jobs in queue emails"
    (``more``: there are more than ``count``, "1,000+")."""
    return f"{ACTIONS[action][0]} {count:,}{'+' if more else ''} {describe(query)}"


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _plural(count: int, word: str = "job") -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


# --- The list -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobRow:
    """One line of the list: the job, and the time and duration that matter for its state."""

    job: Job
    url: str
    queue: str
    queue_url: str
    when_label: str
    when: datetime | None
    took: timedelta | None
    running: bool
    worker: str | None


def _row(job: Job, url: str, queue: tuple[str, str], worker: str | None, now: datetime) -> JobRow:
    state = job.state
    when: datetime | None
    if state == JobState.PENDING:
        label, when = "due", job.run_at
    elif state == JobState.SCHEDULED:
        label, when = "runs", job.run_at
    elif state == JobState.PROCESSING:
        label, when = "started", job.started_at
    elif state in TERMINAL_STATES:
        label, when = state, job.finished_at
    else:
        label, when = "submitted", job.created_at
    running = state == JobState.PROCESSING and job.started_at is not None
    end = now if running else job.finished_at
    took = end - job.started_at if job.started_at is not None and end is not None else None
    return JobRow(job, url, *queue, label, when, took, running, worker)


def _filter_pairs(params: QueryDict) -> list[tuple[str, str]]:
    """The filter parameters given (non-empty), in a stable order, ``payload`` repeated."""
    pairs: list[tuple[str, str]] = []
    for name in FILTER_PARAMS:
        pairs += [(name, value) for value in params.getlist(name, []) if value]
    return pairs


def _cursor_pairs(params: QueryDict) -> list[tuple[str, str]]:
    return [(name, value) for name in CURSOR_PARAMS if (value := params.get(name, ""))]


def _query_of(pairs: Sequence[tuple[str, str]]) -> listing.JobQuery:
    """The JobQuery of the list's filter parameters; the time inputs' values are UTC."""
    params = QueryDict(mutable=True)
    for name, value in pairs:
        if name in ("created_after", "created_before") and _LOCAL_TIME.fullmatch(value):
            value += "+00:00"
        params.appendlist(name, value)
    return listing.JobQuery.from_params(params)


def _list_url(pairs: Iterable[tuple[str, str]]) -> str:
    query = urlencode(list(pairs))
    return reverse("dashboard:jobs") + (f"?{query}" if query else "")


def _job_urls() -> Callable[[UUID], str]:
    """reverse("dashboard:job", args=[pk]) for many jobs: reverse costs a fraction of a
    millisecond a call, a good part of a page of 50 rows."""
    sample = UUID(int=0)
    head, _, tail = reverse("dashboard:job", args=[sample]).partition(str(sample))
    return lambda pk: f"{head}{pk}{tail}"


def _names(model_rows: Iterable[tuple[Any, str]]) -> dict[Any, str]:
    return dict(model_rows)


def _table_context(request: HttpRequest, seat: Seat, params: QueryDict) -> dict[str, Any]:
    """Everything the ``table`` region shows for the list's parameters (a GET's, or the ones a
    bulk form carried back). A bad filter or cursor is an ``error`` naming its field."""
    project = seat.project
    pairs = _filter_pairs(params)
    cursor = _cursor_pairs(params)
    context: dict[str, Any] = {
        "filter_pairs": pairs,
        "cursor_pairs": cursor,
        "poll_url": _list_url([*pairs, *cursor, ("partial", "table")]),
        "back_url": _list_url([*pairs, *cursor]),
        "clear_url": _list_url([]),
        "rows": [],
    }
    try:
        query = _query_of(pairs)
        found = listing.page(
            project,
            query,
            before=params.get("before") or None,
            after=params.get("after") or None,
            limit=PAGE_SIZE,
        )
    except ValidationFailed as exc:
        context["error"] = exc.message
        context["error_field"] = exc.details.get("field")
        return context
    queues = _names(Queue.objects.for_project(project).values_list("pk", "name"))
    worker_ids = {job.worker_id for job in found.rows if job.worker_id}
    workers = _names(
        Worker.objects.for_project(project).filter(pk__in=worker_ids).values_list("pk", "name")
        if worker_ids
        else ()
    )
    queue_links = {
        pk: (name, reverse("dashboard:queue", args=[name])) for pk, name in queues.items()
    }
    job_url = _job_urls()
    now = timezone.now()
    context["rows"] = [
        _row(
            job,
            job_url(job.pk),
            queue_links.get(job.queue_id, ("?", "")),
            workers.get(job.worker_id),
            now,
        )
        for job in found.rows
    ]
    context["query"] = query
    context["filtered"] = not query.is_empty
    context["phrase"] = describe(query)
    context["newer_url"] = (
        _list_url([*pairs, ("after", found.newer_cursor)]) if found.newer_cursor else None
    )
    context["older_url"] = (
        _list_url([*pairs, ("before", found.older_cursor)]) if found.older_cursor else None
    )
    context["first_page_url"] = _list_url(pairs) if cursor else None
    context["paged"] = bool(cursor)
    # Bulk actions on every match need a filter (bulk_action refuses an empty one: that would
    # be every job of the project), and its count.
    if not query.is_empty:
        total, capped = _count(project, query, found.rows, paged=bool(cursor))
        context["total"] = total
        context["total_label"] = f"{total:,}+" if capped else f"{total:,}"
        context["capped"] = capped
        context["dead_view"] = query.state == JobState.DEAD
        context["retry_all_sentence"] = bulk_sentence("retry", total, query, more=capped)
    if not found.rows and query.is_empty and not cursor:
        names = sorted(queues.values(), key=lambda name: (name != "default", name))
        context["first_steps"] = first_steps(request, names[0] if names else "default")
    context["live"] = True
    context["bulk_limit"] = f"{services.BULK_LIMIT:,}"
    context["actions"] = [
        {"name": name, "verb": verb, "skipped": SKIPPED[name]}
        for name, (verb, _) in ACTIONS.items()
    ]
    return context


def _count(
    project: Project, query: listing.JobQuery, rows: Sequence[Job], *, paged: bool
) -> tuple[int, bool]:
    """How many jobs match, and whether there are more than that (COUNT_CAP).

    A first page that is not full is every match: no query. Otherwise the count stops at
    COUNT_CAP: the matches of a project's filter are spread over the table, one heap page
    each, and counting 10,000 of them read ~10,000 pages (300-450 ms cold, on 1M jobs).
    """
    if not paged and len(rows) < PAGE_SIZE:
        return len(rows), False
    return listing.count_matching(project, query, cap=COUNT_CAP)


def _form_values(params: QueryDict, query: listing.JobQuery | None) -> dict[str, str]:
    """The filter form's inputs as the URL gave them; the times in UTC without a timezone, as
    datetime-local shows them."""
    values = {name: params.get(name, "") for name in FILTER_PARAMS if name != "payload"}
    for name in ("created_after", "created_before"):
        moment = getattr(query, name) if query is not None else None
        values[name] = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") if moment else ""
    return values


def _list_page(
    request: HttpRequest, params: QueryDict, *, status: int = 200, error: str | None = None
) -> HttpResponse:
    seat = seat_of(request)
    project = seat.project
    context = _table_context(request, seat, params)
    if error and "error" not in context:
        context["error"] = error
    queues = list(Queue.objects.for_project(project).order_by("name"))
    state = params.get("state", "")
    context.update(
        form=_form_values(params, context.get("query")),
        queues=[queue.name for queue in queues],
        states=JobState.values,
        state=state,
        title="Dead letters" if state == JobState.DEAD else "Jobs",
        **_chips(project, queues, context.get("query")),
    )
    if "error" in context:
        status = 400
    return render(request, "dashboard/jobs.html", context, status=status)


def _chips(
    project: Project, queues: Sequence[Queue], query: listing.JobQuery | None
) -> dict[str, Any]:
    """The state chips: the project's jobs by state (its queue's, when the list is filtered by
    one), each linking to exactly what it counts."""
    queue = next((q for q in queues if query and q.name == query.queue), None)
    counts = stats.state_counts(project, queue=queue)
    scope = [("queue", queue.name)] if queue else []
    return {
        "chips": [
            (name, counts[name], _list_url([("state", name), *scope])) for name in JobState.values
        ],
        "all_states_url": _list_url(scope),
        "chips_scope": queue.name if queue else None,
    }


def _table_region(request: HttpRequest, seat: Seat, params: QueryDict) -> HttpResponse:
    context = _table_context(request, seat, params)
    return HttpResponse(render_to_string("dashboard/jobs.html#table", context, request))


@dashboard_page(partials=LIST_REGIONS)
def job_list(request: HttpRequest) -> HttpResponse:
    """The project's jobs, filtered and searched from the URL, a keyset page at a time."""
    if partial_of(request) == "table":
        seat = seat_of(request)
        context = _table_context(request, seat, request.GET)
        status = 400 if "error" in context else 200
        return render(request, "dashboard/jobs.html#table", context, status=status)
    return _list_page(request, request.GET)


@dashboard_page(writes=True)
@require_POST
def job_bulk(request: HttpRequest) -> HttpResponse:
    """Retry, cancel or delete the selected jobs, or every job matching the list's filter."""
    seat = seat_of(request)
    params = request.POST
    action = params.get("action", "")
    back = _list_url([*_filter_pairs(params), *_cursor_pairs(params)])
    try:
        affected = services.bulk_action(
            seat.project, action, **_targets(params), actor=actor_of(request)
        )
    except TaskForgeError as exc:
        if is_htmx(request):
            return _failed(exc.message, _table_region(request, seat, params))
        return _list_page(request, params, status=exc.http_status, error=exc.message)
    message = _bulk_message(action, affected)
    return done(request, message, back, _table_region(request, seat, params))


def _targets(params: QueryDict) -> dict[str, Any]:
    """bulk_action's targets: every job matching the posted filter, or the selected ids."""
    if params.get("all_matching"):
        return {"query": _query_of(_filter_pairs(params))}
    raw = params.getlist("ids")
    if not raw:
        raise ValidationFailed("ids: select jobs first", details={"field": "ids"})
    try:
        return {"ids": [UUID(value) for value in raw]}
    except ValueError:
        raise ValidationFailed("ids: must be job ids", details={"field": "ids"}) from None


def _bulk_message(action: str, affected: int) -> str:
    verb = ACTIONS[action][1]
    if affected == 0:
        return f"{verb} no job: none of them could be. {SKIPPED[action]}"
    message = f"{verb} {_plural(affected)}"
    if affected >= services.BULK_LIMIT:
        message += f" (at most {services.BULK_LIMIT:,} at a time: run it again for the rest)"
    return message + "."


# --- One job ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """A step of a job's timeline: when it began, how long it took (or has taken so far)."""

    name: str
    at: datetime | None
    took: timedelta | None
    # done, bad (a failed outcome), current (the step the job is in), or "" (not reached).
    status: str
    note: str = ""


def timeline(job: Job, now: datetime) -> list[Step]:
    """The latest path of ``job``: submitted → (blocked) → (scheduled) → pending → processing
    → outcome, each with when it began and how long it took (so far, for the current one).

    A retry's backoff is its scheduled step and its last attempt its processing step; every
    attempt is listed under executions. A finished job leaves out the steps it never reached
    (cancelled while pending); an unfinished one shows the steps still ahead, without times.
    """
    state = job.state
    waiting = state in (JobState.BLOCKED, JobState.SCHEDULED, JobState.PENDING)
    # While waiting again after a failed attempt, started_at is that attempt's: not this path.
    started = None if waiting else job.started_at
    # A run_at set ahead at submit; a second's grace for the clock between Python and SQL.
    delayed = job.run_at > job.created_at + timedelta(seconds=1)
    steps = [Step("submitted", job.created_at, None, "done")]
    if state == JobState.BLOCKED:
        note = f"waiting for {_plural(job.pending_parents, 'parent')}"
        steps.append(Step("blocked", job.created_at, now - job.created_at, "current", note))
    if state == JobState.SCHEDULED:
        note = f"retry after attempt {job.attempts}" if job.attempts else "runs then"
        steps.append(Step("scheduled", job.run_at, None, "current", note))
    elif (started is not None or state == JobState.PENDING) and delayed:
        steps.append(Step("scheduled", job.created_at, job.run_at - job.created_at, "done"))
    if state == JobState.PENDING:
        steps.append(
            Step("pending", job.run_at, now - job.run_at, "current", "waiting for a worker")
        )
    elif started is not None:
        queued = started - job.run_at if started >= job.run_at else None
        steps.append(Step("pending", job.run_at, queued, "done"))
    elif waiting:
        steps.append(Step("pending", None, None, ""))
    attempt = f"attempt {job.attempts} of {job.max_attempts}"
    if state == JobState.PROCESSING and started is not None:
        steps.append(Step("processing", started, now - started, "current", attempt))
    elif started is not None:
        took = job.finished_at - started if job.finished_at else None
        steps.append(Step("processing", started, took, "done", attempt))
    elif waiting:
        steps.append(Step("processing", None, None, ""))
    if state in TERMINAL_STATES:
        failed = state != JobState.SUCCEEDED
        note = job.last_error[:200] if failed else ""
        steps.append(Step(state, job.finished_at, None, "bad" if failed else "done", note))
    else:
        steps.append(Step("outcome", None, None, ""))
    return steps


@dataclass(frozen=True, slots=True)
class Attempt:
    """One execution of the job, with its worker's name and its last log lines."""

    execution: JobExecution
    worker: str | None
    took: timedelta | None
    logs: LogLines


def _attempts(seat: Seat, job: Job) -> tuple[list[Attempt], int]:
    """The job's last EXECUTIONS_SHOWN attempts, oldest first, and how many it had in all."""
    project = seat.project
    executions = JobExecution.objects.for_project(project).filter(job=job)
    shown = list(executions.order_by("-started_at", "-id")[:EXECUTIONS_SHOWN])[::-1]
    total = len(shown) if len(shown) < EXECUTIONS_SHOWN else executions.count()
    worker_ids = {e.worker_id for e in shown if e.worker_id}
    workers = _names(
        Worker.objects.for_project(project).filter(pk__in=worker_ids).values_list("pk", "name")
        if worker_ids
        else ()
    )
    logs = _last_logs(seat, job, [e.pk for e in shown])
    now = timezone.now()
    attempts = []
    for execution in shown:
        end = execution.finished_at or (now if execution.status == "started" else None)
        took = end - execution.started_at if end else None
        worker = workers.get(execution.worker_id)
        attempts.append(Attempt(execution, worker, took, logs.get(execution.pk, NO_LOGS)))
    return attempts, total


@dataclass(frozen=True, slots=True)
class LogLines:
    """An execution's last lines, as HTML, how many they are and how many it has."""

    html: SafeString
    shown: int
    total: int


NO_LOGS = LogLines(SafeString(""), 0, 0)


def _last_logs(seat: Seat, job: Job, execution_ids: list[int]) -> dict[int, LogLines]:
    """Each execution's last LOG_LINES_SHOWN lines (oldest first), in one query over the job's
    logs (index executionlog_job). Tuples, not models, and HTML built here: for 1,000 lines
    (5 attempts) model instances and a template loop were most of the region's time."""
    if not execution_ids:
        return {}
    ranked = (
        ExecutionLog.objects.for_org(seat.organization)
        .filter(job=job, execution_id__in=execution_ids)
        .annotate(
            rank=Window(RowNumber(), partition_by=F("execution_id"), order_by=F("id").desc()),
            lines=Window(Count("*"), partition_by=F("execution_id")),
        )
        .filter(rank__lte=LOG_LINES_SHOWN)
        .order_by("execution_id", "id")
        .values_list("execution_id", "lines", "created_at", "level", "message")
    )
    by_execution: dict[int, list[tuple[Any, ...]]] = {}
    for row in ranked:
        by_execution.setdefault(row[0], []).append(row)
    return {
        execution_id: LogLines(_log_html(rows), len(rows), rows[0][1])
        for execution_id, rows in by_execution.items()
    }


def _log_html(rows: Sequence[tuple[Any, ...]]) -> SafeString:
    html = "".join(
        f'<span class="level-{escape(level)}">{at.astimezone(UTC):%H:%M:%S} '
        f"{escape(level.upper())} {escape(message)}</span>\n"
        for _, _, at, level, message in rows
    )
    return mark_safe(html)  # noqa: S308 - every value above is escaped


@dataclass(frozen=True, slots=True)
class Edge:
    job_id: UUID
    job_type: str
    state: str
    policy: str


def _edges(seat: Seat, job: Job, *, parents: bool) -> tuple[list[Edge], int, dict[str, int]]:
    """The job's parents (or children) with their states and the edge's policy: the first
    EDGES_SHOWN, the count of all, and all of them counted by state."""
    other = "parent" if parents else "child"
    edges = JobDependency.objects.for_org(seat.organization).filter(
        **{"child" if parents else "parent": job}
    )
    shown = [
        Edge(pk, job_type, state, policy)
        for pk, job_type, state, policy in edges.order_by(f"{other}_id").values_list(
            f"{other}_id", f"{other}__job_type", f"{other}__state", "on_parent_failure"
        )[:EDGES_SHOWN]
    ]
    if len(shown) < EDGES_SHOWN:
        by_state: dict[str, int] = {}
        for edge in shown:
            by_state[edge.state] = by_state.get(edge.state, 0) + 1
        return shown, len(shown), by_state
    by_state = dict(
        edges.order_by()
        .values_list(f"{other}__state")
        .annotate(n=Count("*"))
        .values_list(f"{other}__state", "n")
    )
    return shown, sum(by_state.values()), by_state


def _job_of(request: HttpRequest, seat: Seat, job_id: UUID, *, light: bool = False) -> Job:
    jobs = Job.objects.for_project(seat.project).select_related("queue")
    # A poll of one region never shows the payload: leave a big one in the database.
    return get_or_404(request, jobs.defer("payload") if light else jobs, pk=job_id)


def _detail_context(
    request: HttpRequest, seat: Seat, job: Job, regions: Sequence[str]
) -> dict[str, Any]:
    project = seat.project
    now = timezone.now()
    terminal = job.is_terminal
    context: dict[str, Any] = {
        "job": job,
        "live": not terminal,
        "can_retry": seat.can_write and job.state in (JobState.DEAD, JobState.CANCELLED),
        "can_cancel": seat.can_write and not terminal,
        "list_url": reverse("dashboard:jobs"),
        "job_url": reverse("dashboard:job", args=[job.pk]),
    }
    if "summary" in regions:
        worker = None
        if job.worker_id:
            worker = Worker.objects.for_project(project).filter(pk=job.worker_id).first()
        context["worker"] = worker
        context["has_result"] = job.result is not None
    if "why" in regions and not terminal:
        context["reasons"] = explain_job(project, job)
    if "timeline" in regions:
        context["steps"] = timeline(job, now)
    if "executions" in regions:
        context["attempts"], context["attempt_total"] = _attempts(seat, job)
        context["log_cap"] = LOG_LINES_SHOWN
        context["execution_cap"] = EXECUTIONS_SHOWN
    if "graph" in regions:
        context["parents"], context["parent_total"], context["parent_states"] = _edges(
            seat, job, parents=True
        )
        context["children"], context["child_total"], context["child_states"] = _edges(
            seat, job, parents=False
        )
        context["edge_cap"] = EDGES_SHOWN
        context["batch"] = _batch(project, job)
    return context


def _batch(project: Project, job: Job) -> dict[str, Any] | None:
    """The job's batch: its status, how many of its jobs finished, its counts by state."""
    if job.batch_id is None:
        return None
    try:
        status = services.batch_status(project, job.batch_id)
    except NotFound:
        return None
    return {
        "status": status,
        "finished": sum(status.counts.get(state, 0) for state in TERMINAL_STATES),
        "counts": [(state, n) for state, n in status.counts.items() if n],
    }


@dashboard_page(partials=DETAIL_REGIONS)
def job_detail(request: HttpRequest, job_id: UUID) -> HttpResponse:
    """One job: its facts, why it is not running, its timeline, attempts, logs and graph."""
    seat = seat_of(request)
    partial = partial_of(request)
    job = _job_of(request, seat, job_id, light=partial is not None)
    context = _detail_context(request, seat, job, (partial,) if partial else DETAIL_REGIONS)
    template = "dashboard/job.html" + (f"#{partial}" if partial else "")
    return render(request, template, context)


def _regions(request: HttpRequest, seat: Seat, job_id: UUID) -> HttpResponse:
    """The summary region, and every other region out of band: an action changes them all,
    and a region that stopped polling when the job finished must come back to life after a
    retry."""
    job = _job_of(request, seat, job_id, light=True)
    context = _detail_context(request, seat, job, DETAIL_REGIONS)
    html = [render_to_string("dashboard/job.html#summary", context, request)]
    context["oob"] = True
    for region in DETAIL_REGIONS[1:]:
        html.append(render_to_string(f"dashboard/job.html#{region}", context, request))
    return HttpResponse("".join(html))


def _act(
    request: HttpRequest,
    job_id: UUID,
    action: Callable[..., Job],
    message: str,
) -> HttpResponse:
    seat = seat_of(request)
    job = _job_of(request, seat, job_id, light=True)
    back = reverse("dashboard:job", args=[job.pk])
    try:
        action(seat.project, job.pk, actor=actor_of(request))
    except TaskForgeError as exc:
        if is_htmx(request):
            return _failed(exc.message, _regions(request, seat, job.pk))
        full = _job_of(request, seat, job.pk)
        context = _detail_context(request, seat, full, DETAIL_REGIONS)
        context["error"] = exc.message
        return render(request, "dashboard/job.html", context, status=exc.http_status)
    return done(request, message, back, _regions(request, seat, job.pk))


@dashboard_page(writes=True)
@require_POST
def job_retry(request: HttpRequest, job_id: UUID) -> HttpResponse:
    """Run a dead or cancelled job again (jobs.services.retry_job, as the API's retry)."""
    return _act(request, job_id, services.retry_job, "Job retried: it starts again from attempt 1.")


@dashboard_page(writes=True)
@require_POST
def job_cancel(request: HttpRequest, job_id: UUID) -> HttpResponse:
    """Cancel a job that has not finished (jobs.services.cancel_job, as the API's cancel)."""
    return _act(request, job_id, services.cancel_job, "Job cancelled.")
