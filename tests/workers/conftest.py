"""Fixtures for the worker protocol tests (docs/api.md#the-worker-protocol).

Every request goes through the whole HTTP stack (rest_framework.test.APIClient):
* ``wapi``: a key of the project with the ``workers`` scope (what a worker process holds);
* ``submitter``: a jobs:read + jobs:write key, to submit jobs the way clients do;
* ``reader``: a jobs:read key (no ``workers`` scope), ``viewer_jwt`` / ``member_jwt`` users;
* ``outsider``: a key of ``other_project`` (another organization) with every scope it needs.

``fleet`` drives the protocol: register workers, submit jobs, long-poll them (the fetch
claims them). ``snapshot()`` captures every row the protocol writes; a refused request
must leave it unchanged. ``call_for(name)`` builds a request that succeeds for an allowed caller,
for the access tests that walk every path.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import connections
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import Project, User
from jobs import queries
from jobs.models import ExecutionLog, Job, JobExecution
from queues.models import Queue
from tests.api.conftest import check_envelope
from workers.models import QueueWorkerAssignment, Worker
from workers.notifications import hub

API = "/api/v1"


# --- clients ---------------------------------------------------------------------------------


@pytest.fixture
def wapi(key_client: Callable[..., APIClient], queue: Queue) -> APIClient:
    return key_client("workers")


@pytest.fixture
def submitter(key_client: Callable[..., APIClient], queue: Queue) -> APIClient:
    return key_client("jobs:read", "jobs:write")


@pytest.fixture
def reader(key_client: Callable[..., APIClient], queue: Queue) -> APIClient:
    return key_client("jobs:read")


def jwt_for(user: User, project: Project) -> APIClient:
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}",
        HTTP_X_TASKFORGE_PROJECT=str(project.pk),
    )
    return client


@pytest.fixture
def viewer_jwt(viewer: User, project: Project) -> APIClient:
    return jwt_for(viewer, project)


@pytest.fixture
def member_jwt(member: User, project: Project) -> APIClient:
    return jwt_for(member, project)


@pytest.fixture
def outsider(
    key_client: Callable[..., APIClient], other_project: Project, other_queue: Queue
) -> APIClient:
    return key_client("workers", "jobs:read", "jobs:write", project=other_project)


# --- driving the protocol --------------------------------------------------------------------


@dataclass
class Fleet:
    workers: APIClient
    jobs: APIClient

    def register(
        self,
        name: str = "w1",
        *,
        capacity: int = 4,
        queues: tuple[str, ...] = ("default",),
        client: APIClient | None = None,
    ) -> str:
        body = {"name": name, "capacity": capacity, "queues": [{"name": q} for q in queues]}
        response = (client or self.workers).post(f"{API}/workers", body, format="json")
        assert response.status_code in (200, 201), response.content
        worker_id: str = response.json()["id"]
        return worker_id

    def submit(
        self, queue: str = "default", *, client: APIClient | None = None, **fields: Any
    ) -> str:
        body = {"queue": queue, "job_type": "t", **fields}
        response = (client or self.jobs).post(f"{API}/jobs", body, format="json")
        assert response.status_code == 201, response.content
        job_id: str = response.json()["id"]
        return job_id

    def poll(self, worker_id: str, *, client: APIClient | None = None, **params: Any) -> Any:
        params.setdefault("wait", 0)
        return (client or self.workers).get(f"{API}/workers/{worker_id}/jobs", params)

    def running(
        self, worker_id: str, count: int = 1, *, queue: str = "default", **fields: Any
    ) -> list[dict[str, Any]]:
        """Submit ``count`` jobs and fetch them as the worker (the fetch claims them)."""
        ids = {self.submit(queue, **fields) for _ in range(count)}
        response = self.poll(worker_id, max=1000)
        assert response.status_code == 200, response.content
        jobs: list[dict[str, Any]] = response.json()["jobs"]
        assert {job["id"] for job in jobs} == ids
        return jobs


@pytest.fixture
def fleet(wapi: APIClient, submitter: APIClient) -> Fleet:
    return Fleet(workers=wapi, jobs=submitter)


@pytest.fixture
def other_fleet(outsider: APIClient) -> Fleet:
    return Fleet(workers=outsider, jobs=outsider)


# --- what a refused request must not change --------------------------------------------------


@pytest.fixture
def snapshot(db: Any) -> Callable[[], dict[str, Any]]:
    """Every row the worker protocol writes, across tenants."""

    def take() -> dict[str, Any]:
        return {
            "workers": sorted(
                Worker.objects.all_tenants().values_list(
                    "pk", "name", "status", "capacity", "last_heartbeat", "metadata"
                )
            ),
            "assignments": sorted(
                QueueWorkerAssignment.objects.all_tenants().values_list(
                    "worker_id", "queue_id", "weight", "is_active"
                )
            ),
            "jobs": sorted(
                Job.objects.all_tenants().values_list(
                    "pk",
                    "state",
                    "attempts",
                    "lease_token",
                    "lease_expires_at",
                    "delivered_at",
                    "worker_id",
                    "result",
                    "last_error",
                )
            ),
            "executions": sorted(
                JobExecution.objects.all_tenants().values_list("pk", "status", "error")
            ),
            "logs": ExecutionLog.objects.all_tenants().count(),
        }

    return take


@pytest.fixture
def refused() -> Callable[[Any, int, str], dict[str, Any]]:
    """``refused(response, 400, "validation_error")``: assert the error envelope, return it."""
    return check_envelope


# --- long-poll plumbing --------------------------------------------------------------------


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until it holds (docs/conventions.md#tests-never-a-bare-sleep)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def long_polls_waiting(worker_id: str) -> int:
    """How many long-polls of this worker sleep on the notification hub right now."""
    channel = queries.worker_channel(uuid.UUID(worker_id))
    # The hub has no public count of waiters; reading it is the only way to know a poll sleeps.
    return len(hub()._waiters.get(channel, ()))


class InThread(threading.Thread):
    """Run ``target`` in a thread with its own database connection, closed at the end."""

    def __init__(self, target: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._target_fn = target
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._target_fn()
        except BaseException as exc:  # re-raised by join_result in the test's thread
            self.error = exc
        finally:
            connections.close_all()

    def join_result(self, timeout: float = 30.0) -> Any:
        self.join(timeout)
        assert not self.is_alive(), "thread did not finish"
        if self.error is not None:
            raise self.error
        return self.result


# --- one request per protocol endpoint, for the access tests --------------------------------


@dataclass(frozen=True)
class Call:
    name: str
    method: str
    path: str
    body: Any = None
    ok: int = 200

    @property
    def writes(self) -> bool:
        return self.method != "GET"

    def send(self, client: APIClient) -> Any:
        if self.method == "GET":
            return client.get(self.path)
        return getattr(client, self.method.lower())(self.path, self.body, format="json")


# (url name, request) for every worker protocol path.
CALLS = [
    "workers:list GET",
    "workers:list POST",
    "workers:detail DELETE",
    "workers:heartbeat POST",
    "workers:jobs GET",
    "workers:results POST",
    "workers:drain POST",
    "workers:queues PUT",
    "jobs:complete POST",
    "jobs:fail POST",
    "jobs:logs POST",
]
WRITE_CALLS = [c for c in CALLS if not c.endswith(" GET")]
# Paths that name one of our objects (a worker or a job): the outsider must get 404 on them.
OBJECT_CALLS = [c for c in CALLS if not c.startswith("workers:list")]


@pytest.fixture
def call_for(fleet: Fleet, make_queue: Callable[..., Queue]) -> Callable[[str], Call]:
    """``call_for("workers:drain POST")``: a request that succeeds for an allowed caller.

    Each call gets its own worker serving its own queue, so each call's job can only be
    claimed by that call's worker.
    """
    made = itertools.count()

    def build(spec: str) -> Call:
        name, method = spec.split()
        n = next(made)
        queue = make_queue(f"access-{n}").name
        if name == "workers:list":
            if method == "GET":
                fleet.register(f"w{n}", queues=(queue,))
                return Call(spec, "GET", f"{API}/workers")
            body = {"name": f"new-{n}", "queues": [{"name": queue}]}
            return Call(spec, "POST", f"{API}/workers", body, ok=201)
        worker = fleet.register(f"w{n}", queues=(queue,))
        if name.startswith("jobs:") or name == "workers:results":
            (job,) = fleet.running(worker, queue=queue)
            lease = job["lease_token"]
            if name == "workers:results":
                item = {"job_id": job["id"], "lease_token": lease, "status": "succeeded"}
                return Call(spec, "POST", f"{API}/workers/{worker}/results", {"results": [item]})
            bodies = {
                "jobs:complete": {"lease_token": lease, "result": {"ok": 1}},
                "jobs:fail": {"lease_token": lease, "error": "boom", "retryable": False},
                "jobs:logs": {"lease_token": lease, "entries": [{"message": "hi"}]},
            }
            suffix = name.split(":")[1]
            ok = 201 if name == "jobs:logs" else 200
            return Call(spec, "POST", f"{API}/jobs/{job['id']}/{suffix}", bodies[name], ok=ok)
        if name == "workers:detail":
            return Call(spec, "DELETE", f"{API}/workers/{worker}", ok=204)
        if name == "workers:jobs":
            fleet.submit(queue)
            return Call(spec, "GET", f"{API}/workers/{worker}/jobs?wait=0")
        if name == "workers:heartbeat":
            return Call(spec, "POST", f"{API}/workers/{worker}/heartbeat", {"running": []})
        if name == "workers:drain":
            return Call(spec, "POST", f"{API}/workers/{worker}/drain")
        assert name == "workers:queues", name
        body = [{"name": queue, "weight": 5}]
        return Call(spec, "PUT", f"{API}/workers/{worker}/queues", body)

    return build
