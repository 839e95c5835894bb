"""POST /api/v1/jobs/batch refuses a batch over TASKFORGE_MAX_BATCH_JOBS by its count, before
any item is validated: a 100,000-item batch once cost 9 s of server CPU to refuse."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.api.conftest import API, check_envelope

pytestmark = pytest.mark.django_db


def test_a_100000_item_batch_is_refused_by_count_before_any_item_is_validated(
    api: APIClient, snapshot: Callable[[], dict[str, Any]], settings: Any
) -> None:
    limit = settings.TASKFORGE_MAX_BATCH_JOBS
    # Every item lacks job_type: had the items been validated first, the error would name
    # jobs[0].job_type. Naming the count proves the count was checked before any item.
    body = json.dumps({"jobs": [{"queue": "default"}] * 100_000})
    before = snapshot()
    started = time.perf_counter()
    response = api.generic("POST", f"{API}/jobs/batch", body, content_type="application/json")
    print(f"\n100,000-item batch refused in {time.perf_counter() - started:.3f}s")
    error = check_envelope(response, 400, "validation_error")
    assert error["message"] == f"jobs: at most {limit} jobs per batch, got 100000"
    assert error["details"] == {"field": "jobs", "limit": limit}
    assert snapshot() == before


def test_the_count_limit_is_read_at_call_time(api: APIClient, settings: Any) -> None:
    settings.TASKFORGE_MAX_BATCH_JOBS = 2
    body = {"jobs": [{"queue": "default"}] * 3}
    error = check_envelope(
        api.post(f"{API}/jobs/batch", body, format="json"), 400, "validation_error"
    )
    assert error["details"] == {"field": "jobs", "limit": 2}


def test_a_bulk_id_list_over_its_limit_is_refused_by_count_before_any_id_is_parsed(
    api: APIClient, snapshot: Callable[[], dict[str, Any]]
) -> None:
    # Not one of these is a UUID: had the items been parsed first, the error would say so.
    body = {"action": "cancel", "ids": ["not-a-uuid"] * 10_001}
    before = snapshot()
    error = check_envelope(
        api.post(f"{API}/jobs/bulk", body, format="json"), 400, "validation_error"
    )
    assert "no more than 10000 elements" in error["message"], error
    assert snapshot() == before
