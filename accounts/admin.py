"""Staff admin for accounts, and the base classes every app's admin builds on.

The admin is one of the named cross-tenant readers
(docs/conventions.md#tenancy-cross-tenant-reads-are-named): its querysets start from
``all_tenants()``. Because a staff user can reach every tenant's rows, the forms here refuse to
link rows of different tenants and copy the denormalised ``organization`` / ``project`` columns
from the row they derive from instead of letting staff type them.
"""

from __future__ import annotations

import uuid
from functools import reduce
from operator import or_
from typing import Any, cast

from django import forms
from django.contrib import admin
from django.contrib.auth import admin as auth_admin
from django.contrib.auth import forms as auth_forms
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q, QuerySet
from django.db.models.functions import Now
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import ApiKey, ApiKeyQuerySet, AuditLog, Organization, Project, User


class TenantForm(forms.ModelForm):
    """Refuse related rows of different organizations or projects.

    Raw-id inputs accept any primary key, so without this check staff could attach one
    tenant's queue to another tenant's job.
    """

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        related = [value for value in cleaned.values() if isinstance(value, models.Model)]
        orgs = {getattr(row, "organization_id", None) for row in related}
        orgs.add(getattr(self.instance, "organization_id", None))
        projects = {_project_id(row) for row in related}
        projects.add(getattr(self.instance, "project_id", None))
        if len(orgs - {None}) > 1 or len(projects - {None}) > 1:
            raise ValidationError("These rows belong to different organizations or projects.")
        return cleaned


def _project_id(row: models.Model) -> Any:
    return row.pk if isinstance(row, Project) else getattr(row, "project_id", None)


class AllTenantsAdmin(admin.ModelAdmin):
    """Read every tenant's rows through the named cross-tenant entry point."""

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = self.model.objects.all_tenants()
        # Also used by the change page, whose read-only FK fields print the related rows.
        # (An empty tuple would mean "every foreign key" to select_related.)
        if isinstance(self.list_select_related, list | tuple) and self.list_select_related:
            queryset = queryset.select_related(*self.list_select_related)
        ordering = self.get_ordering(request)
        return queryset.order_by(*ordering) if ordering else queryset


class TenantAdmin(AllTenantsAdmin):
    """Admin for a tenant-owned model.

    ``tenant_from`` names the foreign key the row's tenant comes from. Unless it is
    ``organization`` itself, the ``organization`` column (and ``project`` when the model has
    one and it is not the source) is copied from it on save and shown read-only. The source
    is fixed once the row exists: moving a queue to another project would strand its jobs.
    """

    form = TenantForm
    tenant_from = "project"
    # Fields compared with a UUID search term by primary-key or indexed equality. The
    # default search would cast the column to text and scan the whole table.
    uuid_search_fields: tuple[str, ...] = ()

    def _derived_fields(self) -> list[str]:
        if self.tenant_from == "organization":
            return []
        names = {field.name for field in self.model._meta.get_fields()}
        has_project = "project" in names and self.tenant_from != "project"
        return ["organization", "project"] if has_project else ["organization"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = [*super().get_readonly_fields(request, obj), *self._derived_fields()]
        if obj is not None:
            fields.append(self.tenant_from)
        return fields

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: Any) -> None:
        if self.tenant_from != "organization":
            source = getattr(obj, self.tenant_from)
            obj.organization_id = source.organization_id
            if "project" in self._derived_fields():
                obj.project_id = source.project_id
        super().save_model(request, obj, form, change)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        try:
            value = uuid.UUID(search_term.strip())
        except ValueError:
            return super().get_search_results(request, queryset, search_term)
        if not self.uuid_search_fields:
            return super().get_search_results(request, queryset, search_term)
        match = reduce(or_, (Q(**{name: value}) for name in self.uuid_search_fields))
        return queryset.filter(match), False


class ReadOnlyTenantAdmin(TenantAdmin):
    """Rows written only by services and workers: staff may look, never add or edit."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "created_at")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("id",)


class UserCreationForm(auth_forms.SetUnusablePasswordMixin, auth_forms.BaseUserCreationForm):
    """Create a user from an email address; the password may be left unusable."""

    usable_password = auth_forms.SetUnusablePasswordMixin.create_usable_password_field()

    class Meta:
        model = User
        fields = ("email", "organization", "role")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # As Django's AdminUserCreationForm: required only when the password is usable.
        self.fields["password1"].required = False
        self.fields["password2"].required = False

    def clean_email(self) -> str:
        # create_user lower-cases addresses, so compare the same way.
        email = User.objects.normalize_email(self.cleaned_data["email"]).lower()
        if User.objects.all_tenants().filter(email__iexact=email).exists():
            raise ValidationError("A user with this email address already exists.")
        return email


class UserChangeForm(auth_forms.UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"

    def clean_email(self) -> str:
        email = User.objects.normalize_email(self.cleaned_data["email"]).lower()
        others = User.objects.all_tenants().exclude(pk=self.instance.pk)
        if others.filter(email__iexact=email).exists():
            raise ValidationError("A user with this email address already exists.")
        return email


@admin.register(User)
class UserAdmin(AllTenantsAdmin, auth_admin.UserAdmin):
    form = UserChangeForm
    add_form = UserCreationForm
    ordering = ("email",)
    list_display = ("email", "organization", "role", "is_staff", "is_active", "last_login")
    list_filter = ("is_staff", "is_superuser", "is_active", "role", "organization")
    list_select_related = ("organization",)
    search_fields = ("email", "organization__name")
    raw_id_fields = ("organization",)
    readonly_fields = ("id", "last_login", "date_joined")
    fieldsets = (
        (None, {"fields": ("id", "email", "password")}),
        ("Organization", {"fields": ("organization", "role")}),
        (
            "Permissions",
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": (
                    "email",
                    "organization",
                    "role",
                    "usable_password",
                    "password1",
                    "password2",
                ),
            },
        ),
    )


@admin.register(Project)
class ProjectAdmin(TenantAdmin):
    tenant_from = "organization"
    list_display = ("name", "organization", "created_at")
    list_filter = ("organization",)
    list_select_related = ("organization",)
    search_fields = ("name", "organization__name")
    uuid_search_fields = ("pk",)
    raw_id_fields = ("organization",)
    readonly_fields = ("id",)


class ApiKeyStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "Active"), ("revoked", "Revoked"), ("expired", "Expired")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "active":
            return cast(ApiKeyQuerySet, queryset).usable()
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=Now())
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(TenantAdmin):
    """Keys are issued by the API, which shows the raw key once; staff may only rename them.

    ``key_hash`` is neither shown nor editable: it is not in ``fields``.
    """

    list_display = (
        "name",
        "prefix",
        "project",
        "organization",
        "scope_list",
        "status",
        "last_used_at",
        "created_at",
    )
    list_filter = (ApiKeyStatusFilter, "organization")
    list_select_related = ("project", "organization")
    search_fields = ("name", "=prefix")
    uuid_search_fields = ("pk",)
    fields = (
        "id",
        "name",
        "organization",
        "project",
        "prefix",
        "scopes",
        "expires_at",
        "revoked_at",
        "last_used_at",
        "created_by",
        "created_at",
    )
    readonly_fields = (
        "id",
        "prefix",
        "scopes",
        "expires_at",
        "revoked_at",
        "last_used_at",
        "created_by",
        "created_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    @admin.display(description="status")
    def status(self, obj: ApiKey) -> str:
        if obj.revoked_at is not None:
            return "revoked"
        if obj.expires_at is not None and obj.expires_at <= timezone.now():
            return "expired"
        return "active"


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyTenantAdmin):
    list_display = (
        "created_at",
        "action",
        "organization",
        "project",
        "actor_user",
        "actor_api_key",
        "target_type",
        "target_id",
    )
    list_filter = ("action", "organization")
    list_select_related = ("organization", "project", "actor_user", "actor_api_key")
    search_fields = ("action", "=target_id", "actor_user__email")
    show_full_result_count = False
