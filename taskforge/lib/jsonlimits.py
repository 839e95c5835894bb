"""Client JSON held to what the server can parse and PostgreSQL can store (docs/api.md#requests).

Nesting has two limits. A request body may nest arrays and objects MAX_BODY_DEPTH levels deep:
taskforge/lib/parsers.py refuses a deeper one before parsing it, because json.loads recurses
once per level and about a thousand levels exhaust Python's stack (a RecursionError, a 500).
A JSON value the server stores (a job's payload or result, log or worker metadata) may nest
MAX_VALUE_DEPTH levels: lower than the body's limit, so that any value that may be stored fits
in any request together with the body's own levels (``{"jobs": [{"payload": …}]}`` is three).

PostgreSQL's jsonb cannot hold NUL (``\\u0000``, even escaped) nor a UTF-16 surrogate that is
not half of a pair (``\\ud800`` alone): its input function refuses the whole value and the
INSERT fails. storable_json refuses both first, naming the field.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

from taskforge.lib.errors import PayloadTooLarge, ValidationFailed, field_error

MAX_BODY_DEPTH = 100
MAX_VALUE_DEPTH = 64

# Everything but the bytes that say where strings and containers are: '"', and the brackets,
# read as "[" and "]" (which kind of container does not change the depth).
_STRUCTURE = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURE = bytes(set(range(256)) - set(b'"[]{}'))
_SMALL_TEXT = 16 * 1024
# Passes that drop the innermost containers before the depth is summed up in Python.
_LEAF_PASSES = 2
# What each bracket adds to the depth, indexed by byte value.
_STEP = [0] * 256
_STEP[ord("[")], _STEP[ord("]")] = 1, -1

# In json.dumps output (ASCII, lowercase hex): an escaped backslash (skipped whole, so the
# "u0000" of "\\u0000" is not taken for an escape), a surrogate pair (fine), or group 1: NUL or
# a surrogate escape that is not part of a pair.
_ESCAPES = re.compile(
    r"\\\\|\\ud[89ab][0-9a-f]{2}\\ud[c-f][0-9a-f]{2}|(\\u0000|\\ud[89a-f][0-9a-f]{2})"
)


def nesting_exceeds(data: bytes | str, limit: int) -> bool:
    """Whether the JSON text ``data`` nests arrays and objects more than ``limit`` levels deep.

    Never recursive, and all but the last step are single passes of bytes methods, in C:
    drop escaped backslashes and quotes, so that every '"' left opens or closes a string;
    keep only quotes and brackets; drop adjacent quotes (most strings hold no bracket, and
    dropping two adjacent quotes leaves every other byte inside or outside a string as it
    was); cut out what is still quoted; drop the innermost containers a few times (each pass
    takes one level off and shrinks a wide body a lot); then sum up the brackets left, in
    order. A malformed text gets an answer that is exact up to its first error, which is as
    far as json.load reads, and recurses, before refusing it.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    # A small text with few brackets cannot be deep: two counts, cheaper than the scan (on a
    # large text they would be a pass of their own, rarely conclusive).
    if len(raw) <= _SMALL_TEXT and raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    if b"\\" in raw:
        # Left to right, as JSON pairs them: in \\\" the quote is escaped, in \\" it is not.
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = raw.translate(_STRUCTURE, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in structure:
        structure = b"".join(structure.split(b'"')[::2])
    peeled = 0
    while peeled < _LEAF_PASSES and structure.count(b"[") + peeled > limit:
        inner = structure.replace(b"[]", b"")
        if len(inner) == len(structure):
            break
        structure, peeled = inner, peeled + 1
    if structure.count(b"[") + peeled <= limit:
        return False
    return max(accumulate(map(_STEP.__getitem__, structure)), default=0) + peeled > limit


def unstorable_escape(text: str) -> str | None:
    """The first escape in ``text`` (json.dumps output) that jsonb refuses, or None."""
    # Most values have neither: two substring searches, no regular expression.
    if "\\u0000" not in text and "\\ud" not in text:
        return None
    for match in _ESCAPES.finditer(text):
        if match.group(1):
            return match.group(1)
    return None


# json.dumps() with options builds an encoder per call; one shared (it keeps no state) costs
# about a microsecond less per value, a millisecond per batch of 1,000 jobs.
_COMPACT = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def storable_json(
    value: Any,
    *,
    field: str,
    index: int | None = None,
    items: str = "jobs",
    max_bytes: int | None = None,
) -> str:
    """``value`` as compact JSON text that a jsonb column accepts.

    Otherwise ValidationFailed (or PayloadTooLarge over ``max_bytes``) whose message starts
    with the field (``payload``, or ``jobs[3].payload`` for item 3 of a list called ``items``).
    The text is ASCII (non-ASCII characters are escaped), so its length is its size in bytes.
    """
    try:
        text = _COMPACT.encode(value)
    except RecursionError:
        # A value built in Python (an engine producer) can be deeper than the stack allows.
        raise _too_deep(field, index, items) from None
    except (TypeError, ValueError) as exc:
        raise field_error(
            field, f"must be JSON-serialisable ({exc})", index=index, items=items
        ) from None
    if max_bytes is not None and len(text) > max_bytes:
        raise field_error(
            field,
            f"{len(text)} bytes; the limit is {max_bytes}",
            index=index,
            items=items,
            error=PayloadTooLarge,
            limit_bytes=max_bytes,
            size_bytes=len(text),
        )
    if nesting_exceeds(text, MAX_VALUE_DEPTH):
        raise _too_deep(field, index, items)
    escape = unstorable_escape(text)
    if escape == "\\u0000":
        raise field_error(
            field, "must not contain NUL characters (\\u0000)", index=index, items=items
        )
    if escape is not None:
        raise field_error(
            field,
            f"must not contain a lone surrogate ({escape}): half of a UTF-16 pair is not "
            "valid Unicode",
            index=index,
            items=items,
        )
    return text


def _too_deep(field: str, index: int | None, items: str) -> ValidationFailed:
    return field_error(
        field,
        f"JSON nested deeper than {MAX_VALUE_DEPTH} levels",
        index=index,
        items=items,
        limit=MAX_VALUE_DEPTH,
    )
