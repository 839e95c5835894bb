"""gunicorn's threaded worker, made to read every request whole before a thread takes it, with a
thread pool of its own for the worker protocol. deploy/gunicorn.conf.py selects it; the why
and the production set-up are in docs/deploy.md.

* **Slow clients cannot pin threads.** gunicorn's gthread worker hands a connection to a
  thread as soon as its first bytes arrive, and the thread then reads the headers and the body
  with blocking reads. A client that sends its body a byte at a time holds that thread for as
  long as it likes: 40 such connections held every thread of the default two processes
  (2 x 16) and the API stopped answering. Here the event loop reads each request without
  blocking until it is complete (headers, then the body by its Content-Length or chunked
  framing), and only then hands it to a thread, which finds it in memory. A request that is not
  complete within TASKFORGE_WEB_READ_TIMEOUT seconds is answered 408 and closed. Bodies over
  TASKFORGE_MAX_REQUEST_BYTES, which Django refuses unread with 413, go to a thread at once.
* **Worker-protocol traffic has threads of its own.** gthread queues every ready request in
  one FIFO in front of one pool, so under a burst of submits the workers' fetches, results
  and heartbeats waited in line behind the submits, and long-polls took threads from the
  clients. Requests for /api/v1/workers… and a job's logs/complete/fail go to a second pool of
  TASKFORGE_WEB_WORKER_THREADS threads; the rest use gunicorn's ``threads``. The two pools
  still share the process's one core (the interpreter lock): under heavy client traffic the
  worker protocol gets processes of its own behind the proxy (deploy/nginx.conf,
  docs/deploy.md; bench/load.py measures both).

Only plain HTTP/1.x is buffered: TLS, HTTP/2 and the PROXY protocol (none of which
deploy/gunicorn.conf.py turns on) take gthread's own path. The subclass relies on gthread's
internals as of gunicorn 27 (``enqueue_req``, ``murder_pending``, ``TConn``, the parser's
unreader); tests/web/test_slow_clients.py fails if an upgrade changes them.
"""

from __future__ import annotations

import contextlib
import json
import re
import selectors
import time
from concurrent import futures
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from gunicorn.http2 import negotiation  # type: ignore[import-untyped]
from gunicorn.workers.gthread import (  # type: ignore[import-untyped]
    STOP_KEEPALIVE_LINGER,
    ThreadWorker,
)

from taskforge.lib.env import env_float, env_int

# The worker protocol (docs/api.md#the-worker-protocol): registration, heartbeats, fetches,
# results, drain; and the single-job result and log endpoints that workers call.
WORKER_PROTOCOL_PATH = re.compile(
    rb"/api/v1/(?:workers(?:[/?]|$)|jobs/[^/?]+/(?:logs|complete|fail)(?:\?|$))"
)
# Past this many bytes without the end of the headers the request is malformed or hostile;
# gunicorn's parser (limit_request_line, limit_request_fields…) then refuses it in a thread.
MAX_HEAD_BYTES = 1024 * 1024
RECV_BYTES = 256 * 1024


class Framing:
    """Where the first request in a buffer stands."""

    INCOMPLETE = "incomplete"  # read more
    COMPLETE = "complete"  # hand it to a thread
    HAND_OVER = "hand_over"  # not ours to buffer (malformed, too large): a thread decides


@dataclass
class RequestHead:
    """What the request line and headers say about the body that follows them."""

    body_start: int
    path: bytes
    content_length: int | None = None
    chunked: bool = False
    expects_continue: bool = False


def parse_head(data: bytes | bytearray) -> RequestHead | str:
    """The head of the first request in ``data``, or a Framing state when there is none yet.

    Leading empty lines are skipped, as parsers must (RFC 9112 section 2.2). Anything unusual
    (bare LF line ends, both Content-Length and Transfer-Encoding, a coding other than chunked,
    a non-numeric length) is handed over whole to gunicorn's parser, which refuses it.
    """
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    end = data.find(b"\r\n\r\n", start)
    bare = data.find(b"\n\n", start)
    if end < 0 or (0 <= bare < end):
        if bare >= 0 or len(data) - start > MAX_HEAD_BYTES:
            return Framing.HAND_OVER
        return Framing.INCOMPLETE
    lines = bytes(data[start:end]).split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        return Framing.HAND_OVER
    target, version = parts[1], parts[2]
    if target.startswith((b"http://", b"https://")):
        slash = target.find(b"/", target.find(b"//") + 2)
        target = target[slash:] if slash >= 0 else b"/"
    head = RequestHead(body_start=end + 4, path=target)
    lengths: set[bytes] = set()
    codings: list[bytes] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            return Framing.HAND_OVER
        name, value = name.strip().lower(), value.strip()
        if name == b"content-length":
            lengths.update(v.strip() for v in value.split(b","))
        elif name == b"transfer-encoding":
            codings.extend(v.strip().lower() for v in value.split(b","))
        elif name == b"expect" and value.lower() == b"100-continue":
            head.expects_continue = version == b"HTTP/1.1"
    if codings:
        if lengths or codings != [b"chunked"]:
            return Framing.HAND_OVER
        head.chunked = True
    elif lengths:
        if len(lengths) != 1 or not next(iter(lengths)).isdigit():
            return Framing.HAND_OVER
        head.content_length = int(next(iter(lengths)))
    return head


def chunked_end(data: bytes | bytearray, pos: int, limit: int) -> int | str:
    """The offset just past a chunked body starting at ``pos``, or a Framing state.

    HAND_OVER when a chunk size is malformed or the chunks add up to more than ``limit``.
    """
    total = 0
    while True:
        line_end = data.find(b"\r\n", pos)
        if line_end < 0:
            return Framing.INCOMPLETE if len(data) - pos <= 1024 else Framing.HAND_OVER
        size_text = bytes(data[pos:line_end]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return Framing.HAND_OVER
        pos = line_end + 2
        if size == 0:
            # Trailer fields, if any, end with an empty line; none: the CRLF right here.
            if data.startswith(b"\r\n", pos):
                return pos + 2
            trailers_end = data.find(b"\r\n\r\n", pos)
            if trailers_end < 0:
                too_long = len(data) - pos > MAX_HEAD_BYTES
                return Framing.HAND_OVER if too_long else Framing.INCOMPLETE
            return trailers_end + 4
        total += size
        if total > limit:
            return Framing.HAND_OVER
        pos += size + 2
        if pos > len(data):
            return Framing.INCOMPLETE


def is_worker_protocol(path: bytes) -> bool:
    return WORKER_PROTOCOL_PATH.match(path) is not None


@dataclass(eq=False)
class _Reading:
    """A connection whose request the event loop is still reading."""

    conn: Any
    deadline: float
    data: bytearray = field(default_factory=bytearray)
    head: RequestHead | None = None
    continue_sent: bool = False
    registered: bool = False


def _timeout_response(seconds: float) -> bytes:
    body = json.dumps(
        {
            "error": {
                "code": "request_timeout",
                "message": f"The request was not received in full within {seconds:g} s.",
                "details": {},
            }
        }
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class BufferingThreadWorker(ThreadWorker):
    """gthread that reads each request whole in its event loop, with a worker-protocol pool."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout = env_float("TASKFORGE_WEB_READ_TIMEOUT", 30.0, minimum=0.1)
        self.worker_threads = env_int("TASKFORGE_WEB_WORKER_THREADS", 16, minimum=1)
        self.max_body = env_int("TASKFORGE_MAX_REQUEST_BYTES", 32 * 1024 * 1024, minimum=1024)
        self.worker_pool: futures.ThreadPoolExecutor | None = None
        self.readings: dict[_Reading, None] = {}
        self.stopping_since: float | None = None
        self.timeout_response = _timeout_response(self.read_timeout)

    def init_process(self) -> None:
        self.worker_pool = futures.ThreadPoolExecutor(
            max_workers=self.worker_threads, thread_name_prefix="worker-protocol"
        )
        super().init_process()  # runs the event loop, and returns when the worker exits

    def run(self) -> None:
        try:
            super().run()
        finally:
            if self.worker_pool is not None:
                self.worker_pool.shutdown(wait=False)

    def handle_quit(self, sig: int, frame: Any) -> None:
        if self.worker_pool is not None:
            self.worker_pool.shutdown(wait=False)
        super().handle_quit(sig, frame)

    # --- reading in the event loop ------------------------------------------------------------

    def enqueue_req(self, conn: Any) -> None:
        """Every way into the thread pool (new, kept-alive, pipelined) passes here."""
        if not self._can_buffer(conn):
            super().enqueue_req(conn)
            return
        reading = _Reading(conn=conn, deadline=time.monotonic() + self.read_timeout)
        if conn.parser is not None:
            # Read ahead from the previous request on this connection (pipelining).
            reading.data += conn.parser.unreader.take_buffered()
        self.readings[reading] = None
        conn.sock.setblocking(False)
        self._read(reading)

    def _can_buffer(self, conn: Any) -> bool:
        return bool(
            not self.cfg.is_ssl
            and not conn.is_http2
            and self.cfg.proxy_protocol == "off"
            and not negotiation.prior_knowledge_allowed(self.cfg, conn.client)
        )

    def _on_readable(self, reading: _Reading, _fileobj: Any) -> None:
        self._read(reading)

    def _read(self, reading: _Reading) -> None:
        """Read what the socket holds; hand the request over once it is complete."""
        sock = reading.conn.sock
        state = self._framing(reading)
        while state == Framing.INCOMPLETE:
            try:
                chunk = sock.recv(RECV_BYTES)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self._close(reading)  # the client went away before finishing its request
                return
            reading.data += chunk
            state = self._framing(reading)
        if state == Framing.INCOMPLETE:
            self._continue(reading)
            if not reading.registered:
                callback = partial(self._on_readable, reading)
                self.poller.register(sock, selectors.EVENT_READ, callback)
                reading.registered = True
            return
        self._hand_over(reading)

    def _framing(self, reading: _Reading) -> str:
        if reading.head is None:
            if not reading.data:
                return Framing.INCOMPLETE
            head = parse_head(reading.data)
            if isinstance(head, str):
                return head
            reading.head = head
        head = reading.head
        if head.chunked:
            end = chunked_end(reading.data, head.body_start, self.max_body)
            return end if isinstance(end, str) else Framing.COMPLETE
        if head.content_length is None:
            return Framing.COMPLETE
        if head.content_length > self.max_body:
            return Framing.HAND_OVER  # refused unread by Django (413)
        complete = len(reading.data) >= head.body_start + head.content_length
        return Framing.COMPLETE if complete else Framing.INCOMPLETE

    def _continue(self, reading: _Reading) -> None:
        """Answer ``Expect: 100-continue`` here: the client sends no body before it.

        gunicorn sends its own 100 again when the thread starts the request; clients must
        accept any number of 1xx responses before the final one (RFC 9110 section 15.2).
        """
        head = reading.head
        if head is None or not head.expects_continue or reading.continue_sent:
            return
        reading.continue_sent = True
        with contextlib.suppress(OSError):
            reading.conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _forget(self, reading: _Reading) -> None:
        self.readings.pop(reading, None)
        if reading.registered:
            reading.registered = False
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(reading.conn.sock)

    def _close(self, reading: _Reading) -> None:
        self._forget(reading)
        self.nr_conns -= 1
        reading.conn.close()

    def _hand_over(self, reading: _Reading) -> None:
        self._forget(reading)
        conn = reading.conn
        conn.sock.setblocking(True)
        conn.init()  # the HTTP/1 parser; a no-op on a kept-alive connection
        conn.parser.unreader.unread(bytes(reading.data))
        conn.data_ready = True  # gthread must not wait for more before parsing
        head = reading.head
        pool = self.tpool
        if head is not None and self.worker_pool is not None and is_worker_protocol(head.path):
            pool = self.worker_pool
        future = pool.submit(self.handle, conn)
        future.add_done_callback(
            lambda done: self.method_queue.defer(self.finish_request, conn, done)
        )

    def murder_pending(self) -> None:
        """gthread's expiry of idle connections, plus requests past the read timeout.

        Called from the event loop about once a second, and while the worker stops. Then a
        connection that has sent nothing yet is closed after STOP_KEEPALIVE_LINGER, as gthread
        closes its idle kept-alive ones, rather than holding the stop for the read timeout.
        """
        super().murder_pending()
        now = time.monotonic()
        if not self.alive and self.stopping_since is None:
            self.stopping_since = now
        for reading in list(self.readings):
            deadline = reading.deadline
            if self.stopping_since is not None and not reading.data:
                deadline = min(deadline, self.stopping_since + STOP_KEEPALIVE_LINGER)
            if deadline > now:
                continue
            if reading.data:
                with contextlib.suppress(OSError):  # a courtesy: the client may be gone
                    reading.conn.sock.send(self.timeout_response)
                self.log.debug(
                    "closing %s: no complete request in %gs", reading.conn.client, self.read_timeout
                )
            self._close(reading)
