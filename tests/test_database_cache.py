"""The database cache (taskforge/lib/dbcache.py), where the rate limits are counted without
Redis: add and incr are atomic across connections, as Redis's are."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.core.cache import caches
from django.db import connections

from taskforge.lib.dbcache import DatabaseCache

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cache():
    backend = DatabaseCache("taskforge_cache", {"OPTIONS": {"MAX_ENTRIES": 10_000_000}})
    yield backend
    backend.clear()


def test_add_stores_a_missing_key_once_and_incr_counts_from_it(cache):
    key = f"k-{uuid.uuid4()}"
    assert cache.add(key, 1, 60) is True
    assert cache.add(key, 5, 60) is False
    assert cache.incr(key) == 2
    assert cache.incr(key, 3) == 5
    assert cache.decr(key) == 4
    assert cache.get(key) == 4


def test_incr_of_a_missing_or_expired_key_raises_value_error_and_add_takes_the_expired_key(cache):
    with pytest.raises(ValueError):
        cache.incr("missing")
    cache.set("old", 7, -1)  # already expired
    with pytest.raises(ValueError):
        cache.incr("old")
    assert cache.add("old", 1, 60) is True
    assert cache.get("old") == 1


def test_concurrent_increments_from_many_connections_lose_none(cache):
    key = f"k-{uuid.uuid4()}"
    cache.add(key, 0, 60)
    errors: list[BaseException] = []

    def bump() -> None:
        try:
            for _ in range(25):
                cache.incr(key)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert cache.get(key) == 200


def test_concurrent_adds_of_one_key_store_it_once(cache):
    key = f"k-{uuid.uuid4()}"
    stored: list[bool] = []
    barrier = threading.Barrier(8)

    def add() -> None:
        try:
            barrier.wait(10)
            stored.append(cache.add(key, 1, 60))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=add) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(stored) == [False] * 7 + [True]


def test_without_redis_the_default_cache_is_the_database_cache():
    assert isinstance(caches["default"], DatabaseCache)
