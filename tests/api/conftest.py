"""Fixtures for the API tests: clients for every kind of caller, and an engine driver.

Clients (all rest_framework.test.APIClient, so requests go through the whole HTTP stack):
* ``key_client(*scopes, project=...)``: an API key of the project with these scopes;
* ``api``: a key with jobs:read and jobs:write, ``reader``: a key with jobs:read only;
* ``jwt_client(user, project_id=...)``: a user's JWT with the X-TaskForge-Project header;
  ``admin_jwt``, ``member_jwt``, ``viewer_jwt`` for the three roles of ``org``;
* ``outsider``: a jobs:read + jobs:write key of ``other_project`` (another organization).

``engine`` submits jobs through jobs.services and drives them to any state through the real
engine (register_worker, Dispatcher().tick(), claiming.claim, complete_job / fail_job), so the
executions and logs the API shows are the ones workers would produce.

``snapshot()`` captures the rows an endpoint could write; a refused request must leave it
unchanged. ``refused(response, status, code)`` checks the error envelope and returns it.
``call_for(name)`` builds a request to one Jobs endpoint against fresh target objects, for the
access tests that walk every path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import AuditLog, Organization, Project, User
from jobs import services
from jobs.models import Batch, ExecutionLog, Job, JobDependency, JobExecution
from jobs.queries import AssignedJob
from jobs.specs import JobSpec
from queues.models import Queue
from workers import claiming
from workers import services as worker_services
from workers.dispatcher import Dispatcher
from workers.models import Worker

API = "/api/v1"
# The queue the engine driver runs jobs on: "default" stays free for pending jobs, so running
# one job through the engine never claims the pending jobs a test set up beside it.
WORK_QUEUE = "work"


# --- clients ---------------------------------------------------------------------------------


@pytest.fixture
def api(key_client: Callable[..., APIClient], queue: Queue) -> APIClient:
    return key_client("jobs:read", "jobs:write")


@pytest.fixture
def reader(key_client: Callable[..., APIClient], queue: Queue) -> APIClient:
    return key_client("jobs:read")


@pytest.fixture
def jwt_client(project: Project) -> Callable[..., APIClient]:
    def make(user: User, project_id: object = project.pk) -> APIClient:
        client = APIClient()
        headers = {"HTTP_AUTHORIZATION": f"Bearer {RefreshToken.for_user(user).access_token}"}
        if project_id is not None:
            headers["HTTP_X_TASKFORGE_PROJECT"] = str(project_id)
        client.credentials(**headers)
        return client

    return make


@pytest.fixture
def admin_jwt(jwt_client: Callable[..., APIClient], admin: User) -> APIClient:
    return jwt_client(admin)


@pytest.fixture
def member_jwt(jwt_client: Callable[..., APIClient], member: User) -> APIClient:
    return jwt_client(member)


@pytest.fixture
def viewer_jwt(jwt_client: Callable[..., APIClient], viewer: User) -> APIClient:
    return jwt_client(viewer)


@pytest.fixture
def outsider(
    key_client: Callable[..., APIClient], other_project: Project, other_queue: Queue
) -> APIClient:
    return key_client("jobs:read", "jobs:write", project=other_project)


# --- what a refused request must not change --------------------------------------------------


@pytest.fixture
def snapshot(db: Any) -> Callable[[], dict[str, Any]]:
    """Counts of every row the Jobs endpoints write, and each job's state, across tenants."""

    def take() -> dict[str, Any]:
        return {
            "jobs": sorted(
                Job.objects.all_tenants().values_list("pk", "state", "attempts", "last_error")
            ),
            "batches": Batch.objects.all_tenants().count(),
            "dependencies": JobDependency.objects.all_tenants().count(),
            "executions": JobExecution.objects.all_tenants().count(),
            "logs": ExecutionLog.objects.all_tenants().count(),
        }

    return take


def check_envelope(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json"), response.content
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["details"], dict), error
    return error


@pytest.fixture
def refused() -> Callable[[Any, int, str], dict[str, Any]]:
    """``refused(response, 400, "validation_error")``: assert the error envelope, return it."""
    return check_envelope


# --- the engine, driven the way workers drive it ---------------------------------------------


@dataclass
class Engine:
    project: Project
    worker: Worker | None = None
    leases: dict[UUID, AssignedJob] = field(default_factory=dict)

    def submit(self, queue: str = "default", job_type: str = "t", **fields: Any) -> Job:
        job, _ = services.submit_job(
            self.project, JobSpec(queue=queue, job_type=job_type, **fields)
        )
        return job

    def start(self, job_type: str = "t", **fields: Any) -> tuple[Job, AssignedJob]:
        """Submit a job on the work queue and have a worker claim and fetch it."""
        self.ensure_worker()
        job = self.submit(queue=WORK_QUEUE, job_type=job_type, **fields)
        return job, self.claim()[job.pk]

    def claim(self) -> dict[UUID, AssignedJob]:
        """Promote what is due (a dispatcher tick); the worker fetches, and so claims, the work
        queue's pending jobs."""
        self.ensure_worker()
        assert self.worker is not None
        Dispatcher(batch_size=100).tick()
        for assigned in claiming.claim(self.project, self.worker.pk, limit=100).jobs:
            self.leases[assigned.id] = assigned
        return self.leases

    def processing(self, **fields: Any) -> Job:
        job, _ = self.start(**fields)
        return services.get_job(self.project, job.pk)

    def succeeded(self, result: Any = None, logs: tuple[str, ...] = (), **fields: Any) -> Job:
        job, assigned = self.start(**fields)
        if logs:
            services.append_logs(
                self.project,
                job.pk,
                lease_token=assigned.lease_token,
                entries=[{"level": "info", "message": line} for line in logs],
            )
        return services.complete_job(
            self.project, job.pk, lease_token=assigned.lease_token, result=result
        )

    def dead(self, error: str = "boom", **fields: Any) -> Job:
        job, assigned = self.start(**fields)
        return services.fail_job(
            self.project, job.pk, lease_token=assigned.lease_token, error=error, retryable=False
        )

    def cancelled(self, **fields: Any) -> Job:
        job = self.submit(**fields)
        return services.cancel_job(self.project, job.pk)

    def batch(self, count: int = 2, queue: str = "default", **fields: Any) -> services.Submitted:
        specs = [JobSpec(queue=queue, job_type="t", **fields) for _ in range(count)]
        return services.submit_jobs(self.project, specs)

    def ensure_worker(self) -> None:
        """Create the work queue and a worker serving it (once)."""
        if self.worker is not None:
            return
        if not Queue.objects.for_project(self.project).filter(name=WORK_QUEUE).exists():
            Queue.objects.create(
                organization_id=self.project.organization_id, project=self.project, name=WORK_QUEUE
            )
        self.worker, _ = worker_services.register_worker(
            self.project,
            name="api-test-worker",
            queues=[worker_services.QueueWeight(WORK_QUEUE)],
            capacity=100,
        )


@pytest.fixture
def engine(project: Project, queue: Queue) -> Engine:
    return Engine(project)


@pytest.fixture
def other_engine(other_project: Project, other_queue: Queue) -> Engine:
    return Engine(other_project)


# --- one request per Jobs endpoint, for the access tests -------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: Any = None
    ok: int = 200

    @property
    def writes(self) -> bool:
        return self.method == "POST"

    def send(self, client: APIClient) -> Any:
        if self.method == "GET":
            return client.get(self.path)
        return client.post(self.path, self.body, format="json")


# Every path of the Jobs API (docs/api.md); the access tests are parametrised on these.
READ_CALLS = ["list", "detail", "executions", "logs", "batch-detail"]
WRITE_CALLS = ["submit", "batch", "cancel", "retry", "bulk"]
ALL_CALLS = READ_CALLS + WRITE_CALLS


@pytest.fixture
def call_for(engine: Engine) -> Callable[[str], Call]:
    """``call_for(name)``: a request that succeeds for a caller allowed to make it."""

    def build(name: str) -> Call:
        if name == "submit":
            return Call("POST", f"{API}/jobs", {"queue": "default", "job_type": "t"}, ok=201)
        if name == "batch":
            body = {"jobs": [{"queue": "default", "job_type": "t"}]}
            return Call("POST", f"{API}/jobs/batch", body, ok=201)
        if name == "list":
            engine.submit()
            return Call("GET", f"{API}/jobs")
        if name == "bulk":
            job = engine.submit()
            return Call("POST", f"{API}/jobs/bulk", {"action": "cancel", "ids": [str(job.pk)]})
        if name == "batch-detail":
            return Call("GET", f"{API}/batches/{engine.batch().batch_id}")
        if name == "retry":
            return Call("POST", f"{API}/jobs/{engine.dead().pk}/retry")
        job = engine.succeeded(logs=("hello",)) if name in ("executions", "logs") else None
        job = job or engine.submit()
        suffix = {"detail": "", "executions": "/executions", "logs": "/logs", "cancel": "/cancel"}
        return Call("POST" if name == "cancel" else "GET", f"{API}/jobs/{job.pk}{suffix[name]}")

    return build


@dataclass
class Access:
    """The access trio for one request (docs/conventions.md#tests-access-trio)."""

    snapshot: Callable[[], dict[str, Any]]
    reader: APIClient
    viewer: APIClient
    member: APIClient
    member_without_project: APIClient
    member_in_foreign_project: APIClient
    organization: Organization
    foreign_project: Project
    denials: Callable[[Organization], list[tuple[str, str]]]

    def refuses_anonymous(self, call: Call) -> None:
        self._refused_unchanged(call, APIClient(), 401, "not_authenticated")

    def checks_the_key_scope(self, call: Call) -> None:
        self._read_only(call, self.reader)

    def lets_a_viewer_only_read(self, call: Call) -> None:
        self._read_only(call, self.viewer)

    def lets_a_member_in(self, call: Call) -> None:
        response = call.send(self.member)
        assert response.status_code == call.ok, response.content

    def needs_the_project_header(self, call: Call) -> None:
        self._refused_unchanged(call, self.member_without_project, 400, "validation_error")

    def hides_a_foreign_project(self, call: Call) -> None:
        self._refused_unchanged(call, self.member_in_foreign_project, 404, "not_found")
        # Logged for staff, never in the asker's audit log (a tenant could probe ids there).
        denied = [pk for kind, pk in self.denials(self.organization) if kind == "project"]
        assert denied == [str(self.foreign_project.pk)]
        assert not AuditLog.objects.for_org(self.organization).filter(action__startswith="access.")

    def _read_only(self, call: Call, client: APIClient) -> None:
        if call.writes:
            self._refused_unchanged(call, client, 403, "permission_denied")
        else:
            response = call.send(client)
            assert response.status_code == 200, response.content

    def _refused_unchanged(self, call: Call, client: APIClient, status: int, code: str) -> None:
        before = self.snapshot()
        check_envelope(call.send(client), status, code)
        assert self.snapshot() == before


@pytest.fixture
def access(
    snapshot: Callable[[], dict[str, Any]],
    reader: APIClient,
    viewer_jwt: APIClient,
    member_jwt: APIClient,
    jwt_client: Callable[..., APIClient],
    member: User,
    other_project: Project,
    cross_tenant_denials: Callable[[Organization], list[tuple[str, str]]],
) -> Access:
    return Access(
        snapshot=snapshot,
        reader=reader,
        viewer=viewer_jwt,
        member=member_jwt,
        member_without_project=jwt_client(member, project_id=None),
        member_in_foreign_project=jwt_client(member, project_id=other_project.pk),
        organization=member.organization,
        foreign_project=other_project,
        denials=cross_tenant_denials,
    )
