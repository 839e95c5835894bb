"""Who may call every write endpoint: one table of caller, endpoint and expected status.

``TABLE`` states, for every route under /api/v1/ and every method of it that changes state
(POST, PUT, PATCH, DELETE, and a GET the view marks ``get_changes_state``), who may call it
by the API's rules (accounts/permissions.py ScopedAccess; docs/api.md "Scopes and roles"):

* ``ADMIN``: admin-only (``admin_only`` / ``admin_only_methods`` on the view): admins, and API
  keys with the ``admin`` scope;
* ``WRITER``: admins and members, and keys with the route's scope (or ``admin``); viewers
  only read;
* ``PUBLIC``: the sign-in endpoints, before authentication: no role to have.

The matrix sends one real request per (caller, route): an allowed caller gets the route's
success status, a refused one 403 ``permission_denied`` (anonymous: 401) in the error envelope
and the database is left exactly as it was. ``test_every_write_route_has_a_row`` walks the
URLconf like tests/test_api_coverage.py, so a new write route without a row fails the suite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.apps import apps
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from accounts import services as account_services
from accounts.audit import SYSTEM
from accounts.models import API_KEY_SCOPES, ApiKey, Organization, Project, Role, User
from jobs import services as job_services
from jobs.schedules import services as scheduling
from jobs.specs import JobSpec
from queues.models import Queue
from tests.api.conftest import API, Engine, check_envelope
from tests.conftest import bearer

pytestmark = pytest.mark.django_db

ADMIN, WRITER, PUBLIC = "admin-only", "writer", "public"
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# The callers of the matrix: the three roles of a JWT user, API keys, and nobody.
CALLERS = (
    "admin",
    "member",
    "viewer",
    "key with the scope",
    "key with every other scope",
    "key with the admin scope",
    "anonymous",
)


@dataclass
class World:
    """What a row's request acts on: our tenant, with the engine to put jobs in any state."""

    org: Organization
    project: Project
    engine: Engine
    make_api_key: Callable[..., tuple[ApiKey, str]]

    def user(self, email: str, role: str = Role.VIEWER) -> User:
        return User.objects.create_user(email, "pw", organization=self.org, role=role)

    def job(self) -> str:
        return str(self.engine.submit().pk)

    def leased(self) -> tuple[str, str]:
        """A processing job of the engine's worker: (job id, lease token)."""
        job, assigned = self.engine.start()
        return str(job.pk), str(assigned.lease_token)

    def worker(self) -> str:
        self.engine.ensure_worker()
        assert self.engine.worker is not None
        return str(self.engine.worker.pk)

    def schedule(self) -> str:
        fields = {"name": "nightly", "cron": "0 3 * * *", "queue": "default", "job_type": "t"}
        return str(scheduling.create_schedule(self.project, fields).pk)

    def doomed_project(self) -> str:
        """A second project with a live job, to be force-deleted (the reported attack)."""
        doomed = account_services.create_project(self.org, name="doomed", actor=SYSTEM)
        job_services.submit_job(doomed, JobSpec(queue="default", job_type="t"))
        return str(doomed.pk)


Build = Callable[[World], tuple[str, Any]]


@dataclass(frozen=True)
class Row:
    who: str
    scope: str = ""  # the API key scope the route needs
    ok: int = 200  # the status an allowed caller gets
    build: Build | None = None  # -> (path under /api/v1, JSON body)


def _lease_body(w: World) -> tuple[str, dict[str, Any]]:
    job_id, token = w.leased()
    return job_id, {"lease_token": token}


def _logs(w: World) -> tuple[str, Any]:
    job_id, body = _lease_body(w)
    return f"/jobs/{job_id}/logs", {**body, "entries": [{"message": "hi"}]}


def _complete(w: World) -> tuple[str, Any]:
    job_id, body = _lease_body(w)
    return f"/jobs/{job_id}/complete", body


def _fail(w: World) -> tuple[str, Any]:
    job_id, body = _lease_body(w)
    return f"/jobs/{job_id}/fail", {**body, "error": "boom"}


def _results(w: World) -> tuple[str, Any]:
    job_id, token = w.leased()
    item = {"job_id": job_id, "lease_token": token, "status": "succeeded"}
    return f"/workers/{w.worker()}/results", {"results": [item]}


def _spare_queue(w: World) -> tuple[str, Any]:
    Queue.objects.create(organization=w.org, project=w.project, name="spare")
    return "/queues/spare", None


NEW_SCHEDULE = {"name": "often", "cron": "*/5 * * * *", "queue": "default", "job_type": "t"}

# (url name, method) -> who may call it. Decided from the API's rules, not read off the views.
TABLE: dict[tuple[str, str], Row] = {
    # --- accounts: sign-in (no caller to check) ---
    ("accounts:signup", "POST"): Row(PUBLIC),
    ("accounts:token", "POST"): Row(PUBLIC),
    ("accounts:token-refresh", "POST"): Row(PUBLIC),
    ("accounts:logout", "POST"): Row(PUBLIC),
    # --- accounts: the organization ---
    ("accounts:organization", "PATCH"): Row(
        ADMIN, "admin", 200, lambda w: ("/organization", {"name": "Renamed"})
    ),
    ("accounts:member-list", "POST"): Row(
        ADMIN, "admin", 201, lambda w: ("/members", {"email": "new@acme.example"})
    ),
    ("accounts:member-detail", "PATCH"): Row(
        ADMIN,
        "admin",
        200,
        lambda w: (f"/members/{w.user('target@acme.example').pk}", {"role": Role.ADMIN}),
    ),
    ("accounts:member-detail", "DELETE"): Row(
        ADMIN, "admin", 204, lambda w: (f"/members/{w.user('target@acme.example').pk}", None)
    ),
    # Members may create and rename projects (docs/api.md); deleting one takes its API keys
    # and jobs with it, and is the admins'.
    ("accounts:project-list", "POST"): Row(
        WRITER, "admin", 201, lambda w: ("/projects", {"name": "second"})
    ),
    ("accounts:project-detail", "PATCH"): Row(
        WRITER, "admin", 200, lambda w: (f"/projects/{w.project.pk}", {"name": "main"})
    ),
    ("accounts:project-detail", "DELETE"): Row(
        ADMIN, "admin", 204, lambda w: (f"/projects/{w.doomed_project()}?force=true", None)
    ),
    ("accounts:project-api-keys", "POST"): Row(
        ADMIN,
        "admin",
        201,
        lambda w: (f"/projects/{w.project.pk}/api-keys", {"name": "k", "scopes": ["jobs:read"]}),
    ),
    ("accounts:api-key-detail", "DELETE"): Row(
        ADMIN,
        "admin",
        204,
        lambda w: (f"/api-keys/{w.make_api_key(scopes=['jobs:read'])[0].pk}", None),
    ),
    # --- queues ---
    ("queues:list", "POST"): Row(
        WRITER, "queues:write", 201, lambda w: ("/queues", {"name": "emails"})
    ),
    ("queues:detail", "PATCH"): Row(
        WRITER, "queues:write", 200, lambda w: ("/queues/default", {"priority": 3})
    ),
    ("queues:detail", "DELETE"): Row(WRITER, "queues:write", 204, _spare_queue),
    ("queues:pause", "POST"): Row(
        WRITER, "queues:write", 200, lambda w: ("/queues/default/pause", {})
    ),
    ("queues:resume", "POST"): Row(
        WRITER, "queues:write", 200, lambda w: ("/queues/default/resume", {})
    ),
    ("queues:purge", "POST"): Row(
        WRITER, "queues:write", 200, lambda w: ("/queues/default/purge", {})
    ),
    # --- jobs ---
    ("jobs:list", "POST"): Row(
        WRITER, "jobs:write", 201, lambda w: ("/jobs", {"queue": "default", "job_type": "t"})
    ),
    ("jobs:batch", "POST"): Row(
        WRITER,
        "jobs:write",
        201,
        lambda w: ("/jobs/batch", {"jobs": [{"queue": "default", "job_type": "t"}]}),
    ),
    ("jobs:bulk", "POST"): Row(
        WRITER,
        "jobs:write",
        200,
        lambda w: ("/jobs/bulk", {"action": "cancel", "ids": [w.job()]}),
    ),
    ("jobs:cancel", "POST"): Row(
        WRITER, "jobs:write", 200, lambda w: (f"/jobs/{w.job()}/cancel", None)
    ),
    ("jobs:retry", "POST"): Row(
        WRITER, "jobs:write", 200, lambda w: (f"/jobs/{w.engine.dead().pk}/retry", None)
    ),
    # --- the worker protocol ---
    ("jobs:logs", "POST"): Row(WRITER, "workers", 201, _logs),
    ("jobs:complete", "POST"): Row(WRITER, "workers", 200, _complete),
    ("jobs:fail", "POST"): Row(WRITER, "workers", 200, _fail),
    ("workers:list", "POST"): Row(
        WRITER,
        "workers",
        201,
        lambda w: ("/workers", {"name": "w-new", "queues": [{"name": "default"}]}),
    ),
    ("workers:detail", "DELETE"): Row(
        WRITER, "workers", 204, lambda w: (f"/workers/{w.worker()}", None)
    ),
    ("workers:heartbeat", "POST"): Row(
        WRITER, "workers", 200, lambda w: (f"/workers/{w.worker()}/heartbeat", {"running": []})
    ),
    # Fetching hands jobs over: a write, though it is a GET (get_changes_state).
    ("workers:jobs", "GET"): Row(
        WRITER, "workers", 200, lambda w: (f"/workers/{w.worker()}/jobs?wait=0", None)
    ),
    ("workers:results", "POST"): Row(WRITER, "workers", 200, _results),
    ("workers:drain", "POST"): Row(
        WRITER, "workers", 200, lambda w: (f"/workers/{w.worker()}/drain", None)
    ),
    ("workers:queues", "PUT"): Row(
        WRITER,
        "workers",
        200,
        lambda w: (f"/workers/{w.worker()}/queues", [{"name": "default"}]),
    ),
    # --- schedules ---
    ("jobs:schedules", "POST"): Row(
        WRITER, "schedules:write", 201, lambda w: ("/schedules", NEW_SCHEDULE)
    ),
    ("jobs:schedule-detail", "PATCH"): Row(
        WRITER,
        "schedules:write",
        200,
        lambda w: (f"/schedules/{w.schedule()}", {"enabled": False}),
    ),
    ("jobs:schedule-detail", "DELETE"): Row(
        WRITER, "schedules:write", 204, lambda w: (f"/schedules/{w.schedule()}", None)
    ),
    ("jobs:schedule-trigger", "POST"): Row(
        WRITER, "schedules:write", 201, lambda w: (f"/schedules/{w.schedule()}/trigger", {})
    ),
}


def write_routes() -> set[tuple[str, str]]:
    """(url name, method) of every route under /api/v1/ and each method that changes state."""
    found: set[tuple[str, str]] = set()

    def walk(patterns: list[URLPattern | URLResolver], prefix: str, namespace: str | None) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route, pattern.namespace or namespace)
            elif route.startswith("api/v1/") and pattern.name:
                name = f"{namespace}:{pattern.name}" if namespace else pattern.name
                view = pattern.callback.view_class  # type: ignore[attr-defined]
                for method in WRITE_METHODS:
                    if hasattr(view, method.lower()):
                        found.add((name, method))
                if getattr(view, "get_changes_state", False) and hasattr(view, "get"):
                    found.add((name, "GET"))

    walk(get_resolver().url_patterns, "", None)
    return found


def test_every_write_route_has_a_row():
    routes = write_routes()
    assert len(routes) > 30  # the walk found the API
    assert not sorted(routes - set(TABLE)), "write routes without a row in TABLE"
    assert not sorted(set(TABLE) - routes), "rows in TABLE for routes that do not exist"


def expected_status(row: Row, caller: str) -> int:
    if caller == "anonymous":
        return 401
    allowed = {"admin", "key with the admin scope", "key with the scope"}
    if row.who == WRITER:
        allowed.add("member")
    return row.ok if caller in allowed else 403


def snapshot() -> dict[str, list[str]]:
    """Every row of TaskForge's own tables, across tenants, as text."""
    volatile = {("accounts", "apikey"): {"last_used_at"}}  # written when a key authenticates
    rows: dict[str, list[str]] = {}
    for label in ("accounts", "billing", "queues", "jobs", "workers"):
        for model in apps.get_app_config(label).get_models():
            skip = volatile.get((label, model._meta.model_name), set())
            fields = [f.attname for f in model._meta.concrete_fields if f.attname not in skip]
            values = model._base_manager.order_by("pk").values_list(*fields)
            rows[model._meta.label] = [repr(row) for row in values]
    return rows


@pytest.fixture
def world(org, project, queue, admin, member, viewer, make_api_key) -> World:
    return World(org=org, project=project, engine=Engine(project), make_api_key=make_api_key)


@pytest.fixture
def client_for(world, jwt_client, admin, member, viewer) -> Callable[[str, Row], APIClient]:
    def make(caller: str, row: Row) -> APIClient:
        users = {"admin": admin, "member": member, "viewer": viewer}
        if caller in users:
            return jwt_client(users[caller])
        if caller == "anonymous":
            return APIClient()
        scopes = {
            "key with the scope": [row.scope],
            "key with every other scope": [
                s for s in API_KEY_SCOPES if s not in (row.scope, "admin")
            ],
            "key with the admin scope": ["admin"],
        }[caller]
        return bearer(world.make_api_key(scopes=scopes)[1])

    return make


MATRIX = [
    pytest.param(route, caller, id=f"{route[1]} {route[0]} by {caller}")
    for route, row in TABLE.items()
    if row.who != PUBLIC
    for caller in CALLERS
]


@pytest.mark.parametrize("route, caller", MATRIX)
def test_write_endpoint_answers_each_caller_by_the_role_matrix(route, caller, world, client_for):
    row = TABLE[route]
    assert row.build is not None
    client = client_for(caller, row)
    path, body = row.build(world)
    before = snapshot()

    response = _send(client, route[1], f"{API}{path}", body)

    expected = expected_status(row, caller)
    assert response.status_code == expected, (route, caller, response.content)
    if expected == 403:
        check_envelope(response, 403, "permission_denied")
        assert snapshot() == before
    elif expected == 401:
        check_envelope(response, 401, "not_authenticated")
        assert snapshot() == before


def _send(client: APIClient, method: str, path: str, body: Any) -> Any:
    send = getattr(client, method.lower())
    return send(path) if body is None else send(path, body, format="json")
