"""Serializer building blocks shared by every app's API."""

from __future__ import annotations

from typing import Any

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
