"""Accounts endpoints (docs/api.md): sign-up and sessions, the organization, its members,
projects, API keys and audit log.

The sign-in endpoints are public. Everything else is organization-level (no project header):
users act by role; an API key needs the ``admin`` scope, since managing the organization is
beyond any single project's key.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db.models import F, Q
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import services
from accounts.api_base import TenantAPIView, actor_of, get_or_404, organization_of
from accounts.models import ApiKey, AuditLog, Project, User
from accounts.serializers import (
    ApiKeyCreatedSerializer,
    ApiKeyCreateInputSerializer,
    ApiKeyPageSerializer,
    ApiKeySerializer,
    AuditLogPageSerializer,
    AuditLogSerializer,
    MemberCreatedSerializer,
    MemberCreateInputSerializer,
    MemberPageSerializer,
    MemberSerializer,
    MemberUpdateInputSerializer,
    OrganizationSerializer,
    OrganizationUpdateInputSerializer,
    ProjectInputSerializer,
    ProjectPageSerializer,
    ProjectSerializer,
    RefreshInputSerializer,
    SignupInputSerializer,
    SignupSerializer,
    TokenInputSerializer,
    TokenPairSerializer,
)
from taskforge import conf
from taskforge.lib.errors import ValidationFailed
from taskforge.lib.pagination import paginate

# Organization-level views: API keys need the admin scope for reads and writes alike.
ORG_SCOPES = {"read": "admin", "write": "admin"}
# The 403 of every admin-only operation, in its OpenAPI description.
ADMIN_ONLY = (
    "Admins only: 403 `permission_denied` for members and viewers, and for API keys without "
    "the `admin` scope."
)

SIGNUP_EXAMPLE = OpenApiExample(
    "A new organization",
    value={"organization": "Acme", "email": "ada@acme.example", "password": "a long passphrase"},
    request_only=True,
)
API_KEY_EXAMPLE = OpenApiExample(
    "A worker key",
    value={"name": "workers", "scopes": ["workers"], "expires_at": "2027-01-01T00:00:00Z"},
    request_only=True,
)


def _validated(serializer_class: type[Any], request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    data: dict[str, Any] = serializer.validated_data
    return data


def _query_param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is not None and "\x00" in value:
        raise ValidationFailed(f"{name}: may not contain NUL characters", details={"field": name})
    return value


def _flag(request: Request, name: str) -> bool:
    value = (_query_param(request, name) or "false").lower()
    if value not in ("true", "1", "false", "0"):
        raise ValidationFailed(f"{name}: must be true or false", details={"field": name})
    return value in ("true", "1")


# --- Sign-up and sessions ---------------------------------------------------------------------


class PublicApi(APIView):
    """Base of the sign-in endpoints: no authentication, anyone may call them."""

    authentication_classes: list[type[BaseAuthentication]] = []
    permission_classes = [AllowAny]

    def get_authenticate_header(self, request: Request) -> str:
        # With no authenticator DRF would turn wrong credentials into 403; they are a 401.
        return 'Bearer realm="api"'


class SignupApi(PublicApi):
    @extend_schema(
        summary="Sign up: create an organization and its admin",
        description="Creates the organization on the starter plan, its admin user, a project "
        '"default" with a queue "default", and signs the admin in. 403 when sign-up is turned '
        "off (TASKFORGE_SIGNUP_ENABLED=false); 409 when the email is already registered.",
        request=SignupInputSerializer,
        responses={201: SignupSerializer},
        examples=[SIGNUP_EXAMPLE],
    )
    def post(self, request: Request) -> Response:
        if not conf.signup_enabled():
            raise PermissionDenied(
                "Sign-up is turned off on this TaskForge server: ask an admin of your "
                "organization to add you as a member."
            )
        data = _validated(SignupInputSerializer, request)
        signed_up = services.sign_up(
            organization_name=data["organization"], email=data["email"], password=data["password"]
        )
        body = {
            "access": signed_up.tokens.access,
            "refresh": signed_up.tokens.refresh,
            "organization": signed_up.organization,
            "project": signed_up.project,
        }
        return Response(SignupSerializer(body).data, status=status.HTTP_201_CREATED)


class TokenApi(PublicApi):
    @extend_schema(
        summary="Sign in: exchange email and password for tokens",
        description="Failed attempts are limited per client IP, and per account from one client "
        "IP (so guessing at an account never locks its owner out elsewhere); over a limit the "
        "answer is 429 with Retry-After, even for the right password, until the one-minute "
        "window ends. See TASKFORGE_LOGIN_ATTEMPTS_* in docs/configuration.md.",
        request=TokenInputSerializer,
        responses={200: TokenPairSerializer},
    )
    def post(self, request: Request) -> Response:
        data = _validated(TokenInputSerializer, request)
        tokens = services.log_in(
            email=data["email"],
            password=data["password"],
            ip_address=request.META.get("REMOTE_ADDR", ""),
        )
        return Response(TokenPairSerializer(tokens).data)


class TokenRefreshApi(PublicApi):
    @extend_schema(
        summary="Exchange a refresh token for a new pair (the old one stops working)",
        request=RefreshInputSerializer,
        responses={200: TokenPairSerializer},
    )
    def post(self, request: Request) -> Response:
        data = _validated(RefreshInputSerializer, request)
        return Response(TokenPairSerializer(services.rotate_refresh_token(data["refresh"])).data)


class LogoutApi(PublicApi):
    @extend_schema(
        summary="Sign out: revoke a refresh token",
        description="Holding the refresh token is enough to revoke it. Access tokens already "
        "issued stay valid until they expire (minutes).",
        request=RefreshInputSerializer,
        responses={205: None},
    )
    def post(self, request: Request) -> Response:
        data = _validated(RefreshInputSerializer, request)
        services.log_out(data["refresh"])
        return Response(status=status.HTTP_205_RESET_CONTENT)


# --- Organization -----------------------------------------------------------------------------


class OrganizationApi(TenantAPIView):
    project_scoped = False
    scopes = ORG_SCOPES
    # Every member may read the organization; only admins may change it.
    admin_only_methods = frozenset({"PATCH"})

    @extend_schema(summary="The current organization", responses=OrganizationSerializer)
    def get(self, request: Request) -> Response:
        return Response(OrganizationSerializer(organization_of(request)).data)

    @extend_schema(
        summary="Rename the organization or set its IP allowlist (admin)",
        description="ip_allowlist: CIDRs (or single addresses) API keys may be used from; "
        "entries are stored normalised; an empty list allows any address. " + ADMIN_ONLY,
        request=OrganizationUpdateInputSerializer,
        responses=OrganizationSerializer,
    )
    def patch(self, request: Request) -> Response:
        data = _validated(OrganizationUpdateInputSerializer, request)
        org = services.update_organization(
            organization_of(request), actor=actor_of(request), **data
        )
        return Response(OrganizationSerializer(org).data)


# --- Members ----------------------------------------------------------------------------------


def _member_or_404(request: Request, member_id: UUID) -> User:
    members = User.objects.for_org(organization_of(request)).select_related("organization")
    member: User = get_or_404(request, members, member_id, "member")
    return member


class MemberListApi(TenantAPIView):
    project_scoped = False
    scopes = ORG_SCOPES
    admin_only = True

    @extend_schema(
        summary="Members of the organization (admin)",
        description=ADMIN_ONLY,
        operation_id="members_list",
        responses=MemberPageSerializer,
    )
    def get(self, request: Request) -> Response:
        users = User.objects.for_org(organization_of(request)).annotate(created_at=F("date_joined"))
        return paginate(request, users, lambda rows: MemberSerializer(rows, many=True).data)

    @extend_schema(
        summary="Add a member (admin)",
        description="Without a password one is generated and returned this once as `password`. "
        "409 when the email is already registered (in any organization). " + ADMIN_ONLY,
        request=MemberCreateInputSerializer,
        responses={201: MemberCreatedSerializer},
    )
    def post(self, request: Request) -> Response:
        data = _validated(MemberCreateInputSerializer, request)
        added = services.add_member(
            organization_of(request),
            email=data["email"],
            role=data["role"],
            password=data.get("password"),
            actor=actor_of(request),
        )
        body = dict(MemberSerializer(added.user).data)
        if added.generated_password is not None:
            body["password"] = added.generated_password
        return Response(body, status=status.HTTP_201_CREATED)


class MemberDetailApi(TenantAPIView):
    project_scoped = False
    scopes = ORG_SCOPES
    admin_only = True

    @extend_schema(
        summary="Change a member's role (admin)",
        description="409 when it would leave the organization without an admin. " + ADMIN_ONLY,
        request=MemberUpdateInputSerializer,
        responses=MemberSerializer,
    )
    def patch(self, request: Request, member_id: UUID) -> Response:
        member = _member_or_404(request, member_id)
        data = _validated(MemberUpdateInputSerializer, request)
        member = services.change_member_role(member, role=data["role"], actor=actor_of(request))
        return Response(MemberSerializer(member).data)

    @extend_schema(
        summary="Remove a member (admin)",
        description="Deletes the user's account. 409 for the organization's last admin. "
        + ADMIN_ONLY,
        responses={204: None},
    )
    def delete(self, request: Request, member_id: UUID) -> Response:
        services.remove_member(_member_or_404(request, member_id), actor=actor_of(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Projects ---------------------------------------------------------------------------------


def _project_or_404(request: Request, project_id: UUID) -> Project:
    projects = Project.objects.for_org(organization_of(request))
    project: Project = get_or_404(request, projects, project_id, "project")
    return project


class ProjectListApi(TenantAPIView):
    project_scoped = False
    scopes = ORG_SCOPES

    @extend_schema(
        summary="Projects of the organization",
        operation_id="projects_list",
        responses=ProjectPageSerializer,
    )
    def get(self, request: Request) -> Response:
        projects = Project.objects.for_org(organization_of(request))
        return paginate(request, projects, lambda rows: ProjectSerializer(rows, many=True).data)

    @extend_schema(
        summary="Create a project",
        description='The project gets a queue "default", as at sign-up. 409 when the '
        "organization already has a project of that name.",
        request=ProjectInputSerializer,
        responses={201: ProjectSerializer},
    )
    def post(self, request: Request) -> Response:
        data = _validated(ProjectInputSerializer, request)
        project = services.create_project(
            organization_of(request), name=data["name"], actor=actor_of(request)
        )
        return Response(ProjectSerializer(project).data, status=status.HTTP_201_CREATED)


class ProjectDetailApi(TenantAPIView):
    project_scoped = False
    scopes = ORG_SCOPES
    # Members may rename a project, but deleting one also deletes its API keys (which only
    # admins manage) and every job in it: admins only.
    admin_only_methods = frozenset({"DELETE"})

    @extend_schema(summary="A project", responses=ProjectSerializer)
    def get(self, request: Request, project_id: UUID) -> Response:
        return Response(ProjectSerializer(_project_or_404(request, project_id)).data)

    @extend_schema(
        summary="Rename a project", request=ProjectInputSerializer, responses=ProjectSerializer
    )
    def patch(self, request: Request, project_id: UUID) -> Response:
        project = _project_or_404(request, project_id)
        data = _validated(ProjectInputSerializer, request)
        project = services.rename_project(project, name=data["name"], actor=actor_of(request))
        return Response(ProjectSerializer(project).data)

    @extend_schema(
        summary="Delete a project with its queues, jobs, workers and API keys (admin)",
        description="409 while the project has pending or processing jobs, unless ?force=true. "
        + ADMIN_ONLY,
        parameters=[OpenApiParameter("force", OpenApiTypes.BOOL, default=False)],
        responses={204: None},
    )
    def delete(self, request: Request, project_id: UUID) -> Response:
        project = _project_or_404(request, project_id)
        services.delete_project(project, force=_flag(request, "force"), actor=actor_of(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- API keys ---------------------------------------------------------------------------------


class ProjectApiKeyListApi(TenantAPIView):
    project_scoped = False
    scopes = ORG_SCOPES
    admin_only = True

    @extend_schema(
        summary="The project's API keys (admin); the keys themselves are never shown again",
        description=ADMIN_ONLY,
        operation_id="project_api_keys_list",
        responses=ApiKeyPageSerializer,
    )
    def get(self, request: Request, project_id: UUID) -> Response:
        keys = ApiKey.objects.for_project(_project_or_404(request, project_id))
        return paginate(request, keys, lambda rows: ApiKeySerializer(rows, many=True).data)

    @extend_schema(
        summary="Create an API key (admin)",
        description="The response's `key` is the only time the key is shown: store it now. "
        + ADMIN_ONLY,
        request=ApiKeyCreateInputSerializer,
        responses={201: ApiKeyCreatedSerializer},
        examples=[API_KEY_EXAMPLE],
    )
    def post(self, request: Request, project_id: UUID) -> Response:
        project = _project_or_404(request, project_id)
        data = _validated(ApiKeyCreateInputSerializer, request)
        key, raw = services.create_api_key(
            project,
            name=data["name"],
            scopes=data["scopes"],
            expires_at=data.get("expires_at"),
            actor=actor_of(request),
        )
        return Response({**ApiKeySerializer(key).data, "key": raw}, status=status.HTTP_201_CREATED)


class ApiKeyDetailApi(TenantAPIView):
    project_scoped = False
    scopes = ORG_SCOPES
    admin_only = True

    @extend_schema(
        summary="Revoke an API key (admin); it stops working at once",
        description=ADMIN_ONLY,
        responses={204: None},
    )
    def delete(self, request: Request, key_id: UUID) -> Response:
        keys = ApiKey.objects.for_org(organization_of(request)).select_related("organization")
        key = get_or_404(request, keys, key_id, "API key")
        services.revoke_api_key(key, actor=actor_of(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Audit log --------------------------------------------------------------------------------


class AuditLogListApi(TenantAPIView):
    project_scoped = False
    scopes = ORG_SCOPES
    admin_only = True

    @extend_schema(
        summary="Who did what, newest first (admin)",
        description=ADMIN_ONLY,
        operation_id="audit_logs_list",
        parameters=[
            OpenApiParameter(
                "action", OpenApiTypes.STR,
                description='An action ("member.added"), or a prefix ending in "." ("member.").',
            ),
            OpenApiParameter(
                "actor", OpenApiTypes.STR, description="A user's email or an API key's prefix."
            ),
        ],
        responses=AuditLogPageSerializer,
    )  # fmt: skip
    def get(self, request: Request) -> Response:
        logs = AuditLog.objects.for_org(organization_of(request)).select_related(
            "actor_user", "actor_api_key"
        )
        if action := _query_param(request, "action"):
            logs = (
                logs.filter(action__startswith=action)
                if action.endswith(".")
                else logs.filter(action=action)
            )
        if actor := _query_param(request, "actor"):
            actor = actor.strip()
            logs = logs.filter(Q(actor_user__email=actor.lower()) | Q(actor_api_key__prefix=actor))
        return paginate(request, logs, lambda rows: AuditLogSerializer(rows, many=True).data)
