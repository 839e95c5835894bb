"""taskforge/lib/jsonlimits.py without a database: the nesting scan counts structure, not text,
stays linear on malformed input, and the storable check finds exactly the escapes jsonb
refuses."""

from __future__ import annotations

import json

import pytest

from taskforge.lib.errors import PayloadTooLarge, ValidationFailed
from taskforge.lib.jsonlimits import MAX_VALUE_DEPTH, nesting_exceeds, storable_json


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ("[]", 1),
        ('{"a": [1, {"b": []}]}', 4),
        ("[[],[],[[]]]", 3),
        ('["[[[[", "{{{{"]', 1),
        ('["\\"[[[[", "\\\\", [["\\\\\\"{{"]]]', 3),
        ("[" * 300 + "]" * 300, 300),
    ],
)
def test_nesting_is_counted_outside_strings(text, depth):
    for data in (text, text.encode()):
        assert not nesting_exceeds(data, depth)
        if depth:
            assert nesting_exceeds(data, depth - 1)


def test_a_many_bracket_body_that_stays_shallow_is_not_too_deep():
    body = json.dumps({"jobs": [{"payload": {"a": [1, 2]}} for _ in range(5000)]})
    assert not nesting_exceeds(body, 5)
    assert nesting_exceeds(body, 4)


@pytest.mark.parametrize(
    "text",
    [
        '"' + '\\"' * 200_000,  # one unterminated string of escaped quotes
        '["' * 200_000,  # unterminated strings, each holding the next bracket
        "\\" * 200_001,
        '"' * 200_001,
    ],
)
def test_malformed_input_is_scanned_in_linear_time(text):
    # Quadratic scanning would take minutes here (and hit the test timeout).
    assert nesting_exceeds(text, 0) in (True, False)


def test_a_storable_value_comes_back_as_compact_json_text():
    assert storable_json({"a": [1, "é", "\U0001f600"]}, field="payload") == (
        '{"a":[1,"\\u00e9","\\ud83d\\ude00"]}'
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": "\x00"}, "payload: must not contain NUL characters (\\u0000)"),
        ({"\x00": 1}, "payload: must not contain NUL characters (\\u0000)"),
        (["ok", "\udc00"], "payload: must not contain a lone surrogate (\\udc00)"),
        ({"a": "\ud83d"}, "payload: must not contain a lone surrogate (\\ud83d)"),
        (float("nan"), "payload: must be JSON-serialisable"),
        ({1, 2}, "payload: must be JSON-serialisable"),
    ],
)
def test_values_jsonb_refuses_are_refused_naming_the_field(value, message):
    with pytest.raises(ValidationFailed) as refused:
        storable_json(value, field="payload")
    assert refused.value.message.startswith(message)
    assert refused.value.details["field"] == "payload"


def test_text_that_only_looks_like_a_bad_escape_is_storable():
    assert storable_json(["\\u0000", "\\\\ud800", "\\"], field="payload")


def test_nesting_past_the_limit_names_the_field_and_the_item():
    value: object = []
    for _ in range(MAX_VALUE_DEPTH):
        value = [value]
    with pytest.raises(ValidationFailed) as refused:
        storable_json(value, field="metadata", index=4, items="entries")
    assert refused.value.message == (
        f"entries[4].metadata: JSON nested deeper than {MAX_VALUE_DEPTH} levels"
    )
    assert refused.value.details == {"field": "metadata", "index": 4, "limit": MAX_VALUE_DEPTH}


def test_a_value_over_the_byte_limit_is_too_large():
    with pytest.raises(PayloadTooLarge) as refused:
        storable_json("x" * 100, field="payload", max_bytes=50)
    assert refused.value.details == {"field": "payload", "limit_bytes": 50, "size_bytes": 102}
