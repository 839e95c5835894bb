"""deploy/gunicorn.conf.py: no control socket at a path that every instance of the user shares."""

from __future__ import annotations

import subprocess

import pytest

from tests.processes import REPO_ROOT, wait_until
from tests.web.support import GUNICORN, gunicorn, server_env


def printed_config(**env: str) -> dict[str, str]:
    result = subprocess.run(
        [str(GUNICORN), "-c", "deploy/gunicorn.conf.py", "--print-config", "taskforge.wsgi"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    pairs = (line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return {name.strip(): value.strip() for name, value in pairs}


def test_the_control_socket_is_off_unless_a_path_is_given():
    assert printed_config()["control_socket_disable"] == "True"
    given = printed_config(TASKFORGE_GUNICORN_CONTROL_SOCKET="/run/taskforge/web-1.ctl")
    assert given["control_socket_disable"] == "False"
    assert given["control_socket"] == "/run/taskforge/web-1.ctl"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_running_server_creates_no_control_socket_in_the_home_directory(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = server_env(HOME=str(home))
    env.pop("XDG_RUNTIME_DIR", None)
    with gunicorn(tmp_path, env, "--access-logfile", "/dev/null"):
        pass
    assert list(home.iterdir()) == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_control_socket_path_given_per_instance_is_used(tmp_path):
    home, path = tmp_path / "home", tmp_path / "web-1.ctl"
    home.mkdir()
    env = server_env(HOME=str(home), TASKFORGE_GUNICORN_CONTROL_SOCKET=str(path))
    env.pop("XDG_RUNTIME_DIR", None)
    with gunicorn(tmp_path, env, "--access-logfile", "/dev/null"):
        wait_until(path.is_socket, timeout=30, message="the control socket")
    assert list(home.iterdir()) == []
