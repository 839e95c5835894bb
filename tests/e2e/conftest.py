"""Fixtures of the end-to-end tests: an HTTP client with an admin key, and fast retries."""

from __future__ import annotations

import httpx
import pytest

from queues.models import Queue


@pytest.fixture
def api(live_server, make_api_key):
    _, key = make_api_key(scopes=["admin"])
    with httpx.Client(
        base_url=live_server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        client.key = key  # type: ignore[attr-defined]
        yield client


@pytest.fixture
def quick_retries(queue):
    Queue.objects.all_tenants().filter(pk=queue.pk).update(
        backoff_base_seconds=0.05,
        backoff_max_seconds=0.1,
        backoff_multiplier=1,
        backoff_jitter="none",
    )
