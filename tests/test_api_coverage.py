"""Every API endpoint must have its access trio: a happy path, a wrong role or scope, and an
outsider from another organization.

Tests declare what they cover with ``@pytest.mark.covers("jobs:detail", "happy", ...)``.
This test walks the URLconf and reads the markers from the test sources (statically, so it
holds under ``-k`` and xdist), and fails naming each endpoint and what it lacks.
"""

from __future__ import annotations

import ast
from pathlib import Path

from django.urls import URLPattern, URLResolver, get_resolver

TESTS = Path(__file__).resolve().parent
KINDS = ("happy", "access", "cross_tenant")

# Endpoints that are not tenant-scoped need only what applies to them, and say why.
EXEMPT: dict[str, set[str]] = {
    # Before authentication: no tenant to cross, no role to lack.
    "accounts:signup": {"access", "cross_tenant"},
    "accounts:token": {"access", "cross_tenant"},
    "accounts:token-refresh": {"access", "cross_tenant"},
    "accounts:logout": {"access", "cross_tenant"},
}


def api_url_names() -> set[str]:
    names: set[str] = set()

    def walk(patterns: list[URLPattern | URLResolver], prefix: str, namespace: str | None) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route, pattern.namespace or namespace)
            elif route.startswith("api/v1/") and pattern.name:
                names.add(f"{namespace}:{pattern.name}" if namespace else pattern.name)

    walk(get_resolver().url_patterns, "", None)
    return names


def declared_coverage(root: Path = TESTS) -> dict[str, set[str]]:
    """{url name: kinds} from every ``pytest.mark.covers(name, *kinds)`` in the test sources."""
    covered: dict[str, set[str]] = {}
    for path in root.rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "covers"
                and node.args
                and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args)
            ):
                name, *kinds = (a.value for a in node.args)  # type: ignore[attr-defined]
                covered.setdefault(name, set()).update(kinds)
    return covered


def missing_coverage(names: set[str], covered: dict[str, set[str]]) -> dict[str, list[str]]:
    missing = {}
    for name in sorted(names):
        lacking = [k for k in KINDS if k not in covered.get(name, set()) | EXEMPT.get(name, set())]
        if lacking:
            missing[name] = lacking
    return missing


def test_every_api_endpoint_has_its_access_trio():
    names = api_url_names()
    assert len(names) > 20  # the walk found the API
    missing = missing_coverage(names, declared_coverage())
    assert not missing, "endpoints lacking tests (mark them with pytest.mark.covers): " + str(
        missing
    )


def test_markers_name_only_real_endpoints_and_kinds():
    names = api_url_names()
    for name, kinds in declared_coverage().items():
        if name.startswith("dashboard:"):
            continue  # the dashboard's routes: tests/test_dashboard_coverage.py
        assert name in names, f"covers() names an unknown endpoint {name!r}"
        assert kinds <= set(KINDS), f"covers({name!r}) uses unknown kinds {kinds - set(KINDS)}"


def test_the_checker_reports_what_a_test_file_lacks(tmp_path):
    (tmp_path / "test_x.py").write_text(
        'import pytest\n@pytest.mark.covers("jobs:detail", "happy", "access")\ndef test_a(): pass\n'
    )
    covered = declared_coverage(tmp_path)
    assert covered == {"jobs:detail": {"happy", "access"}}
    assert missing_coverage({"jobs:detail"}, covered) == {"jobs:detail": ["cross_tenant"]}
