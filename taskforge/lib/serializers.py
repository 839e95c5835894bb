"""Serializer building blocks shared by every app's API."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from rest_framework import serializers


class StrictSerializer(serializers.Serializer):
    """An input serializer that refuses fields it does not know (a typo must not pass silently).

    DRF's CharField already refuses NUL characters, which PostgreSQL text cannot store.
    """

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class JsonStringOnly(serializers.Field):
    """Put first in a string field's bases: only a JSON string is accepted (DRF's CharField
    would turn 5 into "5")."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(JsonStringOnly, serializers.CharField):
    pass


class StrictBooleanField(serializers.BooleanField):
    """A JSON true or false only (DRF's BooleanField also takes "yes", "on", 1…)."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


_pages: dict[tuple[type[serializers.BaseSerializer], bool], type[serializers.Serializer]] = {}


def page_of(
    item: type[serializers.BaseSerializer], *, cursor: bool = True
) -> type[serializers.Serializer]:
    """The documented shape of a list response: {"results": [item…], "next": url|null}.

    Only for the OpenAPI schema; views build the body themselves (taskforge.lib.pagination).
    """
    key = (item, cursor)
    if key not in _pages:
        fields: dict[str, Any] = {"results": item(many=True)}
        if cursor:
            fields["next"] = serializers.URLField(
                allow_null=True, help_text="The next page, or null on the last one."
            )
        name = f"{item.__name__.removesuffix('Serializer')}{'Page' if cursor else 'List'}"
        _pages[key] = type(name, (serializers.Serializer,), fields)
    return _pages[key]


class BoundedListField(serializers.ListField):
    """A ListField that refuses a list over ``max_length`` before validating any item: DRF's
    own checks the length only after every child has been validated, so a 32 MB list of ids
    costs seconds of CPU before it is refused."""

    def to_internal_value(self, data: Any) -> Any:
        if self.max_length is not None and isinstance(data, list) and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        return super().to_internal_value(data)


# --- Fast paths ---------------------------------------------------------------------------------
# Endpoints that take many items (POST /jobs/batch, POST /workers/{id}/results) check a body
# whose values are in the plain form the JSON parser hands over with the functions below,
# exactly as the serializer's fields would, and give any other body to the serializer.


class NotPlain(Exception):
    """A value the fast path leaves to the serializer (valid or not)."""


def plain_text(value: Any, max_length: int, *, trim: bool = True, blank: bool = False) -> str:
    """What a CharField (``trim_whitespace=trim``, ``allow_blank=blank``) makes of a str; any
    other value, and a NUL or a lone surrogate (which the field refuses), is NotPlain."""
    if type(value) is not str:
        raise NotPlain
    if trim:
        value = value.strip()
    if (not value and not blank) or len(value) > max_length or "\x00" in value:
        raise NotPlain
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise NotPlain from None
    return value


def plain_uuid(value: Any) -> UUID:
    """What a UUIDField makes of a str; any other value is NotPlain."""
    if type(value) is not str:
        raise NotPlain
    try:
        return UUID(value)
    except ValueError:
        raise NotPlain from None
