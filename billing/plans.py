"""What an organization's plan allows: its tier's limits with any per-organization overrides."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from billing.models import TIER_LIMITS, Subscription, Tier


def plan_limits(organization_id: Any) -> dict[str, int | None]:
    """The organization's limits; an organization without a subscription is on starter."""
    subscription = (
        Subscription.objects.all_tenants().filter(organization_id=organization_id).first()
    )
    if subscription is None:
        return limits_of(None, None)
    return limits_of(subscription.tier, subscription.limits)


def limits_of(
    tier: str | None, overrides: Mapping[str, int | None] | None
) -> dict[str, int | None]:
    """The limits of a subscription of ``tier`` with ``overrides`` (its ``limits``); ``tier``
    None means no subscription, which is the starter plan. For callers that already read the
    subscription's columns (the dispatcher reads them with its assignments)."""
    return {**TIER_LIMITS[tier or Tier.STARTER], **(overrides or {})}
