"""The submit endpoints' fast paths: what they cost in round trips, what they NOTIFY, and how
idempotency keys behave when submits race (jobs/sql/submit_job.sql, jobs.services.submit).

Round trips are counted with libpq's own trace of the connection: every Query, Sync and
CopyDone message the client sends is followed by a wait for the server.
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection, connections
from rest_framework.renderers import JSONRenderer

from billing.models import Subscription, Tier
from jobs.models import Job, JobState
from jobs.queries import JOB_COLUMNS
from jobs.serializers import JobSerializer, plain_batch, plain_submit
from tests.api.conftest import API

pytestmark = pytest.mark.django_db(transaction=True)

SQL = Path(__file__).resolve().parents[2] / "jobs" / "sql"
_MESSAGE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\t([FB])\t\d+\t(\w+)")


class Trips:
    """What the client sent during a ``counted()`` block."""

    def __init__(self, messages: list[tuple[str, str, str]]) -> None:
        sent = [(kind, text) for side, kind, text in messages if side == "F"]
        self.round_trips = sum(1 for kind, _ in sent if kind in ("Query", "Sync", "CopyDone"))
        # The auth stamp is read at most once a second: a request may or may not do it.
        self.stamp_reads = sum(
            1 for kind, text in sent if kind in ("Parse", "Query") and "accounts_auth_stamp" in text
        )
        self.statements = [text for kind, text in sent if kind in ("Parse", "Query")]

    @property
    def without_stamp(self) -> int:
        return self.round_trips - self.stamp_reads


@contextmanager
def counted() -> Iterator[list[Trips]]:
    """Trace this thread's connection (the one the test client's requests use)."""
    connection.ensure_connection()
    pgconn = connection.connection.pgconn
    found: list[Trips] = []
    with tempfile.TemporaryFile("w+") as trace:
        pgconn.trace(trace.fileno())
        try:
            yield found
        finally:
            pgconn.untrace()
        trace.seek(0)
        messages: list[tuple[str, str, str]] = []
        for line in trace.read().splitlines():
            match = _MESSAGE.match(line)
            if match:
                messages.append((match.group(1), match.group(2), line))
            elif messages:  # a statement's text runs over several lines
                side, kind, text = messages[-1]
                messages[-1] = (side, kind, text + "\n" + line)
    found.append(Trips(messages))


def job(**fields: Any) -> dict[str, Any]:
    return {"queue": "default", "job_type": "t", **fields}


def submit(api: Any, body: Any) -> Any:
    return api.post(f"{API}/jobs", body, format="json")


def sdk_body(**fields: Any) -> dict[str, Any]:
    """What the Python SDK sends: the job and a fresh idempotency key."""
    return job(payload={"i": 1}, idempotency_key=str(uuid.uuid4()), **fields)


# --- round trips --------------------------------------------------------------------------------


@pytest.fixture
def enterprise(org):
    """The tenant on the enterprise plan, which has no request-rate limit: a limited plan adds
    the round trips of its rate-limit counter (docs/architecture.md "Submit path")."""
    Subscription.objects.all_tenants().filter(organization=org).update(tier=Tier.ENTERPRISE)


@pytest.mark.usefixtures("enterprise")
def test_a_single_submit_is_one_round_trip(api):
    assert submit(api, sdk_body()).status_code == 201  # the key is cached, the statement known
    for body in (sdk_body(), job(), sdk_body(delay_seconds=30), sdk_body(tags=["a"])):
        with counted() as trips:
            response = submit(api, body)
        assert response.status_code == 201, response.content
        assert trips[0].without_stamp == 1, trips[0].statements
        assert trips[0].stamp_reads <= 1


@pytest.mark.usefixtures("enterprise")
def test_a_repeated_key_is_one_round_trip_too(api):
    body = sdk_body()
    first = submit(api, body)
    with counted() as trips:
        again = submit(api, body)
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
    assert trips[0].without_stamp == 1, trips[0].statements


@pytest.mark.usefixtures("enterprise")
def test_a_batch_of_a_thousand_takes_a_handful_of_round_trips(api):
    assert api.post(f"{API}/jobs/batch", {"jobs": [sdk_body()]}, format="json").status_code == 201
    with counted() as trips:
        response = api.post(
            f"{API}/jobs/batch", {"jobs": [sdk_body() for _ in range(1000)]}, format="json"
        )
    assert response.status_code == 201, response.content
    # BEGIN, the queues and keys, the batch row, COPY (two), the NOTIFY, COMMIT.
    assert trips[0].without_stamp <= 7, trips[0].statements


# --- NOTIFY ---------------------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[Callable[[], list[str]]]:
    """``heard()``: the payloads NOTIFYed on taskforge_jobs since the fixture started."""
    params = connection.get_connection_params()
    conn = psycopg.connect(
        dbname=connection.settings_dict["NAME"],
        autocommit=True,
        **{k: v for k, v in params.items() if k in ("user", "password", "host", "port")},
    )
    conn.execute("LISTEN taskforge_jobs")
    heard: list[str] = []

    def take() -> list[str]:
        heard.extend(n.payload for n in conn.notifies(timeout=0.5, stop_after=100))
        return heard

    yield take
    conn.close()


def test_a_pending_job_wakes_its_queue_and_a_delayed_one_wakes_nobody(api, queue, listener):
    assert submit(api, job(delay_seconds=60)).status_code == 201
    assert listener() == []
    assert submit(api, job()).status_code == 201
    assert listener() == [queue.pk.hex]


def test_a_batch_wakes_each_queue_with_pending_jobs_once(api, queue, make_queue, listener):
    later = make_queue("later")
    body = {
        "jobs": [job(), job(), job(), job(queue="later", delay_seconds=60)],
    }
    assert api.post(f"{API}/jobs/batch", body, format="json").status_code == 201
    assert listener() == [queue.pk.hex]
    assert later.pk.hex not in listener()


# --- idempotency under concurrency ------------------------------------------------------------


@pytest.fixture
def other_session() -> Iterator[psycopg.Connection[Any]]:
    params = connection.get_connection_params()
    conn = psycopg.connect(
        dbname=connection.settings_dict["NAME"],
        **{k: v for k, v in params.items() if k in ("user", "password", "host", "port")},
    )
    yield conn
    conn.close()


def insert_uncommitted(conn: psycopg.Connection[Any], project: Any, key: str) -> uuid.UUID:
    """Submit a job with ``key`` in ``conn``'s open transaction (a concurrent submit)."""
    job_id = uuid.uuid4()
    text = (SQL / "submit_job.sql").read_text()
    conn.execute(
        text,
        {
            "id": job_id,
            "organization_id": project.organization_id,
            "project_id": project.pk,
            "queue": "default",
            "job_type": "theirs",
            "payload": "{}",
            "priority": 5,
            "sub_priority": 0,
            "max_attempts": None,
            "timeout_seconds": None,
            "idempotency_key": key,
            "tags": [],
            "run_at": None,
            "delay_seconds": None,
        },
    )
    return job_id


def submit_in_thread(api: Any, body: dict[str, Any]) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(submit(api, body))
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def wait_for_a_lock_wait(conn: psycopg.Connection[Any]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with psycopg.connect(conn.info.dsn, autocommit=True) as probe:
            waiting = probe.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            ).fetchone()
        if waiting and waiting[0]:
            return
        time.sleep(0.02)
    raise AssertionError("the second submit never waited for the first")


def test_a_key_committed_by_a_concurrent_submit_returns_that_job(api, project, other_session):
    theirs = insert_uncommitted(other_session, project, "race")
    thread, result = submit_in_thread(api, job(idempotency_key="race", job_type="ours"))
    wait_for_a_lock_wait(other_session)
    other_session.commit()
    thread.join(30)

    (response,) = result
    assert response.status_code == 200, response.content
    assert (response.json()["id"], response.json()["job_type"]) == (str(theirs), "theirs")
    assert Job.objects.for_project(project).filter(idempotency_key="race").count() == 1


def test_a_key_rolled_back_by_a_concurrent_submit_is_ours(api, project, other_session):
    insert_uncommitted(other_session, project, "race")
    thread, result = submit_in_thread(api, job(idempotency_key="race", job_type="ours"))
    wait_for_a_lock_wait(other_session)
    other_session.rollback()
    thread.join(30)

    (response,) = result
    assert response.status_code == 201, response.content
    stored = Job.objects.for_project(project).get(idempotency_key="race")
    assert (str(stored.pk), stored.job_type) == (response.json()["id"], "ours")


def test_a_repeated_key_naming_a_missing_queue_is_refused_like_before(api, refused):
    assert submit(api, job(idempotency_key="k")).status_code == 201
    error = refused(submit(api, job(idempotency_key="k", queue="nope")), 400, "validation_error")
    assert error["details"] == {"field": "queue"}


# --- what the responses say ----------------------------------------------------------------------


def serialized(job: Job, queue_name: str) -> Any:
    data = JobSerializer(job, context={"queue_names": {job.queue_id: queue_name}}).data
    return json.loads(JSONRenderer().render(data))


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"payload": {"nested": [1, 2.5, "é", None, True]}, "priority": 9, "tags": ["a", "b"]},
        {"delay_seconds": 3600, "max_attempts": 2, "timeout_seconds": 5},
        {"run_at": "2031-05-06T07:08:09.123456+02:00", "idempotency_key": "key"},
    ],
)
def test_a_submitted_job_shows_as_the_job_serializer_shows_it(api, project, fields):
    created = submit(api, job(**fields))
    assert created.status_code == 201, created.content
    stored = Job.objects.for_project(project).get(pk=created.json()["id"])
    assert created.json() == serialized(stored, "default")
    if "idempotency_key" in fields:
        again = submit(api, job(**fields))
        assert (again.status_code, again.json()) == (200, serialized(stored, "default"))


def test_a_batch_shows_new_and_repeated_jobs_as_the_job_serializer_shows_them(
    api, project, make_queue
):
    make_queue("other")
    first = submit(api, job(queue="other", idempotency_key="old", payload={"old": 1}))
    body = {
        "jobs": [
            job(payload=[1, {"a": "é"}], tags=["x"]),
            job(idempotency_key="old"),  # returns the job already in the queue "other"
            job(delay_seconds=60, priority=0),
        ]
    }
    response = api.post(f"{API}/jobs/batch", body, format="json")
    assert response.status_code == 201, response.content
    shown = response.json()["jobs"]
    assert shown[1]["id"] == first.json()["id"]
    stored = Job.objects.for_project(project).in_bulk([item["id"] for item in shown])
    names = ["default", "other", "default"]
    assert shown == [
        serialized(stored[uuid.UUID(item["id"])], name)
        for item, name in zip(shown, names, strict=True)
    ]


# --- the statement and the fast validation ------------------------------------------------------


def test_the_single_submit_names_the_job_row_columns_in_order():
    text = re.sub(r"--[^\n]*", "", (SQL / "submit_job.sql").read_text())
    match = re.search(r"INSERT INTO jobs_job\s*\(([^)]*)\)", text)
    assert match
    assert tuple(name.strip() for name in match.group(1).split(",")) == JOB_COLUMNS


def test_what_the_sdk_sends_takes_the_fast_validation():
    body = sdk_body(priority=7, tags=["a"], delay_seconds=1.5, max_attempts=3)
    assert plain_submit(body) is not None
    assert plain_submit(sdk_body(run_at="2030-01-01T00:00:00Z")) is not None
    batch = {"jobs": [sdk_body(ref="a"), sdk_body(depends_on_refs=["a"])], "on_complete": job()}
    assert plain_batch(batch) is not None


def test_a_job_with_parents_takes_the_general_path_and_still_works(api, engine):
    parent = engine.submit()
    response = submit(api, job(depends_on=[str(parent.pk)]))
    assert response.status_code == 201, response.content
    assert response.json()["state"] == JobState.BLOCKED
