"""Worker protocol shapes (docs/api.md#the-worker-protocol)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from jobs.limits import ERROR_MAX_LENGTH, JOB_TYPE_MAX_LENGTH, TRACEBACK_MAX_LENGTH
from taskforge.lib.serializers import BoundedListField, StrictCharField, StrictSerializer
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
