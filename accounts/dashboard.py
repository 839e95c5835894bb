"""The dashboard's request plumbing: who is signed in, where they look, and what they may do.

Every dashboard view is wrapped by ``dashboard_page``. It answers a signed-out visitor with
the sign-in page, resolves the request's ``Seat`` (organization, project, role) once, refuses
a viewer's writes with the 403 page, and serves the view's live regions (``?partial=name``).
Views then reach tenant rows only through ``seat.project`` / ``seat.organization``, exactly
as API views do through ``TenantAPIView`` (accounts/api_base.py), with the same roles
(accounts/permissions.py): viewers read, members write, admins also manage the organization.

The project is the session's choice (the switcher); ``?project=<id>`` in a URL switches to it,
so a link copied from one project opens that project for a colleague too. Platform staff may
look at any organization, read-only (the organization switcher); everyone else sees only
their own.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlencode

from django.contrib import messages
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from accounts.api_base import note_cross_tenant_attempt
from accounts.audit import Actor
from accounts.models import Organization, Project, Role, User

SESSION_PROJECT = "tf_project"
SESSION_ORGANIZATION = "tf_organization"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_M = TypeVar("_M", bound=Model)
View = Callable[..., HttpResponse]


@dataclass(frozen=True, slots=True)
class Seat:
    """Where a signed-in user sits for one request: their organization, project and role."""

    user: User
    organization: Organization
    project: Project
    role: str
    # The organization's projects, for the switcher (one small query, ordered by name).
    projects: Sequence[Project] = field(default_factory=tuple)
    # Staff looking at another organization than their own: read-only whatever their role.
    visiting: bool = False

    @property
    def can_write(self) -> bool:
        return not self.visiting and self.role in (Role.ADMIN, Role.MEMBER)

    @property
    def is_admin(self) -> bool:
        return not self.visiting and self.role == Role.ADMIN


class DashboardRequest(HttpRequest):
    """An HttpRequest after ``dashboard_page`` (for type checkers)."""

    seat: Seat
    partial: str | None


def seat_of(request: HttpRequest) -> Seat:
    seat: Seat = request.seat  # type: ignore[attr-defined]
    return seat


def is_htmx(request: HttpRequest) -> bool:
    """Whether htmx sent this request (django-htmx's middleware reads the HX-Request header)."""
    return bool(getattr(request, "htmx", False))


def actor_of(request: HttpRequest) -> Actor:
    """Who does what this request asks, for the audit log: the signed-in user and address."""
    return Actor(user=seat_of(request).user, ip_address=request.META.get("REMOTE_ADDR") or None)


def partial_of(request: HttpRequest) -> str | None:
    """The live region this request asks for (``?partial=name``), or None for the whole page."""
    partial: str | None = getattr(request, "partial", None)
    return partial


def dashboard_page(
    *, partials: Sequence[str] = (), writes: bool = False, post_is_read: bool = False
) -> Callable[[View], View]:
    """Wrap a dashboard view: sign-in, seat, role check, live regions.

    ``partials`` names the page's regions a poll may ask for alone (``?partial=name``; any
    other name is a 404). ``writes=True`` marks a view whose non-GET methods change state:
    viewers (and visiting staff) get the 403 page for them, whatever they post. The names are
    kept on the view, where tests/test_dashboard_coverage.py finds them. ``post_is_read``
    is for the one POST that changes only what the session looks at (the switcher).
    """

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return _to_login(request)
            if any("\x00" in str(value) for value in kwargs.values()):
                raise Http404("not found")
            seat = _seat(request)
            if seat is None:
                return render(request, "dashboard/no_organization.html", {"seat": None}, status=403)
            request.seat = seat  # type: ignore[attr-defined]
            partial = request.GET.get("partial") or None
            if partial is not None and partial not in partials:
                raise Http404("no such region")
            request.partial = partial  # type: ignore[attr-defined]
            refused = not (post_is_read or (writes and seat.can_write))
            if request.method not in READ_METHODS and refused:
                return forbidden(request, "Your role in this organization can only read.")
            return view(request, *args, **kwargs)

        wrapper.dashboard_partials = tuple(partials)  # type: ignore[attr-defined]
        wrapper.dashboard_writes = writes  # type: ignore[attr-defined]
        wrapper.dashboard_post_is_read = post_is_read  # type: ignore[attr-defined]
        return wrapper

    return decorate


def forbidden(request: HttpRequest, message: str) -> HttpResponse:
    return render(request, "dashboard/403.html", {"message": message}, status=403)


def get_or_404(request: HttpRequest, queryset: QuerySet[_M], **lookup: Any) -> _M:
    """The row of a tenant-scoped ``queryset`` matching ``lookup``, else the 404 page.

    A primary-key miss that names another organization's row is logged for staff, as the API
    does (accounts/api_base.py ``note_cross_tenant_attempt``); both answer the same 404.
    """
    found = queryset.filter(**lookup).first()
    if found is None:
        if "pk" in lookup:
            note_cross_tenant_attempt(
                request,  # type: ignore[arg-type]
                seat_of(request).organization,
                queryset.model,
                lookup["pk"],
            )
        raise Http404("not found")
    return found


def done(
    request: HttpRequest, message: str, back: str, region: HttpResponse | None = None
) -> HttpResponse:
    """The answer to an action: for htmx the refreshed region (or nothing) with a toast, for a
    plain form post a redirect back (post/redirect/get) where the message shows once."""
    if is_htmx(request):
        return with_toast(region if region is not None else HttpResponse(status=204), message)
    messages.info(request, message)
    return HttpResponseRedirect(back)


def with_toast(response: HttpResponse, message: str, *, error: bool = False) -> HttpResponse:
    """``response`` carrying a toast for static/dashboard/taskforge.js (htmx's HX-Trigger)."""
    toast = {"message": message, **({"kind": "error"} if error else {})}
    response["HX-Trigger"] = json.dumps({"tf:toast": toast})
    return response


def safe_next(request: HttpRequest, candidate: str | None, default: str = "/") -> str:
    """``candidate`` if it is a path on this site, else ``default`` (no open redirects)."""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return default


def _to_login(request: HttpRequest) -> HttpResponse:
    login_url = reverse("dashboard:login")
    target = f"{login_url}?{urlencode({'next': request.get_full_path()})}"
    if is_htmx(request):
        # A poll whose session ended: the whole page goes to the sign-in, not one region.
        response = HttpResponse(status=204)
        response["HX-Redirect"] = target
        return response
    return HttpResponseRedirect(target)


def _seat(request: HttpRequest) -> Seat | None:
    user = request.user
    assert isinstance(user, User)
    organization = _organization(request, user)
    if organization is None:
        return None
    projects = list(Project.objects.for_org(organization).order_by("name"))
    if not projects:
        return None
    project = _project(request, organization, projects)
    return Seat(
        user=user,
        organization=organization,
        project=project,
        role=user.role if organization.pk == user.organization_id else Role.VIEWER,
        projects=projects,
        visiting=organization.pk != user.organization_id,
    )


def _organization(request: HttpRequest, user: User) -> Organization | None:
    if user.is_staff:
        chosen = request.session.get(SESSION_ORGANIZATION)
        if chosen:
            # Staff only: the platform view of any organization (read-only, see Seat).
            visited = Organization.objects.filter(pk=chosen).first()
            if visited is not None:
                return visited
    return user.organization


def _project(request: HttpRequest, organization: Organization, projects: list[Project]) -> Project:
    by_id = {str(project.pk): project for project in projects}
    asked = request.GET.get("project")
    if asked:
        try:
            key = str(uuid.UUID(asked))
        except ValueError:
            raise Http404("no such project") from None
        if key not in by_id:
            note_cross_tenant_attempt(request, organization, Project, key)  # type: ignore[arg-type]
            raise Http404("no such project")
        request.session[SESSION_PROJECT] = key
        return by_id[key]
    chosen = by_id.get(str(request.session.get(SESSION_PROJECT)))
    if chosen is not None:
        return chosen
    return next((p for p in projects if p.name == "default"), projects[0])


def seat_context(request: HttpRequest) -> dict[str, Any]:
    """Template context of every page: the seat, and for staff the organizations to visit."""
    seat: Seat | None = getattr(request, "seat", None)
    context: dict[str, Any] = {"seat": seat}
    if seat is not None and seat.user.is_staff:
        context["all_organizations"] = Organization.objects.order_by("name")[:500]
    return context
