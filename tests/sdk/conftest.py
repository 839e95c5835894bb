"""Fixtures for the SDK tests: the real server (pytest-django's live_server), an API key, a
dispatcher ticking in a thread, and workers run in threads or as ``taskforge-worker``
subprocesses.

A long-poll the worker abandoned at shutdown keeps its server thread (and that thread's
database connection) until its ``wait`` runs out, so workers here poll with a short wait and
``sdk_server`` waits for the live server's request threads before the database is flushed.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.db import connections
from taskforge_client import TaskForge, Worker

from tests.processes import CHILD_SETTINGS
from workers.dispatcher import Dispatcher

SDK_TESTS = Path(__file__).resolve().parent
POLL_WAIT = 1  # seconds; see the module docstring


@dataclass
class Server:
    url: str
    key: str

    def client(self, **options) -> TaskForge:
        return TaskForge(self.url, self.key, **options)

    def tasks_setting(self, **options: Any) -> dict[str, Any]:
        """A TASKS setting: TaskForgeBackend on this server as the default Tasks backend, with
        ``options`` beside its url and key."""
        return {
            "default": {
                "BACKEND": "taskforge_client.django.TaskForgeBackend",
                "OPTIONS": {"url": self.url, "api_key": self.key, **options},
            }
        }

    def worker(self, **options) -> Worker:
        options.setdefault("poll_wait", POLL_WAIT)
        options.setdefault("name", "sdk-test-worker")
        return Worker(self.url, self.key, **options)


def wait_for(predicate, *, timeout=30.0, interval=0.02, message="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {message}")
        time.sleep(interval)


def _request_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "process_request_thread" in t.name]


@pytest.fixture
def sdk_server(live_server, transactional_db, queue, make_api_key) -> Iterator[Server]:
    _, raw = make_api_key(scopes=["admin"])
    yield Server(url=live_server.url, key=raw)
    # Before the flush: let abandoned long-polls (at most POLL_WAIT + a recheck) finish.
    wait_for(lambda: not _request_threads(), timeout=30, message="live server requests")


@pytest.fixture
def api(sdk_server) -> Iterator[TaskForge]:
    with sdk_server.client() as client:
        yield client


@pytest.fixture
def dispatcher(sdk_server) -> Iterator[None]:
    """The engine, ticking in a thread (signal handlers need the main thread, so no run())."""
    stop = threading.Event()
    failures: list[BaseException] = []

    def loop() -> None:
        engine = Dispatcher(batch_size=500)
        try:
            while not stop.is_set():
                engine.tick()
                stop.wait(0.02)
        except BaseException as exc:
            failures.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=loop, name="sdk-dispatcher", daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(10)
    assert not thread.is_alive() and not failures, failures


@pytest.fixture
def run_worker(sdk_server, dispatcher):
    """``run_worker(worker)``: run it in a thread until the test ends (then drain it)."""
    started: list[tuple[Worker, threading.Thread, list[BaseException]]] = []

    def start(worker: Worker) -> Worker:
        errors: list[BaseException] = []

        def target() -> None:
            try:
                worker.run()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=target, name=f"sdk-worker-{worker.name}", daemon=True)
        thread.start()
        started.append((worker, thread, errors))
        wait_for(lambda: worker.worker_id is not None or not thread.is_alive(), message="register")
        return worker

    yield start
    for worker, thread, errors in started:
        worker.stop()
        thread.join(30)
        assert not thread.is_alive(), f"worker {worker.name} did not drain"
        assert not errors, errors


def worker_command() -> list[str]:
    """The taskforge-worker console script of this virtualenv (``-m`` if not installed)."""
    script = Path(sys.executable).parent / "taskforge-worker"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "taskforge_client"]


def child_env(server: Server, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    env.update(CHILD_SETTINGS)
    env.update(
        TASKFORGE_URL=server.url, TASKFORGE_API_KEY=server.key, PYTHONUNBUFFERED="1", **extra
    )
    return env
