"""Job API shapes: input serializers validate, output serializers shape (docs/api.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from jobs import limits
from jobs.models import ExecutionLog, Job, JobDependency, JobExecution, JobState, ParentFailure
from jobs.services import listing
from jobs.services.submit import Submitted, SubmittedJob
from jobs.specs import JobSpec, check_batch_size
from taskforge.lib.serializers import (
    BoundedListField,
    NotPlain,
    StrictSerializer,
    plain_text,
    plain_uuid,
)


class AwareDateTimeField(serializers.DateTimeField):
    """A timestamp that must say its timezone: a naive one would be guessed, silently."""

    def enforce_timezone(self, value: datetime) -> datetime:
        if timezone.is_naive(value):
            raise serializers.ValidationError(
                "Must include a timezone (ISO-8601 with Z or an offset)."
            )
        return super().enforce_timezone(value)


class JobFieldsSerializer(StrictSerializer):
    """What every submitted job states: a job submission and a batch callback alike."""

    queue = serializers.CharField(max_length=limits.QUEUE_NAME_MAX_LENGTH)
    job_type = serializers.CharField(max_length=limits.JOB_TYPE_MAX_LENGTH)
    payload = serializers.JSONField(required=False, default=dict)
    priority = serializers.IntegerField(
        min_value=limits.PRIORITY_MIN,
        max_value=limits.PRIORITY_MAX,
        required=False,
        default=limits.PRIORITY_DEFAULT,
    )
    max_attempts = serializers.IntegerField(
        min_value=limits.MAX_ATTEMPTS_MIN,
        max_value=limits.MAX_ATTEMPTS_MAX,
        required=False,
        allow_null=True,
        default=None,
    )
    timeout_seconds = serializers.IntegerField(
        min_value=limits.TIMEOUT_SECONDS_MIN,
        max_value=limits.TIMEOUT_SECONDS_MAX,
        required=False,
        allow_null=True,
        default=None,
    )
    tags = BoundedListField(
        child=serializers.CharField(max_length=limits.TAG_MAX_LENGTH),
        required=False,
        default=list,
        max_length=limits.MAX_TAGS,
    )


class JobSubmitSerializer(JobFieldsSerializer):
    sub_priority = serializers.IntegerField(
        min_value=limits.SUB_PRIORITY_MIN,
        max_value=limits.SUB_PRIORITY_MAX,
        required=False,
        default=0,
        help_text="Orders jobs of the same priority, higher first (default 0): for a client "
        "whose own priority scale is finer than 0-9, such as Django's -100 to 100.",
    )
    run_at = AwareDateTimeField(required=False, allow_null=True, default=None)
    delay_seconds = serializers.FloatField(
        min_value=0,
        max_value=limits.DELAY_SECONDS_MAX,
        required=False,
        allow_null=True,
        default=None,
    )
    idempotency_key = serializers.CharField(
        max_length=limits.IDEMPOTENCY_KEY_MAX_LENGTH, required=False, allow_null=True, default=None
    )
    depends_on = BoundedListField(
        child=serializers.UUIDField(),
        required=False,
        default=list,
        max_length=limits.PARENT_LIST_PARSE_CAP,
    )
    on_parent_failure = serializers.ChoiceField(
        choices=ParentFailure.choices,
        required=False,
        default=ParentFailure.CANCEL,
        help_text="When a parent ends dead or cancelled: `cancel` this job too (the default), "
        "or `run` it anyway once its other parents are done.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("run_at") is not None and attrs.get("delay_seconds") is not None:
            raise serializers.ValidationError(
                {"run_at": ["Give run_at or delay_seconds, not both."]}
            )
        return attrs

    def to_spec(self) -> JobSpec:
        return JobSpec(**self.validated_data)


class BatchItemSerializer(JobSubmitSerializer):
    ref = serializers.CharField(
        max_length=limits.REF_MAX_LENGTH, required=False, allow_null=True, default=None
    )
    depends_on_refs = BoundedListField(
        child=serializers.CharField(max_length=limits.REF_MAX_LENGTH),
        required=False,
        default=list,
        max_length=limits.PARENT_LIST_PARSE_CAP,
    )


class CallbackSpecSerializer(JobFieldsSerializer):
    """A batch callback: the job enqueued once when the whole batch has finished."""

    payload = serializers.JSONField(
        required=False,
        default=dict,
        help_text='A JSON object; the batch\'s summary is added under "batch" (reserved).',
    )


class BatchSubmitSerializer(StrictSerializer):
    jobs = BatchItemSerializer(many=True, allow_empty=False)
    on_complete = CallbackSpecSerializer(
        required=False,
        allow_null=True,
        default=None,
        help_text="Enqueued once when every job of the batch has finished, whatever the outcome.",
    )
    on_success = CallbackSpecSerializer(
        required=False,
        allow_null=True,
        default=None,
        help_text="Enqueued once when every job of the batch has succeeded.",
    )

    def to_internal_value(self, data: Any) -> Any:
        # By count first, before the items' serializers run: each item costs tens of
        # microseconds to validate, and a body may hold 100,000 of them.
        if isinstance(data, dict) and isinstance(data.get("jobs"), list):
            check_batch_size(len(data["jobs"]))
        return super().to_internal_value(data)

    def to_specs(self) -> list[JobSpec]:
        return [JobSpec(**item) for item in self.validated_data["jobs"]]

    def to_callbacks(self) -> dict[str, JobSpec | None]:
        data = self.validated_data
        return {
            name: JobSpec(**data[name]) if data.get(name) is not None else None
            for name in ("on_complete", "on_success")
        }


class JobSerializer(serializers.ModelSerializer):
    """The API's job representation (its fields are documented in the OpenAPI schema)."""

    queue = serializers.SerializerMethodField()
    worker = serializers.UUIDField(source="worker_id", allow_null=True)

    class Meta:
        model = Job
        fields = [
            "id", "queue", "job_type", "payload", "state", "priority", "sub_priority", "run_at",
            "attempts", "max_attempts", "timeout_seconds", "idempotency_key", "tags", "result",
            "last_error", "worker", "created_at", "started_at", "finished_at", "batch_id",
        ]  # fmt: skip
        read_only_fields = fields

    def get_queue(self, job: Job) -> str:
        names: dict[Any, str] = self.context.get("queue_names", {})
        return names.get(job.queue_id) or job.queue.name


class EdgeSerializer(serializers.Serializer[Any]):
    """One dependency edge seen from one end: the job at the other end, and the policy."""

    job = serializers.UUIDField(help_text="The parent (in parent_edges) or child job.")
    on_parent_failure = serializers.ChoiceField(
        choices=ParentFailure.choices,
        help_text="What the child does when the parent ends dead or cancelled.",
    )


class JobDetailSerializer(JobSerializer):
    parents = serializers.SerializerMethodField()
    children = serializers.SerializerMethodField()
    parent_edges = serializers.SerializerMethodField()
    child_edges = serializers.SerializerMethodField()

    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "parents", "children", "parent_edges", "child_edges"]
        read_only_fields = fields

    def get_parents(self, job: Job) -> list[str]:
        return [str(edge.parent_id) for edge in job.parent_edges.all()]

    def get_children(self, job: Job) -> list[str]:
        return [str(edge.child_id) for edge in job.child_edges.all()]

    @extend_schema_field(EdgeSerializer(many=True))
    def get_parent_edges(self, job: Job) -> list[dict[str, Any]]:
        return [_edge(edge.parent_id, edge) for edge in job.parent_edges.all()]

    @extend_schema_field(EdgeSerializer(many=True))
    def get_child_edges(self, job: Job) -> list[dict[str, Any]]:
        return [_edge(edge.child_id, edge) for edge in job.child_edges.all()]


def _edge(job_id: Any, edge: JobDependency) -> dict[str, Any]:
    return {"job": str(job_id), "on_parent_failure": edge.on_parent_failure}


def job_detail_data(job: Job) -> dict[str, Any]:
    """JobDetailSerializer's output, built directly (job_data and the edges: a third of the
    serializer's time). ``job`` comes with its queue and both edge sets prefetched.

    tests/api/test_job_representation.py keeps the two identical.
    """
    parents, children = list(job.parent_edges.all()), list(job.child_edges.all())
    return {
        **job_data(job, job.queue.name),
        "parents": [str(edge.parent_id) for edge in parents],
        "children": [str(edge.child_id) for edge in children],
        "parent_edges": [_edge(edge.parent_id, edge) for edge in parents],
        "child_edges": [_edge(edge.child_id, edge) for edge in children],
    }


class ExecutionSerializer(serializers.ModelSerializer):
    worker = serializers.UUIDField(source="worker_id", allow_null=True)

    class Meta:
        model = JobExecution
        fields = [
            "id", "attempt", "status", "worker", "error", "traceback", "started_at",
            "finished_at",
        ]  # fmt: skip
        read_only_fields = fields


class LogSerializer(serializers.ModelSerializer):
    class Meta:
        model = ExecutionLog
        fields = ["id", "execution_id", "level", "message", "metadata", "created_at"]
        read_only_fields = fields


class BulkFilterSerializer(StrictSerializer):
    """The job list's filters (jobs/services/listing.py), as an object: the shape is checked
    here, the values by JobQuery.from_params, which the list's query parameters go through too.
    """

    state = serializers.ChoiceField(choices=JobState.choices, required=False)
    queue = serializers.CharField(max_length=limits.QUEUE_NAME_MAX_LENGTH, required=False)
    job_type = serializers.CharField(max_length=limits.JOB_TYPE_MAX_LENGTH, required=False)
    tag = serializers.CharField(max_length=limits.TAG_MAX_LENGTH, required=False)
    created_after = serializers.CharField(
        required=False, help_text="ISO-8601 with a timezone; created_at >= it."
    )
    created_before = serializers.CharField(
        required=False, help_text="ISO-8601 with a timezone; created_at < it."
    )
    id = serializers.CharField(required=False, help_text="A job id.")
    idempotency_key = serializers.CharField(
        max_length=limits.IDEMPOTENCY_KEY_MAX_LENGTH, required=False
    )
    payload = BoundedListField(
        child=serializers.CharField(max_length=listing.MAX_PAYLOAD_TERM_LENGTH),
        required=False,
        max_length=listing.MAX_PAYLOAD_TERMS,
        help_text='Payload terms "key.path:value", all of which must match (user_id:42).',
    )
    q = serializers.CharField(
        max_length=listing.MAX_TEXT_LENGTH,
        required=False,
        help_text="A job type containing it, an idempotency key or a job id.",
    )
    search = serializers.CharField(
        max_length=listing.MAX_SEARCH_LENGTH,
        required=False,
        help_text="The dashboard's search box text (state:dead payload.user_id:42 ...).",
    )


class BulkActionSerializer(StrictSerializer):
    action = serializers.ChoiceField(choices=["retry", "cancel", "delete"])
    ids = BoundedListField(child=serializers.UUIDField(), required=False, max_length=10_000)
    filter = BulkFilterSerializer(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("ids" in attrs) == ("filter" in attrs):
            raise serializers.ValidationError({"ids": ["Give exactly one of ids or filter."]})
        if "filter" in attrs and not attrs["filter"]:
            # An empty filter would act on every job of the project: make that deliberate.
            raise serializers.ValidationError(
                {"filter": [f"Give at least one of {', '.join(BulkFilterSerializer().fields)}."]}
            )
        return attrs


class BulkResultSerializer(serializers.Serializer):
    affected = serializers.IntegerField()


class BatchStatusSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    total = serializers.IntegerField()
    counts = serializers.DictField(child=serializers.IntegerField())
    finished = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    on_complete = CallbackSpecSerializer(allow_null=True)
    on_success = CallbackSpecSerializer(allow_null=True)
    callback_enqueued_at = serializers.DateTimeField(
        allow_null=True, help_text="When the batch was seen finished and its callbacks enqueued."
    )
    on_complete_job_id = serializers.UUIDField(allow_null=True)
    on_success_job_id = serializers.UUIDField(allow_null=True)


class BatchSubmittedSerializer(serializers.Serializer):
    batch_id = serializers.UUIDField()
    jobs = JobSerializer(many=True)


class CompleteSerializer(StrictSerializer):
    lease_token = serializers.UUIDField()
    result = serializers.JSONField(required=False, allow_null=True, default=None)


class FailSerializer(StrictSerializer):
    lease_token = serializers.UUIDField()
    error = serializers.CharField(max_length=limits.ERROR_MAX_LENGTH, allow_blank=True)
    traceback = serializers.CharField(
        max_length=limits.TRACEBACK_MAX_LENGTH,
        allow_blank=True,
        required=False,
        default="",
        trim_whitespace=False,
        help_text="The full traceback of the failure, kept on the attempt (`error` is its "
        "summary line).",
    )
    retryable = serializers.BooleanField(default=True)


class LogEntrySerializer(StrictSerializer):
    level = serializers.ChoiceField(choices=["info", "warn", "error"], default="info")
    message = serializers.CharField(max_length=10_000, allow_blank=True, trim_whitespace=False)
    metadata = serializers.DictField(required=False, default=dict)


class AppendLogsSerializer(StrictSerializer):
    lease_token = serializers.UUIDField()
    entries = LogEntrySerializer(many=True, allow_empty=False, max_length=1000)  # type: ignore[call-arg]


class JobStateSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    state = serializers.CharField()
    attempts = serializers.IntegerField()
    run_at = serializers.DateTimeField()


def _iso(value: datetime | None) -> str | None:
    # DRF's DateTimeField representation: ISO-8601, UTC written as "Z".
    if value is None:
        return None
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def job_data(job: Job | SubmittedJob, queue_name: str) -> dict[str, Any]:
    """JobSerializer's output, built directly: 5x faster for lists and batches of 1,000. From a
    Job, or from the row a single submit returned (services.submit_one's SubmittedJob).

    tests/api/test_job_representation.py keeps the two identical.
    """
    return {
        "id": str(job.id),
        "queue": queue_name,
        "job_type": job.job_type,
        "payload": job.payload,
        "state": job.state,
        "priority": job.priority,
        "sub_priority": job.sub_priority,
        "run_at": _iso(job.run_at),
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "timeout_seconds": job.timeout_seconds,
        "idempotency_key": job.idempotency_key,
        "tags": list(job.tags),
        "result": job.result,
        "last_error": job.last_error,
        "worker": str(job.worker_id) if job.worker_id else None,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "batch_id": str(job.batch_id) if job.batch_id else None,
    }


# --- The submit endpoints' fast paths ---------------------------------------------------------
#
# POST /jobs and POST /jobs/batch validate with the functions below, not with the serializers
# above: DRF's fields cost about 40 µs per job, a batch of 1,000 spent 40 ms on them. The
# serializers stay the definition (the OpenAPI schema is generated from them) and the referee:
# the fast path takes a value only in the plain form the JSON parser hands over (a str where a
# string is due, an int where an integer is due…) and checks it exactly as the field would, and
# anything else, valid or not (an integer sent as "5", a missing field, an unknown one…), sends
# the whole body through the serializer. So every accepted body becomes the same JobSpec as
# before and every refused body gets the same error, message, field names and index as before
# (tests/api/test_submit_validation_parity.py compares the two on a corpus of bodies).


def _plain_optional_text(value: Any, max_length: int) -> str | None:
    return None if value is None else plain_text(value, max_length)


def _plain_int(value: Any, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise NotPlain
    return value


def _plain_optional_int(value: Any, low: int, high: int) -> int | None:
    return None if value is None else _plain_int(value, low, high)


def _plain_texts(value: Any, max_items: int, max_length: int) -> list[str]:
    if type(value) is not list or len(value) > max_items:
        raise NotPlain
    return [plain_text(item, max_length) for item in value]


def _plain_uuids(value: Any) -> list[UUID]:
    if type(value) is not list or len(value) > limits.PARENT_LIST_PARSE_CAP:
        raise NotPlain
    return [plain_uuid(item) for item in value]


def _plain_delay(value: Any) -> float | None:
    if value is None:
        return None
    if type(value) is not int and type(value) is not float:
        raise NotPlain
    try:
        delay = float(value)
    except OverflowError:
        raise NotPlain from None
    if not math.isfinite(delay) or not 0 <= delay <= limits.DELAY_SECONDS_MAX:
        raise NotPlain
    return delay


_RUN_AT = AwareDateTimeField(required=False, allow_null=True, default=None)


def _plain_run_at(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        parsed: datetime = _RUN_AT.run_validation(value)
    except serializers.ValidationError:
        raise NotPlain from None
    return parsed


def _plain_payload(value: Any) -> Any:
    if value is None:  # "may not be null"
        raise NotPlain
    return value


def _plain_on_parent_failure(value: Any) -> str:
    if type(value) is not str or value not in _PARENT_FAILURES:
        raise NotPlain
    return value


_PARENT_FAILURES = frozenset(ParentFailure.values)
# Each field's check, for a value present in the body.
_PLAIN: dict[str, Any] = {
    "queue": lambda v: plain_text(v, limits.QUEUE_NAME_MAX_LENGTH),
    "job_type": lambda v: plain_text(v, limits.JOB_TYPE_MAX_LENGTH),
    "payload": _plain_payload,
    "priority": lambda v: _plain_int(v, limits.PRIORITY_MIN, limits.PRIORITY_MAX),
    "sub_priority": lambda v: _plain_int(v, limits.SUB_PRIORITY_MIN, limits.SUB_PRIORITY_MAX),
    "max_attempts": lambda v: _plain_optional_int(
        v, limits.MAX_ATTEMPTS_MIN, limits.MAX_ATTEMPTS_MAX
    ),
    "timeout_seconds": lambda v: _plain_optional_int(
        v, limits.TIMEOUT_SECONDS_MIN, limits.TIMEOUT_SECONDS_MAX
    ),
    "tags": lambda v: _plain_texts(v, limits.MAX_TAGS, limits.TAG_MAX_LENGTH),
    "run_at": _plain_run_at,
    "delay_seconds": _plain_delay,
    "idempotency_key": lambda v: _plain_optional_text(v, limits.IDEMPOTENCY_KEY_MAX_LENGTH),
    "depends_on": _plain_uuids,
    "on_parent_failure": _plain_on_parent_failure,
    "ref": lambda v: _plain_optional_text(v, limits.REF_MAX_LENGTH),
    "depends_on_refs": lambda v: _plain_texts(
        v, limits.PARENT_LIST_PARSE_CAP, limits.REF_MAX_LENGTH
    ),
}


@dataclass(frozen=True)
class _Shape:
    """The fields of one serializer, and the list fields whose default is a new empty list
    (the other defaults are JobSpec's own, the same as the serializer's)."""

    fields: frozenset[str]
    empty_lists: tuple[str, ...]


_CALLBACK = _Shape(  # CallbackSpecSerializer
    frozenset(
        {"queue", "job_type", "payload", "priority", "max_attempts", "timeout_seconds", "tags"}
    ),
    ("tags",),
)
_SUBMIT = _Shape(  # JobSubmitSerializer
    _CALLBACK.fields
    | {"run_at", "delay_seconds", "idempotency_key", "depends_on", "on_parent_failure"}
    | {"sub_priority"},
    ("tags", "depends_on"),
)
_BATCH_ITEM = _Shape(  # BatchItemSerializer
    _SUBMIT.fields | {"ref", "depends_on_refs"}, ("tags", "depends_on", "depends_on_refs")
)
_FIELDS_OF_A_BATCH = frozenset({"jobs", "on_complete", "on_success"})


def _plain_spec(data: Any, shape: _Shape) -> JobSpec:
    """A job as the serializer of ``shape`` would validate it, when every value is plain;
    else NotPlain."""
    if type(data) is not dict or "queue" not in data or "job_type" not in data:
        raise NotPlain
    values: dict[str, Any] = {name: [] for name in shape.empty_lists}
    fields = shape.fields
    for name, value in data.items():
        if name not in fields:
            raise NotPlain
        values[name] = _PLAIN[name](value)
    if values.get("run_at") is not None and values.get("delay_seconds") is not None:
        raise NotPlain  # "give run_at or delay_seconds, not both"
    return JobSpec(**values)


def plain_submit(data: Any) -> JobSpec | None:
    """The JobSpec of a POST /jobs body whose values are all plain, else None."""
    try:
        return _plain_spec(data, _SUBMIT)
    except NotPlain:
        return None


def plain_batch(data: Any) -> tuple[list[JobSpec], dict[str, JobSpec | None]] | None:
    """The specs and callbacks of a POST /jobs/batch body whose values are all plain (its size
    not checked), else None."""
    try:
        return _plain_batch(data)
    except NotPlain:
        return None


def submit_input(data: Any) -> JobSpec:
    """The JobSpec of a POST /jobs body, or the serializer's ValidationError."""
    spec = plain_submit(data)
    if spec is not None:
        return spec
    serializer = JobSubmitSerializer(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.to_spec()


def batch_input(data: Any) -> tuple[list[JobSpec], dict[str, JobSpec | None]]:
    """The specs and callbacks (on_complete, on_success) of a POST /jobs/batch body, or the
    error the serializer gives (the batch's size is checked first, before any item)."""
    if isinstance(data, dict) and isinstance(data.get("jobs"), list):
        check_batch_size(len(data["jobs"]))
    plain = plain_batch(data)
    if plain is not None:
        return plain
    serializer = BatchSubmitSerializer(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.to_specs(), serializer.to_callbacks()


def _plain_batch(data: Any) -> tuple[list[JobSpec], dict[str, JobSpec | None]]:
    if type(data) is not dict or not data.keys() <= _FIELDS_OF_A_BATCH:
        raise NotPlain
    items = data.get("jobs")
    if type(items) is not list or not items:
        raise NotPlain
    specs = [_plain_spec(item, _BATCH_ITEM) for item in items]
    callbacks = {}
    for name in ("on_complete", "on_success"):
        callback = data.get(name)
        callbacks[name] = None if callback is None else _plain_spec(callback, _CALLBACK)
    return specs, callbacks


def submitted_job_data(job: SubmittedJob) -> dict[str, Any]:
    """JobSerializer's output for a job of services.submit_one (tests/api keep them equal)."""
    return job_data(job, job.queue)


def submitted_jobs_data(submitted: Submitted) -> list[dict[str, Any]]:
    """JobSerializer's output for every job of a submission, in its order, built from the rows
    the submission wrote (the new jobs) and read (the jobs idempotent repeats return)."""
    repeated = submitted.repeated()
    names = submitted.queue_names
    # A batch's new jobs share their queue, timestamps and batch (the same objects): format
    # each once, found again by identity (``rows`` holds them all meanwhile).
    queue_names = _ByIdentity(names.__getitem__)
    times = _ByIdentity(_iso)
    batches = _ByIdentity(str)

    out = []
    for job_id, row, payload in zip(
        submitted.ids, submitted.new_rows, submitted.payloads, strict=True
    ):
        if row is None:
            job, queue_name = repeated[job_id]
            out.append(job_data(job, queue_name))
            continue
        out.append(
            {
                "id": str(job_id),
                "queue": queue_names(row.queue_id),
                "job_type": row.job_type,
                "payload": payload,
                "state": row.state,
                "priority": row.priority,
                "sub_priority": row.sub_priority,
                "run_at": times(row.run_at),
                "attempts": row.attempts,
                "max_attempts": row.max_attempts,
                "timeout_seconds": row.timeout_seconds,
                "idempotency_key": row.idempotency_key,
                "tags": list(row.tags),
                "result": None,
                "last_error": row.last_error,
                "worker": None,
                "created_at": times(row.created_at),
                "started_at": None,
                "finished_at": times(row.finished_at),
                "batch_id": batches(row.batch_id),
            }
        )
    return out


class _ByIdentity:
    """``format_(value)``, remembered by the identity of ``value`` (None stays None)."""

    def __init__(self, format_: Any) -> None:
        self._format = format_
        self._seen: dict[int, Any] = {id(None): None}

    def __call__(self, value: Any) -> Any:
        key = id(value)
        try:
            return self._seen[key]
        except KeyError:
            found = self._seen[key] = self._format(value)
            return found
