"""The SDK's HTTP transport over real sockets: keep-alive, reconnects, timeouts, proxies.

The server here is a scripted ``http.server`` on a free port, so that the failures a worker
meets in production (an idle connection closed by the server, an answer that never comes, a
port nobody listens on) happen for real on the wire.
"""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from taskforge_client import RetryPolicy, TaskForge, TransportError
from taskforge_client._http import MAX_IDLE, ConnectFailed, Proxy, ReadTimeout, Transport, proxy_for

JOB = {"id": "0190a000-0000-7000-8000-000000000001", "queue": "default", "job_type": "t",
       "state": "pending", "payload": {}, "priority": 5, "attempts": 0}  # fmt: skip


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        with self.server.lock:
            self.server.connections.append(self.connection)

    def finish(self):
        super().finish()
        self.server.ended.set()  # the client closed the connection

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with self.server.lock:
            self.server.seen.append((self.command, self.path, dict(self.headers), body))
        if self.server.together is not None:
            self.server.together.wait()  # answer only once that many requests are in flight
        time.sleep(self.server.delay)
        out = json.dumps(JOB).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_DELETE = answer


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    httpd.daemon_threads = True
    httpd.lock = threading.Lock()
    httpd.seen, httpd.connections, httpd.delay = [], [], 0.0
    httpd.together = None
    httpd.ended = threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_requests_share_one_kept_alive_connection_and_send_the_key(server):
    client = TaskForge(server.url, "tf_secret")
    for _ in range(5):
        client.get_job(JOB["id"])
    assert len(server.connections) == 1
    method, path, headers, _ = server.seen[0]
    assert (method, path) == ("GET", f"/api/v1/jobs/{JOB['id']}")
    assert headers["Authorization"] == "Bearer tf_secret"
    assert headers["User-Agent"].startswith("taskforge-client/")


def test_the_base_url_may_carry_the_api_prefix_or_not(server):
    for url in (server.url, server.url + "/api/v1", server.url + "/api/v1/"):
        TaskForge(url, "k").get_job(JOB["id"])
    assert [path for _, path, _, _ in server.seen] == [f"/api/v1/jobs/{JOB['id']}"] * 3


def test_a_connection_the_server_closed_while_idle_is_replaced_before_sending(server):
    client = TaskForge(server.url, "k", retry=RetryPolicy(attempts=1))
    client.get_job(JOB["id"])
    server.connections[0].shutdown(socket.SHUT_RDWR)  # as a keep-alive timeout would
    time.sleep(0.2)

    # A POST is not repeated after an ambiguous failure: it must not meet the dead socket.
    client.request("POST", "/jobs/abc/cancel")

    assert [method for method, _, _, _ in server.seen] == ["GET", "POST"]
    assert len(server.connections) == 2


def test_an_answer_that_never_comes_is_a_read_timeout_and_a_post_is_not_repeated(server):
    server.delay = 1.0
    transport = Transport(server.url, {}, timeout=0.2)
    with pytest.raises(ReadTimeout):
        transport.request("GET", "/slow")

    client = TaskForge(server.url, "k", timeout=0.2)
    with pytest.raises(TransportError, match=r"no answer within 0\.2s"):
        client.request("POST", "/jobs/abc/logs", json={"message": "x"})
    assert [method for method, _, _, _ in server.seen] == ["GET", "POST"]


def test_a_port_nobody_listens_on_is_a_connect_failure_that_reads_retry(server):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectFailed, match="refused"):
        Transport(url, {}, timeout=1).request("GET", "/")

    sleeps = []
    client = TaskForge(url, "k", retry=RetryPolicy(attempts=3, sleep=sleeps.append))
    with pytest.raises(TransportError, match="refused") as caught:
        client.request("POST", "/jobs/x/cancel")  # never sent, so safe to repeat
    assert caught.value.status is None and len(sleeps) == 2


def test_threads_one_after_another_reuse_one_connection(server):
    client = TaskForge(server.url, "k")
    for _ in range(5):
        thread = threading.Thread(target=client.get_job, args=(JOB["id"],))
        thread.start()
        thread.join()
    assert len(server.seen) == 5 and len(server.connections) == 1


def test_at_most_max_idle_connections_are_kept(server):
    server.together = threading.Barrier(MAX_IDLE + 3, timeout=20)
    client = TaskForge(server.url, "k")
    threads = [
        threading.Thread(target=client.get_job, args=(JOB["id"],)) for _ in range(MAX_IDLE + 3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(server.connections) == MAX_IDLE + 3
    assert len(client._http._idle) == MAX_IDLE
    client.close()
    assert client._http._idle == []


def test_a_path_http_cannot_send_is_a_value_error_not_a_retried_failure(server):
    sleeps = []
    client = TaskForge(server.url, "k", retry=RetryPolicy(attempts=3, sleep=sleeps.append))
    with pytest.raises(ValueError, match=r"control characters|Invalid"):
        client.request("GET", "/jobs/a b\r\nX: y")
    assert sleeps == [] and server.seen == []
    client.get_job(JOB["id"])  # the pool is not left with a half-sent request
    assert len(server.seen) == 1


def test_requests_in_flight_at_once_each_get_a_connection(server):
    server.together = threading.Barrier(3, timeout=20)  # all three must be in flight at once
    client = TaskForge(server.url, "k")
    threads = [threading.Thread(target=client.get_job, args=(JOB["id"],)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(server.seen) == 3 and len(server.connections) == 3


def test_close_closes_the_connections_and_a_later_request_opens_a_new_one(server):
    client = TaskForge(server.url, "k")
    client.get_job(JOB["id"])
    assert not server.ended.wait(0.2)
    client.close()
    assert server.ended.wait(5)  # the server saw the end of the stream
    client.get_job(JOB["id"])
    assert len(server.connections) == 2


def test_query_parameters_are_encoded(server):
    Transport(server.url, {}, timeout=5).request(
        "GET", "/x", params={"wait": 30, "state": ["dead", "pending"], "q": "a b&c"}
    )
    assert server.seen[0][1] == "/x?wait=30&state=dead&state=pending&q=a+b%26c"


def test_an_http_proxy_from_the_environment_gets_the_absolute_url(server, monkeypatch):
    monkeypatch.setenv("http_proxy", server.url.replace("http://", "http://ada:s%40cret@"))
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    TaskForge("http://taskforge.invalid", "k").get_job(JOB["id"])
    _, path, headers, _ = server.seen[0]
    assert path == f"http://taskforge.invalid/api/v1/jobs/{JOB['id']}"
    assert headers["Proxy-Authorization"] == "Basic YWRhOnNAY3JldA=="  # ada:s@cret

    monkeypatch.setenv("no_proxy", "localhost, .invalid, intranet:8080")
    assert proxy_for("http", "taskforge.invalid") is None
    assert proxy_for("http", "invalid") is None
    assert proxy_for("http", "intranet") is None
    assert proxy_for("http", "taskforge.example") == Proxy(
        "127.0.0.1", server.server_address[1], "Basic YWRhOnNAY3JldA=="
    )
    monkeypatch.setenv("https_proxy", "socks5://proxy:1080")
    with pytest.raises(ValueError, match="takes http:// proxies"):
        proxy_for("https", "elsewhere.example")
