"""The Queues pages: every queue of the project with its depth and health, one queue's numbers,
chart and settings, and the operator actions on a queue (create, edit, pause, resume, purge).

Input goes through the API's own serializer (queues/serializers.py QueueInputSerializer) and
the same services as queues/api.py and taskforge/queue_api.py, so the dashboard accepts exactly
what the API accepts and reports the same errors, next to the field they name. Purge and the
workers serving a queue reach the jobs and workers apps, so these pages live in the top layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db.models import Count as DbCount
from django.db.models import Field
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST
from rest_framework.exceptions import ValidationError

from accounts.dashboard import (
    Seat,
    actor_of,
    dashboard_page,
    get_or_404,
    is_htmx,
    partial_of,
    seat_of,
)
from jobs.models import JobState
from jobs.services import stats
from queues import services
from queues.models import Jitter, Queue
from queues.serializers import BACKOFF_FIELDS, QueueInputSerializer
from taskforge import queue_ops
from taskforge.lib.errors import NotFound, TaskForgeError
from taskforge.views.common import done, first_steps, window_of
from workers import services as worker_services
from workers.models import Worker

LIST_REGIONS = ("table",)
DETAIL_REGIONS = ("stats", "chart")
# Errors that name no field (or a field the form does not show) go above the form.
FORM = "form"
# Longest value echoed back into a form after an error: the field refuses it anyway.
MAX_ECHO = 1000


# --- The settings form ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setting:
    """One input of the queue form. ``name`` is the Queue model field the API's serializer
    maps it to (``backoff_base_seconds`` is the API's ``backoff.base_seconds``).

    Inputs are text, never type=number: the browser would drop a value it cannot parse,
    and the serializer's message about it would then sit next to an empty field.
    """

    name: str
    label: str
    help: str
    kind: str = "integer"  # integer, decimal, text or select
    # Empty means null (no cap, no limit); for the other fields an empty input is left out.
    nullable: bool = False
    backoff: bool = False


SETTINGS = (
    Setting("name", "Name", "1-100 characters of A-Z a-z 0-9 _ . : -", kind="text"),
    Setting("priority", "Priority", "0-9; higher-priority queues are served first."),
    Setting("max_concurrency", "Max concurrency",
            "Jobs running at once across all workers. Empty: no cap.", nullable=True),
    Setting("max_attempts", "Max attempts", "Runs of a job before it goes dead."),
    Setting("timeout_seconds", "Timeout (s)", "How long one run may take."),
    Setting("rate_limit_per_second", "Rate limit (jobs/s)",
            "Jobs started per second; 0.5 is one every 2 s. Empty: no limit.", kind="decimal",
            nullable=True),
    Setting("retention_days", "Retention (days)", "Finished jobs are kept this long."),
    Setting("backoff_base_seconds", "Base delay (s)", "The delay before the first retry.",
            kind="decimal", backoff=True),
    Setting("backoff_max_seconds", "Max delay (s)", "No retry waits longer.", kind="decimal",
            backoff=True),
    Setting("backoff_multiplier", "Multiplier", "Each retry waits this many times longer.",
            kind="decimal", backoff=True),
    Setting("backoff_jitter", "Jitter",
            "full: random up to the delay; equal: at least half of it; none: exact.",
            kind="select", backoff=True),
)  # fmt: skip
SETTING_NAMES = frozenset(s.name for s in SETTINGS)
# The model field of each backoff setting -> its key in the API's nested ``backoff`` object.
BACKOFF_KEYS = {field: key for key, field in BACKOFF_FIELDS.items()}


@dataclass(frozen=True, slots=True)
class BoundSetting:
    """A setting with what the form shows in it: the value and the error next to it."""

    setting: Setting
    value: str
    error: str

    @property
    def choices(self) -> list[str]:
        return list(Jitter.values) if self.setting.kind == "select" else []


@dataclass(frozen=True, slots=True)
class QueueForm:
    fields: list[BoundSetting]
    errors: dict[str, str]

    @property
    def main(self) -> list[BoundSetting]:
        return [f for f in self.fields if not f.setting.backoff]

    @property
    def backoff(self) -> list[BoundSetting]:
        return [f for f in self.fields if f.setting.backoff]

    @property
    def form_error(self) -> str:
        return self.errors.get(FORM, "")

    @property
    def backoff_invalid(self) -> bool:
        return any(f.error for f in self.backoff)


def _form(values: Mapping[str, str], errors: Mapping[str, str] | None = None) -> QueueForm:
    errors = dict(errors or {})
    fields = [BoundSetting(s, values.get(s.name, ""), errors.get(s.name, "")) for s in SETTINGS]
    return QueueForm(fields=fields, errors=errors)


def _display(value: Any) -> str:
    """A setting as the form shows it: no "None", and 3600.0 as 3600."""
    if value is None:
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _values_of(queue: Queue) -> dict[str, str]:
    return {s.name: _display(getattr(queue, s.name)) for s in SETTINGS}


def _defaults() -> dict[str, str]:
    """A new queue's form: the model's defaults, the name left to the user."""
    values = {s.name: _display(_model_default(s.name)) for s in SETTINGS}
    return {**values, "name": ""}


def _model_default(field: str) -> Any:
    model_field = Queue._meta.get_field(field)
    assert isinstance(model_field, Field)
    return model_field.get_default()


def _posted(request: HttpRequest) -> dict[str, str]:
    """The form's fields as posted (absent ones left out)."""
    return {name: request.POST[name] for name in SETTING_NAMES if name in request.POST}


def _api_input(values: Mapping[str, str]) -> dict[str, Any]:
    """The posted flat fields in the API's input shape (nested ``backoff``), as strings: the
    serializer parses and checks them exactly as it does the API's JSON.

    An empty input means null where null is allowed (no cap, no limit) and is left out
    otherwise (the default on create, unchanged on update); an empty name is sent as such and
    refused by the serializer.
    """
    data: dict[str, Any] = {}
    backoff: dict[str, str] = {}
    for setting in SETTINGS:
        if setting.name not in values:
            continue
        raw = values[setting.name]
        if raw.strip() == "" and setting.name != "name":
            if setting.nullable:
                data[setting.name] = None
            continue
        if setting.backoff:
            backoff[BACKOFF_KEYS[setting.name]] = raw
        else:
            data[setting.name] = raw
    if backoff:
        data["backoff"] = backoff
    return data


def _validated(values: Mapping[str, str], *, partial: bool) -> dict[str, Any]:
    """Queue model fields from the posted values; ValidationError as the API raises it."""
    serializer = QueueInputSerializer(data=_api_input(values), partial=partial)
    serializer.is_valid(raise_exception=True)
    return serializer.to_fields()


def _errors_of(exc: ValidationError | TaskForgeError) -> dict[str, str]:
    """The error of each form field, from a serializer's detail (``{"backoff": {"base_seconds":
    [...]}}``) or a service's error (``details.field``, e.g. ``backoff.max_seconds``)."""
    if isinstance(exc, TaskForgeError):
        field = _form_name(str(exc.details.get("field", "")))
        prefix = f"{exc.details.get('field')}: "
        message = exc.message.removeprefix(prefix) if field != FORM else exc.message
        return {field: message[:1].upper() + message[1:]}
    errors: dict[str, str] = {}
    detail = exc.detail if isinstance(exc.detail, dict) else {FORM: exc.detail}
    for key, messages in detail.items():
        if isinstance(messages, dict):
            for sub, inner in messages.items():
                _add(errors, _form_name(f"{key}.{sub}"), inner)
        else:
            _add(errors, _form_name(str(key)), messages)
    return errors


def _add(errors: dict[str, str], field: str, messages: Any) -> None:
    texts = [str(m) for m in messages] if isinstance(messages, list) else [str(messages)]
    errors[field] = " ".join(filter(None, [errors.get(field, ""), *texts]))


def _form_name(api_field: str) -> str:
    """The form input an API field name maps to (``backoff.max_seconds`` ->
    ``backoff_max_seconds``), or FORM for a name the form does not show."""
    if api_field.startswith("backoff."):
        api_field = BACKOFF_FIELDS.get(api_field.removeprefix("backoff."), "")
    return api_field if api_field in SETTING_NAMES else FORM


def _echo(values: Mapping[str, str]) -> dict[str, str]:
    return {name: value[:MAX_ECHO] for name, value in values.items()}


def _status(exc: ValidationError | TaskForgeError) -> int:
    return exc.http_status if isinstance(exc, TaskForgeError) else 400


# --- Queue list -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One line of the queue table: depth by state, health, and the workers serving it."""

    queue: Queue
    depth: Mapping[str, stats.Count] | None
    health: stats.QueueHealth | None
    workers_online: int


@require_http_methods(["GET", "POST"])
@dashboard_page(partials=LIST_REGIONS, writes=True)
def queue_list(request: HttpRequest) -> HttpResponse:
    """GET: the project's queues. POST: create a queue (the form under the table)."""
    seat = seat_of(request)
    if request.method == "POST":
        return _create(request, seat)
    partial = partial_of(request)
    context = _table_context(seat)
    if partial is None:
        context["form"] = _form(_defaults())
    return render(request, "dashboard/queues.html" + (f"#{partial}" if partial else ""), context)


def _create(request: HttpRequest, seat: Seat) -> HttpResponse:
    values = _posted(request)
    try:
        fields = _validated(values, partial=False)
        queue = services.create_queue(
            seat.project, name=fields.pop("name"), settings=fields, actor=actor_of(request)
        )
    except (ValidationError, TaskForgeError) as exc:
        form = _form({**_defaults(), **_echo(values)}, _errors_of(exc))
        if is_htmx(request):
            # htmx swaps only 2xx answers: the form with its errors is the answer.
            return render(request, "dashboard/queues.html#create", {"form": form, "seat": seat})
        context = {**_table_context(seat), "form": form}
        return render(request, "dashboard/queues.html", context, status=_status(exc))
    back = reverse("dashboard:queue", args=[queue.name])
    if not is_htmx(request):
        return done(request, f"Queue {queue.name} created.", back)
    # The answer replaces the form (emptied again) and, out of band, the table with the new row.
    created = {"form": _form(_defaults()), "seat": seat, "created": queue}
    table = {**_table_context(seat), "oob": True}
    html = render_to_string("dashboard/queues.html#create", created, request) + render_to_string(
        "dashboard/queues.html#table", table, request
    )
    return done(request, f"Queue {queue.name} created.", back, HttpResponse(html))


def _table_context(seat: Seat) -> dict[str, Any]:
    project = seat.project
    queues = list(Queue.objects.for_project(project).order_by("name"))
    depths = stats.queue_depths(project)
    health = {row.queue.pk: row for row in stats.queue_health(project)}
    online = _online_workers_per_queue(seat)
    rows = [
        QueueRow(
            queue=queue,
            depth=depths.get(queue.pk),
            health=health.get(queue.pk),
            workers_online=online.get(queue.pk, 0),
        )
        for queue in queues
    ]
    return {"rows": rows}


def _online_workers_per_queue(seat: Seat) -> dict[Any, int]:
    """Online workers actively serving each queue, in one query (workers.services
    count_online_workers counts the same for one queue)."""
    counts = (
        Worker.objects.for_project(seat.project)
        .online()
        .filter(assignments__is_active=True)
        .values("assignments__queue_id")
        .annotate(workers=DbCount("pk", distinct=True))
    )
    return {row["assignments__queue_id"]: row["workers"] for row in counts}


# --- Queue detail -----------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@dashboard_page(partials=DETAIL_REGIONS, writes=True)
def queue_detail(request: HttpRequest, name: str) -> HttpResponse:
    """GET: one queue's numbers, chart and settings. POST: save the settings form."""
    seat = seat_of(request)
    queue = _queue_or_404(request, seat, name)
    if request.method == "POST":
        return _update(request, seat, queue, name)
    partial = partial_of(request)
    context = _detail_context(request, seat, queue, partial)
    if partial is None:
        context["form"] = _form(_values_of(queue))
    return render(request, "dashboard/queue.html" + (f"#{partial}" if partial else ""), context)


def _update(request: HttpRequest, seat: Seat, queue: Queue, name: str) -> HttpResponse:
    values = _posted(request)
    try:
        changes = _validated(values, partial=True)
        queue = services.update_queue(queue, changes=changes, actor=actor_of(request))
    except NotFound:
        raise Http404("not found") from None  # deleted while the form was open
    except (ValidationError, TaskForgeError) as exc:
        form = _form({**_values_of(queue), **_echo(values)}, _errors_of(exc))
        if is_htmx(request):
            context = {"queue": queue, "form": form, "seat": seat}
            return render(request, "dashboard/queue.html#settings", context)
        context = {**_detail_context(request, seat, queue, None), "form": form}
        return render(request, "dashboard/queue.html", context, status=_status(exc))
    back = reverse("dashboard:queue", args=[queue.name])
    if is_htmx(request) and queue.name != name:
        # Renamed: every URL on the page (its live regions, its actions) names the old queue.
        response = done(request, "Settings saved.", back)
        response["HX-Redirect"] = back
        return response
    region = render(
        request,
        "dashboard/queue.html#settings",
        {"queue": queue, "form": _form(_values_of(queue)), "seat": seat, "saved": True},
    )
    return done(request, "Settings saved.", back, region)


def _detail_context(
    request: HttpRequest, seat: Seat, queue: Queue, partial: str | None
) -> dict[str, Any]:
    context: dict[str, Any] = {"queue": queue}
    if partial in (None, "stats"):
        context.update(_stats_context(request, seat, queue))
    if partial in (None, "chart"):
        window = window_of(request)
        context["window"] = window
        context["windows"] = stats.WINDOWS
        context["series"] = stats.throughput(seat.project, window=window, queue=queue)
    return context


def _stats_context(request: HttpRequest, seat: Seat, queue: Queue) -> dict[str, Any]:
    counts = stats.state_counts(seat.project, queue=queue)
    # queue_health covers every queue of the project, in three bounded statements.
    health = next(
        (row for row in stats.queue_health(seat.project) if row.queue.pk == queue.pk), None
    )
    no_jobs = all(count.value == 0 for count in counts.values())
    return {
        "counts": [(state, counts[state]) for state in JobState.values],
        "health": health,
        "workers_online": worker_services.count_online_workers(seat.project, queue),
        "purge_counts": _purge_counts(counts),
        "first_steps": first_steps(request, queue.name) if no_jobs else None,
    }


@dataclass(frozen=True, slots=True)
class PurgeCounts:
    """What a purge would delete, as its confirmation says it."""

    pending: stats.Count
    scheduled: stats.Count

    @property
    def total(self) -> stats.Count:
        """Both together, as approximate as the less exact of the two."""
        kinds = {self.pending.kind, self.scheduled.kind}
        kind: stats.CountKind = "exact"
        if "estimate" in kinds:
            kind = "estimate"
        elif "at_least" in kinds:
            kind = "at_least"
        return stats.Count(self.pending.value + self.scheduled.value, kind)


def _purge_counts(counts: Mapping[str, stats.Count]) -> PurgeCounts:
    return PurgeCounts(pending=counts[JobState.PENDING], scheduled=counts[JobState.SCHEDULED])


# --- Actions ----------------------------------------------------------------------------------


@require_POST
@dashboard_page(writes=True)
def queue_pause(request: HttpRequest, name: str) -> HttpResponse:
    seat = seat_of(request)
    queue = services.pause_queue(_queue_or_404(request, seat, name), actor=actor_of(request))
    return _answer(request, seat, queue, f"Queue {queue.name} paused: no new jobs start.")


@require_POST
@dashboard_page(writes=True)
def queue_resume(request: HttpRequest, name: str) -> HttpResponse:
    seat = seat_of(request)
    queue = services.resume_queue(_queue_or_404(request, seat, name), actor=actor_of(request))
    return _answer(request, seat, queue, f"Queue {queue.name} resumed.")


@require_POST
@dashboard_page(writes=True)
def queue_purge(request: HttpRequest, name: str) -> HttpResponse:
    seat = seat_of(request)
    queue = _queue_or_404(request, seat, name)
    deleted = queue_ops.purge_queue(queue, actor=actor_of(request))
    jobs = "job" if deleted == 1 else "jobs"
    return _answer(request, seat, queue, f"Purged {deleted:,} waiting {jobs} of {queue.name}.")


def _answer(request: HttpRequest, seat: Seat, queue: Queue, message: str) -> HttpResponse:
    """An action's answer: the refreshed ``stats`` region for htmx, a redirect otherwise."""
    back = reverse("dashboard:queue", args=[queue.name])
    if not is_htmx(request):
        return done(request, message, back)
    context = {"queue": queue, **_stats_context(request, seat, queue)}
    return done(request, message, back, render(request, "dashboard/queue.html#stats", context))


# --- helpers ----------------------------------------------------------------------------------


def _queue_or_404(request: HttpRequest, seat: Seat, name: str) -> Queue:
    queue: Queue = get_or_404(
        request, Queue.objects.for_project(seat.project).select_related("project"), name=name
    )
    return queue
