"""Shared fixtures: every test world has two tenants (ours and an outsider's).

Builders are small functions that default to the ``project`` fixture, so a test asks for the
deepest object it needs and gets the whole tenant tree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import ApiKey, Organization, Project, Role, User, hash_api_key
from billing.models import Subscription
from queues.models import Queue


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Any) -> None:
    """Argon2 is deliberately slow; tests hash hundreds of passwords and need none of that."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def stop_notification_hub() -> Any:
    """A long-poll starts the process's LISTEN hub; stop it so no connection outlives a test."""
    yield
    from workers.notifications import stop_hub

    stop_hub()


def build_tenant(slug: str) -> tuple[Organization, Project, Queue]:
    org = Organization.objects.create(name=slug.title(), slug=slug)
    Subscription.objects.create(organization=org)
    project = Project.objects.create(organization=org, name="default")
    queue = Queue.objects.create(organization=org, project=project, name="default")
    return org, project, queue


@pytest.fixture
def tenant(db: Any) -> tuple[Organization, Project, Queue]:
    return build_tenant("acme")


@pytest.fixture
def org(tenant: tuple[Organization, Project, Queue]) -> Organization:
    return tenant[0]


@pytest.fixture
def project(tenant: tuple[Organization, Project, Queue]) -> Project:
    return tenant[1]


@pytest.fixture
def queue(tenant: tuple[Organization, Project, Queue]) -> Queue:
    return tenant[2]


@pytest.fixture
def other_tenant(db: Any) -> tuple[Organization, Project, Queue]:
    return build_tenant("globex")


@pytest.fixture
def other_org(other_tenant: tuple[Organization, Project, Queue]) -> Organization:
    return other_tenant[0]


@pytest.fixture
def other_project(other_tenant: tuple[Organization, Project, Queue]) -> Project:
    return other_tenant[1]


@pytest.fixture
def other_queue(other_tenant: tuple[Organization, Project, Queue]) -> Queue:
    return other_tenant[2]


def _user(org: Organization, role: str) -> User:
    return User.objects.create_user(
        f"{role}@{org.slug}.example", "correct-horse-battery", organization=org, role=role
    )


@pytest.fixture
def admin(org: Organization) -> User:
    return _user(org, Role.ADMIN)


@pytest.fixture
def member(org: Organization) -> User:
    return _user(org, Role.MEMBER)


@pytest.fixture
def viewer(org: Organization) -> User:
    return _user(org, Role.VIEWER)


@pytest.fixture
def make_api_key(project: Project) -> Callable[..., tuple[ApiKey, str]]:
    """Return ``make(scopes=[...], project=...) -> (ApiKey, raw key)``."""

    def make(scopes: list[str] | None = None, project: Project = project) -> tuple[ApiKey, str]:
        raw, prefix = ApiKey.generate()
        key = ApiKey.objects.create(
            organization_id=project.organization_id,
            project=project,
            name="test key",
            prefix=prefix,
            key_hash=hash_api_key(raw),
            scopes=scopes if scopes is not None else ["admin"],
        )
        return key, raw

    return make


@pytest.fixture
def cross_tenant_denials(caplog: Any) -> Callable[[Organization], list[tuple[str, str]]]:
    """``cross_tenant_denials(org)``: (target type, target id) of each request by ``org`` that
    named another organization's object, in order.

    They are the staff-only warnings of accounts/api_base.py note_cross_tenant_attempt (the
    ``taskforge.security`` logger), never rows of the asker's audit log.
    """
    caplog.set_level(logging.WARNING, logger="taskforge.security")

    def denials(asker: Organization) -> list[tuple[str, str]]:
        return [
            (record.target_type, record.target_id)
            for record in caplog.records
            if record.name == "taskforge.security" and record.asker_organization_id == str(asker.pk)
        ]

    return denials


@pytest.fixture
def make_queue(project: Project) -> Callable[..., Queue]:
    def make(name: str, project: Project = project, **fields: Any) -> Queue:
        return Queue.objects.create(
            organization_id=project.organization_id, project=project, name=name, **fields
        )

    return make


def bearer(raw: str) -> APIClient:
    """An API client that sends ``raw`` (an API key or a JWT) as its bearer token."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def key_client(make_api_key: Any, project: Project) -> Callable[..., APIClient]:
    """``key_client(*scopes, project=…)``: a client authenticated by a new key with those scopes."""

    def make(*scopes: str, project: Project = project) -> APIClient:
        _, raw = make_api_key(scopes=list(scopes), project=project)
        return bearer(raw)

    return make
