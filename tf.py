#!/usr/bin/env python3
"""TaskForge's developer entry point: the only thing a fresh machine with Python 3.11+ needs.

    python3 tf.py start    # install, migrate, create a demo tenant, run TaskForge
    python3 tf.py test     # install the dev tools, run lint, types and the test suite
    python3 tf.py manage … # any manage.py command inside the project's virtualenv
    python3 tf.py stop     # stop the embedded PostgreSQL under .taskforge/

Standard library only: this file runs before anything is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, NoReturn

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
SDK = Path("clients") / "python"
VENV_BIN = VENV / "bin"
VENV_PYTHON = VENV_BIN / "python"
# The same variable as settings.py reads, so tf.py stops the server the children started; a
# relative path is relative to the checkout, where the children run.
DATA_DIR = ROOT / (os.environ.get("TASKFORGE_DATA_DIR", "").strip() or ".taskforge")
PGDATA = DATA_DIR / "pgdata"
DEMO_FILE = DATA_DIR / "demo.json"
MANAGE = str(ROOT / "manage.py")
# Debian's Chromium, which the browser tests drive (Playwright's own download needs a CDN).
CHROMIUM = Path("/usr/bin/chromium")

DEMO_ORG = "Demo"
DEMO_EMAIL = "demo@taskforge.local"
# The demo worker's own queue: jobs a newcomer sends to "default" wait for their own worker
# instead of failing in the demo worker with "no handler for job type".
DEMO_QUEUE = "demo"
HEALTH_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
PG_STOP_TIMEOUT_SECONDS = 60.0


class Failure(Exception):
    """Stop tf.py with this message and exit code."""

    def __init__(self, message: str, returncode: int = 1) -> None:
        super().__init__(message)
        self.returncode = returncode or 1


class StepFailed(Failure):
    """A command tf.py ran exited non-zero; tf.py exits with the same code."""

    def __init__(self, description: str, returncode: int) -> None:
        super().__init__(f"{description} failed with exit code {returncode}", returncode)


def say(message: str) -> None:
    print(f"tf: {message}", flush=True)


def shown(path: Path) -> str:
    """``path`` relative to the checkout when it is inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# --- virtualenv -----------------------------------------------------------------------------


def venv_env() -> dict[str, str]:
    """Return the environment of a shell that activated .venv (tools find each other on PATH)."""
    env = dict(os.environ)
    env["VIRTUAL_ENV"] = str(VENV)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONHOME", None)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run(argv: Sequence[str], description: str, *, quiet: bool = False) -> None:
    """Run a command from the repository root; raise StepFailed when it fails."""
    output = subprocess.DEVNULL if quiet else None
    result = subprocess.run(argv, cwd=ROOT, env=venv_env(), stdout=output, check=False)  # noqa: S603
    if result.returncode != 0:
        raise StepFailed(description, result.returncode)


def ensure_venv(*, dev: bool) -> None:
    """Create .venv if needed and install the project into it unless pyproject.toml is unchanged.

    A stamp file records the sha256 of pyproject.toml the last install used, one per flavour;
    the dev install includes everything the plain one does, so its stamp satisfies both.
    """
    if not VENV_PYTHON.exists():
        say(f"creating a virtualenv in {VENV}")
        run([sys.executable, "-m", "venv", str(VENV)], "creating the virtualenv")
    digest = hashlib.sha256(
        b"".join((ROOT / p).read_bytes() for p in ("pyproject.toml", SDK / "pyproject.toml"))
    ).hexdigest()
    stamps = (
        [VENV / ".tf-installed-dev"]
        if dev
        else [VENV / ".tf-installed", VENV / ".tf-installed-dev"]
    )
    if any(stamp.exists() and stamp.read_text().strip() == digest for stamp in stamps):
        return
    say("installing dependencies (first run takes ~1-2 min)…")
    target = ".[dev]" if dev else "."
    pip = [str(VENV_PYTHON), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    # The Python SDK (clients/python) is our own package too: the demo worker and the
    # end-to-end tests run it.
    run([*pip, "-e", target, "-e", str(SDK)], f"pip install -e {target} -e {SDK}")
    stamps[0].write_text(digest + "\n")


def manage_argv(*args: str) -> list[str]:
    return [str(VENV_PYTHON), MANAGE, *args]


# --- demo tenant ----------------------------------------------------------------------------


def database_label() -> str:
    """Name the database the demo tenant lives in, without credentials."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        return "embedded"
    parts = urllib.parse.urlsplit(url)
    return f"{parts.hostname or ''}:{parts.port or ''}{parts.path}"


def load_demo() -> dict[str, Any] | None:
    """Return the saved demo tenant if it belongs to the database in use."""
    if not DEMO_FILE.exists():
        return None
    demo: dict[str, Any] = json.loads(DEMO_FILE.read_text())
    return demo if demo.get("database", "embedded") == database_label() else None


def parse_bootstrap_output(stdout: str) -> dict[str, Any]:
    """Return the one JSON object `manage.py bootstrap --json` prints."""
    try:
        parsed = json.loads(stdout)
    except json.JSONDecodeError:
        # Tolerate stray lines around the object: take the last line that parses.
        lines = [line for line in stdout.splitlines() if line.strip().startswith("{")]
        if not lines:
            raise Failure("manage.py bootstrap printed no JSON") from None
        parsed = json.loads(lines[-1])
    if not isinstance(parsed, dict):
        raise Failure("manage.py bootstrap printed JSON that is not an object")
    return parsed


def ensure_demo_tenant(*, staff: bool) -> dict[str, Any]:
    """Create the demo organization once and keep its credentials in .taskforge/demo.json.

    Every start also makes sure the demo queue exists (demo tenants of older tf.py lack it)
    and that the demo login is a superuser exactly when ``staff`` asks for it.
    """
    saved = load_demo() or {}
    staff_flag = "--staff" if staff else "--no-staff"
    argv = manage_argv("bootstrap", "--org", DEMO_ORG, "--email", DEMO_EMAIL,
                       "--queue", DEMO_QUEUE, staff_flag, "--json")  # fmt: skip
    result = subprocess.run(  # noqa: S603
        argv, cwd=ROOT, env=venv_env(), stdout=subprocess.PIPE, text=True, check=False
    )
    if result.returncode != 0:
        raise StepFailed("manage.py bootstrap", result.returncode)
    reported = parse_bootstrap_output(result.stdout)
    if reported.get("created"):
        say(f"created the demo tenant ({DEMO_ORG}, {DEMO_EMAIL})")
        demo = reported
    else:
        # Only the run that created the tenant knows its password and API key.
        demo = {**saved, **reported}
    demo["database"] = database_label()
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    # The file holds a password and an API key: readable by its owner only.
    fd = os.open(DEMO_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(demo, file, indent=2)
        file.write("\n")
    os.chmod(DEMO_FILE, 0o600)  # O_CREAT's mode does not apply to an existing file.
    return demo


# --- child processes ------------------------------------------------------------------------


@dataclass
class ProcessSpec:
    """One long-running child of `tf.py start`; its output is prefixed with its name."""

    name: str
    argv: list[str]
    # Extra environment (secrets go here, not in argv, which `ps` shows to everyone).
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[str] | None = field(default=None, repr=False)


def process_specs(host: str, port: int) -> list[ProcessSpec]:
    """Return the processes `tf.py start` runs, started in this order and stopped in reverse."""
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    config = str(ROOT / "deploy" / "gunicorn.conf.py")
    gunicorn = [str(VENV_BIN / "gunicorn"), "-c", config, "taskforge.wsgi", "--bind", bind]
    return [
        ProcessSpec("web", gunicorn),
        ProcessSpec("dispatcher", manage_argv("rundispatcher")),
    ]


def pump_output(name: str, stream: IO[str], width: int) -> None:
    """Copy a child's output to ours, each line prefixed with the child's name."""
    for line in stream:
        sys.stdout.write(f"{name:<{width}} | {line}")
        sys.stdout.flush()


def demo_worker_specs(url: str, demo: dict[str, Any]) -> list[ProcessSpec]:
    """The demo worker (SDK, demo job types), when the demo API key is known."""
    key = demo.get("api_key")
    if not key:
        say("no demo API key saved: not starting the demo worker (see .taskforge/demo.json)")
        return []
    argv = [str(VENV_BIN / "taskforge-worker"), "--url", url, "--queues", f"{DEMO_QUEUE}:1",
            "--concurrency", "4", "--name", "demo-worker", "taskforge_client.demo"]  # fmt: skip
    return [ProcessSpec("worker", argv, env={"TASKFORGE_API_KEY": key})]


# The demo traffic: a few demo jobs every few seconds, so the dashboard has something live.
DEMO_TRAFFIC_SECONDS = 3.0


def demo_jobs(tick: int) -> list[dict[str, Any]]:
    """The jobs one tick of demo traffic submits: mostly quick, some slow, some failing."""
    jobs: list[dict[str, Any]] = [
        {
            "queue": DEMO_QUEUE,
            "job_type": "demo.echo",
            "payload": {"tick": tick, "user_id": tick % 7},
        },
        {"queue": DEMO_QUEUE, "job_type": "demo.sleep", "payload": {"seconds": 0.5 + tick % 3}},
    ]
    if tick % 2 == 0:
        jobs.append(
            {"queue": DEMO_QUEUE, "job_type": "demo.fail_sometimes", "payload": {"p": 0.5},
             "max_attempts": 2}
        )  # fmt: skip
    return jobs


def demo_traffic(url: str, api_key: str, stop: threading.Event) -> None:
    """Submit demo jobs until ``stop``: the dashboard's counters, charts and errors move."""
    tick = 0
    while not stop.wait(DEMO_TRAFFIC_SECONDS):
        body = json.dumps({"jobs": demo_jobs(tick)}).encode()
        request = urllib.request.Request(  # noqa: S310 - our own server's URL
            f"{url}/api/v1/jobs/batch",
            data=body,
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
            method="POST",
        )
        with contextlib.suppress(OSError):
            urllib.request.urlopen(request, timeout=5).close()  # noqa: S310
        tick += 1


# Width of the name column that prefixes each child's output lines.
WIDTH = len("dispatcher")


def start_processes(specs: list[ProcessSpec]) -> None:
    width = WIDTH
    for spec in specs:
        say(f"starting {spec.name}: {' '.join(spec.argv)}")
        # Own process group: Ctrl-C reaches tf.py only, which then stops children in order.
        spec.process = subprocess.Popen(  # noqa: S603
            spec.argv,
            cwd=ROOT,
            env={**venv_env(), **spec.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            process_group=0,
        )
        assert spec.process.stdout is not None
        threading.Thread(
            target=pump_output, args=(spec.name, spec.process.stdout, width), daemon=True
        ).start()


def first_exited(specs: list[ProcessSpec]) -> ProcessSpec | None:
    for spec in specs:
        if spec.process is not None and spec.process.poll() is not None:
            return spec
    return None


def stop_processes(specs: list[ProcessSpec]) -> None:
    """Stop every running child, last started first, each before the next: the demo worker
    finishes its jobs, reports them and deregisters while the web server still answers.
    SIGTERM, then SIGKILL after STOP_TIMEOUT_SECONDS."""
    running = [s for s in reversed(specs) if s.process is not None and s.process.poll() is None]
    for spec in running:
        say(f"stopping {spec.name}")
        assert spec.process is not None
        spec.process.terminate()
        try:
            spec.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            say(f"{spec.name} did not stop within {STOP_TIMEOUT_SECONDS:.0f} s: killing it")
            spec.process.kill()
            spec.process.wait()


def child_exit_code(spec: ProcessSpec) -> int:
    """Report a child that exited on its own; return a non-zero exit code for tf.py."""
    assert spec.process is not None
    code = spec.process.returncode
    say(f"{spec.name} exited with code {code}; stopping the others")
    return code if code > 0 else 1


# --- embedded PostgreSQL --------------------------------------------------------------------
# The first database connection of any command starts it (taskforge/lib/embedded_pg) and
# leaves it running for the next command; `start` and `test` stop it again if they started it.


def embedded_server_pid(pgdata: Path = PGDATA) -> int | None:
    """The PID of the PostgreSQL server running on ``pgdata``, or None."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # Alive, as another user (root's server runs as "embedded_postgres").
    # A crash leaves postmaster.pid behind, and its PID may since belong to something else.
    cmdline = Path(f"/proc/{pid}/cmdline")
    with contextlib.suppress(OSError):
        if b"postgres" not in cmdline.read_bytes():
            return None
    return pid


def stop_embedded_server(pgdata: Path = PGDATA) -> bool:
    """Stop the server running on ``pgdata`` and wait for it; return False if none ran."""
    pid = embedded_server_pid(pgdata)
    if pid is None:
        return False
    say(f"stopping the embedded PostgreSQL in {shown(pgdata)} (pid {pid})")
    # SIGINT is PostgreSQL's "fast" shutdown, as `pg_ctl stop -m fast`: sessions are ended,
    # the data is checkpointed. No pg_ctl here: tf.py runs before anything is installed.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + PG_STOP_TIMEOUT_SECONDS
    while embedded_server_pid(pgdata) == pid:
        if time.monotonic() > deadline:
            raise Failure(
                f"the embedded PostgreSQL (pid {pid}) did not stop within "
                f"{PG_STOP_TIMEOUT_SECONDS:.0f} s; see {shown(pgdata / 'log')}"
            )
        time.sleep(0.1)
    return True


@contextlib.contextmanager
def embedded_server_stopped_if_started(command: str) -> Iterator[None]:
    """Stop the embedded PostgreSQL on the way out if it was not running on the way in."""
    if os.environ.get("DATABASE_URL", "").strip():
        yield  # The database is someone else's server.
        return
    was_running = embedded_server_pid() is not None
    try:
        yield
    finally:
        if not was_running:
            stop_embedded_server()
        elif embedded_server_pid() is not None:
            say(
                f"the embedded PostgreSQL in {shown(PGDATA)} was running before `tf.py "
                f"{command}`, so it is left running; `python3 tf.py stop` stops it"
            )


def cmd_stop(args: argparse.Namespace) -> int:
    if not stop_embedded_server():
        say(f"no embedded PostgreSQL is running in {shown(PGDATA)}")
    return 0


# --- start ----------------------------------------------------------------------------------


def base_url(host: str, port: int) -> str:
    """Return the URL a browser on this machine uses to reach the server."""
    if host in ("0.0.0.0", "", "::"):  # noqa: S104 (we only print and probe it)
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def ensure_port_free(host: str, port: int) -> None:
    """Fail fast with a clear message when something already listens on host:port.

    Otherwise gunicorn retries for a few seconds, and another TaskForge on that port would
    answer our /health probe in the meantime.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As gunicorn does: a port in TIME_WAIT is free, a listening one is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            message = f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port"
            raise Failure(message) from None


def is_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_until_healthy(url: str, specs: list[ProcessSpec], stop: threading.Event) -> int | None:
    """Poll /health; return an exit code if a child died or time ran out, None when healthy."""
    deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
    while not stop.is_set():
        if (dead := first_exited(specs)) is not None:
            return child_exit_code(dead)
        if is_healthy(url):
            return None
        if time.monotonic() > deadline:
            say(f"{url}/health did not answer 200 within {HEALTH_TIMEOUT_SECONDS:.0f} s")
            return 1
        stop.wait(0.5)
    return None


def demo_login(demo: dict[str, Any]) -> str:
    """Say what the demo login may do, as bootstrap reported it."""
    if demo.get("staff"):
        return (
            f"superuser and admin of organization {DEMO_ORG!r}: "
            "the Django admin shows it every organization"
        )
    return (
        f"admin of organization {DEMO_ORG!r}, all of it on the dashboard and the API; "
        "not staff: no /admin/"
    )


def banner(url: str, demo: dict[str, Any]) -> str:
    """The text `tf.py start` prints once TaskForge answers: URLs, the demo login, a curl."""
    password = demo.get("password") or (
        "(unchanged; the demo user existed before — reset it with "
        f"`python3 tf.py manage changepassword {demo.get('email', DEMO_EMAIL)}`)"
    )
    api_key = (
        demo.get("api_key")
        or "(not shown again: create one with POST /api/v1/projects/{id}/api-keys)"
    )
    admin = (
        "log in with the demo login below"
        if demo.get("staff")
        else "needs a staff login: `python3 tf.py start --staff-demo`"
    )
    job = json.dumps({"queue": DEMO_QUEUE, "job_type": "demo.echo", "payload": {"hi": 1}})
    lines = [
        "",
        "=" * 72,
        f"  TaskForge is running at {url}/",
        "",
        f"  Dashboard   {url}/   (sign in with the demo login below)",
        f"  Admin       {url}/admin/   ({admin})",
        f"  API         {url}/api/v1/   (docs: {url}/api/docs/)",
        "",
        f"  Login       {demo.get('email', DEMO_EMAIL)}",
        f"              {demo_login(demo)}",
        f"  Password    {password}",
        f"  API key     {api_key}",
        f"  Project id  {demo.get('project_id', '?')}",
        "",
        f"  Demo jobs go to queue {DEMO_QUEUE!r} every {DEMO_TRAFFIC_SECONDS:g} s and show up "
        "live on the",
        "  dashboard (--no-demo-traffic turns them off).",
        f"  The demo worker runs demo.* jobs from queue {DEMO_QUEUE!r} only; jobs sent to",
        "  'default' wait for a worker of your own. Submit a job to the demo worker:",
        f'    curl -X POST -H "Authorization: Bearer {demo.get("api_key") or "<key>"}" \\',
        '      -H "Content-Type: application/json" \\',
        f"      -d '{job}' \\",
        f"      {url}/api/v1/jobs",
        "  GET /api/v1/jobs/{id} then shows it succeeded.",
        "",
        f"  Credentials are saved in {shown(DEMO_FILE)}. Ctrl-C stops everything.",
        "=" * 72,
        "",
    ]
    return "\n".join(lines)


def supervise(
    specs: list[ProcessSpec], url: str, demo: dict[str, Any], *, traffic: bool = True
) -> int:
    """Run the children until Ctrl-C/SIGTERM (exit 0) or until one of them dies (non-zero).

    With ``traffic``, demo jobs are submitted every few seconds once the demo worker runs."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        start_processes(specs)
        code = wait_until_healthy(url, specs, stop)
        if code is not None:
            return code
        # The worker registers over HTTP, so it starts once the web process answers.
        late = demo_worker_specs(url, demo)
        start_processes(late)
        specs.extend(late)
        if late and traffic:
            feeder = threading.Thread(
                target=demo_traffic, args=(url, demo["api_key"], stop), daemon=True
            )
            feeder.start()
        if not stop.is_set():
            print(banner(url, demo), flush=True)
        while not stop.is_set():
            if (dead := first_exited(specs)) is not None:
                return child_exit_code(dead)
            stop.wait(0.5)
        return 0
    finally:
        stop_processes(specs)


def cmd_start(args: argparse.Namespace) -> int:
    ensure_port_free(args.host, args.port)
    ensure_venv(dev=False)
    with embedded_server_stopped_if_started("start"):
        say("applying migrations")
        run(manage_argv("migrate", "--noinput"), "manage.py migrate", quiet=True)
        demo = ensure_demo_tenant(staff=args.staff_demo)
        url = base_url(args.host, args.port)
        return supervise(
            process_specs(args.host, args.port), url, demo, traffic=not args.no_demo_traffic
        )


# --- test -----------------------------------------------------------------------------------


def test_steps(pytest_args: list[str]) -> list[list[str]]:
    tool = str(VENV_BIN)
    return [
        [f"{tool}/ruff", "check", "."],
        [f"{tool}/ruff", "format", "--check", "."],
        [f"{tool}/mypy", "."],
        [f"{tool}/lint-imports"],
        manage_argv("makemigrations", "--check", "--dry-run"),
        # -rs: the summary lists every skipped test with its reason (a missing browser, say).
        [str(VENV_PYTHON), "-m", "pytest", "-n", "2", "--dist", "loadfile", "-rs", *pytest_args],
    ]


def ensure_chromium() -> None:
    """Install Debian's Chromium for the browser tests if it is missing and we may."""
    if CHROMIUM.exists():
        return
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not Path("/usr/bin/apt-get").exists():
        say(
            f"{CHROMIUM} is missing, so the browser tests will be skipped; "
            "install Debian's chromium package (as root: apt-get install -y chromium)"
        )
        return
    say("installing Debian's chromium for the browser tests (apt-get install -y chromium)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        if subprocess.run(argv, env=env, check=False).returncode != 0:  # noqa: S603
            say(f"`{' '.join(argv)}` failed, so the browser tests will be skipped")
            return


def display(argv: list[str]) -> str:
    """Show a command the way a developer would type it inside the activated virtualenv."""
    first = Path(argv[0])
    words = [first.name, *argv[1:]]
    if first == VENV_PYTHON:
        words = argv[1:]
        if words and words[0] == MANAGE:
            words[0] = "manage.py"
        elif words[:2] == ["-m", "pytest"]:
            words = words[1:]
    return " ".join(words)


def cmd_test(args: argparse.Namespace) -> int:
    ensure_venv(dev=True)
    ensure_chromium()
    return run_checks(test_steps(args.pytest_args))


def run_checks(steps: list[list[str]]) -> int:
    """Run the steps until one fails; stop the embedded PostgreSQL if they started it."""
    with embedded_server_stopped_if_started("test"):
        return run_steps(steps)


def run_steps(steps: list[list[str]]) -> int:
    started = time.monotonic()
    for argv in steps:
        print(f"\n==> {display(argv)}", flush=True)
        step_started = time.monotonic()
        # pytest's exit code 5 ("no tests collected") is non-zero, so it fails the run too.
        returncode = subprocess.run(argv, cwd=ROOT, env=venv_env(), check=False).returncode  # noqa: S603
        elapsed = time.monotonic() - step_started
        if returncode != 0:
            print(f"==> FAILED (exit code {returncode}) after {elapsed:.1f} s", flush=True)
            return returncode
        print(f"==> ok ({elapsed:.1f} s)", flush=True)
    print(f"\nAll checks passed in {time.monotonic() - started:.1f} s.", flush=True)
    return 0


# --- manage ---------------------------------------------------------------------------------


def cmd_manage(args: argparse.Namespace) -> NoReturn:
    ensure_venv(dev=False)
    os.chdir(ROOT)
    os.execve(str(VENV_PYTHON), manage_argv(*args.manage_args), venv_env())  # noqa: S606


# --- command line ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tf.py",
        description="Install, run and test TaskForge with nothing but Python 3.11+.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    start = commands.add_parser(
        "start",
        help="install, migrate, create a demo tenant and run TaskForge",
        description="Create .venv and install TaskForge if needed, apply migrations, create the "
        "demo tenant once (saved in .taskforge/demo.json), then run the web server, the "
        "dispatcher and a demo worker (queue 'demo') until Ctrl-C. Without DATABASE_URL an "
        "embedded PostgreSQL under .taskforge/ is used, and stopped on the way out if this "
        "command started it.",
    )
    start.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    start.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    start.add_argument(
        "--staff-demo",
        action="store_true",
        help="make the demo login a superuser, who may use the Django admin (/admin/) and sees "
        "every organization there; without it the demo login is an ordinary organization admin",
    )
    start.add_argument(
        "--no-demo-traffic",
        action="store_true",
        help="do not submit demo jobs; by default a few demo.* jobs (some slow, some failing) "
        f"go to queue {DEMO_QUEUE!r} every {DEMO_TRAFFIC_SECONDS:g} s so the dashboard shows "
        "live work",
    )
    start.set_defaults(handler=cmd_start)
    test = commands.add_parser(
        "test",
        help="run ruff, mypy, import-linter, the migrations check and pytest",
        description="Install the dev dependencies if needed, then run, stopping at the first "
        "failure: ruff check, ruff format --check, mypy, lint-imports, makemigrations --check, "
        "pytest -n 2 --dist loadfile -rs. Installs Debian's chromium for the browser tests "
        "when it is missing (as root). Extra arguments go to pytest unchanged, e.g. "
        "`tf.py test -k queue -x`; `tf.py test -- --help` shows pytest's own help.",
    )
    test.add_argument("pytest_args", nargs="*", help="extra arguments for pytest")
    test.set_defaults(handler=cmd_test)
    manage = commands.add_parser(
        "manage",
        help="run a manage.py command inside the virtualenv",
        description="Run manage.py with the virtualenv's Python, e.g. "
        "`python3 tf.py manage createsuperuser` or `python3 tf.py manage help migrate`.",
    )
    manage.add_argument("manage_args", nargs="*", help="arguments for manage.py")
    manage.set_defaults(handler=cmd_manage)
    stop = commands.add_parser(
        "stop",
        help="stop the embedded PostgreSQL under .taskforge/",
        description="Stop the embedded PostgreSQL server whose data is in .taskforge/pgdata "
        "(TASKFORGE_DATA_DIR/pgdata), if it is running. `start` and `test` stop it themselves "
        "when they started it; one that was already running is left for this command.",
    )
    stop.set_defaults(handler=cmd_stop)
    return parser


PASSTHROUGH = {"test": "pytest_args", "manage": "manage_args"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse tf.py's arguments; after `test` or `manage` everything goes to pytest/manage.py.

    argparse would reorder or reject options it does not know (`test -k name -x`), so only a
    lone -h/--help after those commands is tf.py's own; a leading `--` is dropped.
    """
    parser = build_parser()
    if len(argv) >= 2 and argv[0] in PASSTHROUGH and argv[1:] not in (["-h"], ["--help"]):
        args = parser.parse_args(argv[:1])
        rest = argv[2:] if argv[1] == "--" else argv[1:]
        setattr(args, PASSTHROUGH[argv[0]], rest)
        return args
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 (the message is the point)
        sys.exit("TaskForge needs Python 3.11 or newer")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.handler(args))
    except Failure as exc:
        say(str(exc))
        return exc.returncode
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
