"""Cursor pagination in the API's shape (docs/api.md#lists): {"results": [...], "next": url | null}.

The cursor is the sort key of the last row (newest first: created_at, then id), so pages
stay stable while rows are inserted, and each page is one index range scan however deep.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Model, Q, QuerySet
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from taskforge.lib.errors import ValidationFailed

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# Longer than any cursor _encode writes (a 32-character time, "|" and a 36-character UUID,
# base64-encoded: 92 characters), so a huge one is refused before it is decoded.
MAX_CURSOR_LENGTH = 128


def page_limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    # isascii: str.isdigit() also accepts digits such as "²" that int() refuses.
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise ValidationFailed(
            f"limit: must be an integer from 1 to {MAX_LIMIT}", details={"field": "limit"}
        )
    return int(raw)


def _decode(cursor: str, model: type[Model]) -> tuple[datetime, Any]:
    """The (created_at, pk) of a cursor that _encode issued; anything else is refused.

    Strict, because both values go into the query: a time with a +23:59 offset, say, parses in
    Python but PostgreSQL refuses it, and the page would be a 500. So the time must be UTC,
    the id valid for the primary key (a bigint in range), and the cursor exactly what _encode
    writes for them: one spelling of each page, and nothing else gets through.
    """
    try:
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise ValueError("too long")
        text = base64.b64decode(cursor, altchars=b"-_", validate=True).decode()
        created_text, pk_text = text.split("|")
        created_at = datetime.fromisoformat(created_text)
        if created_at.utcoffset() != timedelta(0):
            raise ValueError("not UTC")
        pk = _primary_key(model, pk_text)
        if _encode(created_at, pk) != cursor:
            raise ValueError("not as issued")
    except (ValueError, binascii.Error, UnicodeDecodeError, DjangoValidationError):
        raise ValidationFailed(
            "cursor: not a cursor this API issued; use the next URL of the previous page",
            details={"field": "cursor"},
        ) from None
    return created_at, pk


def _primary_key(model: type[Model], text: str) -> Any:
    field = model._meta.pk
    assert field is not None
    pk = field.to_python(text)
    # An integer id must fit its column (the validators carry the bigint range) and, being
    # generated, is positive.
    field.run_validators(pk)
    if isinstance(pk, int) and pk < 1:
        raise ValueError("not an id")
    return pk


def _encode(created_at: datetime, pk: Any) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{pk}".encode()).decode()


def older_than(created_at: datetime, pk: Any) -> Q:
    """Rows after (created_at, pk) in the newest-first order: strictly older, ties by pk.

    The leading ``created_at <= …`` is implied by the rest; it is there for the planner, which
    can start an index scan on (…, created_at) at it. Without it the OR is only a filter, and a
    deep page reads every newer row first (244 ms instead of 0.4 ms at 50,000 rows deep).
    """
    return Q(created_at__lte=created_at) & (Q(created_at__lt=created_at) | Q(pk__lt=pk))


def newer_than(created_at: datetime, pk: Any) -> Q:
    """Rows before (created_at, pk) in the newest-first order (see older_than)."""
    return Q(created_at__gte=created_at) & (Q(created_at__gt=created_at) | Q(pk__gt=pk))


def encode_cursor(created_at: datetime, pk: Any) -> str:
    """The cursor of a row whose sort key is (created_at, pk), for pages served without
    ``paginate`` (the dashboard's pages in both directions) that read it back with
    ``decode_cursor``."""
    return _encode(created_at, pk)


def decode_cursor(
    cursor: str, model: type[Model], *, field: str = "cursor"
) -> tuple[datetime, Any]:
    """The (created_at, pk) of a cursor that ``encode_cursor`` issued for ``model``; anything
    else is a ValidationFailed naming ``field`` (the parameter that carried it)."""
    try:
        return _decode(cursor, model)
    except ValidationFailed:
        raise ValidationFailed(
            f"{field}: not a cursor this server issued; follow the page's own links",
            details={"field": field},
        ) from None


def paginate(request: Request, queryset: QuerySet[Any], serialize: Any) -> Response:
    """Serve one page of ``queryset`` (newest first) with ``serialize(list_of_rows)``."""
    limit = page_limit(request)
    cursor = request.query_params.get("cursor")
    queryset = queryset.order_by("-created_at", "-pk")
    if cursor:
        created_at, pk = _decode(cursor, queryset.model)
        queryset = queryset.filter(older_than(created_at, pk))
    rows = list(queryset[: limit + 1])
    next_url = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_url = replace_query_param(
            request.build_absolute_uri(), "cursor", _encode(last.created_at, last.pk)
        )
    return Response({"results": serialize(rows), "next": next_url})
