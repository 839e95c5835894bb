"""Queue API shapes (docs/api.md): input serializers validate, output serializers shape.

The API nests the retry policy as ``backoff: {base_seconds, max_seconds, multiplier, jitter}``;
the model stores it flat (``backoff_base_seconds``…). ``to_fields()`` maps one to the other.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from queues.models import RATE_LIMIT_HELP, Jitter, Queue
from queues.services import NAME_RE
from taskforge.lib.serializers import JsonStringOnly, StrictSerializer

BACKOFF_FIELDS = {
    "base_seconds": "backoff_base_seconds",
    "max_seconds": "backoff_max_seconds",
    "multiplier": "backoff_multiplier",
    "jitter": "backoff_jitter",
}
DAY = 24 * 3600


class NumberField(serializers.FloatField):
    """A float that refuses booleans (``float(True)`` is 1.0, and that is a client bug)."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool):
            self.fail("invalid")
        value: float = super().to_internal_value(data)
        return value


class NameField(JsonStringOnly, serializers.RegexField):
    """A queue name: a JSON string only."""


class BackoffInputSerializer(StrictSerializer):
    base_seconds = NumberField(min_value=0, max_value=DAY, required=False)
    max_seconds = NumberField(min_value=0, max_value=30 * DAY, required=False)
    multiplier = NumberField(min_value=1, max_value=100, required=False)
    jitter = serializers.ChoiceField(choices=Jitter.choices, required=False)


class QueueInputSerializer(StrictSerializer):
    """A queue's settings: only ``name`` is required on create, the rest have defaults.

    PATCH takes any subset (``partial=True``), ``backoff`` included.
    """

    name = NameField(
        NAME_RE,
        max_length=100,
        trim_whitespace=False,
        error_messages={"invalid": "Use 1-100 characters of A-Z a-z 0-9 _ . : - only."},
    )
    priority = serializers.IntegerField(min_value=0, max_value=9, required=False)
    max_concurrency = serializers.IntegerField(
        min_value=1, max_value=1_000_000, required=False, allow_null=True
    )
    max_attempts = serializers.IntegerField(min_value=1, max_value=1000, required=False)
    backoff = BackoffInputSerializer(required=False)
    timeout_seconds = serializers.IntegerField(min_value=1, max_value=7 * DAY, required=False)
    rate_limit_per_second = NumberField(
        min_value=0.001,
        max_value=1_000_000,
        required=False,
        allow_null=True,
        help_text=RATE_LIMIT_HELP,
    )
    retention_days = serializers.IntegerField(min_value=1, max_value=3650, required=False)

    def validate_name(self, value: str) -> str:
        if set(value) == {"."}:
            raise serializers.ValidationError("A name of only dots cannot appear in a URL.")
        return value

    def to_fields(self) -> dict[str, Any]:
        """The validated data as Queue model fields (only those the client sent)."""
        data = dict(self.validated_data)
        backoff = data.pop("backoff", {})
        return {**data, **{BACKOFF_FIELDS[key]: value for key, value in backoff.items()}}


class BackoffSerializer(serializers.Serializer):
    base_seconds = serializers.FloatField(source="backoff_base_seconds")
    max_seconds = serializers.FloatField(source="backoff_max_seconds")
    multiplier = serializers.FloatField(source="backoff_multiplier")
    jitter = serializers.ChoiceField(source="backoff_jitter", choices=Jitter.choices)


class QueueSerializer(serializers.ModelSerializer):
    """The queue representation: the input's shape plus ``paused`` and ``created_at``."""

    backoff = BackoffSerializer(source="*", read_only=True)

    class Meta:
        model = Queue
        fields = [
            "name", "priority", "paused", "max_concurrency", "max_attempts", "backoff",
            "timeout_seconds", "rate_limit_per_second", "retention_days", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class QueuePageSerializer(serializers.Serializer):
    results = QueueSerializer(many=True)
    next = serializers.URLField(allow_null=True, help_text="The next page, or null")


class DeleteParamsSerializer(serializers.Serializer):
    """The query string of DELETE /queues/{name}."""

    force = serializers.BooleanField(required=False, default=False)


class EmptyBodySerializer(StrictSerializer):
    """Actions take no body: anything sent must be empty (``{}``), so a typo is not ignored."""
