"""The base of every tenant-scoped API view: authenticate, resolve the tenant once, check access.

After ``initial()`` the request carries ``organization``, ``project`` (None on org-level views)
and ``api_key`` (None for users). Views reach tenant rows only through those, with
``Model.objects.for_project(request.project)`` / ``for_org(request.organization)``.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.views import APIView
from rest_framework_simplejwt.authentication import JWTAuthentication

from accounts.audit import Actor, record_audit
from accounts.authentication import ApiKeyAuthentication, ApiKeyPrincipal
from accounts.models import ApiKey, Organization, Project, User
from accounts.permissions import ScopedAccess
from taskforge.lib.errors import NotFound, ValidationFailed

PROJECT_HEADER = "HTTP_X_TASKFORGE_PROJECT"


class TenantRequest(Request):
    """A DRF request after TenantAPIView.initial() (for type checkers)."""

    organization: Organization
    project: Project
    api_key: ApiKey | None


class TenantAPIView(APIView):
    authentication_classes = [ApiKeyAuthentication, JWTAuthentication]
    permission_classes = [ScopedAccess]
    # Does the view work on one project (jobs, queues…) or on the organization (members…)?
    project_scoped = True
    scopes: dict[str, str] = {}
    admin_only = False

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
    """Audit a request for an object that exists in another organization (it still gets 404).

    The existence check is the one cross-tenant read the API makes, and only to audit it.
    An id that cannot be the model's primary key (a malformed UUID) names nothing anywhere.
    """
    try:
        pk = model._meta.pk.to_python(pk)
    except DjangoValidationError:
        return
    if model.objects.all_tenants().filter(pk=pk).exclude(organization=organization).exists():
        record_audit(
            organization,
            "access.cross_tenant_denied",
            actor=actor_of(request),
            target_type=model._meta.model_name,
            target_id=pk,
            metadata={"path": request.path, "method": request.method},
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

    A miss that names another organization's row is audited (note_cross_tenant_attempt);
    both answer the same 404.
    """
    found = queryset.filter(pk=pk).first()
    if found is None:
        note_cross_tenant_attempt(request, organization_of(request), queryset.model, pk)
        raise NotFound(f"{what} not found")
    return found
