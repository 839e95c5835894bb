"""One source for job limits: the API's serializers and the specs' checks refuse exactly past
the numbers in jobs/limits.py (a limit changed in one place only fails here)."""

from __future__ import annotations

import pytest

from jobs import limits
from jobs.serializers import BatchItemSerializer
from jobs.specs import JobSpec, validate_spec
from taskforge.lib.errors import ValidationFailed

# field: (largest accepted value, smallest refused value) for the spec and the API alike.
BOUNDS = {
    "queue": ("q" * limits.QUEUE_NAME_MAX_LENGTH, "q" * (limits.QUEUE_NAME_MAX_LENGTH + 1)),
    "job_type": ("t" * limits.JOB_TYPE_MAX_LENGTH, "t" * (limits.JOB_TYPE_MAX_LENGTH + 1)),
    "priority": (limits.PRIORITY_MAX, limits.PRIORITY_MAX + 1),
    "max_attempts": (limits.MAX_ATTEMPTS_MAX, limits.MAX_ATTEMPTS_MAX + 1),
    "timeout_seconds": (limits.TIMEOUT_SECONDS_MAX, limits.TIMEOUT_SECONDS_MAX + 1),
    "delay_seconds": (limits.DELAY_SECONDS_MAX, limits.DELAY_SECONDS_MAX + 1),
    "idempotency_key": (
        "k" * limits.IDEMPOTENCY_KEY_MAX_LENGTH,
        "k" * (limits.IDEMPOTENCY_KEY_MAX_LENGTH + 1),
    ),
    "tags": (["x"] * limits.MAX_TAGS, ["x"] * (limits.MAX_TAGS + 1)),
    "ref": ("r" * limits.REF_MAX_LENGTH, "r" * (limits.REF_MAX_LENGTH + 1)),
}


def _item(field: str, value: object) -> dict[str, object]:
    return {"queue": "default", "job_type": "t", field: value}


@pytest.mark.parametrize("field", sorted(BOUNDS))
def test_the_api_and_the_specs_refuse_past_the_same_limit(field):
    accepted, refused = BOUNDS[field]
    assert BatchItemSerializer(data=_item(field, accepted)).is_valid()
    assert not BatchItemSerializer(data=_item(field, refused)).is_valid()
    validate_spec(0, JobSpec(**_item(field, accepted)))  # type: ignore[arg-type]
    with pytest.raises(ValidationFailed) as caught:
        validate_spec(0, JobSpec(**_item(field, refused)))  # type: ignore[arg-type]
    assert caught.value.details == {"field": field, "index": 0}
    assert caught.value.message.startswith(f"jobs[0].{field}: ")
