"""Django's connection health check (CONN_HEALTH_CHECKS) without its round trip when nothing
happened to the connection.

With CONN_HEALTH_CHECKS on, Django runs ``SELECT 1`` before the first query of every request
that reuses a connection, so that a connection the server dropped while it sat idle (a
restart, pg_terminate_backend, an idle timeout) is replaced instead of failing the request.
That is one database round trip per request, as many as the whole single-job submit needs.

A server that drops a connection says so on it: a FATAL error message, then the end of the
stream. So an idle connection with nothing to read was not dropped by the server, and this
middleware counts it as checked for the request (``health_check_done``, the flag Django's own
check sets); a connection with anything to read gets Django's ``SELECT 1`` as before, at its
first query. What neither check can see, a peer that vanished without closing (a network
partition), fails the request's first statement either way, with the API's 503 ``unavailable``.

First in MIDDLEWARE, after Django's request_started handler has reset the flag.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Any

from django.db import connections
from django.http import HttpRequest, HttpResponse


class IdleConnectionCheck:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # health_check_enabled / health_check_done: Django's own flags (4.1+), not in its stubs.
        conn: Any
        for conn in connections.all(initialized_only=True):
            if (
                conn.connection is not None
                and conn.health_check_enabled
                and not conn.health_check_done
                and not conn.in_atomic_block
                and quiet(conn.connection)
            ):
                conn.health_check_done = True
        return self.get_response(request)


def quiet(raw_connection: Any) -> bool:
    """Whether the server has sent nothing on this idle psycopg connection (False when that
    cannot be told: Django's check decides)."""
    try:
        fileno = raw_connection.pgconn.socket
    except Exception:  # not psycopg, or already closed or broken
        return False
    poller = select.poll()
    poller.register(fileno, select.POLLIN | select.POLLPRI)
    return not poller.poll(0)
