"""taskforge/lib/dbhealth.py: Django's health check is spared on an idle connection the server
did not drop, and still runs, replacing the connection, on one it dropped."""

from __future__ import annotations

import time

import psycopg
import pytest
from django.db import connection
from django.http import HttpRequest, HttpResponse

from accounts.models import Organization
from taskforge.lib.dbhealth import IdleConnectionCheck, quiet

pytestmark = pytest.mark.django_db(transaction=True)


def through_the_middleware() -> None:
    IdleConnectionCheck(lambda request: HttpResponse())(HttpRequest())


def test_an_idle_connection_nothing_happened_to_counts_as_checked():
    connection.ensure_connection()
    connection.health_check_done = False  # as at the start of every request
    through_the_middleware()
    assert connection.health_check_done


def test_a_connection_the_server_dropped_is_checked_and_replaced():
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    params = connection.get_connection_params()
    with psycopg.connect(
        dbname=connection.settings_dict["NAME"],
        autocommit=True,
        **{k: v for k, v in params.items() if k in ("user", "password", "host", "port")},
    ) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    deadline = time.monotonic() + 30
    while quiet(connection.connection):  # the server's goodbye is on its way
        assert time.monotonic() < deadline, "the dropped connection never became readable"
        time.sleep(0.01)

    connection.health_check_done = False
    through_the_middleware()
    assert not connection.health_check_done  # left to Django's check

    assert Organization.objects.count() >= 0  # Django's check reconnected first
    assert connection.connection.info.backend_pid != pid
