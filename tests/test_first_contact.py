"""First contact (issue 14): what a newcomer meets in the first minutes, tested for real.

The API docs in a real browser with the network cut off, the `tf.py start` banner's curl
pasted into bash, Ctrl-C on a real `tf.py start`, the embedded PostgreSQL that `tf.py test`
starts, the JSON error envelope under /api/, quiet manage.py commands, and the demo login.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from django.core.management import call_command
from django.test import override_settings
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

import tf
from accounts.models import User
from queues.models import Queue
from tests.conftest import bearer

ROOT = Path(__file__).resolve().parent.parent
# Gitignored, so a developer can look at what the browser saw.
SCREENSHOTS = ROOT / ".taskforge" / "screenshots"
LINUX_PROC = Path("/proc/self/stat").exists()
needs_proc = pytest.mark.skipif(not LINUX_PROC, reason="finds processes through /proc (Linux)")
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


# --- 1. /api/docs/ works offline --------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    not tf.CHROMIUM.exists(),
    reason=f"{tf.CHROMIUM} is missing; `python3 tf.py test` installs Debian's chromium as root",
)
def test_the_api_docs_render_in_a_browser_from_our_own_server_only(live_server):
    from playwright.sync_api import Error, Route, sync_playwright

    ours = urlsplit(live_server.url).netloc
    requested: list[str] = []
    refused: list[str] = []

    def offline(route: Route) -> None:
        # As on a machine without internet: anything not for our server fails.
        if urlsplit(route.request.url).netloc == ours:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(tf.CHROMIUM))
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.route("**/*", offline)
            page = context.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.goto(f"{live_server.url}/api/docs/")
            try:
                page.locator(".swagger-ui .opblock").first.wait_for(timeout=30_000)
            except Error:
                pytest.fail(f"Swagger UI did not render; requests refused offline: {refused}")
            title = page.locator(".swagger-ui .info .title").inner_text()
            operations = page.locator(".swagger-ui .opblock").count()
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "api-docs.png"))
        finally:
            browser.close()

    assert refused == []
    network = [url for url in requested if urlsplit(url).scheme in ("http", "https", "ws", "wss")]
    assert {urlsplit(url).netloc for url in network} == {ours}, network
    paths = {urlsplit(url).path for url in network}
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in paths
    assert "/api/schema/" in paths
    assert title.startswith("TaskForge API")
    assert operations > 20


# --- 2. the banner's curl, and the demo queue ---------------------------------------------------


def curl_command(banner: str) -> str:
    """The banner's curl command as a terminal shows it: its first line and continuations."""
    lines = banner.splitlines()
    first = next(i for i, line in enumerate(lines) if line.lstrip().startswith("curl "))
    last = first
    while lines[last].endswith("\\"):
        last += 1
    return "\n".join(lines[first : last + 1])


def run_pasted(command: str, home: Path) -> tuple[int, dict]:
    """Run ``command`` in bash as pasted; return curl's HTTP status and the parsed body.

    curl reads $HOME/.curlrc, so the status comes out without touching the command itself.
    """
    (home / ".curlrc").write_text('write-out = "\\n%{http_code}"\n')
    run = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + command],
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, f"{command}\n{run.stdout}\n{run.stderr}"
    body, status = run.stdout.rsplit("\n", 1)
    return int(status), json.loads(body)


def bootstrap_demo(*flags: str) -> dict:
    out = io.StringIO()
    call_command(
        "bootstrap", "--org", tf.DEMO_ORG, "--email", tf.DEMO_EMAIL, "--queue", tf.DEMO_QUEUE,
        *flags, "--json", stdout=out,
    )  # fmt: skip
    return json.loads(out.getvalue())


@needs_curl
@pytest.mark.django_db(transaction=True)
def test_the_banner_curl_pasted_into_bash_submits_a_job_to_the_demo_queue(live_server, tmp_path):
    demo = bootstrap_demo("--no-staff")
    command = curl_command(tf.banner(live_server.url, demo))

    status, job = run_pasted(command, tmp_path)

    assert status == 201, job
    assert (job["queue"], job["job_type"], job["state"]) == ("demo", "demo.echo", "pending")
    read = httpx.get(
        f"{live_server.url}/api/v1/jobs/{job['id']}",
        headers={"Authorization": f"Bearer {demo['api_key']}"},
    )
    assert (read.status_code, read.json()["queue"]) == (200, "demo")


def test_the_demo_worker_serves_the_demo_queue_only():
    (spec,) = tf.demo_worker_specs("http://127.0.0.1:8000", {"api_key": "tf_x"})

    assert spec.argv[spec.argv.index("--queues") + 1] == f"{tf.DEMO_QUEUE}:1"
    banner = tf.banner("http://127.0.0.1:8000", {"api_key": "tf_x"})
    assert f"jobs from queue '{tf.DEMO_QUEUE}' only" in banner
    assert f'"queue": "{tf.DEMO_QUEUE}"' in curl_command(banner)


def test_bootstrap_creates_the_demo_queue_and_adds_it_on_a_rerun(db):
    first = bootstrap_demo()
    project_queues = Queue.objects.all_tenants().filter(project_id=first["project_id"])
    assert set(project_queues.values_list("name", flat=True)) == {"default", "demo"}

    project_queues.filter(name="demo").delete()
    again = bootstrap_demo()

    assert again["created"] is False
    assert set(project_queues.values_list("name", flat=True)) == {"default", "demo"}


# --- 3. Ctrl-C and `tf.py test` stop what they started -----------------------------------------


def stat_of(pid: int) -> tuple[str, int] | None:
    """(state, start time) of a process, None if there is none with that pid."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[19])


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"


def descendants(root: int) -> dict[int, int]:
    """{pid: start time} of every process below ``root``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: dict[int, int] = {}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if (stat := stat_of(child)) is not None:
                found[child] = stat[1]
                stack.append(child)
    return found


def running(processes: dict[int, int]) -> list[str]:
    """Those of ``processes`` still running (the start time tells a reused pid apart)."""
    alive = []
    for pid, started in processes.items():
        stat = stat_of(pid)
        if stat is not None and stat[1] == started and stat[0] != "Z":
            alive.append(f"{pid}: {cmdline(pid)}")
    return alive


def processes_mentioning(text: str) -> list[str]:
    """Running processes with ``text`` in their command line or environment."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        stat = stat_of(int(entry.name))
        try:
            blob = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if stat is not None and stat[0] != "Z" and text.encode() in blob:
            found.append(f"{entry.name}: {cmdline(int(entry.name))}")
    return found


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A TASKFORGE_DATA_DIR of the test's own, so the checkout's embedded server is untouched."""
    # Short, under /tmp: the server's socket lives in it and socket paths are ~100 bytes at most.
    path = Path(tempfile.mkdtemp(prefix="tf-fc-"))
    try:
        yield path
    finally:
        pid = tf.embedded_server_pid(path / "pgdata")
        if pid is not None:
            os.kill(pid, signal.SIGINT)
            deadline = time.monotonic() + 30
            while tf.embedded_server_pid(path / "pgdata") and time.monotonic() < deadline:
                time.sleep(0.1)
        shutil.rmtree(path, ignore_errors=True)


def tf_env(data_dir: Path) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("DATABASE_URL", "REDIS_URL", "TASKFORGE_DB_NAME")
    }
    return {**env, "TASKFORGE_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Output:
    """Collects a child's output lines in a thread, so the pipe never fills up."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stdout is not None
        self._stream = process.stdout
        self._thread = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        """After the child exited: read the rest, then close the pipe."""
        self._thread.join(timeout=30)
        self._stream.close()

    def _read(self, stream: io.TextIOBase) -> None:
        for line in stream:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)


def wait_for(predicate, process: subprocess.Popen[str], output: Output, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, f"exited with {process.returncode}:\n{output.text()}"
        assert time.monotonic() < deadline, f"timed out:\n{output.text()}"
        time.sleep(0.2)


@pytest.mark.slow
@needs_proc
@needs_curl
def test_ctrl_c_on_tf_start_leaves_no_process_of_its_own(data_dir, tmp_path):
    port = free_port()
    # Its own session, as a shell gives a foreground job: Ctrl-C signals the whole group.
    process = subprocess.Popen(
        [sys.executable, "tf.py", "start", "--port", str(port)],
        cwd=ROOT,
        env=tf_env(data_dir),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output = Output(process)
    started: dict[int, int] = {}
    try:
        wait_for(lambda: "Ctrl-C stops everything" in output.text(), process, output, 240)
        started = descendants(process.pid)
        pg = tf.embedded_server_pid(data_dir / "pgdata")
        assert pg is not None, output.text()
        started[pg] = stat_of(pg)[1]
        commands = " ".join(cmdline(pid) for pid in started)
        for name in ("gunicorn", "rundispatcher", "taskforge-worker", "postgres"):
            assert name in commands

        # Meanwhile: the banner's curl works as printed, and the demo worker runs the job.
        status, job = run_pasted(curl_command(output.text()), tmp_path)
        assert (status, job["queue"]) == (201, "demo")
        key = json.loads((data_dir / "demo.json").read_text())["api_key"]
        url = f"http://127.0.0.1:{port}/api/v1/jobs/{job['id']}"

        def succeeded() -> bool:
            read = httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
            return read.json()["state"] == "succeeded"

        wait_for(succeeded, process, output, 60)

        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=90) == 0, output.text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        for line in running(started):
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
        output.close()

    text = output.text()
    assert running(started) == [], text
    assert processes_mentioning(str(data_dir)) == [], text
    assert f"stopping the embedded PostgreSQL in {data_dir / 'pgdata'}" in text
    # Logged by the web server only, once: not by migrate, bootstrap, the dispatcher or workers.
    assert text.count("REDIS_URL is not set") == 1, text


RUN_CHECKS = "import json, sys, tf; sys.exit(tf.run_checks(json.loads(sys.argv[1])))"
PRINT_PID = "import sys, tf; print('server pid', tf.embedded_server_pid())"


def run_checks(data_dir: Path, steps: list[list[str]]) -> subprocess.CompletedProcess[str]:
    """tf.py test's runner, in a process of its own, on these steps instead of the suite."""
    return subprocess.run(
        [sys.executable, "-c", RUN_CHECKS, json.dumps(steps)],
        cwd=ROOT,
        env=tf_env(data_dir),
        capture_output=True,
        text=True,
        timeout=240,
    )


def server_pid_printed(output: str) -> int:
    return int(next(line for line in output.splitlines() if line.startswith("server pid "))[11:])


# A step that connects to the database, and so starts the embedded server as the suite does.
CONNECT = [sys.executable, "manage.py", "showmigrations", "accounts"]


@pytest.mark.slow
@needs_proc
def test_tf_test_stops_the_embedded_server_it_started(data_dir):
    result = run_checks(data_dir, [CONNECT, [sys.executable, "-c", PRINT_PID]])

    assert result.returncode == 0, result.stdout + result.stderr
    pid = server_pid_printed(result.stdout)
    assert f"stopping the embedded PostgreSQL in {data_dir / 'pgdata'} (pid {pid})" in (
        result.stdout
    )
    assert tf.embedded_server_pid(data_dir / "pgdata") is None
    # The server's command line names its data directory: no process of it is left.
    assert processes_mentioning(str(data_dir)) == []


@pytest.mark.slow
@needs_proc
def test_tf_test_leaves_a_server_that_ran_before_and_tf_stop_stops_it(data_dir):
    env = tf_env(data_dir)
    manage = [sys.executable, "tf.py", "manage", *CONNECT[2:]]
    subprocess.run(manage, cwd=ROOT, env=env, capture_output=True, check=True, timeout=240)
    before = tf.embedded_server_pid(data_dir / "pgdata")
    assert before is not None

    result = run_checks(data_dir, [CONNECT])

    assert result.returncode == 0, result.stdout + result.stderr
    assert "was running before `tf.py test`, so it is left running" in result.stdout
    assert "python3 tf.py stop" in result.stdout
    assert tf.embedded_server_pid(data_dir / "pgdata") == before

    stop = subprocess.run(
        [sys.executable, "tf.py", "stop"], cwd=ROOT, env=env, capture_output=True, text=True
    )

    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert f"(pid {before})" in stop.stdout
    assert tf.embedded_server_pid(data_dir / "pgdata") is None
    assert processes_mentioning(str(data_dir)) == []
    again = subprocess.run(
        [sys.executable, "tf.py", "stop"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert again.returncode == 0
    assert "no embedded PostgreSQL is running" in again.stdout


# --- 4. every answer under /api/ is the JSON envelope ------------------------------------------


def assert_envelope(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    assert "ErrorDetail" not in error["message"] and "{" not in error["message"]
    return error


@pytest.mark.parametrize("debug", [True, False])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/"),
        ("get", "/api/v1/"),
        ("get", "/api/v1/no-such-thing"),
        ("post", "/api/v2/jobs"),
        ("delete", "/api/v1/queues/default/nope"),
    ],
)
def test_an_unknown_api_path_is_a_json_404(client, debug, method, path):
    # enforce_csrf_checks: API clients send no CSRF token, and must not get Django's HTML 403.
    client.handler.enforce_csrf_checks = True
    with override_settings(DEBUG=debug):
        response = getattr(client, method)(path)

    error = assert_envelope(response, 404, "not_found")
    assert path in error["message"]
    assert "/api/docs/" in error["message"]


@pytest.mark.parametrize("debug", [True, False])
def test_a_trailing_slash_is_a_json_404_that_names_the_right_path(client, debug):
    with override_settings(DEBUG=debug):
        response = client.post("/api/v1/jobs/", {}, content_type="application/json")

    error = assert_envelope(response, 404, "not_found")
    assert "Did you mean /api/v1/jobs?" in error["message"]


def test_the_docs_without_their_slash_still_redirect(client):
    response = client.get("/api/docs")

    assert (response.status_code, response["Location"]) == (301, "/api/docs/")


@pytest.mark.parametrize("debug", [True, False])
def test_a_malformed_jwt_is_a_clean_401(db, debug):
    with override_settings(DEBUG=debug):
        response = bearer("not-a-token").get("/api/v1/organization")

    error = assert_envelope(response, 401, "not_authenticated")
    assert error["message"] == (
        "The bearer token is not a valid API key or access token: Token is invalid."
    )
    assert error["details"] == {"reason": "token_not_valid"}


def test_an_expired_jwt_is_a_clean_401(member):
    token = AccessToken.for_user(member)
    token.set_exp(lifetime=-timedelta(seconds=1))

    response = bearer(str(token)).get("/api/v1/organization")

    error = assert_envelope(response, 401, "not_authenticated")
    assert error["message"] == (
        "The bearer token is not a valid API key or access token: Token is expired."
    )


def test_a_jwt_of_a_deleted_user_is_a_clean_401(member):
    token = str(AccessToken.for_user(member))
    member.delete()

    response = bearer(token).get("/api/v1/organization")

    error = assert_envelope(response, 401, "not_authenticated")
    assert (error["message"], error["details"]) == ("User not found", {"reason": "user_not_found"})


def test_a_request_without_credentials_is_still_the_plain_401(db):
    response = APIClient().get("/api/v1/organization")

    assert_envelope(response, 401, "not_authenticated")


# --- 5. manage.py commands say nothing about REDIS_URL ---------------------------------------


@pytest.mark.parametrize("args", [["--help"], ["check"]])
def test_manage_commands_do_not_log_about_redis(args):
    env = {name: value for name, value in os.environ.items() if name != "REDIS_URL"}
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert "REDIS_URL" not in result.stdout + result.stderr


# --- 6. tf.py test shows why tests were skipped ------------------------------------------------


@pytest.mark.slow
def test_tf_test_runs_pytest_so_that_it_prints_skip_reasons(tmp_path):
    (tmp_path / "test_skipping.py").write_text(
        "import pytest\n\n\ndef test_it():\n    pytest.skip('no frobnicator here')\n"
    )
    file = str(tmp_path / "test_skipping.py")
    argv = tf.test_steps([file, "-p", "no:cacheprovider", "-p", "no:django"])[-1]

    result = subprocess.run(
        argv, cwd=tmp_path, env=tf.venv_env(), capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SKIPPED [1]" in result.stdout
    assert "no frobnicator here" in result.stdout


# --- 7. the demo login is an ordinary organization admin unless asked ---------------------------


def test_the_demo_login_is_an_ordinary_admin_unless_staff_is_asked_for(db):
    created = bootstrap_demo("--no-staff")
    user = User.objects.all_tenants().get(email=tf.DEMO_EMAIL)
    assert (created["staff"], user.is_staff, user.is_superuser, user.role) == (
        False,
        False,
        False,
        "admin",
    )

    promoted = bootstrap_demo("--staff")
    user.refresh_from_db()
    assert (promoted["staff"], user.is_staff, user.is_superuser) == (True, True, True)

    demoted = bootstrap_demo("--no-staff")
    user.refresh_from_db()
    assert (demoted["staff"], user.is_staff, user.is_superuser) == (False, False, False)


def test_the_banner_says_exactly_what_the_demo_login_is():
    ordinary = tf.banner("http://127.0.0.1:8000", {"staff": False})
    staff = tf.banner("http://127.0.0.1:8000", {"staff": True})

    assert "admin of organization 'Demo'" in ordinary and "not staff" in ordinary
    assert "--staff-demo" in ordinary
    assert "superuser" in staff and "every organization" in staff
    assert "superuser" not in ordinary
