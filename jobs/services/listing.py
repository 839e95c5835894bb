"""Finding a project's jobs: the filters of the API's job list, the dashboard's search box,
keyset pages in both directions and a capped count. One implementation for both: the API's
``GET /api/v1/jobs`` and ``POST /api/v1/jobs/bulk`` parse their parameters here too.

A query names fields of the job (state, queue, type, tag, idempotency key, id, creation
time), values inside its payload (``payload.user_id:42``) and a free text ``q``. Every input
is checked here, so a malformed one is a ValidationFailed naming its parameter, never a 500
from PostgreSQL (NUL characters, times PostgreSQL cannot store, overlong values...).

Pages are keyset pages on (created_at, id), newest first: each is one index range scan
however deep (job_project_created, job_project_state_created, or the payload's GIN index
job_payload_path followed by a sort of its matches), and no OFFSET.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any

from django.db.models import Q, QuerySet
from django.utils.dateparse import parse_datetime

from accounts.models import Project
from jobs import limits, queries
from jobs.models import Job, JobState
from queues.models import Queue
from taskforge.lib.errors import ValidationFailed
from taskforge.lib.ids import is_uuid
from taskforge.lib.pagination import (
    MAX_LIMIT,
    decode_cursor,
    encode_cursor,
    newer_than,
    older_than,
)

JsonScalar = str | int | float | bool | None
# A payload term: the keys leading to a value, and the value (``payload.order.id:7`` is
# (("order", "id"), 7)).
PayloadTerm = tuple[tuple[str, ...], JsonScalar]

# The free text matches a job type by substring or an idempotency key exactly: no longer than
# the longest of those can match anything.
MAX_TEXT_LENGTH = max(limits.JOB_TYPE_MAX_LENGTH, limits.IDEMPOTENCY_KEY_MAX_LENGTH)
MAX_SEARCH_LENGTH = 2000
# Each payload term is one more containment test (a GIN index scan): a handful is plenty for a
# search, and the bound keeps one request's work small.
MAX_PAYLOAD_TERMS = 10
# Free text is matched against at most this many of a project's job type names.
MAX_JOB_TYPES_SEARCHED = 10_000
MAX_PAYLOAD_DEPTH = 10
MAX_PAYLOAD_KEY_LENGTH = 200
MAX_PAYLOAD_VALUE_LENGTH = 1000
MAX_PAYLOAD_PATH_LENGTH = MAX_PAYLOAD_DEPTH * (MAX_PAYLOAD_KEY_LENGTH + 1)
MAX_PAYLOAD_TERM_LENGTH = MAX_PAYLOAD_PATH_LENGTH + MAX_PAYLOAD_VALUE_LENGTH

DEFAULT_PAGE_SIZE = 50
DEFAULT_COUNT_CAP = 10_000

# The search box's qualifiers and the JobQuery field each one sets.
QUALIFIERS = {
    "state": "state",
    "queue": "queue",
    "type": "job_type",
    "tag": "tag",
    "key": "idempotency_key",
    "id": "id",
    "after": "created_after",
    "before": "created_before",
}
_TEXT_LIMITS = {
    "queue": limits.QUEUE_NAME_MAX_LENGTH,
    "job_type": limits.JOB_TYPE_MAX_LENGTH,
    "tag": limits.TAG_MAX_LENGTH,
    "idempotency_key": limits.IDEMPOTENCY_KEY_MAX_LENGTH,
    "q": MAX_TEXT_LENGTH,
}
# The query parameters from_params reads that hold one value each (payload may repeat).
SINGLE_PARAMS = (
    "state", "queue", "job_type", "tag", "created_after", "created_before", "id",
    "idempotency_key", "q",
)  # fmt: skip
# A bare word in the search box is an id only in the canonical spelling: 32 hex digits are as
# likely an idempotency key, and the free text already matches a job by any id spelling.
_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
# A qualified search token: qualifier, colon, then a JSON string or a run without quotes.
_QUALIFIED = re.compile(r'(?P<qualifier>[^\s:"]+):(?P<value>"(?:[^"\\]|\\.)*"|[^"]*)', re.S)
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
# A payload key in a path: anything but the separators of the grammar.
_PAYLOAD_KEY = re.compile(r'[^\s.:"]+')


@dataclass(frozen=True, slots=True, kw_only=True)
class JobQuery:
    """What a list of jobs is narrowed to; every field set must match (AND).

    Build it with ``from_params`` (query parameters or the bulk filter's fields) or
    ``parse_search`` (the dashboard's search box); ``to_params`` writes it back as parameters
    that ``from_params`` reads to an equal query.
    """

    state: str | None = None
    queue: str | None = None
    job_type: str | None = None
    tag: str | None = None
    # created_after <= created_at < created_before, both aware (UTC).
    created_after: datetime | None = None
    created_before: datetime | None = None
    id: uuid.UUID | None = None
    idempotency_key: str | None = None
    # payload @> {path: value} for each term; a number also matches its string form.
    payload: tuple[PayloadTerm, ...] = ()
    # Free text: a job type containing it (any case), an idempotency key equal to it, or the
    # job's id when it is one.
    q: str | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> JobQuery:
        """The query of these parameters: the fields by name (``payload`` repeatable, each
        ``path.to.key:value``) and ``search``, the search box's text, whose terms add to them.

        Empty values count as absent. ``params`` may be a QueryDict (repeated ``payload``
        parameters) or a plain mapping (``payload`` a string or a list of strings). Raise
        ValidationFailed naming the parameter at fault.
        """
        values: dict[str, Any] = {}
        for name in SINGLE_PARAMS:
            raw = _single(params, name)
            if raw:
                values[name] = _clean_field(name, raw, where=name)
        terms = tuple(_payload_term(raw, where="payload") for raw in _many(params, "payload"))
        _check_term_count(terms, where="payload")
        query = cls(**values, payload=terms)
        search = _single(params, "search")
        if search:
            query = query._merged(parse_search(search), where="search")
        return query

    def to_params(self) -> dict[str, str | list[str]]:
        """The query as parameters (only the fields set); ``from_params`` reads them back."""
        params: dict[str, str | list[str]] = {}
        for name in SINGLE_PARAMS:
            value = getattr(self, name)
            if value is None:
                continue
            params[name] = value.isoformat() if isinstance(value, datetime) else str(value)
        if self.payload:
            params["payload"] = [
                ".".join(path) + ":" + json.dumps(value) for path, value in self.payload
            ]
        return params

    @property
    def is_empty(self) -> bool:
        """True when the query matches every job of the project."""
        return self == JobQuery()

    def _merged(self, other: JobQuery, *, where: str) -> JobQuery:
        """This query narrowed by ``other``; one field set to two different values is refused
        (``where`` names the parameter that brought the second one)."""
        changes: dict[str, Any] = {"payload": self.payload + other.payload}
        for field in fields(self):
            name = field.name
            mine, theirs = getattr(self, name), getattr(other, name)
            if name == "payload" or theirs is None:
                continue
            if mine is not None and mine != theirs:
                raise _invalid(where, f"{name} is given twice, as {mine} and as {theirs}")
            changes[name] = theirs
        _check_term_count(changes["payload"], where=where)
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of jobs, newest first, with the cursors of its neighbours: pass
    ``newer_cursor`` as ``after`` and ``older_cursor`` as ``before`` to ``page``. A cursor is
    None when there is no page that way."""

    rows: list[Job]
    newer_cursor: str | None
    older_cursor: str | None


def parse_search(text: str) -> JobQuery:
    """The search box's query: space-separated terms, all of which must match.

    ``state:dead``, ``queue:emails``, ``type:send_email``, ``tag:x``, ``key:<idempotency key>``,
    ``id:<uuid>``, ``after:<time>`` and ``before:<time>`` (ISO-8601 with a timezone) set the
    field; ``payload.user_id:42`` and ``payload.order.currency:eur`` match a payload value
    (JSON when it parses as JSON, else a string; quote a value with spaces:
    ``payload.name:"Ada Lovelace"``). A bare UUID is the job's id; other bare words (quoted
    when they contain spaces) are the free text ``q``. Errors name ``search``.
    """
    where = "search"
    _check_text(where, text, MAX_SEARCH_LENGTH)
    values: dict[str, Any] = {}
    terms: list[PayloadTerm] = []
    words: list[str] = []
    for token in _tokens(text):
        if _QUOTED.fullmatch(token):
            words.append(_json_string(token, where))
            continue
        match = _QUALIFIED.fullmatch(token)
        if match is None:
            if '"' in token:
                raise _invalid(where, f"a quote may only open a value: {token}")
            if _CANONICAL_UUID.fullmatch(token):
                _set_once(values, "id", uuid.UUID(token), where)
            else:
                words.append(token)
            continue
        qualifier, raw = match["qualifier"], match["value"]
        if qualifier.lower().startswith("payload."):
            terms.append(_payload_term(qualifier[len("payload.") :] + ":" + raw, where=where))
            continue
        name = QUALIFIERS.get(qualifier.lower())
        if name is None:
            known = ", ".join(f"{q}:" for q in QUALIFIERS)
            raise _invalid(where, f"unknown qualifier {qualifier}: (use {known} or payload.<key>:)")
        value = _json_string(raw, where) if raw.startswith('"') else raw
        if not value:
            raise _invalid(where, f"{qualifier}: needs a value")
        if name == "state":
            # Typed by people: "state:Dead" means dead (the API's state parameter is exact).
            value = value.lower()
        _set_once(values, name, _clean_field(name, value, where=where, label=qualifier), where)
    if words:
        values["q"] = _clean_field("q", " ".join(words), where=where, label="text")
    _check_term_count(terms, where=where)
    return JobQuery(**values, payload=tuple(terms))


def filtered(project: Project, query: JobQuery) -> QuerySet[Job]:
    """The project's jobs that match ``query`` (unordered)."""
    jobs = Job.objects.for_project(project)
    if query.state:
        jobs = jobs.filter(state=query.state)
    if query.queue:
        # Resolved first, so the planner sees a constant queue id (and a bulk action's
        # FOR UPDATE locks no queue row, which submits to that queue would wait for).
        queue_id = (
            Queue.objects.for_project(project)
            .filter(name=query.queue)
            .values_list("pk", flat=True)
            .first()
        )
        if queue_id is None:
            return jobs.none()
        jobs = jobs.filter(queue_id=queue_id)
    if query.job_type:
        jobs = jobs.filter(job_type=query.job_type)
    if query.tag:
        jobs = jobs.filter(tags__contains=[query.tag])
    if query.created_after:
        jobs = jobs.filter(created_at__gte=query.created_after)
    if query.created_before:
        jobs = jobs.filter(created_at__lt=query.created_before)
    if query.id:
        jobs = jobs.filter(pk=query.id)
    if query.idempotency_key:
        jobs = jobs.filter(idempotency_key=query.idempotency_key)
    for path, value in query.payload:
        jobs = jobs.filter(_payload_match(path, value))
    if query.q:
        # The text is matched against the project's few job type names first, and the jobs
        # are then found by exact type (job_project_type) or key (the unique index): testing
        # the pattern on every job read the whole project when nothing matched (0.6 s).
        text = query.q.casefold()
        types = [
            name
            for name in queries.project_job_types(project.pk, limit=MAX_JOB_TYPES_SEARCHED)
            if text in name.casefold()
        ]
        match = Q(job_type__in=types) | Q(idempotency_key=query.q)
        if is_uuid(query.q):
            match |= Q(pk=query.q)
        jobs = jobs.filter(match)
    return jobs


def page(
    project: Project,
    query: JobQuery,
    *,
    before: str | None = None,
    after: str | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
) -> JobPage:
    """A page of at most ``limit`` matching jobs, newest first (created_at, then id).

    Without a cursor, the newest jobs; ``before``: the jobs just older than the cursor's row;
    ``after``: the jobs just newer (the previous page). Going newer, a page that reaches the
    newest jobs is the first page, whole. Cursors come from an earlier JobPage; anything
    else is a ValidationFailed naming the parameter.
    """
    if before and after:
        raise _invalid("after", "give before or after, not both")
    if not 1 <= limit <= MAX_LIMIT:
        raise _invalid("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    jobs = filtered(project, query)
    if after:
        created_at, pk = decode_cursor(after, Job, field="after")
        newer = jobs.filter(newer_than(created_at, pk)).order_by("created_at", "pk")
        rows = list(newer[: limit + 1])
        if len(rows) <= limit:
            return page(project, query, limit=limit)
        rows = rows[:limit][::-1]
        return JobPage(rows, _cursor_of(rows[0]), _cursor_of(rows[-1]))
    newest_first = jobs.order_by("-created_at", "-pk")
    if before:
        created_at, pk = decode_cursor(before, Job, field="before")
        newest_first = newest_first.filter(older_than(created_at, pk))
    rows = list(newest_first[: limit + 1])
    older = _cursor_of(rows[limit - 1]) if len(rows) > limit else None
    rows = rows[:limit]
    if not before:
        return JobPage(rows, None, older)
    # The cursor's own row was newer and matched: there is a page that way.
    return JobPage(rows, _cursor_of(rows[0]) if rows else before, older)


def count_matching(
    project: Project, query: JobQuery, *, cap: int = DEFAULT_COUNT_CAP
) -> tuple[int, bool]:
    """How many jobs match, counting no further than ``cap``: (count, capped). When capped
    is True there are more than ``count`` (= cap); counting them all would read every match."""
    jobs = filtered(project, query).order_by()
    if query.state == JobState.PENDING and not query.queue:
        # Pending jobs are indexed only by queue, in claim order (job_claim_pending): naming
        # the project's queues lets the count use that index instead of reading the project's
        # jobs of every state for the few pending ones.
        jobs = jobs.filter(queue_id__in=Queue.objects.for_project(project).values("pk"))
    found = jobs[: cap + 1].count()
    return min(found, cap), found > cap


# --- parsing -----------------------------------------------------------------------------------


def _invalid(where: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{where}: {message}", details={"field": where})


def _single(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None or isinstance(value, str):
        return value
    raise _invalid(name, "must be a string")


def _many(params: Mapping[str, Any], name: str) -> list[str]:
    getlist: Callable[[str], list[Any]] | None = getattr(params, "getlist", None)
    if getlist is not None:
        values = getlist(name)
    else:
        value = params.get(name)
        values = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise _invalid(name, "must be a string or a list of strings")
    return [value for value in values if value]


def _check_text(where: str, value: str, max_length: int) -> None:
    if len(value) > max_length:
        raise _invalid(where, f"must be at most {max_length} characters")
    if "\x00" in value:
        raise _invalid(where, "must not contain NUL characters")
    # A lone surrogate (from a JSON escape such as \ud800) cannot be sent to PostgreSQL.
    try:
        value.encode()
    except UnicodeEncodeError:
        raise _invalid(where, "must be valid Unicode text") from None


def _clean_field(name: str, raw: str, *, where: str, label: str | None = None) -> Any:
    """The value of field ``name`` from its text; errors name ``where`` (and, in a search,
    the qualifier as typed)."""
    prefix = f"{label}: " if label and label != where else ""
    try:
        return _FIELD_PARSERS[name](raw)
    except ValueError as exc:
        raise _invalid(where, f"{prefix}{exc}") from None


def _text(name: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if len(raw) > _TEXT_LIMITS[name]:
            raise ValueError(f"must be at most {_TEXT_LIMITS[name]} characters")
        if "\x00" in raw:
            raise ValueError("must not contain NUL characters")
        try:
            raw.encode()
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode text") from None
        return raw

    return parse


def _state(raw: str) -> str:
    if raw not in JobState.values:
        raise ValueError(f"must be one of {JobState.values}")
    return raw


def _job_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ValueError("must be a job id (a UUID)") from None


def _time(raw: str) -> datetime:
    try:
        value = parse_datetime(raw)
        # PostgreSQL accepts UTC offsets up to 15:59 only: hand it UTC.
        value = value.astimezone(UTC) if value is not None and value.tzinfo else None
    except (ValueError, OverflowError):
        value = None
    if value is None:
        raise ValueError("must be an ISO-8601 time with a timezone")
    return value


_FIELD_PARSERS: dict[str, Callable[[str], Any]] = {
    "state": _state,
    "queue": _text("queue"),
    "job_type": _text("job_type"),
    "tag": _text("tag"),
    "created_after": _time,
    "created_before": _time,
    "id": _job_id,
    "idempotency_key": _text("idempotency_key"),
    "q": _text("q"),
}


def _set_once(values: dict[str, Any], name: str, value: Any, where: str) -> None:
    if name in values and values[name] != value:
        raise _invalid(where, f"{name} is given twice, as {values[name]} and as {value}")
    values[name] = value


def _check_term_count(terms: Iterable[PayloadTerm], *, where: str) -> None:
    if len(list(terms)) > MAX_PAYLOAD_TERMS:
        raise _invalid(where, f"at most {MAX_PAYLOAD_TERMS} payload terms")


def _tokens(text: str) -> list[str]:
    """Split on whitespace outside double quotes (a backslash escapes inside them)."""
    tokens: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if quoted:
            current.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char.isspace():
            if current:
                tokens.append("".join(current))
                current = []
        else:
            quoted = char == '"'
            current.append(char)
    if quoted:
        raise _invalid("search", "a quoted value is not closed")
    if current:
        tokens.append("".join(current))
    return tokens


def _json_string(quoted: str, where: str) -> str:
    try:
        value = json.loads(quoted)
    except ValueError:
        raise _invalid(where, f"not a valid quoted value: {quoted}") from None
    assert isinstance(value, str)
    return value


def _payload_term(raw: str, *, where: str) -> PayloadTerm:
    """``order.currency:eur`` → (("order", "currency"), "eur")."""
    # NUL and lone surrogates anywhere (a key too) would fail in PostgreSQL, not here.
    _check_text(where, raw, MAX_PAYLOAD_TERM_LENGTH)
    path_text, colon, value_text = raw.partition(":")
    if not colon:
        raise _invalid(where, f"{raw[:50]}: write a payload term as key:value (user_id:42)")
    path = tuple(path_text.split("."))
    if not all(_PAYLOAD_KEY.fullmatch(key) for key in path):
        raise _invalid(where, f"{path_text[:50]}: a payload key path is keys joined by dots")
    if len(path) > MAX_PAYLOAD_DEPTH or max(map(len, path)) > MAX_PAYLOAD_KEY_LENGTH:
        raise _invalid(
            where,
            f"a payload path has at most {MAX_PAYLOAD_DEPTH} keys of at most "
            f"{MAX_PAYLOAD_KEY_LENGTH} characters",
        )
    if not value_text:
        raise _invalid(where, f"{path_text}: needs a value")
    if len(value_text) > MAX_PAYLOAD_VALUE_LENGTH:
        raise _invalid(
            where, f"{path_text}: a value is at most {MAX_PAYLOAD_VALUE_LENGTH} characters"
        )
    value = _json_scalar(value_text, where=where, path_text=path_text)
    if isinstance(value, str):
        _check_text(where, value, MAX_PAYLOAD_VALUE_LENGTH)
    return path, value


def _json_scalar(text: str, *, where: str, path_text: str) -> JsonScalar:
    """The value as JSON when it is a JSON scalar (42, true, null, "x"), else the text as a
    string. NaN and Infinity are text: JSON has no such numbers."""
    try:
        value = json.loads(text, parse_constant=_refuse)
    except ValueError:
        if text.startswith('"'):
            raise _invalid(where, f"{path_text}: not a valid quoted value") from None
        return text
    if isinstance(value, dict | list):
        raise _invalid(
            where,
            f"{path_text}: match one value at a time (a string, number, true, false or null); "
            "name deeper keys with dots",
        )
    if isinstance(value, float) and not math.isfinite(value):
        # "1e999" overflows to infinity, which jsonb cannot hold: it is text, like NaN.
        return text
    return value


def _refuse(constant: str) -> None:
    raise ValueError(constant)


# --- querying ----------------------------------------------------------------------------------


def _payload_match(path: tuple[str, ...], value: JsonScalar) -> Q:
    """payload @> {path: value}, answered by the GIN index job_payload_path. A number also
    matches the same number sent as a string (42 and "42"), as a second containment: an OR of
    two index scans, both from the GIN index."""
    match = Q(payload__contains=_nested(path, value))
    if isinstance(value, int | float) and not isinstance(value, bool):
        match |= Q(payload__contains=_nested(path, json.dumps(value)))
    return match


def _nested(path: tuple[str, ...], value: JsonScalar) -> Any:
    document: Any = value
    for key in reversed(path):
        document = {key: document}
    return document


def _cursor_of(job: Job) -> str:
    return encode_cursor(job.created_at, job.pk)
