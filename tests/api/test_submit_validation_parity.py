"""The submit endpoints' fast validation (jobs/serializers.py plain_submit, plain_batch) against
the serializers it stands in for.

The fast path may give a body to the serializer whenever it likes (that only costs time), but
whatever it accepts, the serializer must accept too, as the same JobSpec: the same values of
the same types. Bodies are drawn from values at and past every limit, of every JSON type, with
the whitespace, NUL and lone surrogates the fields refuse or trim.
"""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.serializers import (
    BatchSubmitSerializer,
    JobSubmitSerializer,
    batch_input,
    plain_batch,
    plain_submit,
    submit_input,
)
from jobs.specs import JobSpec

TEXTS = [
    "default", "  default  ", "", "   ", "x" * 100, "x" * 101, "x" * 200, "x" * 201, "x" * 255,
    "x" * 256, "a\x00b", "\ud800", "é", "日本語", "\t", "5", 5, 5.0, True, None, [], {},
]  # fmt: skip
INTEGERS = [
    0, 1, 5, 9, 10, -1, 1000, 1001, 604_800, 604_801, True, False, 5.0, 5.5, "5", " 7 ", "x",
    None, 10**30, 1e20, [], "",
]  # fmt: skip
DELAYS = [0, 0.0, -0.0, 1.5, -1, 366 * 24 * 3600, 366 * 24 * 3600 + 1, float("inf"), "5", True,
          None, 10**400, "soon"]  # fmt: skip
PAYLOADS = [{}, [], None, "s", 1, 2.5, True, {"a": [1, None, {"b": "é"}]}]
TAG_LISTS = [[], ["a"], [" a "], [""], ["x" * 101], ["a"] * 20, ["a"] * 21, "a", None, [1],
             [None], ["a\x00"]]  # fmt: skip
PARENT = str(uuid.UUID(int=7))
PARENT_LISTS = [[], [PARENT], ["not-a-uuid"], "x", None, ["{" + PARENT + "}"],
                [uuid.UUID(int=7).hex], [123], [PARENT, PARENT]]  # fmt: skip
RUN_ATS = [None, "2030-01-01T00:00:00Z", "2030-01-01T00:00:00", "2030-01-01T00:00:00+02:00",
           "2030-01-01 00:00:00.123456-05:30", "tomorrow", 5, ""]  # fmt: skip
FAILURES = ["cancel", "run", "RUN", "", None, 1]
REFS = [None, "a", "", " a ", "x" * 101, 5]
REF_LISTS = [[], ["a"], "a", None, [""], ["a", "a"], [" a"]]

JOB_FIELDS = {
    "queue": TEXTS,
    "job_type": TEXTS,
    "payload": PAYLOADS,
    "priority": INTEGERS,
    "max_attempts": INTEGERS,
    "timeout_seconds": INTEGERS,
    "tags": TAG_LISTS,
}
SUBMIT_FIELDS = {
    **JOB_FIELDS,
    "run_at": RUN_ATS,
    "delay_seconds": DELAYS,
    "idempotency_key": TEXTS,
    "depends_on": PARENT_LISTS,
    "on_parent_failure": FAILURES,
}
ITEM_FIELDS = {**SUBMIT_FIELDS, "ref": REFS, "depends_on_refs": REF_LISTS}


def bodies(fields: dict[str, list[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Mostly valid bodies, each field often left out, sometimes odd, now and then unknown."""
    chosen = {
        name: st.one_of(st.just(values[0]), st.sampled_from(values))
        for name, values in fields.items()
    }
    required = {"queue": st.sampled_from(["default", *TEXTS]), "job_type": st.just("t")}
    return st.fixed_dictionaries(
        {**{k: v for k, v in required.items() if k in fields}},
        optional={
            **{k: v for k, v in chosen.items() if k not in required},
            "colour": st.just("red"),
        },
    ).filter(lambda body: "colour" not in body or len(body) % 5 == 0)


def typed(spec: JobSpec) -> dict[str, Any]:
    """The spec's fields with the type of each value (and of each item of a list)."""
    out = {}
    for name, value in vars(spec).items():
        items = [(type(item), item) for item in value] if isinstance(value, list) else None
        out[name] = (type(value), value, items)
    return out


SLOW = settings(
    max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


@settings(SLOW, max_examples=1500)
@given(bodies(SUBMIT_FIELDS))
def test_what_the_fast_path_accepts_the_serializer_accepts_as_the_same_spec(body):
    fast = plain_submit(body)
    serializer = JobSubmitSerializer(data=body)
    valid = serializer.is_valid()
    if fast is not None:
        assert valid, (body, serializer.errors)
        assert typed(fast) == typed(serializer.to_spec()), body
    if valid:  # whichever path takes it, the endpoint gets the serializer's spec
        assert typed(submit_input(body)) == typed(serializer.to_spec())


@SLOW
@given(
    st.lists(bodies(ITEM_FIELDS), min_size=1, max_size=4),
    st.sampled_from([None, {"queue": "default", "job_type": "cb"}, {"queue": "default"}]),
    st.sampled_from([None, {"queue": "q", "job_type": "cb", "payload": {"k": 1}, "tags": ["t"]}]),
)
def test_a_batch_the_fast_path_accepts_is_the_serializers_batch(items, on_complete, on_success):
    body: dict[str, Any] = {"jobs": items}
    if on_complete is not None:
        body["on_complete"] = on_complete
    if on_success is not None:
        body["on_success"] = on_success
    fast = plain_batch(body)
    serializer = BatchSubmitSerializer(data=body)
    valid = serializer.is_valid()
    if fast is not None:
        assert valid, (body, serializer.errors)
        specs, callbacks = fast
        assert [typed(s) for s in specs] == [typed(s) for s in serializer.to_specs()]
        expected = serializer.to_callbacks()
        assert {k: v and typed(v) for k, v in callbacks.items()} == {
            k: v and typed(v) for k, v in expected.items()
        }
    if valid:
        specs, _ = batch_input(body)
        assert [typed(s) for s in specs] == [typed(s) for s in serializer.to_specs()]


def test_the_fast_path_gives_odd_bodies_to_the_serializer():
    assert plain_submit([{"queue": "default", "job_type": "t"}]) is None
    assert plain_submit({"queue": "default"}) is None
    assert plain_submit({"queue": "default", "job_type": "t", "priority": "5"}) is None
    assert plain_batch({"jobs": []}) is None
    assert plain_batch({"jobs": [{"queue": "default", "job_type": "t"}], "extra": 1}) is None
