"""The base of every tenant-scoped API view: authenticate, resolve the tenant once, check access.

After ``initial()`` the request carries ``organization``, ``project`` (None on org-level views)
and ``api_key`` (None for users). Views reach tenant rows only through those, with
``Model.objects.for_project(request.project)`` / ``for_org(request.organization)``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.views import APIView
from rest_framework_simplejwt.authentication import JWTAuthentication

from accounts.audit import Actor
from accounts.authentication import ApiKeyAuthentication, ApiKeyPrincipal
from accounts.models import ApiKey, Organization, Project, User
from accounts.permissions import ScopedAccess
from taskforge.lib.errors import NotFound, ValidationFailed

PROJECT_HEADER = "HTTP_X_TASKFORGE_PROJECT"
# Staff-only security events; route this logger to wherever operators watch (never to tenants).
security_log = logging.getLogger("taskforge.security")


class TenantRequest(Request):
    """A DRF request after TenantAPIView.initial() (for type checkers)."""

    organization: Organization
    project: Project
    api_key: ApiKey | None


class JsonNegotiation(DefaultContentNegotiation):
    """DRF's negotiation, answered without parsing the Accept header when there is nothing to
    choose: the view renders JSON only, the request asks for JSON or anything (or does not
    say), and names no format. Every other request is DRF's to decide (406 included)."""

    def select_renderer(
        self,
        request: Request,
        renderers: Iterable[BaseRenderer],
        format_suffix: str | None = None,
    ) -> tuple[BaseRenderer, str]:
        renderers = list(renderers)
        accept = request.META.get("HTTP_ACCEPT")
        if (
            len(renderers) == 1
            and accept in _ANY_JSON
            and format_suffix is None
            and api_settings.URL_FORMAT_OVERRIDE not in request.query_params
        ):
            renderer = renderers[0]
            if renderer.media_type == "application/json":
                return renderer, renderer.media_type
        chosen: tuple[BaseRenderer, str] = super().select_renderer(
            request, renderers, format_suffix
        )
        return chosen


# Accept headers DRF answers with "application/json" for a JSON-only view (None: no header).
_ANY_JSON = frozenset({None, "*/*", "application/json", "application/*"})


class TenantAPIView(APIView):
    authentication_classes = [ApiKeyAuthentication, JWTAuthentication]
    permission_classes = [ScopedAccess]
    content_negotiation_class = JsonNegotiation
    # Does the view work on one project (jobs, queues…) or on the organization (members…)?
    project_scoped = True
    scopes: dict[str, str] = {}
    admin_only = False
    # Methods only admins may call on a view whose other methods members may call too.
    admin_only_methods: frozenset[str] = frozenset()

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # No object's id or name contains NUL; PostgreSQL would refuse the lookup (a 500).
        if any("\x00" in str(value) for value in kwargs.values()):
            raise NotFound("not found")
        for name, values in request.query_params.lists():
            if any("\x00" in value for value in values):
                raise ValidationFailed(
                    f"{name}: must not contain NUL characters", details={"field": name}
                )
        self.perform_authentication(request)
        if request.user and request.user.is_authenticated:
            self._resolve_tenant(request)
        super().initial(request, *args, **kwargs)

    def _resolve_tenant(self, request: Request) -> None:
        user = request.user
        if isinstance(user, ApiKeyPrincipal):
            key = user.api_key
            request.organization = key.organization
            request.project = key.project
            request.api_key = key
            return
        assert isinstance(user, User)
        if user.organization_id is None:
            raise exceptions.PermissionDenied("This user belongs to no organization.")
        assert user.organization is not None
        request.organization = user.organization  # type: ignore[attr-defined]
        request.api_key = None  # type: ignore[attr-defined]
        request.project = None  # type: ignore[attr-defined]
        if self.project_scoped:
            request.project = project_from_header(request, user.organization)  # type: ignore[attr-defined]


def project_from_header(request: Request, organization: Organization) -> Project:
    raw = request.META.get(PROJECT_HEADER)
    if not raw:
        raise ValidationFailed(
            "The X-TaskForge-Project header is required: name the project by its id.",
            details={"header": "X-TaskForge-Project"},
        )
    try:
        project_id = uuid.UUID(raw.strip())
    except ValueError:
        raise NotFound("project not found") from None
    project = Project.objects.for_org(organization).filter(pk=project_id).first()
    if project is None:
        note_cross_tenant_attempt(request, organization, Project, project_id)
        raise NotFound("project not found")
    return project


def actor_of(request: Request) -> Actor:
    user = request.user
    address = request.META.get("REMOTE_ADDR") or None
    if isinstance(user, ApiKeyPrincipal):
        return Actor(api_key=user.api_key, ip_address=address)
    return Actor(user=user if isinstance(user, User) else None, ip_address=address)


def note_cross_tenant_attempt(
    request: Request, organization: Organization, model: type[Any], pk: object
) -> None:
    """Log, for staff, a request for an object that exists in another organization.

    The caller still gets the 404 of a missing object, and nothing the caller can read changes:
    the record is a WARNING of the ``taskforge.security`` logger, not a row of the asker's own
    audit log. Such a row would appear only for ids that exist elsewhere, so a tenant could
    probe other tenants' ids by reading its audit log (GET /api/v1/audit-logs).

    The existence check is the one cross-tenant read the API makes, and only to log it.
    An id that cannot be the model's primary key (a malformed UUID) names nothing anywhere.
    """
    try:
        pk = model._meta.pk.to_python(pk)
    except DjangoValidationError:
        return
    owner = (
        model.objects.all_tenants()
        .filter(pk=pk)
        .exclude(organization=organization)
        .values_list("organization_id", flat=True)
        .first()
    )
    if owner is None:
        return
    actor = actor_of(request)
    who = f"user:{actor.user.pk}" if actor.user is not None else "anonymous"
    if actor.api_key is not None:
        who = f"api_key:{actor.api_key.prefix}"
    fields = {
        "asker_organization_id": str(organization.pk),
        "owner_organization_id": str(owner),
        "target_type": model._meta.model_name,
        "target_id": str(pk),
        "actor": who,
        "ip_address": actor.ip_address,
        "path": request.path,
        "method": request.method,
    }
    security_log.warning(
        "cross-tenant access denied: organization %(asker_organization_id)s asked for "
        "%(target_type)s %(target_id)s of organization %(owner_organization_id)s "
        "(%(actor)s from %(ip_address)s, %(method)s %(path)s)",
        fields,
        extra=fields,
    )


def project_of(request: Request) -> Project:
    """The project TenantAPIView resolved for this request (typed access for views)."""
    project: Project = request.project  # type: ignore[attr-defined]
    return project


def organization_of(request: Request) -> Organization:
    """The organization TenantAPIView resolved for this request."""
    organization: Organization = request.organization  # type: ignore[attr-defined]
    return organization


def get_or_404(request: Request, queryset: QuerySet[Any], pk: object, what: str) -> Any:
    """The row of a tenant-scoped ``queryset`` with this primary key, else 404.

    A miss that names another organization's row is logged for staff
    (note_cross_tenant_attempt); both answer the same 404 and leave the same audit log.
    """
    found = queryset.filter(pk=pk).first()
    if found is None:
        note_cross_tenant_attempt(request, organization_of(request), queryset.model, pk)
        raise NotFound(f"{what} not found")
    return found
