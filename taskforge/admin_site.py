"""The Django admin site, with the API's sign-in limits on its login form.

``/admin/login/`` checks staff passwords, so it needs the same brute-force limit as
``POST /api/v1/auth/token`` (accounts/throttling.py), on the same counters: guesses made at
one count against the other. Over the limit the login page answers 429 with ``Retry-After``,
even for the right password, until the one-minute window ends.

Installed as the default admin site by ``TaskForgeAdminConfig`` (taskforge/apps.py), listed in
``INSTALLED_APPS`` in place of ``django.contrib.admin``: ``admin.site`` (every app's
``admin.register`` and the ``admin/`` route of taskforge/urls.py) is then this site.
"""

from __future__ import annotations

import math
from typing import Any

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from rest_framework.exceptions import Throttled

from accounts.throttling import release_login_attempt, reserve_login_attempt

THROTTLED_MESSAGE = "Too many sign-in attempts: wait a minute before trying again."


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin login form, counting each password check against the sign-in limits."""

    # Seconds until the limit lifts, set when this form refused a throttled attempt.
    retry_after: int | None = None

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        if username is None or not self.cleaned_data.get("password"):
            # No password is checked, so there is no attempt to count.
            return super().clean()
        address = self.request.META.get("REMOTE_ADDR", "") if self.request else ""
        try:
            attempt = reserve_login_attempt(ip_address=address, email=username)
        except Throttled as throttled:
            # getattr: DRF sets ``wait`` in __init__, and its type stubs do not declare it.
            self.retry_after = math.ceil(getattr(throttled, "wait", None) or 1)
            raise ValidationError(THROTTLED_MESSAGE, code="throttled") from None
        # Wrong credentials, an inactive or a non-staff user raise here and keep the slot.
        cleaned: dict[str, Any] = super().clean()
        release_login_attempt(attempt)
        return cleaned


class TaskForgeAdminSite(admin.AdminSite):
    login_form = ThrottledAdminAuthenticationForm

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        response: HttpResponse = super().login(request, extra_context)
        # The form cannot set the status; the page it renders is still the login page with
        # the message, now as a 429 that clients and monitoring recognise.
        context = getattr(response, "context_data", None) or {}
        retry_after = getattr(context.get("form"), "retry_after", None)
        if retry_after is not None:
            response.status_code = 429
            response["Retry-After"] = str(retry_after)
        return response
