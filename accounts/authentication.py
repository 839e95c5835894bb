"""API authentication: API keys (machines) beside simplejwt access tokens (users).

An API key is ``tf_`` + 43 random characters, sent as ``Authorization: Bearer tf_…`` or
``X-API-Key: tf_…``. Only its first 12 characters (the prefix, to find the row) and its
SHA-256 hash are stored; the hash is compared in constant time on every request.

**The key cache.** Each web process keeps the keys it authenticated (with their organization
and project) in memory, so that a request with a known key makes no database round trip to
authenticate. What keeps the cache honest is a version stamp: one row that database triggers
bump in the same transaction as any change that could alter how a key authenticates (a key
revoked, deleted, given another expiry or other scopes; an organization's IP allowlist or
anything else of it changed; a project or organization deleted; see
accounts/migrations/0003_auth_stamp.py for the exact list). A cached key is used only while the
stamp it was read under is the stamp this process last read, and a request re-reads the stamp
first when that read started more than STAMP_CHECK_SECONDS (1 s) ago. So:

* a change made anywhere takes effect everywhere within a second of its commit (the first
  request that starts a second after the stamp's last read re-reads it, finds it changed and
  forgets every cached key); the stamp is read at most once a second per process, whatever
  the traffic;
* a change made through this process's ORM (a revocation through the API or the dashboard, a
  save of the organization) takes effect in this process at once: the model signals below
  forget the cache when the change commits;
* a key is cached with the stamp read in the same statement, so a change that commits while a
  key is being read either shows in what was read or in a newer stamp;
* expiry by the passing of time needs no change at all: ``expires_at`` is compared with the
  clock on every request, cached or not.

``last_used_at`` is written at most once a LAST_USED_DEBOUNCE per key and process; the
trigger ignores it. Every request gets its own copies of the key, organization and project,
so nothing a view does to them reaches the cache or another request.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models.base import ModelState
from django.db.models.expressions import RawSQL
from django.db.models.signals import post_delete, post_save
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from accounts.models import API_KEY_PREFIX, ApiKey, Organization, Project
from taskforge.lib.sqlfiles import SqlFiles

# last_used_at is written at most this often per key (and process), not on every request.
LAST_USED_DEBOUNCE = timedelta(seconds=60)
# A cached key is trusted for requests starting at most this long after the stamp was read.
STAMP_CHECK_SECONDS = 1.0
# More distinct keys than this in one process: start over (a bound on memory, not a policy).
MAX_CACHED_KEYS = 10_000

_SQL = SqlFiles("accounts")


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
    meta = request.META
    header = meta.get("HTTP_X_API_KEY")
    if header:
        return str(header).strip()
    auth = meta.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = auth.partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token.startswith(API_KEY_PREFIX):
        return token
    return None


@dataclass
class _Entry:
    """A key as read from the database, under ``stamp``. Never handed out: requests get copies."""

    key: ApiKey
    stamp: int | None
    networks: list[Any] = field(default_factory=list)
    last_used_at: datetime | None = None


class KeyCache:
    """This process's API keys by prefix, valid while the auth stamp is unchanged."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._stamp: int | None = None
        # monotonic start of the last stamp read; -inf: never read (or forgotten).
        self._read_at = float("-inf")

    def forget(self) -> None:
        with self._lock:
            self._entries = {}
            self._read_at = float("-inf")

    def get(self, prefix: str) -> _Entry:
        """The entry of ``prefix``, read from the database unless a valid one is cached;
        raises ApiKey.DoesNotExist."""
        started = time.monotonic()
        if started - self._read_at >= STAMP_CHECK_SECONDS:
            self._note_stamp(_read_stamp(), started)
        entry = self._entries.get(prefix)
        if entry is not None and entry.stamp == self._stamp:
            return entry
        return self._load(prefix)

    def _note_stamp(self, stamp: int | None, started: float) -> None:
        with self._lock:
            if started < self._read_at:
                return  # a read that started later already answered
            if stamp != self._stamp:
                self._entries = {}
                self._stamp = stamp
            self._read_at = started

    def _load(self, prefix: str) -> _Entry:
        started = time.monotonic()
        # Authentication is where the tenant is discovered, so this lookup spans tenants.
        key = (
            ApiKey.objects.all_tenants()
            .select_related("organization", "project")
            # The stamp in the same statement, so in the same snapshot as the key.
            .annotate(auth_stamp=RawSQL(f"(\n{_SQL.text('auth_stamp')}\n)", []))  # noqa: S611
            .get(prefix=prefix)
        )
        stamp: int | None = key.auth_stamp  # type: ignore[attr-defined]
        # The key was read with this stamp: it is at least as fresh as a stamp read now.
        self._note_stamp(stamp, started)
        entry = _Entry(
            key=key,
            stamp=stamp,
            networks=[
                ipaddress.ip_network(cidr, strict=False) for cidr in key.organization.ip_allowlist
            ],
            last_used_at=key.last_used_at,
        )
        with self._lock:
            if len(self._entries) >= MAX_CACHED_KEYS:
                self._entries = {}
            self._entries[prefix] = entry
        return entry


def _read_stamp() -> int | None:
    rows = _SQL.rows("auth_stamp", {})
    return int(rows[0][0]) if rows else None


_cache = KeyCache()


def forget_cached_api_keys() -> None:
    """Make this process read every key again (the signals below call it on changes)."""
    _cache.forget()


def _forget_on_commit(**kwargs: Any) -> None:
    if kwargs.get("created"):
        return  # a new row is in nobody's cache
    _cache.forget()  # now, and once more when the change is visible to everyone
    transaction.on_commit(_cache.forget, using=kwargs.get("using"))


for _model in (ApiKey, Organization, Project):
    post_save.connect(_forget_on_commit, sender=_model, dispatch_uid=f"auth-cache-{_model}")
    post_delete.connect(_forget_on_commit, sender=_model, dispatch_uid=f"auth-cache-del-{_model}")


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[ApiKeyPrincipal, ApiKey] | None:
        raw = raw_api_key(request)
        if raw is None:
            return None
        try:
            entry = _cache.get(raw[:12])
        except ApiKey.DoesNotExist:
            raise exceptions.AuthenticationFailed("Invalid API key.") from None
        cached = entry.key
        if not cached.matches(raw):
            raise exceptions.AuthenticationFailed("Invalid API key.")
        now = timezone.now()
        if cached.revoked_at is not None:
            raise exceptions.AuthenticationFailed("This API key has been revoked.")
        if cached.expires_at is not None and cached.expires_at <= now:
            raise exceptions.AuthenticationFailed("This API key has expired.")
        if entry.networks and not _address_in(request.META.get("REMOTE_ADDR", ""), entry.networks):
            raise exceptions.PermissionDenied("This API key may not be used from your IP address.")
        key = _copy(entry)
        last_used = entry.last_used_at
        if last_used is None or now - last_used > LAST_USED_DEBOUNCE:
            entry.last_used_at = now
            ApiKey.objects.for_org(key.organization).filter(pk=key.pk).update(last_used_at=now)
        return ApiKeyPrincipal(key), key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


def _copy(entry: _Entry) -> ApiKey:
    """The request's own key, organization and project (views may change and save them)."""
    cached = entry.key
    organization = _clone(cached.organization)
    organization.ip_allowlist = list(organization.ip_allowlist)
    project = _clone(cached.project)
    key = _clone(cached)
    key.scopes = list(key.scopes)
    key._state.fields_cache = {"organization": organization, "project": project}
    return key


def _clone(instance: Any) -> Any:
    clone = instance.__class__.__new__(instance.__class__)
    clone.__dict__.update(instance.__dict__)
    state = ModelState()
    state.db = instance._state.db
    state.adding = False
    clone._state = state
    return clone


def ip_allowed(organization: Organization, address: str) -> bool:
    """True when the organization has no allowlist or the address is inside one of its CIDRs."""
    if not organization.ip_allowlist:
        return True
    networks = [ipaddress.ip_network(cidr, strict=False) for cidr in organization.ip_allowlist]
    return _address_in(address, networks)


def _address_in(address: str, networks: list[Any]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)
