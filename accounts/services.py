"""Accounts services: sign-in, organization settings, members, projects and API keys.

Each public service is one durable transaction and writes its own audit rows. Signup and
project creation/deletion also touch higher apps (the starter subscription, the default
queue, live jobs). accounts is the lowest layer and must not import them, so those services
live in the glue package (``taskforge.onboarding``) and are reached through
``settings.ACCOUNTS_TENANT_SETUP_MODULE``, loaded at call time.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import import_module
from typing import Any, Protocol, cast

from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.audit import Actor, record_audit
from accounts.models import API_KEY_SCOPES, ApiKey, Organization, Project, Role, User, hash_api_key
from accounts.throttling import release_login_attempt, reserve_login_attempt
from taskforge.lib.errors import Conflict, ValidationFailed

_KEY_NAME_MAX_LENGTH = ApiKey._meta.get_field("name").max_length or 100
_PROJECT_NAME_MAX_LENGTH = Project._meta.get_field("name").max_length or 100
_GENERATED_PASSWORD_BYTES = 18


class EmailAlreadyRegistered(Conflict):
    """The email address already belongs to a user (emails are unique across organizations)."""


class LastAdmin(Conflict):
    """The change would leave the organization without an admin."""


class ProjectNameTaken(Conflict):
    """Another project of the organization has this name."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenPair:
    access: str
    refresh: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedUp:
    organization: Organization
    project: Project
    user: User
    tokens: TokenPair


@dataclass(frozen=True, slots=True, kw_only=True)
class NewMember:
    user: User
    # Set only when the service generated the password: show it once, it is not stored.
    generated_password: str | None


class Onboarded(Protocol):
    @property
    def organization(self) -> Organization: ...
    @property
    def user(self) -> User: ...
    @property
    def project(self) -> Project: ...


class TenantSetup(Protocol):
    """The services of ``settings.ACCOUNTS_TENANT_SETUP_MODULE`` the accounts API calls."""

    def create_organization(
        self, *, name: str, email: str, password: str | None, with_api_key: bool = True
    ) -> Onboarded: ...

    def create_project(self, organization: Organization, *, name: str, actor: Actor) -> Project: ...

    def delete_project(self, project: Project, *, force: bool, actor: Actor) -> None: ...


def tenant_setup() -> TenantSetup:
    return cast(TenantSetup, import_module(settings.ACCOUNTS_TENANT_SETUP_MODULE))


# --- Sign-up and sessions ---------------------------------------------------------------------


def register(*, organization_name: str, email: str, password: str) -> Onboarded:
    """Create an organization with its admin, default project and queue (no session yet).

    Raise ``ValidationFailed`` (naming the field) on bad input and a 409 if the email is taken.
    The API's sign-up adds tokens (``sign_up``), the dashboard's a session.
    """
    return tenant_setup().create_organization(
        name=organization_name, email=email, password=password, with_api_key=False
    )


def sign_up(*, organization_name: str, email: str, password: str) -> SignedUp:
    """``register``, and sign the admin in with a token pair."""
    onboarded = register(organization_name=organization_name, email=email, password=password)
    return SignedUp(
        organization=onboarded.organization,
        project=onboarded.project,
        user=onboarded.user,
        tokens=_tokens_for(onboarded.user),
    )


def log_in(*, email: str, password: str, ip_address: str) -> TokenPair:
    """Check the credentials and return a token pair; audit the outcome on the user's org.

    Raise ``Throttled`` once the IP, or this email from this IP, is over its failed-attempt
    limit (before the password is checked) and ``AuthenticationFailed`` on wrong credentials.
    """
    return _tokens_for(check_credentials(email=email, password=password, ip_address=ip_address))


def check_credentials(*, email: str, password: str, ip_address: str) -> User:
    """The user these credentials sign in, under the sign-in limits; audited on the user's org.

    Shared by the API's token endpoint and the dashboard's session sign-in (and the limits
    with the admin's, accounts/throttling.py), so no door allows more guesses than another.
    Raise ``Throttled`` over a limit and ``AuthenticationFailed`` on wrong credentials.
    """
    email = email.strip().lower()
    attempt = reserve_login_attempt(ip_address=ip_address, email=email)
    user = authenticate(None, username=email, password=password)
    if not isinstance(user, User):
        _audit_login_failure(email, ip_address)
        raise AuthenticationFailed("Wrong email or password.")
    release_login_attempt(attempt)
    if user.organization_id is not None:
        with transaction.atomic(durable=True):
            record_audit(
                user.organization_id,
                "auth.login_succeeded",
                actor=Actor(user=user, ip_address=ip_address or None),
                target_type="user",
                target_id=user.pk,
            )
    return user


def rotate_refresh_token(raw: str) -> TokenPair:
    """Exchange a refresh token for a new pair; the old refresh token stops working.

    Raise ``AuthenticationFailed`` for an invalid, expired or already used token, or when its
    user is gone or deactivated.
    """
    with transaction.atomic(durable=True):
        refresh = _refresh_token(raw)
        # Lock the token's row: two refreshes racing with one token must not both succeed.
        outstanding = OutstandingToken.objects.filter(jti=refresh[jwt_settings.JTI_CLAIM])
        list(outstanding.select_for_update().order_by().values_list("pk", flat=True))
        _check_not_blacklisted(refresh)
        user_id = refresh.payload.get(jwt_settings.USER_ID_CLAIM)
        users = User.objects.all_tenants().filter(is_active=True)
        if user_id is None or not users.filter(pk=str(user_id)).exists():
            raise AuthenticationFailed("This account no longer exists or is deactivated.")
        refresh.blacklist()
        refresh.set_jti()
        refresh.set_exp()
        refresh.set_iat()
        refresh.outstand()
        return TokenPair(access=str(refresh.access_token), refresh=str(refresh))


def log_out(raw: str) -> None:
    """Blacklist a refresh token. Raise ``AuthenticationFailed`` if it is not a valid one."""
    with transaction.atomic(durable=True):
        _refresh_token(raw).blacklist()


def _tokens_for(user: User) -> TokenPair:
    refresh = RefreshToken.for_user(user)
    return TokenPair(access=str(refresh.access_token), refresh=str(refresh))


def _refresh_token(raw: str) -> RefreshToken:
    try:
        return RefreshToken(raw)  # type: ignore[arg-type]
    except TokenError:
        raise AuthenticationFailed("The refresh token is invalid, expired or revoked.") from None


def _check_not_blacklisted(refresh: RefreshToken) -> None:
    try:
        refresh.check_blacklist()
    except TokenError:
        raise AuthenticationFailed("The refresh token is invalid, expired or revoked.") from None


def _audit_login_failure(email: str, ip_address: str) -> None:
    # Only a failure against a real member is worth an org's audit log (and only it has an org).
    user = User.objects.all_tenants().filter(email=email, organization__isnull=False).first()
    if user is None:
        return
    with transaction.atomic(durable=True):
        record_audit(
            user.organization_id,
            "auth.login_failed",
            actor=Actor(ip_address=ip_address or None),
            target_type="user",
            target_id=user.pk,
            metadata={"email": email},
        )


# --- Organization -----------------------------------------------------------------------------


def update_organization(
    organization: Organization,
    *,
    actor: Actor,
    name: str | None = None,
    ip_allowlist: list[str] | None = None,
) -> Organization:
    """Rename the organization and/or replace its IP allowlist (CIDRs, normalised).

    Raise ``ValidationFailed`` naming the first entry that is not an IP network.
    """
    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = name.strip()
        if not changes["name"]:
            raise ValidationFailed("name: may not be blank", details={"field": "name"})
    if ip_allowlist is not None:
        changes["ip_allowlist"] = normalize_allowlist(ip_allowlist)
    with transaction.atomic(durable=True):
        org = Organization.objects.select_for_update().get(pk=organization.pk)
        diff = {
            field: {"from": getattr(org, field), "to": value}
            for field, value in changes.items()
            if getattr(org, field) != value
        }
        if diff:
            for field, change in diff.items():
                setattr(org, field, change["to"])
            org.save(update_fields=list(diff))
            record_audit(
                org,
                "organization.updated",
                actor=actor,
                target_type="organization",
                target_id=org.pk,
                metadata={"changes": diff},
            )
    return org


def normalize_allowlist(entries: Iterable[str]) -> list[str]:
    """Return the CIDRs in canonical form ("10.1.2.3/8" -> "10.0.0.0/8"), without duplicates."""
    networks: list[str] = []
    for index, entry in enumerate(entries):
        try:
            network = str(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValidationFailed(
                f"ip_allowlist[{index}]: {entry!r} is not an IP address or CIDR network",
                details={"field": "ip_allowlist", "index": index, "value": entry},
            ) from None
        if network not in networks:
            networks.append(network)
    return networks


# --- Members ----------------------------------------------------------------------------------


def add_member(
    organization: Organization, *, email: str, role: str, password: str | None, actor: Actor
) -> NewMember:
    """Create a user in the organization. Without a password, generate one (returned once).

    Raise ``ValidationFailed`` for a weak password and ``EmailAlreadyRegistered`` (409).
    """
    email = User.objects.normalize_email(email.strip()).lower()
    generated = None
    if password is None:
        generated = password = secrets.token_urlsafe(_GENERATED_PASSWORD_BYTES)
    else:
        _validate_password(password, email)
    if User.objects.all_tenants().filter(email__iexact=email).exists():
        raise _email_taken(email)
    try:
        with transaction.atomic(durable=True):
            user = User.objects.create_user(email, password, organization=organization, role=role)
            record_audit(
                organization,
                "member.added",
                actor=actor,
                target_type="user",
                target_id=user.pk,
                metadata={
                    "email": email,
                    "role": role,
                    "password_generated": generated is not None,
                },
            )
    except IntegrityError:
        # A concurrent request registered the email between our check and our insert.
        raise _email_taken(email) from None
    return NewMember(user=user, generated_password=generated)


def change_member_role(member: User, *, role: str, actor: Actor) -> User:
    """Give ``member`` another role. Raise ``LastAdmin`` (409) if no admin would remain."""
    assert member.organization is not None
    with transaction.atomic(durable=True):
        user = _lock_member(member)
        previous = user.role
        if previous == role:
            return user
        if previous == Role.ADMIN:
            _refuse_last_admin(user, "demote")
        user.role = role
        user.save(update_fields=["role"])
        record_audit(
            member.organization,
            "member.role_changed",
            actor=actor,
            target_type="user",
            target_id=user.pk,
            metadata={"email": user.email, "from": previous, "to": role},
        )
    return user


def remove_member(member: User, *, actor: Actor) -> None:
    """Delete ``member``'s account. Raise ``LastAdmin`` (409) if no admin would remain."""
    assert member.organization is not None
    with transaction.atomic(durable=True):
        user = _lock_member(member)
        if user.role == Role.ADMIN:
            _refuse_last_admin(user, "remove")
        metadata = {"email": user.email, "role": user.role}
        target_id = user.pk
        user.delete()
        record_audit(
            member.organization,
            "member.removed",
            actor=actor,
            target_type="user",
            target_id=target_id,
            metadata=metadata,
        )


def _lock_member(member: User) -> User:
    assert member.organization is not None
    # Lock every admin first, in id order, then the member: two admins demoting each other at
    # once serialise here (no deadlock) and the second one sees that only one admin is left.
    users = User.objects.for_org(member.organization).select_for_update()
    list(users.filter(role=Role.ADMIN).order_by("pk").values_list("pk", flat=True))
    return users.get(pk=member.pk)


def _refuse_last_admin(user: User, verb: str) -> None:
    assert user.organization is not None
    admins = User.objects.for_org(user.organization).filter(role=Role.ADMIN).count()
    if admins <= 1:
        raise LastAdmin(
            f"cannot {verb} {user.email}: the organization's last admin. Make someone else an "
            "admin first.",
            details={"member": str(user.pk)},
        )


def _validate_password(password: str, email: str) -> None:
    try:
        # The unsaved user lets the similarity validator compare against the email.
        validate_password(password, user=User(email=email))
    except ValidationError as exc:
        raise ValidationFailed(
            "password is too weak: " + " ".join(exc.messages),
            details={"password": exc.messages},
        ) from None


def _email_taken(email: str) -> EmailAlreadyRegistered:
    return EmailAlreadyRegistered(
        f"a user with email {email} already exists", details={"email": email}
    )


# --- Projects ---------------------------------------------------------------------------------


def create_project(organization: Organization, *, name: str, actor: Actor) -> Project:
    """Create a project and its "default" queue. Raise ``ProjectNameTaken`` (409)."""
    return tenant_setup().create_project(organization, name=name, actor=actor)


def delete_project(project: Project, *, force: bool, actor: Actor) -> None:
    """Delete a project and everything in it; 409 while it has live jobs, unless ``force``."""
    tenant_setup().delete_project(project, force=force, actor=actor)


def rename_project(project: Project, *, name: str, actor: Actor) -> Project:
    """Rename ``project``. Raise ``ProjectNameTaken`` (409) if the name is in use."""
    name = validate_project_name(name)
    try:
        with transaction.atomic(durable=True):
            locked = Project.objects.for_project(project).select_for_update().get()
            previous = locked.name
            if previous == name:
                return locked
            locked.name = name
            locked.save(update_fields=["name"])
            record_audit(
                locked.organization_id,
                "project.updated",
                actor=actor,
                project=locked,
                target_type="project",
                target_id=locked.pk,
                metadata={"changes": {"name": {"from": previous, "to": name}}},
            )
    except IntegrityError:
        raise project_name_taken(name) from None
    return locked


def validate_project_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > _PROJECT_NAME_MAX_LENGTH:
        raise ValidationFailed(
            f"name: must be 1-{_PROJECT_NAME_MAX_LENGTH} characters", details={"field": "name"}
        )
    return name


def project_name_taken(name: str) -> ProjectNameTaken:
    return ProjectNameTaken(
        f"a project named {name!r} already exists in this organization", details={"name": name}
    )


# --- API keys ---------------------------------------------------------------------------------


def create_api_key(
    project: Project,
    *,
    name: str,
    scopes: Iterable[str],
    actor: Actor,
    expires_at: dt.datetime | None = None,
) -> tuple[ApiKey, str]:
    """Create an API key for ``project``; return it with the raw key (shown once, never stored).

    Raise ``ValidationFailed`` naming a bad name, unknown scopes or a past ``expires_at``.
    """
    with transaction.atomic(durable=True):
        return issue_api_key(project, name=name, scopes=scopes, actor=actor, expires_at=expires_at)


def issue_api_key(
    project: Project,
    *,
    name: str,
    scopes: Iterable[str],
    actor: Actor,
    expires_at: dt.datetime | None = None,
) -> tuple[ApiKey, str]:
    """``create_api_key`` inside the caller's transaction (for services that compose it)."""
    name = name.strip()
    scope_list = list(dict.fromkeys(scopes))  # de-duplicate, keep the caller's order
    _validate_api_key(name=name, scopes=scope_list, expires_at=expires_at)
    raw, prefix = ApiKey.generate()
    key = ApiKey.objects.create(
        organization_id=project.organization_id,
        project=project,
        name=name,
        prefix=prefix,
        key_hash=hash_api_key(raw),
        scopes=scope_list,
        created_by=actor.user,
        expires_at=expires_at,
    )
    record_audit(
        project.organization_id,
        "api_key.created",
        actor=actor,
        project=project,
        target_type="api_key",
        target_id=key.pk,
        metadata={
            "name": key.name,
            "prefix": key.prefix,
            "scopes": scope_list,
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    return key, raw


def revoke_api_key(key: ApiKey, *, actor: Actor) -> ApiKey:
    """Revoke ``key`` now: its next request gets 401. Revoking twice changes nothing."""
    with transaction.atomic(durable=True):
        locked = ApiKey.objects.for_org(key.organization).select_for_update().get(pk=key.pk)
        if locked.revoked_at is not None:
            return locked
        locked.revoked_at = timezone.now()
        locked.save(update_fields=["revoked_at"])
        record_audit(
            locked.organization_id,
            "api_key.revoked",
            actor=actor,
            project=locked.project,
            target_type="api_key",
            target_id=locked.pk,
            metadata={"name": locked.name, "prefix": locked.prefix},
        )
    return locked


def _validate_api_key(*, name: str, scopes: list[str], expires_at: dt.datetime | None) -> None:
    if not name or len(name) > _KEY_NAME_MAX_LENGTH:
        raise ValidationFailed(
            f"API key name must be 1-{_KEY_NAME_MAX_LENGTH} characters", details={"name": name}
        )
    unknown = [scope for scope in scopes if scope not in API_KEY_SCOPES]
    if unknown:
        raise ValidationFailed(
            f"unknown scopes: {', '.join(unknown)} (known: {', '.join(API_KEY_SCOPES)})",
            details={"unknown_scopes": unknown},
        )
    if not scopes:
        raise ValidationFailed("an API key needs at least one scope", details={"scopes": []})
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationFailed(
            "expires_at must be in the future", details={"expires_at": expires_at.isoformat()}
        )
