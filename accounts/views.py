"""The dashboard's doors: sign-in, sign-up, sign-out, and the organization / project switcher.

Sign-in checks credentials with the API's own service (``services.check_credentials``), so the
failed-attempt limits and the audit log are shared with POST /api/v1/auth/token and the
admin's login. The session cookie is Django's; every form carries its CSRF token.
"""

from __future__ import annotations

import math
import uuid

from django.conf import settings
from django.contrib.auth import login, logout
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST
from rest_framework.exceptions import AuthenticationFailed, Throttled

from accounts import services
from accounts.dashboard import (
    SESSION_ORGANIZATION,
    SESSION_PROJECT,
    dashboard_page,
    get_or_404,
    safe_next,
    seat_of,
)
from accounts.models import Organization, Project
from taskforge.lib.errors import TaskForgeError

# Long enough for any real address; a longer one is refused before it reaches the database.
MAX_EMAIL = 254
MAX_PASSWORD = 1024


@require_http_methods(["GET", "POST"])
def login_view(request: HttpRequest) -> HttpResponse:
    next_url = safe_next(request, request.POST.get("next") or request.GET.get("next"))
    if request.method == "GET":
        if request.user.is_authenticated:
            return HttpResponseRedirect(next_url)
        return _login_page(request, next_url)
    email = request.POST.get("email", "")[:MAX_EMAIL]
    password = request.POST.get("password", "")[:MAX_PASSWORD]
    if not email.strip() or not password:
        return _login_page(request, next_url, email, "Enter your email and password.", 400)
    try:
        user = services.check_credentials(
            email=email, password=password, ip_address=request.META.get("REMOTE_ADDR", "")
        )
    except Throttled as exc:
        wait = math.ceil(getattr(exc, "wait", None) or 60)
        response = _login_page(
            request,
            next_url,
            email,
            f"Too many sign-in attempts. Wait {wait} seconds before trying again.",
            429,
        )
        response["Retry-After"] = str(wait)
        return response
    except AuthenticationFailed:
        return _login_page(request, next_url, email, "Wrong email or password.", 400)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return HttpResponseRedirect(next_url)


def _login_page(
    request: HttpRequest, next_url: str, email: str = "", error: str = "", status: int = 200
) -> HttpResponse:
    context = {
        "next": next_url,
        "email": email,
        "error": error,
        "signup_enabled": settings.TASKFORGE_SIGNUP_ENABLED,
    }
    return render(request, "dashboard/login.html", context, status=status)


@require_http_methods(["GET", "POST"])
def signup_view(request: HttpRequest) -> HttpResponse:
    if not settings.TASKFORGE_SIGNUP_ENABLED:
        raise Http404("sign-up is off")
    if request.method == "GET":
        return render(request, "dashboard/signup.html", {"values": {}, "errors": {}})
    values = {
        name: request.POST.get(name, "")[:MAX_PASSWORD]
        for name in ("organization_name", "email", "password")
    }
    try:
        onboarded = services.register(**values)
    except TaskForgeError as exc:
        # The sign-up service names the field as a key of its details ({"password": [...]}).
        named = exc.details.get("field") or next(
            (key for key in ("email", "password", "name") if key in exc.details), "form"
        )
        field = {"name": "organization_name"}.get(str(named), str(named))
        public = {k: v for k, v in values.items() if k != "password"}
        return render(
            request,
            "dashboard/signup.html",
            {"values": public, "errors": {field: exc.message}},
            status=exc.http_status,
        )
    login(request, onboarded.user, backend="django.contrib.auth.backends.ModelBackend")
    request.session[SESSION_PROJECT] = str(onboarded.project.pk)
    return HttpResponseRedirect(reverse("dashboard:overview"))


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    logout(request)
    return HttpResponseRedirect(reverse("dashboard:login"))


@require_POST
@dashboard_page(post_is_read=True)
def switch_view(request: HttpRequest) -> HttpResponse:
    """Switch project (anyone, within their organization) or organization (staff only).

    Looking at another project changes no data, so viewers may switch too.
    """
    seat = seat_of(request)
    back = safe_next(request, request.POST.get("next"), reverse("dashboard:overview"))
    if organization_id := request.POST.get("organization"):
        if not seat.user.is_staff:
            raise Http404("not found")
        # Staff's platform view: any organization, read-only (accounts/dashboard.py Seat).
        organization = Organization.objects.filter(pk=_uuid_or_404(organization_id)).first()
        if organization is None:
            raise Http404("not found")
        request.session[SESSION_ORGANIZATION] = str(organization.pk)
        request.session.pop(SESSION_PROJECT, None)
        return HttpResponseRedirect(reverse("dashboard:overview"))
    project: Project = get_or_404(
        request,
        Project.objects.for_org(seat.organization),
        pk=_uuid_or_404(request.POST.get("project", "")),
    )
    request.session[SESSION_PROJECT] = str(project.pk)
    return HttpResponseRedirect(back)


def _uuid_or_404(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise Http404("not found") from None
