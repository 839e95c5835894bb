"""Dashboard test helpers: a browser-like client signed in as a user, and page checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from accounts.models import User


@pytest.fixture
def signed_in(db: Any) -> Callable[[User], Client]:
    """``signed_in(user)``: a test client with a session for ``user`` that enforces CSRF,
    like a browser (its forms must carry the token; ``post_form`` below fetches it)."""

    def make(user: User) -> Client:
        client = Client(enforce_csrf_checks=True)
        client.force_login(user)
        return client

    return make


def post_form(client: Client, path: str, data: dict[str, Any] | None = None, **extra: Any) -> Any:
    """POST ``data`` to ``path`` as a dashboard form does: with the session's CSRF token."""
    if "csrftoken" not in client.cookies:
        # The sign-in page sets the cookie for a visitor; a signed-in user is sent on from
        # there, to the Overview, which sets it too.
        client.get("/login", follow=True)
    token = client.cookies["csrftoken"].value
    return client.post(path, {**(data or {}), "csrfmiddlewaretoken": token}, **extra)


def htmx(client: Client, path: str, **extra: Any) -> Any:
    """GET ``path`` as an htmx poll does (the HX-Request header)."""
    return client.get(path, headers={"HX-Request": "true"}, **extra)
