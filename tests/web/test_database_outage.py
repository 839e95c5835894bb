"""While PostgreSQL is unreachable the web server answers 503 `unavailable` with Retry-After and
logs one line per request, and the SDK rides out a short outage by retrying.

A real gunicorn (deploy/gunicorn.conf.py) reaches the test database through a TCP proxy that
the test cuts, as a stopped or partitioned database server would be.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from taskforge_client import RetryPolicy, TaskForge

from jobs.models import Job
from tests.processes import wait_until
from tests.web.support import PostgresProxy, gunicorn, server_env

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def outage(tmp_path, queue, make_api_key):
    _, key = make_api_key(scopes=["admin"])
    with (
        PostgresProxy() as proxy,
        gunicorn(
            tmp_path,
            server_env(DATABASE_URL=proxy.database_url()),
            "--workers", "1", "--access-logfile", "/dev/null",
        ) as web,
    ):  # fmt: skip
        yield web, proxy, key


def test_while_the_database_is_down_requests_get_503_with_retry_after_and_one_log_line(outage):
    web, proxy, key = outage
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=web.url, timeout=30) as http:
        assert http.get("/api/v1/jobs", headers=auth).status_code == 200  # connected
        proxy.cut()
        logged_before = len(web.log_lines())
        answers = {
            "/api/v1/jobs": http.get("/api/v1/jobs", headers=auth),
            "/api/v1/jobs POST": http.post(
                "/api/v1/jobs", headers=auth, json={"queue": "default", "job_type": "t"}
            ),
            # A Django view outside DRF: the session cookie makes the admin read the database.
            "/admin/": http.get("/admin/", headers={"Cookie": f"sessionid={'x' * 32}"}),
            "/ready": http.get("/ready"),
        }
        liveness = http.get("/health")
        logged = web.log_lines()[logged_before:]

        proxy.restore()
        wait_until(
            lambda: http.get("/api/v1/jobs", headers=auth).status_code == 200,
            timeout=30,
            message="the server to recover",
        )

    assert liveness.status_code == 200
    for what, answer in answers.items():
        assert answer.status_code == 503, (what, answer.text)
        assert int(answer.headers["Retry-After"]) > 0, what
    for what in ("/api/v1/jobs", "/api/v1/jobs POST", "/admin/"):
        error = answers[what].json()["error"]
        assert error["code"] == "unavailable", what
        assert error["details"]["retry_after_seconds"] == int(answers[what].headers["Retry-After"])
    ready = answers["/ready"].json()
    assert ready["status"] == "unavailable" and ready["database"].startswith("unavailable:")
    # One line per failed request, naming it; no traceback, and no second line from Django.
    # (Background threads may log the outage too, once a second or so: not per request.)
    for request in ("GET /api/v1/jobs", "POST /api/v1/jobs", "GET /admin/", "GET /ready"):
        assert sum(request in line for line in logged) == 1, (request, logged)
    assert not [line for line in logged if "Traceback" in line or "django.request" in line]


def test_the_sdk_retries_submits_and_reads_through_a_short_outage_and_creates_no_duplicate(
    outage,
):
    web, proxy, key = outage
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    client = TaskForge(web.url, key, retry=RetryPolicy(attempts=5, sleep=sleep))
    earlier = client.submit("default", "t", {"n": 1})
    proxy.cut()
    results: dict[str, object] = {}

    def submit() -> None:
        results["submitted"] = client.submit("default", "t", {"n": 2})

    def read() -> None:
        results["read"] = client.get_job(earlier.id)

    threads = [threading.Thread(target=submit), threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    # Both got a 503 and wait before their next try: the database comes back meanwhile.
    wait_until(lambda: len(waits) >= 2, timeout=30, message="both calls to back off")
    proxy.restore()
    for thread in threads:
        thread.join(timeout=60)
    client.close()

    assert results["read"].id == earlier.id
    assert results["submitted"].state == "pending"
    # The server's Retry-After (5 s) was honoured, not the first backoff step (0.25-0.5 s).
    assert min(waits) >= 5
    assert Job.objects.all_tenants().filter(payload={"n": 2}).count() == 1
