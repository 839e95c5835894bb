"""Worker protocol shapes (docs/api.md#the-worker-protocol)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from jobs.limits import ERROR_MAX_LENGTH, JOB_TYPE_MAX_LENGTH, TRACEBACK_MAX_LENGTH
from jobs.services import ResultItem
from taskforge.lib.serializers import (
    BoundedListField,
    NotPlain,
    StrictCharField,
    StrictSerializer,
    plain_text,
    plain_uuid,
)
from workers.models import Worker, WorkerType
from workers.services import MAX_JOB_TYPES, QueueWeight


class QueueWeightSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100)
    weight = serializers.IntegerField(min_value=1, max_value=1000, default=1)
    active = serializers.BooleanField(default=True)

    def to_weight(self, data: dict[str, Any]) -> QueueWeight:
        return QueueWeight(data["name"], data["weight"], data["active"])


class RegisterWorkerSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200)
    worker_type = serializers.ChoiceField(choices=WorkerType.choices, default=WorkerType.GENERAL)
    capacity = serializers.IntegerField(min_value=1, max_value=10_000, default=1)
    queues = QueueWeightSerializer(many=True, allow_empty=False)
    endpoint_url = serializers.URLField(
        required=False,
        allow_blank=True,
        default="",
        help_text="Reserved for push delivery, which is not offered yet: stored and shown, never "
        "called. Workers fetch their jobs by long-polling.",
    )
    metadata = serializers.DictField(required=False, default=dict)
    running = serializers.ListField(
        child=serializers.UUIDField(),
        required=False,
        default=list,
        max_length=10_000,
        help_text="Jobs the registering process still runs (a process re-registering while it "
        "works). The worker's other jobs went with its old process: they are failed at once as "
        "'worker restarted' and retried, so a restarted worker's slots are free at once. A "
        "process that just started sends none.",
    )
    job_types = BoundedListField(
        child=StrictCharField(max_length=JOB_TYPE_MAX_LENGTH),
        required=False,
        allow_null=True,
        default=None,
        max_length=MAX_JOB_TYPES,
        help_text="The job types this worker has handlers for (each named once): a fetch claims "
        "only jobs of these types, and a job whose type no online worker handles waits. Null "
        "or absent: any type. Registering again replaces the list.",
    )

    def validate_job_types(self, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise serializers.ValidationError("A job type is named twice.")
        return value


class WorkerSerializer(serializers.ModelSerializer[Worker]):
    queues = serializers.SerializerMethodField()
    running = serializers.SerializerMethodField()

    class Meta:
        model = Worker
        fields = [
            "id", "name", "worker_type", "status", "capacity", "last_heartbeat", "endpoint_url",
            "metadata", "job_types", "queues", "running", "created_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_queues(self, worker: Worker) -> list[dict[str, Any]]:
        return [
            {"name": a.queue.name, "weight": a.weight, "active": a.is_active}
            for a in worker.assignments.all()
        ]

    def get_running(self, worker: Worker) -> int:
        running: dict[Any, int] = self.context.get("running", {})
        return running.get(worker.pk, 0)


class HeartbeatSerializer(StrictSerializer):
    running = BoundedListField(
        child=serializers.UUIDField(), required=False, default=list, max_length=10_000
    )


class HeartbeatResponseSerializer(serializers.Serializer[Any]):
    status = serializers.CharField()


class HeartbeatAnswerSerializer(serializers.Serializer[Any]):
    status = serializers.ChoiceField(
        choices=["online", "draining"],
        help_text="draining: finish what you hold, fetch nothing more.",
    )
    cancelled = serializers.ListField(
        child=serializers.UUIDField(),
        help_text="Jobs named in `running` that an operator cancelled while they ran: stop "
        "them. Each keeps its slot counted busy while the heartbeats name it; reporting its "
        "result (outcome `conflict`) or no longer naming it frees the slot.",
    )


class AssignedJobSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    job_type = serializers.CharField()
    payload = serializers.JSONField()
    attempt = serializers.IntegerField()
    lease_token = serializers.UUIDField()
    lease_expires_at = serializers.DateTimeField()
    timeout_seconds = serializers.IntegerField()
    queue = serializers.CharField(help_text="The name of the job's queue.")
    priority = serializers.IntegerField()
    sub_priority = serializers.IntegerField()
    created_at = serializers.DateTimeField(help_text="When the job was submitted.")


class FetchResponseSerializer(serializers.Serializer[Any]):
    jobs = AssignedJobSerializer(many=True)


class ResultItemSerializer(StrictSerializer):
    job_id = serializers.UUIDField()
    lease_token = serializers.UUIDField()
    status = serializers.ChoiceField(choices=["succeeded", "failed"])
    result = serializers.JSONField(required=False, allow_null=True, default=None)
    error = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=ERROR_MAX_LENGTH
    )
    traceback = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=TRACEBACK_MAX_LENGTH,
        trim_whitespace=False,
        help_text="A failure's full traceback, kept on the attempt (`error` is its summary).",
    )
    retryable = serializers.BooleanField(required=False, default=True)


class ResultsSerializer(StrictSerializer):
    results = ResultItemSerializer(many=True, allow_empty=False, max_length=1000)  # type: ignore[call-arg]

    def to_items(self) -> list[ResultItem]:
        """The validated results (after is_valid())."""
        return [
            ResultItem(
                job_id=item["job_id"],
                lease_token=item["lease_token"],
                succeeded=item["status"] == "succeeded",
                result=item["result"],
                error=item["error"],
                traceback=item["traceback"],
                retryable=item["retryable"],
            )
            for item in self.validated_data["results"]
        ]


# --- POST /workers/{id}/results: the fast path -------------------------------------------------
#
# As for the submit endpoints (jobs/serializers.py): the serializers above stay the definition
# and the referee, and a body whose every value is in the plain form the JSON parser hands over
# is checked here exactly as their fields would check it; any other body, valid or not, goes
# through ResultsSerializer. Its fields cost about 50 µs an item: 2.5 ms of each request that
# carries a worker's 50 results (tests/workers/test_results_validation_parity.py).

RESULT_FIELDS = frozenset(
    {"job_id", "lease_token", "status", "result", "error", "traceback", "retryable"}
)


def results_input(data: Any) -> list[ResultItem]:
    """The results of a POST /workers/{id}/results body, or the serializer's ValidationError."""
    items = plain_results(data)
    if items is not None:
        return items
    serializer = ResultsSerializer(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.to_items()


def plain_results(data: Any) -> list[ResultItem] | None:
    """The results of a body whose values are all plain, else None."""
    if type(data) is not dict or data.keys() != {"results"}:
        return None
    items = data["results"]
    if type(items) is not list or not 1 <= len(items) <= 1000:
        return None
    try:
        return [_plain_result(item) for item in items]
    except NotPlain:
        return None


def _plain_result(item: Any) -> ResultItem:
    if type(item) is not dict or not item.keys() <= RESULT_FIELDS:
        raise NotPlain
    status = item.get("status")
    retryable = item.get("retryable", True)
    if type(status) is not str or status not in ("succeeded", "failed"):
        raise NotPlain
    if type(retryable) is not bool:
        raise NotPlain
    return ResultItem(
        job_id=plain_uuid(item.get("job_id")),
        lease_token=plain_uuid(item.get("lease_token")),
        succeeded=status == "succeeded",
        result=item.get("result"),
        # CharField trims error (then checks its length); not traceback (trim_whitespace off).
        error=plain_text(item.get("error", ""), ERROR_MAX_LENGTH, blank=True),
        traceback=plain_text(
            item.get("traceback", ""), TRACEBACK_MAX_LENGTH, trim=False, blank=True
        ),
        retryable=retryable,
    )


class ResultOutcomeSerializer(serializers.Serializer[Any]):
    job_id = serializers.UUIDField()
    outcome = serializers.ChoiceField(
        choices=["succeeded", "scheduled", "dead", "conflict", "busy"],
        help_text="busy: another transaction held the job's row, so the result was not "
        "applied (nor refused): send it again shortly.",
    )
    run_at = serializers.DateTimeField(required=False)


class ResultsResponseSerializer(serializers.Serializer[Any]):
    results = ResultOutcomeSerializer(many=True)
