"""Start ``manage.py`` commands as real subprocesses against the pytest-django test database.

Use from a ``@pytest.mark.django_db(transaction=True)`` test, so the rows the test writes are
committed and the child sees them. The child gets ``DATABASE_URL`` pointing at the test
database, whether the suite runs on a database server (``DATABASE_URL`` set) or on the
embedded server (no ``DATABASE_URL``: a Unix socket directory and port).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import quote, urlencode

from django.db import connection

REPO_ROOT = Path(__file__).resolve().parent.parent

# Children must not mark the test's workers offline however slow the machine is.
CHILD_SETTINGS = {"TASKFORGE_WORKER_TIMEOUT_SECONDS": "3600"}


def child_database_url() -> str:
    """A postgresql:// URL naming the database this test process is connected to."""
    settings_dict = connection.settings_dict
    name = quote(settings_dict["NAME"], safe="")
    user = quote(str(settings_dict.get("USER") or "postgres"), safe="")
    password = settings_dict.get("PASSWORD") or ""
    userinfo = f"{user}:{quote(password, safe='')}" if password else user
    host = str(settings_dict.get("HOST") or "")
    if host and not host.startswith("/"):
        port = settings_dict.get("PORT")
        netloc = f"{host}:{port}" if port else host
        return f"postgresql://{userinfo}@{netloc}/{name}"
    # A socket directory: the embedded server, or a HOST set to one. libpq takes it as a query
    # parameter, which dj-database-url passes through to OPTIONS.
    params = connection.get_connection_params()
    query = {"host": host or str(params["host"])}
    port = settings_dict.get("PORT") or params.get("port")
    if port:
        query["port"] = str(port)
    return f"postgresql://{userinfo}@/{name}?{urlencode(query)}"


def child_env(**extra: str) -> dict[str, str]:
    """os.environ plus DATABASE_URL for the test database, the child settings and ``extra``."""
    return {
        **os.environ,
        "DATABASE_URL": child_database_url(),
        "PYTHONUNBUFFERED": "1",
        **CHILD_SETTINGS,
        **extra,
    }


@dataclass
class Child:
    """A running ``manage.py`` subprocess whose stdout and stderr go to ``log_path``."""

    args: tuple[str, ...]
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def send(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """The exit code; raises subprocess.TimeoutExpired past ``timeout`` seconds."""
        return self.process.wait(timeout=timeout)

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; a no-op once it has exited."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait(timeout=grace)


def start_manage(
    args: tuple[str, ...] | list[str], *, log_dir: Path, env: dict[str, str] | None = None
) -> Child:
    """Start ``python manage.py *args`` in the repo root with output to a log in ``log_dir``."""
    args = tuple(args)
    log_path = log_dir / f"{args[0]}-{len(list(log_dir.iterdir()))}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=REPO_ROOT,
            env=env if env is not None else child_env(),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return Child(args=args, process=process, log_path=log_path)


@contextlib.contextmanager
def running(
    *commands: tuple[str, ...] | list[str],
    log_dir: Path,
    env: dict[str, str] | None = None,
    out: IO[str] | None = None,
) -> Iterator[list[Child]]:
    """Start the commands; on the way out stop any still running and print every log.

    The logs are printed unconditionally: pytest shows captured output only for failures.
    """
    children: list[Child] = []
    try:
        for args in commands:
            children.append(start_manage(args, log_dir=log_dir, env=env))
        yield children
    finally:
        for child in children:
            child.stop()
        for child in children:
            print(
                f"--- manage.py {' '.join(child.args)} (pid {child.pid}, "
                f"exit {child.process.returncode}) ---",
                file=out or sys.stdout,
            )
            print(child.log(), file=out or sys.stdout)


def wait_until(
    predicate: Callable[[], object],
    *,
    timeout: float = 60.0,
    interval: float = 0.05,
    message: str = "condition",
    children: list[Child] | None = None,
) -> None:
    """Poll ``predicate`` every ``interval`` seconds until it is true; fail after ``timeout``.

    Fails early if one of ``children`` exits, since the condition may then never come true.
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        for child in children or ():
            code = child.process.poll()
            if code is not None:
                raise AssertionError(
                    f"waiting for {message}: manage.py {' '.join(child.args)} exited with {code}"
                )
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {message}")
        time.sleep(interval)
