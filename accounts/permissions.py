"""Who may call what: scopes for API keys, roles for users.

Each API view declares ``scopes = {"read": "jobs:read", "write": "jobs:write"}`` (reads are
the safe methods) and optionally ``admin_only = True`` (every method) or ``admin_only_methods``
(some methods, e.g. ``{"DELETE"}`` where members may rename a project but not delete it). One
permission class applies them:
* API keys need the scope (the ``admin`` scope grants every scope); admin-only calls need
  ``admin`` itself;
* users: viewers may only read (a view may declare that its GET changes state:
  ``get_changes_state = True``); members may do everything except admin-only views;
  admins may do everything in their organization.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from accounts.authentication import ApiKeyPrincipal
from accounts.models import Role


def is_read(view: Any, method: str) -> bool:
    """A safe method, unless the view says its GET changes state (the worker long-poll)."""
    if method == "GET" and getattr(view, "get_changes_state", False):
        return False
    return method in SAFE_METHODS


def is_admin_only(view: Any, method: str) -> bool:
    """Whether only admins (users of role admin, keys with the admin scope) may call this."""
    methods: frozenset[str] = getattr(view, "admin_only_methods", frozenset())
    return bool(getattr(view, "admin_only", False)) or method in methods


def required_scope(view: Any, method: str) -> str | None:
    scopes: dict[str, str] = getattr(view, "scopes", {})
    return scopes.get("read" if is_read(view, method) else "write")


class ScopedAccess(BasePermission):
    message = "You do not have permission to perform this action."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not user or not user.is_authenticated:
            return False
        admin_only = is_admin_only(view, request.method or "GET")
        if isinstance(user, ApiKeyPrincipal):
            granted = set(user.api_key.scopes)
            if "admin" in granted:
                return True
            if admin_only:
                return False
            scope = required_scope(view, request.method or "GET")
            return scope is None or scope in granted
        role = getattr(user, "role", None)
        if role == Role.ADMIN:
            return True
        if admin_only:
            return False
        if role == Role.MEMBER:
            return True
        return role == Role.VIEWER and is_read(view, request.method or "GET")
