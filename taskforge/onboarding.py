"""Onboarding: create a whole new tenant (organization, plan, admin, project, queue, API key),
and create or delete a project with the rows other apps keep for it.

Used by ``manage.py bootstrap`` and the accounts API (signup, projects). It lives in
``taskforge/`` because it writes rows of several apps (accounts, billing, queues) and reads
jobs, and only the glue package may import them all; accounts reaches it through
``settings.ACCOUNTS_TENANT_SETUP_MODULE``. Nothing here prints or knows about HTTP.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from accounts.audit import Actor, record_audit
from accounts.models import API_KEY_SCOPES, ApiKey, AuditLog, Organization, Project, Role, User
from accounts.services import (
    EmailAlreadyRegistered,
    issue_api_key,
    project_name_taken,
    validate_project_name,
)
from billing.models import Subscription, Tier
from jobs.models import Job, JobState
from queues.models import Queue
from taskforge.lib.errors import Conflict, ValidationFailed

DEFAULT_PROJECT_NAME = "default"
DEFAULT_QUEUE_NAME = "default"
_SLUG_MAX_LENGTH = Organization._meta.get_field("slug").max_length or 100
_ORG_NAME_MAX_LENGTH = Organization._meta.get_field("name").max_length or 200
# Jobs that a project deletion would silently destroy mid-flight.
_LIVE_JOB_STATES = (JobState.PENDING, JobState.PROCESSING)


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
        return issue_api_key(
            project, name=name, scopes=scopes, actor=Actor(user=created_by), expires_at=expires_at
        )


def create_project(organization: Organization, *, name: str, actor: Actor) -> Project:
    """Create a project with a "default" queue, as signup does, so jobs can be sent at once.

    Raise ``ValidationFailed`` for a bad name and ``ProjectNameTaken`` (409) if it is in use.
    """
    name = validate_project_name(name)
    if Project.objects.for_org(organization).filter(name=name).exists():
        raise project_name_taken(name)
    try:
        with transaction.atomic(durable=True):
            project = Project.objects.create(organization=organization, name=name)
            Queue.objects.create(
                organization=organization, project=project, name=DEFAULT_QUEUE_NAME
            )
            record_audit(
                organization,
                "project.created",
                actor=actor,
                project=project,
                target_type="project",
                target_id=project.pk,
                metadata={"name": name},
            )
    except IntegrityError:
        # A concurrent request created the same name between our check and our insert.
        raise project_name_taken(name) from None
    return project


def delete_project(project: Project, *, force: bool, actor: Actor) -> None:
    """Delete ``project`` with its queues, jobs, workers and API keys.

    Refuse with ``Conflict`` (409) while it has pending or processing jobs, unless ``force``.
    A job submitted while the deletion runs is deleted with the rest: deletion is deliberate.
    """
    with transaction.atomic(durable=True):
        locked = Project.objects.for_project(project).select_for_update().get()
        live = Job.objects.for_project(locked).filter(state__in=_LIVE_JOB_STATES).count()
        if live and not force:
            raise Conflict(
                f"project {locked.name!r} has {live} pending or processing jobs: wait for them, "
                "cancel them, or delete with ?force=true",
                details={"live_jobs": live},
            )
        metadata = {"name": locked.name, "forced": force, "live_jobs": live}
        target_id = locked.pk
        locked.delete()
        record_audit(
            project.organization_id,
            "project.deleted",
            actor=actor,
            target_type="project",
            target_id=target_id,
            metadata=metadata,
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
        api_key, raw_key = issue_api_key(
            project, name="bootstrap", scopes=API_KEY_SCOPES, actor=Actor(user=user)
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
