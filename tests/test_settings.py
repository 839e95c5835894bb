"""Settings: a malformed environment stops start-up with a message naming the variable.

The subprocess tests run the real ``manage.py check`` so they cover settings.py end to end;
the unit tests call taskforge/lib/env.py directly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management.utils import get_random_secret_key

from taskforge.lib.env import env_bool, env_float, env_int, env_list, env_secret, env_str

ROOT = Path(__file__).resolve().parent.parent

# Variables settings.py reads; cleared first so the caller's shell cannot change the outcome.
CONFIG_VARS = [
    "DEBUG",
    "SECRET_KEY",
    "SECRET_KEY_FILE",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "REDIS_URL",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
]


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ)
    for name in [*CONFIG_VARS, *(n for n in environ if n.startswith("TASKFORGE_"))]:
        environ.pop(name, None)
    environ.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEBUG", "maybe"),
        ("TASKFORGE_LEASE_SECONDS", "abc"),
        ("TASKFORGE_LEASE_SECONDS", "0"),
        ("TASKFORGE_POLL_INTERVAL", "soon"),
        ("DATABASE_URL", "mysql://x/y"),
        ("DATABASE_URL", "not-a-url"),
        ("DATABASE_URL", "postgresql://db.example.com"),
        ("REDIS_URL", "http://x"),
    ],
)
def test_check_refuses_a_malformed_variable_and_names_it(name, value):
    result = manage("check", **{name: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert name in last_line, result.stderr


def test_check_refuses_the_renamed_login_limit_instead_of_ignoring_it():
    result = manage("check", TASKFORGE_LOGIN_ATTEMPTS_PER_EMAIL="5")
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert "TASKFORGE_LOGIN_ATTEMPTS_PER_ACCOUNT_AND_IP" in last_line, result.stderr


def test_check_refuses_debug_false_without_a_secret_key():
    result = manage("check", DEBUG="false")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr.strip().splitlines()[-1], result.stderr


def test_check_refuses_debug_false_with_the_development_secret_key():
    dev_key = "django-insecure-dev-only-key-do-not-use-in-production-3f9a8c"
    result = manage("check", DEBUG="false", SECRET_KEY=dev_key)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr.strip().splitlines()[-1], result.stderr


def test_check_passes_with_the_development_defaults():
    result = manage("check")
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_settings_pass_check_deploy_without_a_single_warning():
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="false",
        SECRET_KEY=get_random_secret_key(),
        ALLOWED_HOSTS="taskforge.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert "WARNING" not in result.stdout + result.stderr


def test_production_settings_read_the_secret_key_from_a_file(tmp_path):
    secret = tmp_path / "secret_key"
    secret.write_text(get_random_secret_key() + "\n")
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="false",
        SECRET_KEY_FILE=str(secret),
        ALLOWED_HOSTS="taskforge.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- taskforge/lib/env.py -------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1", "true", "True", "YES", "on", " true "])
def test_env_bool_reads_true(monkeypatch, value):
    monkeypatch.setenv("TF_FLAG", value)
    assert env_bool("TF_FLAG", False) is True


@pytest.mark.parametrize("value", ["0", "false", "FALSE", "no", "off"])
def test_env_bool_reads_false(monkeypatch, value):
    monkeypatch.setenv("TF_FLAG", value)
    assert env_bool("TF_FLAG", True) is False


@pytest.mark.parametrize("value", [None, "", "   "])
def test_env_bool_uses_the_default_when_unset_or_blank(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("TF_FLAG", raising=False)
    else:
        monkeypatch.setenv("TF_FLAG", value)
    assert env_bool("TF_FLAG", True) is True
    assert env_bool("TF_FLAG", False) is False


def test_env_bool_refuses_anything_else_and_names_the_variable(monkeypatch):
    monkeypatch.setenv("TF_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match=r"^TF_FLAG .*'maybe'"):
        env_bool("TF_FLAG", False)


def test_env_int_reads_an_integer(monkeypatch):
    monkeypatch.setenv("TF_NUMBER", " 42 ")
    assert env_int("TF_NUMBER", 7) == 42


def test_env_int_uses_the_default_when_unset(monkeypatch):
    monkeypatch.delenv("TF_NUMBER", raising=False)
    assert env_int("TF_NUMBER", 7, minimum=1) == 7


@pytest.mark.parametrize("value", ["abc", "1.5", "12k"])
def test_env_int_refuses_a_non_integer_and_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("TF_NUMBER", value)
    with pytest.raises(ImproperlyConfigured, match=r"^TF_NUMBER must be an integer"):
        env_int("TF_NUMBER", 7)


def test_env_int_refuses_a_value_below_the_minimum(monkeypatch):
    monkeypatch.setenv("TF_NUMBER", "0")
    with pytest.raises(ImproperlyConfigured, match=r"^TF_NUMBER must be at least 1, got 0"):
        env_int("TF_NUMBER", 7, minimum=1)


def test_env_int_accepts_the_minimum_itself(monkeypatch):
    monkeypatch.setenv("TF_NUMBER", "1")
    assert env_int("TF_NUMBER", 7, minimum=1) == 1


def test_env_float_reads_a_number_and_refuses_garbage(monkeypatch):
    monkeypatch.setenv("TF_FLOAT", "0.25")
    assert env_float("TF_FLOAT", 1.0, minimum=0.01) == 0.25
    monkeypatch.setenv("TF_FLOAT", "fast")
    with pytest.raises(ImproperlyConfigured, match=r"^TF_FLOAT must be a number"):
        env_float("TF_FLOAT", 1.0)


def test_env_list_splits_on_commas_and_drops_blanks(monkeypatch):
    monkeypatch.setenv("TF_HOSTS", " a.example.com, ,b.example.com,")
    assert env_list("TF_HOSTS", ["default"]) == ["a.example.com", "b.example.com"]


def test_env_list_returns_a_copy_of_the_default_when_unset(monkeypatch):
    monkeypatch.delenv("TF_HOSTS", raising=False)
    default = ["localhost"]
    hosts = env_list("TF_HOSTS", default)
    assert hosts == ["localhost"]
    hosts.append("evil.example.com")
    assert default == ["localhost"]


def test_env_str_treats_blank_as_unset(monkeypatch):
    monkeypatch.setenv("TF_TEXT", "  ")
    assert env_str("TF_TEXT", "fallback") == "fallback"


def test_env_secret_reads_the_variable(monkeypatch):
    monkeypatch.delenv("TF_SECRET_FILE", raising=False)
    monkeypatch.setenv("TF_SECRET", "s3cret")
    assert env_secret("TF_SECRET") == "s3cret"


def test_env_secret_prefers_the_file_named_by_name_file(monkeypatch, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("from-the-file\n")
    monkeypatch.setenv("TF_SECRET", "from-the-variable")
    monkeypatch.setenv("TF_SECRET_FILE", str(secret))
    assert env_secret("TF_SECRET") == "from-the-file"


def test_env_secret_refuses_an_unreadable_file_and_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("TF_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match=r"^TF_SECRET_FILE: cannot read"):
        env_secret("TF_SECRET")


def test_env_secret_uses_the_default_when_neither_is_set(monkeypatch):
    monkeypatch.delenv("TF_SECRET", raising=False)
    monkeypatch.delenv("TF_SECRET_FILE", raising=False)
    assert env_secret("TF_SECRET", "dev") == "dev"
