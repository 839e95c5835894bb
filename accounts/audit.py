"""Audit log writing, called by the services that perform the audited action."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from accounts.models import ApiKey, AuditLog, Organization, Project, User


@dataclass(frozen=True, slots=True, kw_only=True)
class Actor:
    """Who is acting: a user, an API key, or neither (the system), and from where."""

    user: User | None = None
    api_key: ApiKey | None = None
    ip_address: str | None = None


SYSTEM = Actor()


def record_audit(
    organization: Organization | Any,
    action: str,
    *,
    actor: Actor = SYSTEM,
    project: Project | None = None,
    target_type: str = "",
    target_id: object = "",
    metadata: dict[str, Any] | None = None,
) -> AuditLog:
    return AuditLog.objects.create(
        organization_id=getattr(organization, "pk", organization),
        project=project,
        actor_user=actor.user,
        actor_api_key=actor.api_key,
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        metadata=metadata or {},
        ip_address=actor.ip_address,
    )
