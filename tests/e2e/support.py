"""Helpers of the end-to-end tests: SDK worker processes, and waiting for a condition."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.processes import REPO_ROOT, child_env

WORKER_BIN = Path(sys.executable).parent / "taskforge-worker"


def start_worker(
    url: str,
    key: str,
    name: str,
    log_dir: Path,
    *,
    concurrency: int = 8,
    poll_wait: int = 1,
    **env: str,
) -> subprocess.Popen[bytes]:
    """A ``taskforge-worker`` process running tests/e2e/handlers.py on the default queue."""
    # Short long-polls by default: the live server's request threads must be done (and off
    # the test database) soon after the worker exits. Its log is appended to, so a worker
    # restarted under the same name keeps one log.
    with (log_dir / f"worker-{name}.log").open("ab") as log:
        return subprocess.Popen(
            [str(WORKER_BIN), "--url", url, "--api-key", key, "--queues", "default:1",
             "--concurrency", str(concurrency), "--name", name, "--poll-wait", str(poll_wait),
             "tests.e2e.handlers"],
            cwd=REPO_ROOT,
            env={**child_env(**env), "PYTHONPATH": str(REPO_ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the worker drains), then SIGKILL if it does not exit within 30 s."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)


def wait_until(predicate, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
