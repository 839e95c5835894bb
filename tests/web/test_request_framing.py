"""How taskforge/lib/gunicorn_worker.py tells that a request has arrived whole, and which
thread pool it goes to (pure functions, no server)."""

from taskforge.lib.gunicorn_worker import (
    Framing,
    chunked_end,
    is_worker_protocol,
    parse_head,
)

HEAD = b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\n"


def test_a_head_is_incomplete_until_its_empty_line():
    assert parse_head(HEAD) == Framing.INCOMPLETE
    head = parse_head(b"\r\n" + HEAD + b"Content-Length: 2\r\n\r\n{}")
    assert head.path == b"/api/v1/jobs" and head.content_length == 2
    assert head.body_start == len(b"\r\n" + HEAD) + len(b"Content-Length: 2\r\n\r\n")


def test_framing_the_body_cannot_be_trusted_to_is_handed_to_gunicorns_parser():
    for headers in (
        b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",  # both
        b"Content-Length: 2\r\nContent-Length: 3\r\n",  # two lengths
        b"Content-Length: x\r\n",
        b"Transfer-Encoding: gzip\r\n",
        b"No colon here\r\n",
    ):
        assert parse_head(HEAD + headers + b"\r\n") == Framing.HAND_OVER, headers
    assert parse_head(b"GET / HTTP/1.1\nHost: x\n\n") == Framing.HAND_OVER  # bare LF


def test_expect_100_continue_is_noted_for_http_1_1_only():
    assert parse_head(HEAD + b"Expect: 100-continue\r\n\r\n").expects_continue
    old = b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n"
    assert not parse_head(old).expects_continue


def test_a_chunked_body_ends_with_its_last_chunk_and_trailers():
    assert chunked_end(b"3\r\nabc\r\n", 0, 100) == Framing.INCOMPLETE
    assert chunked_end(b"3\r\nabc\r\n0\r\n\r\n", 0, 100) == len(b"3\r\nabc\r\n0\r\n\r\n")
    with_trailer = b"3;x=y\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"
    assert chunked_end(with_trailer, 0, 100) == len(with_trailer)
    assert chunked_end(b"zz\r\n", 0, 100) == Framing.HAND_OVER
    assert chunked_end(b"ff\r\n", 0, 100) == Framing.HAND_OVER  # over the limit


def test_the_worker_protocol_is_told_apart_from_client_requests():
    assert is_worker_protocol(b"/api/v1/workers")
    assert is_worker_protocol(b"/api/v1/workers/0190/heartbeat")
    assert is_worker_protocol(b"/api/v1/jobs/0190/complete?x=1")
    assert not is_worker_protocol(b"/api/v1/jobs")
    assert not is_worker_protocol(b"/api/v1/jobs/0190")
    assert not is_worker_protocol(b"/api/v1/workersx")
