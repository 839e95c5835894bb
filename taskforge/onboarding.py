"""Onboarding: create a whole new tenant (organization, plan, admin, project, queue, API key).

Used by ``manage.py bootstrap`` and the signup API. It lives in ``taskforge/`` because it
writes rows of several apps (accounts, billing, queues), and only the glue package may import
them all. Nothing here prints or knows about HTTP: callers present the result.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from accounts.models import (
    API_KEY_SCOPES,
    ApiKey,
    AuditLog,
    Organization,
    Project,
    Role,
    User,
    hash_api_key,
)
from billing.models import Subscription, Tier
from queues.models import Queue
from taskforge.lib.errors import Conflict, ValidationFailed

DEFAULT_PROJECT_NAME = "default"
DEFAULT_QUEUE_NAME = "default"
_SLUG_MAX_LENGTH = Organization._meta.get_field("slug").max_length or 100
_ORG_NAME_MAX_LENGTH = Organization._meta.get_field("name").max_length or 200
_KEY_NAME_MAX_LENGTH = ApiKey._meta.get_field("name").max_length or 100


class EmailAlreadyRegistered(Conflict):
    """The email address already belongs to a user (emails are unique across organizations)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Onboarding:
    organization: Organization
    user: User
    project: Project
    queue: Queue
    api_key: ApiKey | None
    # The only copy of the key in clear: show it once, never store it.
    raw_api_key: str | None


def create_organization(
    *, name: str, email: str, password: str | None, with_api_key: bool = True
) -> Onboarding:
    """Create an organization on the starter plan with its admin user and default resources.

    ``password=None`` gives the admin an unusable password (they must reset it). With
    ``with_api_key`` the project gets a key holding every scope. Raise ``ValidationFailed``
    on bad input and ``EmailAlreadyRegistered`` if the email is taken.
    """
    name = name.strip()
    email = User.objects.normalize_email(email.strip()).lower()
    _validate_signup(name=name, email=email, password=password)
    if User.objects.all_tenants().filter(email__iexact=email).exists():
        raise _email_taken(email)
    try:
        with transaction.atomic(durable=True):
            return _create_organization(
                name=name, email=email, password=password, with_api_key=with_api_key
            )
    except IntegrityError:
        # A concurrent signup with the same email committed between our check and our insert.
        if User.objects.all_tenants().filter(email__iexact=email).exists():
            raise _email_taken(email) from None
        raise


def create_api_key(
    project: Project,
    *,
    name: str,
    scopes: Iterable[str],
    created_by: User | None = None,
    expires_at: dt.datetime | None = None,
) -> tuple[ApiKey, str]:
    """Create an API key for ``project`` and return it with the raw key (shown once only).

    Raise ``ValidationFailed`` naming any scope not in ``API_KEY_SCOPES``.
    """
    with transaction.atomic(durable=True):
        return _create_api_key(
            project, name=name, scopes=scopes, created_by=created_by, expires_at=expires_at
        )


def _create_organization(
    *, name: str, email: str, password: str | None, with_api_key: bool
) -> Onboarding:
    org = Organization.objects.create(name=name, slug=_unique_slug(name))
    Subscription.objects.create(organization=org, tier=Tier.STARTER)
    user = User.objects.create_user(email, password, organization=org, role=Role.ADMIN)
    project = Project.objects.create(organization=org, name=DEFAULT_PROJECT_NAME)
    queue = Queue.objects.create(organization=org, project=project, name=DEFAULT_QUEUE_NAME)
    api_key, raw_key = None, None
    if with_api_key:
        api_key, raw_key = _create_api_key(
            project, name="bootstrap", scopes=API_KEY_SCOPES, created_by=user
        )
    AuditLog.objects.create(
        organization=org,
        project=project,
        actor_user=user,
        action="organization.created",
        target_type="organization",
        target_id=str(org.id),
        metadata={"name": org.name, "slug": org.slug, "tier": Tier.STARTER.value},
    )
    return Onboarding(
        organization=org,
        user=user,
        project=project,
        queue=queue,
        api_key=api_key,
        raw_api_key=raw_key,
    )


def _create_api_key(
    project: Project,
    *,
    name: str,
    scopes: Iterable[str],
    created_by: User | None = None,
    expires_at: dt.datetime | None = None,
) -> tuple[ApiKey, str]:
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
        created_by=created_by,
        expires_at=expires_at,
    )
    AuditLog.objects.create(
        organization_id=project.organization_id,
        project=project,
        actor_user=created_by,
        action="api_key.created",
        target_type="api_key",
        target_id=str(key.id),
        metadata={"name": key.name, "prefix": key.prefix, "scopes": scope_list},
    )
    return key, raw


def _validate_signup(*, name: str, email: str, password: str | None) -> None:
    if not name:
        raise ValidationFailed("organization name is required", details={"name": "required"})
    if len(name) > _ORG_NAME_MAX_LENGTH:
        raise ValidationFailed(
            f"organization name is longer than {_ORG_NAME_MAX_LENGTH} characters",
            details={"name": "too_long"},
        )
    try:
        validate_email(email)
    except ValidationError:
        raise ValidationFailed(
            f"{email!r} is not a valid email address", details={"email": "invalid"}
        ) from None
    if password is not None:
        try:
            # The unsaved user lets the similarity validator compare against the email.
            validate_password(password, user=User(email=email))
        except ValidationError as exc:
            raise ValidationFailed(
                "password is too weak: " + " ".join(exc.messages),
                details={"password": exc.messages},
            ) from None


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


def _unique_slug(name: str) -> str:
    """Slugify ``name`` and add -2, -3… until no organization has it.

    Two signups racing for the same slug are settled by the unique index: the loser gets an
    IntegrityError and its transaction rolls back.
    """
    # Leave room for a suffix within the column's max length.
    base = slugify(name)[: _SLUG_MAX_LENGTH - 10].strip("-") or "org"
    taken = set(Organization.objects.filter(slug__startswith=base).values_list("slug", flat=True))
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    return slug


def _email_taken(email: str) -> EmailAlreadyRegistered:
    return EmailAlreadyRegistered(
        f"a user with email {email} already exists", details={"email": email}
    )
