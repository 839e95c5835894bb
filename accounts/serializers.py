"""Accounts API shapes: input serializers validate (unknown fields refused), outputs render."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import API_KEY_SCOPES, ApiKey, AuditLog, Organization, Project, Role, User
from taskforge.lib.serializers import BoundedListField, StrictSerializer

# --- Inputs -----------------------------------------------------------------------------------


class SignupInputSerializer(StrictSerializer):
    organization = serializers.CharField(max_length=200, help_text="The organization's name.")
    email = serializers.EmailField(max_length=254)
    password = serializers.CharField(trim_whitespace=False, max_length=1024)


class TokenInputSerializer(StrictSerializer):
    email = serializers.CharField(max_length=254)
    password = serializers.CharField(trim_whitespace=False, max_length=1024)


class RefreshInputSerializer(StrictSerializer):
    refresh = serializers.CharField(max_length=4096)


class OrganizationUpdateInputSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200, required=False)
    ip_allowlist = BoundedListField(
        child=serializers.CharField(max_length=64),
        max_length=100,
        required=False,
        help_text="CIDRs API keys may be used from, e.g. 203.0.113.0/24; empty means anywhere.",
    )


class MemberCreateInputSerializer(StrictSerializer):
    email = serializers.EmailField(max_length=254)
    password = serializers.CharField(
        required=False,
        trim_whitespace=False,
        max_length=1024,
        help_text="Omit to have one generated: the response shows it this once.",
    )
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)


class MemberUpdateInputSerializer(StrictSerializer):
    role = serializers.ChoiceField(choices=Role.choices)


class ProjectInputSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100)


class ApiKeyCreateInputSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100)
    scopes = BoundedListField(
        child=serializers.ChoiceField(choices=API_KEY_SCOPES), min_length=1, max_length=20
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True)

    def validate_expires_at(self, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("must be in the future")
        return value


# --- Outputs ----------------------------------------------------------------------------------


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField(help_text="JWT access token: Authorization: Bearer <access>.")
    refresh = serializers.CharField(help_text="Refresh token for /auth/token/refresh.")


class OrganizationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Organization
        fields = ["id", "name", "slug", "ip_allowlist", "created_at"]
        read_only_fields = fields


class ProjectSerializer(serializers.ModelSerializer):
    class Meta:
        model = Project
        fields = ["id", "name", "created_at"]
        read_only_fields = fields


class SignupSerializer(TokenPairSerializer):
    organization = OrganizationSerializer()
    project = ProjectSerializer()


class MemberSerializer(serializers.ModelSerializer):
    created_at = serializers.DateTimeField(source="date_joined")

    class Meta:
        model = User
        fields = ["id", "email", "role", "is_active", "created_at"]
        read_only_fields = fields


class MemberCreatedSerializer(MemberSerializer):
    password = serializers.CharField(
        required=False, help_text="Present only when generated: shown this once."
    )

    class Meta(MemberSerializer.Meta):
        fields = [*MemberSerializer.Meta.fields, "password"]
        read_only_fields = fields


class ApiKeySerializer(serializers.ModelSerializer):
    project = serializers.UUIDField(source="project_id")

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "project",
            "name",
            "prefix",
            "scopes",
            "created_at",
            "expires_at",
            "revoked_at",
            "last_used_at",
        ]
        read_only_fields = fields


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(help_text="The API key. Shown this once: store it now.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]
        read_only_fields = fields


class AuditActorSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["user", "api_key", "system"])
    id = serializers.CharField(allow_null=True)
    email = serializers.EmailField(required=False)
    prefix = serializers.CharField(required=False)


class AuditLogSerializer(serializers.ModelSerializer):
    actor = serializers.SerializerMethodField()
    project = serializers.UUIDField(source="project_id", allow_null=True)

    class Meta:
        model = AuditLog
        fields = [
            "id",
            "action",
            "actor",
            "project",
            "target_type",
            "target_id",
            "metadata",
            "ip_address",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(AuditActorSerializer)
    def get_actor(self, log: AuditLog) -> dict[str, str | None]:
        if log.actor_user is not None:
            return {"type": "user", "id": str(log.actor_user.pk), "email": log.actor_user.email}
        if log.actor_api_key is not None:
            key = log.actor_api_key
            return {"type": "api_key", "id": str(key.pk), "prefix": key.prefix}
        return {"type": "system", "id": None}


# Pages of cursor-paginated lists (taskforge.lib.pagination), for the schema.


class MemberPageSerializer(serializers.Serializer):
    results = MemberSerializer(many=True)
    next = serializers.URLField(allow_null=True)


class ProjectPageSerializer(serializers.Serializer):
    results = ProjectSerializer(many=True)
    next = serializers.URLField(allow_null=True)


class ApiKeyPageSerializer(serializers.Serializer):
    results = ApiKeySerializer(many=True)
    next = serializers.URLField(allow_null=True)


class AuditLogPageSerializer(serializers.Serializer):
    results = AuditLogSerializer(many=True)
    next = serializers.URLField(allow_null=True)
