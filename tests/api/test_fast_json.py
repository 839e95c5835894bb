"""orjson in the API (taskforge/lib/parsers.py, taskforge/lib/fastjson.py): every body parses to
the same Python values as with DRF's parser, and every response says the same JSON as DRF's
renderer would."""

from __future__ import annotations

import io
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.renderers import JSONRenderer

from taskforge.lib.errors import ValidationFailed
from taskforge.lib.fastjson import dumps
from taskforge.lib.parsers import JSONParser

CONTEXT = {"encoding": "utf-8"}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),  # lone surrogates too: json.dumps escapes them
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


def typed(value: Any) -> Any:
    """``value`` with the type of every part, so that 1 and 1.0 (equal) tell apart."""
    if isinstance(value, list):
        return ("list", [typed(item) for item in value])
    if isinstance(value, dict):
        return ("dict", [(key, typed(item)) for key, item in value.items()])
    if isinstance(value, float) and math.copysign(1, value) < 0:
        return ("-float", value)
    return (type(value).__name__, value)


def drf_parse(raw: bytes) -> Any:
    return parsers.JSONParser().parse(io.BytesIO(raw), "application/json", CONTEXT)


def our_parse(raw: bytes) -> Any:
    return JSONParser().parse(io.BytesIO(raw), "application/json", CONTEXT)


@settings(max_examples=800, deadline=None, database=None)
@given(values, st.booleans())
def test_any_body_parses_to_what_drfs_parser_makes_of_it(value, ascii_only):
    try:
        raw = json.dumps(value, ensure_ascii=ascii_only).encode()
    except UnicodeEncodeError:  # a lone surrogate written unescaped is not UTF-8
        return
    assert typed(our_parse(raw)) == typed(drf_parse(raw))


@pytest.mark.parametrize(
    "raw",
    [
        b"[18446744073709551616, -9223372036854775809, 9223372036854775807]",
        b'{"n": 123456789012345678901234567890}',
        b"[0.1000000000000000055511151231257827021181583404541015625]",
        b"[1e400, -1e400]",
        b'["\\ud800", "\\udc00x", "\\ud83d\\ude00"]',
        b'{"a": 1, "a": 2}',
        b"[-0, -0.0, 1.0, 1E5]",
    ],
)
def test_what_orjson_reads_otherwise_is_read_as_before(raw):
    assert typed(our_parse(raw)) == typed(drf_parse(raw))


@pytest.mark.parametrize(
    "raw", [b"[NaN]", b"[Infinity]", b"\xef\xbb\xbf[1]", b'["\xc3("]', b"{bad", b"[1,]"]
)
def test_what_is_refused_is_refused_with_drfs_message(raw):
    with pytest.raises(ParseError) as theirs:
        drf_parse(raw)
    with pytest.raises(ParseError) as ours:
        our_parse(raw)
    assert str(ours.value.detail) == str(theirs.value.detail)


def test_a_body_nested_past_the_limit_is_refused_before_parsing():
    with pytest.raises(ValidationFailed):
        our_parse(b"[" * 101 + b"]" * 101)
    assert our_parse(b"[" * 100 + b"]" * 100) is not None


@settings(max_examples=500, deadline=None, database=None)
@given(values)
def test_a_response_says_what_drfs_renderer_says(value):
    ours, theirs = dumps(value), JSONRenderer().render(value)
    if value is None:
        assert ours == theirs == b""
        return
    assert typed(json.loads(ours)) == typed(json.loads(theirs))
    assert b"\xe2\x80\xa8" not in ours and b"\xe2\x80\xa9" not in ours


def test_what_orjson_cannot_write_is_written_by_drfs_renderer():
    value = {"big": 2**70, "line": "a\u2028b\u2029c"}
    assert dumps(value) == JSONRenderer().render(value)
    assert dumps({"line": "a\u2028b"}) == JSONRenderer().render({"line": "a\u2028b"})


@pytest.mark.parametrize(
    "accept",
    [None, "*/*", "application/json", "application/*", "", "text/html",
     "application/json; indent=4", "text/html, application/json;q=0.9", "application/xml"],
)  # fmt: skip
@pytest.mark.parametrize("query", ["", "?format=json", "?format=api"])
def test_the_apis_negotiation_answers_as_drfs_does(accept, query):
    from rest_framework.negotiation import DefaultContentNegotiation
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from accounts.api_base import JsonNegotiation

    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    request = Request(APIRequestFactory().get(f"/api/v1/jobs{query}", **headers))

    def answer(negotiation: Any) -> Any:
        try:
            renderer, media_type = negotiation.select_renderer(request, [JSONRenderer()])
        except Exception as exc:  # NotAcceptable, NotFound for an unknown format
            return type(exc).__name__
        return type(renderer).__name__, media_type

    assert answer(JsonNegotiation()) == answer(DefaultContentNegotiation())


def test_a_typical_batch_is_left_to_orjson_and_a_long_number_is_not():
    from taskforge.lib.parsers import _has_long_number

    jobs = [
        {"queue": "q", "job_type": "t", "payload": {"i": i, "at": 1_700_000_000_123 + i}}
        for i in range(1000)
    ]
    assert not _has_long_number(json.dumps({"jobs": jobs}).encode())
    assert _has_long_number(b'{"n": 1234567890123456789}')
    assert not _has_long_number(b"[123456789, 1234567890, 12345678901234567]")
