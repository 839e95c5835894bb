"""Django's database cache with an atomic ``add`` and ``incr``, for counters that every process
shares: the API rate limits (billing/throttling.py) and the sign-in limits
(accounts/throttling.py) when REDIS_URL is unset (CACHES in taskforge/settings.py).

Django's DatabaseCache is not made for counters. Its ``incr`` is a get and a set, so two
processes counting at once lose one of the counts (a 20/min limit let 40 through); its
``add`` reads and then inserts, losing races with an IntegrityError that PostgreSQL logs; and
both count the whole table on every write to decide on culling. Here ``add`` is one
``INSERT … ON CONFLICT`` and ``incr`` reads the value under a row lock and writes it back in one
transaction (taskforge/lib/sql/cache_*.sql). Expired rows are deleted at most once a minute
per process, when an ``add`` starts a new entry; reads, ``set`` and the rest are Django's.

The table is ``taskforge_cache``, created by a migration (taskforge/migrations/0001_cache_table.py)
rather than by ``createcachetable``, so LOCATION must name it.
"""

from __future__ import annotations

import base64
import pickle
import time
from datetime import UTC, datetime
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.db import DatabaseCache as DjangoDatabaseCache
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

from taskforge.lib.sqlfiles import SqlFiles

TABLE = "taskforge_cache"
PURGE_EVERY_SECONDS = 60.0

_SQL = SqlFiles("taskforge.lib")


class DatabaseCache(DjangoDatabaseCache):
    def __init__(self, table: str, params: dict[str, Any]) -> None:
        if table != TABLE:
            raise ImproperlyConfigured(f"{__name__}.DatabaseCache needs LOCATION {TABLE!r}")
        super().__init__(table, params)
        self._purged_at = time.monotonic()

    def add(
        self,
        key: Any,
        value: Any,
        timeout: float | None = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> bool:
        key = self.make_and_validate_key(key, version=version)
        now = _now()
        stored = _SQL.rows(
            "cache_add",
            {
                "key": key,
                "value": self._encode(value),
                "expires": self._expires(timeout),
                "now": now,
            },
        )
        if stored and time.monotonic() - self._purged_at >= PURGE_EVERY_SECONDS:
            self._purged_at = time.monotonic()
            _SQL.rowcount("cache_purge_expired", {"now": now})
        return bool(stored)

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        key = self.make_and_validate_key(key, version=version)
        with transaction.atomic():
            rows = _SQL.rows("cache_lock_value", {"key": key, "now": _now()})
            if not rows:
                raise ValueError(f"Key '{key}' not found")
            raw = base64.b64decode(str(rows[0][0]).encode())
            value = pickle.loads(raw) + delta  # noqa: S301 - a value this cache pickled itself
            _SQL.rowcount("cache_store_value", {"key": key, "value": self._encode(value)})
        return value

    def _encode(self, value: Any) -> str:
        # As Django's DatabaseCache stores values, so that its get() reads ours.
        return base64.b64encode(pickle.dumps(value, self.pickle_protocol)).decode("latin1")

    def _expires(self, timeout: float | None) -> datetime:
        # As Django's DatabaseCache computes it: whole seconds, "never" as datetime.max.
        backend_timeout = self.get_backend_timeout(timeout)
        if backend_timeout is None:
            return datetime.max.replace(microsecond=0, tzinfo=UTC)
        return datetime.fromtimestamp(backend_timeout, tz=UTC).replace(microsecond=0)


def _now() -> datetime:
    return timezone.now().replace(microsecond=0)
