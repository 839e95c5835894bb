"""Every dashboard route and every live region of it must have its access trio.

Like tests/test_api_coverage.py for the API: tests declare what they cover with
``@pytest.mark.covers("dashboard:jobs", "happy")``, and a page's live region (``?partial=``)
as ``covers("dashboard:jobs#table", ...)``. This test walks the URLconf for the ``dashboard``
namespace, reads the regions each page declares (``dashboard_page(partials=...)``), and fails
naming each route or region and what it lacks:

* happy: a signed-in member gets the page or region with its data (or the action's effect);
* access: a signed-out visitor is sent to the sign-in page (reads), a viewer is refused with
  403 and nothing changes (writes);
* cross_tenant: another organization's object is a 404 page, and lists never show its rows.
"""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, get_resolver

from tests.test_api_coverage import KINDS, declared_coverage, missing_coverage

# The doors before sign-in have no tenant to cross and no role to lack.
EXEMPT: dict[str, set[str]] = {
    "dashboard:login": {"access", "cross_tenant"},
    "dashboard:signup": {"access", "cross_tenant"},
    "dashboard:logout": {"access", "cross_tenant"},
}


def dashboard_targets() -> set[str]:
    """Every dashboard route name, and ``name#region`` for each live region it serves."""
    targets: set[str] = set()

    def walk(patterns: list[URLPattern | URLResolver], namespace: str | None) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, pattern.namespace or namespace)
            elif namespace == "dashboard" and pattern.name:
                name = f"dashboard:{pattern.name}"
                targets.add(name)
                for region in getattr(pattern.callback, "dashboard_partials", ()):
                    targets.add(f"{name}#{region}")

    walk(get_resolver().url_patterns, None)
    return targets


def test_every_dashboard_route_and_region_has_its_access_trio():
    targets = dashboard_targets()
    assert "dashboard:overview#counters" in targets  # the walk found pages and their regions
    missing = {
        name: lacking
        for name, lacking in missing_coverage(targets, declared_coverage()).items()
        if set(lacking) - EXEMPT.get(name, set())
    }
    assert not missing, "dashboard routes lacking tests (pytest.mark.covers): " + str(missing)


def test_markers_name_only_real_routes_and_kinds():
    targets = dashboard_targets()
    for name, kinds in declared_coverage().items():
        if name.startswith("dashboard:"):
            assert name in targets, f"covers() names an unknown dashboard route {name!r}"
            assert kinds <= set(KINDS), f"covers({name!r}) uses unknown kinds"


def test_every_dashboard_view_is_behind_the_sign_in():
    """A page added without ``dashboard_page`` would serve anyone: only the doors may."""
    doors = {"login", "signup", "logout"}
    resolver = get_resolver()
    unguarded = [
        pattern.name
        for resolver_ in resolver.url_patterns
        if isinstance(resolver_, URLResolver) and resolver_.namespace == "dashboard"
        for pattern in resolver_.url_patterns
        if isinstance(pattern, URLPattern)
        and pattern.name not in doors
        and not hasattr(pattern.callback, "dashboard_partials")
    ]
    assert not unguarded, f"dashboard views without dashboard_page: {unguarded}"
