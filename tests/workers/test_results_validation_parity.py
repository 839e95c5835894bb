"""The results endpoint's fast validation (workers/serializers.py plain_results) against the
serializer it stands in for.

The fast path may give a body to the serializer whenever it likes (that only costs time), but
whatever it accepts, the serializer must accept too, as the same results: the same values of
the same types. Bodies are drawn from values at and past every limit, of every JSON type, with
the whitespace, NUL and lone surrogates the fields refuse or trim.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.services import ResultItem
from workers.serializers import ResultsSerializer, plain_results, results_input

ID = str(uuid.UUID(int=7))
IDS = [ID, uuid.UUID(int=7).hex, "{" + ID + "}", "urn:uuid:" + ID, "not-a-uuid", "", 7, None]
STATUSES = ["succeeded", "failed", "SUCCEEDED", "done", "", None, 1, True]
RESULTS = [None, {}, [], "s", 0, 2.5, True, {"a": [1, None, {"b": "é"}]}]
TEXTS = [
    "", " ", "  boom  ", "ValueError: x", "x" * 10_000, " " + "x" * 10_000, "x" * 10_001,
    "x" * 65_536, "x" * 65_537, "a\x00b", "\ud800", "é\n", "Traceback:\n  line\n", 5, None, [],
]  # fmt: skip
BOOLEANS = [True, False, "true", "false", 1, 0, None, "x"]

ITEM_FIELDS = {
    "job_id": IDS,
    "lease_token": IDS,
    "status": STATUSES,
    "result": RESULTS,
    "error": TEXTS,
    "traceback": TEXTS,
    "retryable": BOOLEANS,
}


# How many of each list's first values the field takes as they are.
VALID_PREFIX = {
    "job_id": 4, "lease_token": 4, "status": 2, "result": 8, "error": 6, "traceback": 8,
    "retryable": 2,
}  # fmt: skip


@st.composite
def items(draw: Any) -> Any:
    item = {"job_id": ID, "lease_token": ID, "status": "failed"}
    for name, values in ITEM_FIELDS.items():
        # Mostly left alone, so that whole bodies are often valid and the comparison bites.
        choice = draw(st.sampled_from(["keep"] * 5 + ["drop", "set", "set"]))
        if choice == "drop":
            item.pop(name, None)
        elif choice == "set":
            # Half the time a value the field takes (the lists start with those), so that
            # whole bodies are often valid and the comparison bites.
            plain = values[: VALID_PREFIX[name]]
            item[name] = draw(st.sampled_from(plain if draw(st.booleans()) else values))
    if not draw(st.integers(0, 9)):
        item[draw(st.sampled_from(["unknown", "jobId", "state"]))] = 1
    return item if draw(st.integers(0, 19)) else draw(st.sampled_from([None, [], "x", 5]))


@st.composite
def bodies(draw: Any) -> Any:
    shape = draw(st.integers(0, 19))
    if shape == 0:
        return draw(st.sampled_from([None, [], "x", {}, {"results": None}, {"results": []}]))
    body: dict[str, Any] = {"results": draw(st.lists(items(), min_size=1, max_size=3))}
    if shape == 1:
        body["extra"] = True
    return body


def serializer_items(body: Any) -> list[ResultItem] | None:
    serializer = ResultsSerializer(data=body)
    return serializer.to_items() if serializer.is_valid() else None


def typed(items: list[ResultItem]) -> list[list[tuple[type, Any]]]:
    return [[(type(v), v) for v in dataclasses.astuple(item)] for item in items]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies())
def test_whatever_the_fast_path_accepts_the_serializer_accepts_as_the_same_results(body):
    fast = plain_results(body)
    if fast is None:
        return
    slow = serializer_items(body)
    assert slow is not None, body
    assert typed(fast) == typed(slow)


def test_a_workers_usual_body_takes_the_fast_path():
    body = {
        "results": [
            {"job_id": ID, "lease_token": ID, "status": "succeeded", "result": {"ok": 1}},
            {"job_id": ID, "lease_token": ID, "status": "failed", "error": " ValueError: x ",
             "traceback": "Traceback (most recent call last):\n  ...\nValueError: x\n",
             "retryable": False},
        ]
    }  # fmt: skip
    fast = plain_results(body)
    assert fast is not None and typed(fast) == typed(serializer_items(body) or [])
    assert fast[1].error == "ValueError: x" and fast[1].traceback.endswith("x\n")


def test_results_input_refuses_what_the_serializer_refuses():
    import pytest
    from rest_framework.exceptions import ValidationError

    for body in ({"results": []}, {"results": [{"job_id": ID}]}, {"results": [{"x": 1}]}):
        with pytest.raises(ValidationError):
            results_input(body)
    assert len(results_input({"results": [{"job_id": 7, "lease_token": ID, "status": "failed"}]}))
