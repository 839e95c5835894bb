"""A tenant cannot tell another organization's ids from random ones.

Asking for another organization's object answers the 404 of a missing one. The attempt used to
be written to the asker's own audit log, but only when the id existed elsewhere: reading
GET /api/v1/audit-logs after each guess told a tenant which ids were real. The attempt is now
a staff-only WARNING of the ``taskforge.security`` logger naming both organizations
(accounts/api_base.py note_cross_tenant_attempt); the asker's audit log is the same after a
foreign id and after a random one.

Every way an id reaches the API is probed: a path id of each kind of object, and the
``X-TaskForge-Project`` header.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import Role, User
from jobs.schedules import services as scheduling
from taskforge.lib.ids import uuid7
from tests.api.conftest import API, check_envelope

pytestmark = pytest.mark.django_db


def _worker(engine: Any) -> str:
    engine.ensure_worker()
    return str(engine.worker.pk)


def _schedule(project: Any) -> str:
    fields = {"name": "theirs", "cron": "0 3 * * *", "queue": "default", "job_type": "t"}
    return str(scheduling.create_schedule(project, fields).pk)


def _member(org: Any) -> str:
    user = User.objects.create_user("them@globex.example", "pw", organization=org, role=Role.MEMBER)
    return str(user.pk)


# kind -> (make one of the other tenant's ids, send the request that names an id)
PROBES: dict[str, tuple[Callable[[Any], str], Callable[[Any, str], Any]]] = {
    "job": (
        lambda t: str(t.engine.submit().pk),
        lambda c, pk: c.jwt().get(f"{API}/jobs/{pk}"),
    ),
    "batch": (
        lambda t: str(t.engine.batch(1).batch_id),
        lambda c, pk: c.jwt().get(f"{API}/batches/{pk}"),
    ),
    "worker": (
        lambda t: _worker(t.engine),
        lambda c, pk: c.jwt().post(f"{API}/workers/{pk}/heartbeat", {}, format="json"),
    ),
    "schedule": (
        lambda t: _schedule(t.project),
        lambda c, pk: c.jwt().get(f"{API}/schedules/{pk}"),
    ),
    "project": (
        lambda t: str(t.project.pk),
        lambda c, pk: c.jwt().get(f"{API}/projects/{pk}"),
    ),
    "project header": (
        lambda t: str(t.project.pk),
        lambda c, pk: c.jwt(project_id=pk).get(f"{API}/jobs"),
    ),
    "member": (
        lambda t: _member(t.org),
        lambda c, pk: c.jwt().patch(f"{API}/members/{pk}", {"role": "viewer"}, format="json"),
    ),
    "api key": (
        lambda t: str(t.make_api_key(project=t.project)[0].pk),
        lambda c, pk: c.jwt().delete(f"{API}/api-keys/{pk}"),
    ),
}


class Tenant:
    def __init__(self, org: Any, project: Any, engine: Any, make_api_key: Any) -> None:
        self.org, self.project, self.engine = org, project, engine
        self.make_api_key = make_api_key


class Asker:
    """Our organization's admin, who may call every endpoint probed here."""

    def __init__(self, jwt_client: Callable[..., APIClient], user: User) -> None:
        self._jwt_client, self.user = jwt_client, user

    def jwt(self, **kwargs: Any) -> APIClient:
        return self._jwt_client(self.user, **kwargs)

    def audit_log(self) -> Any:
        response = self.jwt().get(f"{API}/audit-logs")
        assert response.status_code == 200, response.content
        return response.json()


@pytest.fixture
def asker(jwt_client, admin, queue) -> Asker:
    return Asker(jwt_client, admin)


@pytest.fixture
def them(other_org, other_project, other_engine, make_api_key) -> Tenant:
    return Tenant(other_org, other_project, other_engine, make_api_key)


def _not_found(response: Any, pk: str) -> dict[str, Any]:
    error = check_envelope(response, 404, "not_found")
    return {**error, "message": error["message"].replace(pk, "<id>")}


@pytest.mark.parametrize("kind", PROBES)
def test_the_askers_audit_log_is_the_same_after_a_foreign_id_and_a_random_one(kind, asker, them):
    make_foreign, probe = PROBES[kind]
    foreign, random = make_foreign(them), str(uuid7())
    before = asker.audit_log()

    foreign_error = _not_found(probe(asker, foreign), foreign)
    after_foreign = asker.audit_log()
    random_error = _not_found(probe(asker, random), random)
    after_random = asker.audit_log()

    assert foreign_error == random_error
    assert after_foreign == before
    assert after_random == after_foreign


@pytest.mark.parametrize("kind", PROBES)
def test_staff_see_a_foreign_id_in_the_security_log_with_both_organizations(
    kind, asker, them, org, other_org, caplog
):
    caplog.set_level("WARNING", logger="taskforge.security")
    make_foreign, probe = PROBES[kind]
    foreign = make_foreign(them)

    probe(asker, str(uuid7()))
    assert [r for r in caplog.records if r.name == "taskforge.security"] == []
    probe(asker, foreign)

    [record] = [r for r in caplog.records if r.name == "taskforge.security"]
    assert record.levelname == "WARNING"
    assert (record.asker_organization_id, record.owner_organization_id) == (
        str(org.pk),
        str(other_org.pk),
    )
    assert record.target_id == foreign
    assert str(org.pk) in record.getMessage() and str(other_org.pk) in record.getMessage()
    assert record.actor == f"user:{asker.user.pk}"
