"""Run the SQL kept in an app's ``sql/`` folder, on Django's connection.

Each app that owns raw SQL creates one ``SqlFiles("app")`` in the modules allowed to execute
it (jobs/queries.py; workers/claim_sql.py and workers/protocol_sql.py). Statements run on a
server-side binding cursor over Django's connection, so inside Django's transaction: Django's
own cursors bind client-side, rendering every array element into the SQL text, while binding
server-side sends arrays as parameters and lets PostgreSQL keep each statement prepared for
the life of the connection (TASKFORGE_PREPARED_STATEMENTS). Errors come out as Django's
(django.db.OperationalError, IntegrityError, …), exactly as from the ORM, and mark a broken
connection for Django to replace.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import psycopg
from django.conf import settings
from django.db import connection


class SqlFiles:
    def __init__(self, package: str) -> None:
        self.package = package

    @cache  # noqa: B019 - one instance per app, kept for the life of the process
    def text(self, name: str) -> str:
        return resources.files(self.package).joinpath("sql", f"{name}.sql").read_text()

    def cursor(self) -> psycopg.Cursor[Any]:
        connection.ensure_connection()
        return psycopg.Cursor(connection.connection)

    def rows(self, name: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Execute ``name``.sql; return its rows (none for a statement without results)."""
        with connection.wrap_database_errors, self.cursor() as cursor:
            cursor.execute(self.text(name), params, prepare=_prepare())
            return cursor.fetchall() if cursor.description else []

    def rowcount(self, name: str, params: dict[str, Any]) -> int:
        """Execute ``name``.sql; return how many rows it changed."""
        with connection.wrap_database_errors, self.cursor() as cursor:
            cursor.execute(self.text(name), params, prepare=_prepare())
            return cursor.rowcount


def _prepare() -> bool:
    return bool(settings.TASKFORGE_PREPARED_STATEMENTS)
