"""API authentication: API keys (machines) beside simplejwt access tokens (users).

An API key is ``tf_`` + 43 random characters, sent as ``Authorization: Bearer tf_…`` or
``X-API-Key: tf_…``. Only its first 12 characters (the prefix, to find the row) and its
SHA-256 hash are stored; the hash is compared in constant time. The key row is read on every
request, so a revocation takes effect at once.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from accounts.models import API_KEY_PREFIX, ApiKey, Organization

# last_used_at is written at most this often per key, not on every request.
LAST_USED_DEBOUNCE = timedelta(seconds=60)


class ApiKeyPrincipal:
    """``request.user`` for a request made with an API key."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None
    role = None

    def __init__(self, api_key: ApiKey) -> None:
        self.api_key = api_key
        self.organization = api_key.organization

    def __str__(self) -> str:
        return f"api key {self.api_key.prefix}"


def raw_api_key(request: Request) -> str | None:
    header = request.META.get("HTTP_X_API_KEY")
    if header:
        return header.strip()
    auth = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = auth.partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token.startswith(API_KEY_PREFIX):
        return token
    return None


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[ApiKeyPrincipal, ApiKey] | None:
        raw = raw_api_key(request)
        if raw is None:
            return None
        # Authentication is where the tenant is discovered, so this lookup spans tenants.
        key = (
            ApiKey.objects.all_tenants()
            .select_related("organization", "project")
            .filter(prefix=raw[:12])
            .first()
        )
        if key is None or not key.matches(raw):
            raise exceptions.AuthenticationFailed("Invalid API key.")
        now = timezone.now()
        if key.revoked_at is not None:
            raise exceptions.AuthenticationFailed("This API key has been revoked.")
        if key.expires_at is not None and key.expires_at <= now:
            raise exceptions.AuthenticationFailed("This API key has expired.")
        if not ip_allowed(key.organization, request.META.get("REMOTE_ADDR", "")):
            raise exceptions.PermissionDenied("This API key may not be used from your IP address.")
        if key.last_used_at is None or now - key.last_used_at > LAST_USED_DEBOUNCE:
            ApiKey.objects.for_org(key.organization).filter(pk=key.pk).update(last_used_at=now)
        return ApiKeyPrincipal(key), key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


def ip_allowed(organization: Organization, address: str) -> bool:
    """True when the organization has no allowlist or the address is inside one of its CIDRs."""
    if not organization.ip_allowlist:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(cidr, strict=False) for cidr in organization.ip_allowlist)
