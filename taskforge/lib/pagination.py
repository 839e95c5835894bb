"""Cursor pagination in the shape of shared/API.md: {"results": [...], "next": url | null}.

The cursor is the sort key of the last row (newest first: created_at, then id), so pages
stay stable while rows are inserted, and each page is one index range scan however deep.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Model, Q, QuerySet
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from taskforge.lib.errors import ValidationFailed

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


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
    try:
        created, _, pk = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(created), model._meta.pk.to_python(pk)
    except (ValueError, binascii.Error, UnicodeDecodeError, DjangoValidationError):
        raise ValidationFailed(
            "cursor: not a cursor this API issued", details={"field": "cursor"}
        ) from None


def _encode(created_at: datetime, pk: Any) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{pk}".encode()).decode()


def paginate(request: Request, queryset: QuerySet[Any], serialize: Any) -> Response:
    """Serve one page of ``queryset`` (newest first) with ``serialize(list_of_rows)``."""
    limit = page_limit(request)
    cursor = request.query_params.get("cursor")
    queryset = queryset.order_by("-created_at", "-pk")
    if cursor:
        created_at, pk = _decode(cursor, queryset.model)
        queryset = queryset.filter(
            Q(created_at__lt=created_at) | Q(created_at=created_at, pk__lt=pk)
        )
    rows = list(queryset[: limit + 1])
    next_url = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_url = replace_query_param(
            request.build_absolute_uri(), "cursor", _encode(last.created_at, last.pk)
        )
    return Response({"results": serialize(rows), "next": next_url})
