"""What an organization's plan allows: its tier's limits with any per-organization overrides."""

from __future__ import annotations

from typing import Any

from billing.models import TIER_LIMITS, Subscription, Tier


def plan_limits(organization_id: Any) -> dict[str, int | None]:
    """The organization's limits; an organization without a subscription is on starter."""
    subscription = (
        Subscription.objects.all_tenants().filter(organization_id=organization_id).first()
    )
    return subscription.effective_limits() if subscription else dict(TIER_LIMITS[Tier.STARTER])
