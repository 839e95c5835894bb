"""Clients that send their requests slowly cannot stop the web server answering others.

The shipped gunicorn config (deploy/gunicorn.conf.py: two processes of
taskforge/lib/gunicorn_worker.py) against the test database, on a free port, with nothing in
front of it.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading

import httpx
import pytest

from tests.processes import wait_until
from tests.web.support import gunicorn, server_env

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

JOB = {"queue": "default", "job_type": "t"}


def start_slow_body(port: int) -> socket.socket:
    """A submit that announces a 10 MB body and sends its first byte."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 10000000\r\n\r\n{"
    )
    return sock


def trickle(sockets: list[socket.socket], stop: threading.Event, rounds: list[int]) -> None:
    """One more byte on every connection every 0.2 s, until ``stop``."""
    while not stop.wait(0.2):
        for sock in sockets:
            with contextlib.suppress(OSError):  # closed by the server: nothing left to do
                sock.sendall(b" ")
        rounds.append(1)


def test_forty_slow_bodies_do_not_keep_a_normal_request_from_being_answered(
    tmp_path, queue, make_api_key
):
    _, key = make_api_key(scopes=["admin"])
    with gunicorn(tmp_path, server_env(), "--access-logfile", "/dev/null") as web:
        slow = [start_slow_body(web.port) for _ in range(40)]
        stop, rounds = threading.Event(), []
        sender = threading.Thread(target=trickle, args=(slow, stop, rounds), daemon=True)
        sender.start()
        try:
            # The slow requests are in: they have been sending for a while.
            wait_until(lambda: len(rounds) >= 3, timeout=30, message="the slow bodies to flow")
            # Answered within seconds (gthread answered it never: every thread was reading
            # a slow body, and the trickle outlasts any timeout).
            answer = httpx.post(
                f"{web.url}/api/v1/jobs",
                json=JOB,
                headers={"Authorization": f"Bearer {key}"},
                timeout=10,
            )
            assert answer.status_code == 201, answer.text
            assert httpx.get(f"{web.url}/ready", timeout=10).status_code == 200
        finally:
            stop.set()
            sender.join(10)
            for sock in slow:
                sock.close()


def test_a_request_not_received_in_full_within_the_read_timeout_is_answered_408_and_closed(
    tmp_path,
):
    env = server_env(TASKFORGE_WEB_READ_TIMEOUT="1")
    with gunicorn(tmp_path, env, "--access-logfile", "/dev/null") as web:
        sock = start_slow_body(web.port)
        stop, rounds = threading.Event(), []
        sender = threading.Thread(target=trickle, args=([sock], stop, rounds), daemon=True)
        sender.start()
        sock.settimeout(10)
        received = b""
        try:
            while chunk := sock.recv(4096):
                received += chunk
        finally:
            stop.set()
            sender.join(10)
            sock.close()

    assert received.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), received
    assert b'"code": "request_timeout"' in received


def test_pipelined_chunked_and_100_continue_requests_are_still_answered(tmp_path):
    with gunicorn(tmp_path, server_env(), "--access-logfile", "/dev/null") as web:
        with socket.create_connection(("127.0.0.1", web.port), timeout=10) as sock:
            # Two requests in one write, the second with a chunked body sent in two pieces.
            sock.sendall(
                b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Type: application/json\r\n\r\n2\r\n{}"
            )
            sock.sendall(b"\r\n0\r\n\r\n")
            received = b""
            while received.count(b"HTTP/1.1 ") < 2:
                received += sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"HTTP/1.1 401 Unauthorized\r\n" in received  # parsed whole: no key sent

        with socket.create_connection(("127.0.0.1", web.port), timeout=10) as sock:
            sock.sendall(
                b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
                b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n"
            )
            assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n")
            sock.sendall(b"{}")
            received = b""
            while b"HTTP/1.1 401" not in received:
                received += sock.recv(65536)


def test_a_connection_that_sends_nothing_does_not_hold_up_a_graceful_stop(tmp_path):
    with (
        gunicorn(tmp_path, server_env(), "--access-logfile", "/dev/null") as web,
        socket.create_connection(("127.0.0.1", web.port)),
    ):
        # Served meanwhile: the silent connection is only waiting in the event loop.
        assert httpx.get(f"{web.url}/health", timeout=10).status_code == 200
        web.process.send_signal(signal.SIGTERM)
        # Well before the read timeout (30 s) and the graceful timeout (40 s).
        assert web.process.wait(timeout=15) == 0
