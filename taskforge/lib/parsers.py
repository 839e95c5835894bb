"""The API's JSON parser (REST_FRAMEWORK's DEFAULT_PARSER_CLASSES in taskforge/settings.py).

DRF's JSONParser hands the body to json.load, which recurses once per level of nesting: a
body of a few thousand ``[`` raised RecursionError on any endpoint, a 500. This one measures
the nesting first, without recursing (taskforge/lib/jsonlimits.py), and refuses a body deeper
than MAX_BODY_DEPTH with a 400 before json.load sees it.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from taskforge.lib.errors import ValidationFailed
from taskforge.lib.jsonlimits import MAX_BODY_DEPTH, nesting_exceeds


class JSONParser(parsers.JSONParser):
    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        raw = stream.read()
        encoding = (parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET
        text = _scannable(raw, encoding)
        if nesting_exceeds(text, MAX_BODY_DEPTH):
            raise ValidationFailed(
                f"body: JSON nested deeper than {MAX_BODY_DEPTH} levels",
                details={"field": "body", "limit": MAX_BODY_DEPTH},
            )
        return super().parse(io.BytesIO(raw), media_type, parser_context)


def _scannable(raw: bytes, encoding: str) -> bytes | str:
    """The body as the nesting scan reads it: UTF-8 bytes as they are (no decoding on the hot
    path); any other text encoding decoded, since its bytes need not be ASCII's."""
    try:
        if codecs.lookup(encoding).name == "utf-8":
            return raw
        # "replace": a malformed body is refused by json.load, with its own message.
        return raw.decode(encoding, "replace")
    except LookupError:
        # Unknown, or not a text encoding (bz2_codec would decompress the body after its size
        # was checked): DRF's parser refuses it too, with this message.
        raise ParseError(
            f'Unsupported charset "{encoding}" in request Content-Type header.'
        ) from None
