"""Helpers of the web-server tests: a real gunicorn with deploy/gunicorn.conf.py on a free port,
and a TCP proxy in front of PostgreSQL that a test cuts (the database becomes unreachable:
open connections drop, new ones are refused) and restores.

Use from a ``@pytest.mark.django_db(transaction=True)`` test: the server runs against the test
database (tests/processes.py), so the rows the test commits are what it serves.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
from django.db import connection

from tests.processes import REPO_ROOT, child_env, wait_until

GUNICORN = Path(sys.executable).parent / "gunicorn"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(**extra: str) -> dict[str, str]:
    """Production settings (DEBUG off) against the test database, without Redis."""
    env = child_env(
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SECURE_SSL_REDIRECT="false",
        LOG_LEVEL="INFO",
        **extra,
    )
    env.pop("REDIS_URL", None)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()


@contextlib.contextmanager
def gunicorn(log_dir: Path, env: dict[str, str], *args: str) -> Iterator[Server]:
    """``gunicorn -c deploy/gunicorn.conf.py taskforge.wsgi`` on a free port, ``args`` added.

    Yields once /health answers; stops it (SIGTERM, then SIGKILL) and prints its log after.
    """
    port = free_port()
    log_path = log_dir / f"gunicorn-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(GUNICORN), "-c", "deploy/gunicorn.conf.py", "taskforge.wsgi",
             "--bind", f"127.0.0.1:{port}", *args],
            cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = Server(process=process, port=port, log_path=log_path)
    try:
        wait_until(
            lambda: process.poll() is not None or _healthy(server.url),
            timeout=60,
            message="gunicorn to answer /health",
        )
        assert process.poll() is None, "\n".join(server.log_lines())
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=45)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        print(f"--- gunicorn on port {port} (exit {process.returncode}) ---")
        print("\n".join(server.log_lines()))


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class PostgresProxy:
    """Forwards 127.0.0.1:<port> to the test database's server until ``cut()``.

    ``cut()`` closes the listening socket (new connections are refused, as by a stopped
    server) and every open connection (as a server that went away); ``restore()`` listens on
    the same port again.
    """

    def __init__(self) -> None:
        params = connection.get_connection_params()
        host, port = str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)
        self.target: tuple[str, int] | str = (
            f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
        )
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    def database_url(self) -> str:
        settings = connection.settings_dict
        user = quote(str(settings.get("USER") or "postgres"), safe="")
        password = settings.get("PASSWORD") or ""
        userinfo = f"{user}:{quote(password, safe='')}" if password else user
        return f"postgresql://{userinfo}@127.0.0.1:{self.port}/{quote(settings['NAME'], safe='')}"

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, []
        for sock in [listener, *sockets]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def __enter__(self) -> PostgresProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            family = socket.AF_UNIX if isinstance(self.target, str) else socket.AF_INET
            upstream = socket.socket(family, socket.SOCK_STREAM)
            try:
                upstream.connect(self.target)
            except OSError:
                client.close()
                upstream.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
