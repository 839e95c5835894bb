"""Without Redis, the plan's request rate limit is counted once for all web processes (in the
database cache, taskforge/lib/dbcache.py), not once per process."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from billing.models import Subscription
from tests.processes import wait_until
from tests.web.support import gunicorn, server_env

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_limit_of_20_a_minute_lets_exactly_20_through_across_two_processes(
    tmp_path, org, queue, make_api_key
):
    Subscription.objects.for_org(org).update(limits={"requests_per_minute": 20})
    _, key = make_api_key(scopes=["jobs:read"])
    env = server_env(WEB_CONCURRENCY="2")
    access = ("--access-logfile", "-", "--access-logformat", "access %(p)s %(s)s")
    with gunicorn(tmp_path, env, *access) as web:
        # The counters are per clock minute: start with 15 s of it left at least.
        wait_until(lambda: time.time() % 60 < 45, timeout=20, message="a fresh minute")
        window = int(time.time()) // 60

        def get(_: int) -> int:
            # A connection per request, ten at a time, so both processes take some.
            headers = {"Authorization": f"Bearer {key}"}
            return httpx.get(f"{web.url}/api/v1/jobs", headers=headers, timeout=30).status_code

        with ThreadPoolExecutor(max_workers=10) as pool:
            statuses = list(pool.map(get, range(40)))
        assert int(time.time()) // 60 == window, "the minute ended during the burst"
        served_by = {line.split()[1] for line in web.log_lines() if line.startswith("access ")}

    assert len(served_by) == 2, served_by
    assert sorted(statuses) == [200] * 20 + [429] * 20
