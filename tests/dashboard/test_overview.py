"""The Overview page and its live regions: counters, chart, queue health, failures."""

from __future__ import annotations

import re

import pytest

from tests.api.conftest import Engine
from tests.dashboard.conftest import htmx

pytestmark = pytest.mark.django_db


def counter(content: bytes, state: str) -> int:
    match = re.search(rf'data-state="{state}".*?data-count="(\d+)"', content.decode(), re.S)
    assert match, f"no {state} counter"
    return int(match.group(1))


@pytest.fixture
def busy_project(project, queue, make_queue):
    """Our project with jobs in several states, and a failure with a recognisable message."""
    engine = Engine(project)
    make_queue("emails")
    for _ in range(3):
        engine.submit(queue="emails", job_type="send")
    engine.succeeded()
    engine.dead(error="SMTP refused recipient 4711")
    return engine


@pytest.mark.covers("dashboard:overview", "happy")
def test_the_overview_shows_counts_chart_queues_and_failures(signed_in, member, busy_project):
    page = signed_in(member).get("/")
    assert page.status_code == 200
    content = page.content
    assert counter(content, "pending") == 3
    assert counter(content, "succeeded") == 1
    assert counter(content, "dead") == 1
    assert b"emails" in content
    assert b"SMTP refused recipient" in content
    assert b'<svg class="chart"' in content
    # Every live region is marked for polling, and only those.
    assert len(re.findall(rb"\sdata-live\s", content)) == 4


@pytest.mark.covers("dashboard:overview#counters", "happy")
def test_the_counters_region_alone_changes_as_jobs_arrive(signed_in, member, busy_project):
    client = signed_in(member)
    before = htmx(client, "/?partial=counters")
    assert before.status_code == 200
    assert b"<html" not in before.content
    assert b'id="counters"' in before.content
    busy_project.submit(queue="emails")
    after = htmx(client, "/?partial=counters")
    assert counter(after.content, "pending") == counter(before.content, "pending") + 1


@pytest.mark.covers("dashboard:overview#chart", "happy")
def test_the_chart_region_counts_what_finished(signed_in, member, busy_project):
    region = htmx(signed_in(member), "/?partial=chart&window=24h")
    assert region.status_code == 200
    assert b'id="chart"' in region.content
    assert b"1 succeeded and 1 failed" in region.content
    assert b'aria-current="true">24h' in region.content


@pytest.mark.covers("dashboard:overview#queues", "happy")
def test_the_queue_health_region_lists_the_projects_queues(signed_in, member, busy_project):
    region = htmx(signed_in(member), "/?partial=queues")
    assert region.status_code == 200
    assert b"/queues/emails" in region.content
    assert b"/queues/default" in region.content


@pytest.mark.covers("dashboard:overview#failures", "happy")
def test_the_failures_region_groups_by_message(signed_in, member, project, busy_project):
    busy_project.dead(error="SMTP refused recipient 99")
    region = htmx(signed_in(member), "/?partial=failures")
    assert region.status_code == 200
    # Two failures differing only in a number are one group of two.
    assert region.content.count(b"SMTP refused recipient") == 1


@pytest.mark.covers("dashboard:overview#counters", "access")
@pytest.mark.covers("dashboard:overview#chart", "access")
@pytest.mark.covers("dashboard:overview#queues", "access")
@pytest.mark.covers("dashboard:overview#failures", "access")
@pytest.mark.parametrize("region", ["counters", "chart", "queues", "failures"])
def test_a_signed_out_poll_gets_no_region(client, busy_project, region):
    response = htmx(client, f"/?partial={region}")
    assert response.status_code == 204
    assert response["HX-Redirect"].startswith("/login")
    assert b"emails" not in response.content


def test_an_unknown_region_is_a_404(signed_in, member):
    assert signed_in(member).get("/?partial=nonsense").status_code == 404


@pytest.mark.covers("dashboard:overview", "cross_tenant")
@pytest.mark.covers("dashboard:overview#counters", "cross_tenant")
@pytest.mark.covers("dashboard:overview#chart", "cross_tenant")
@pytest.mark.covers("dashboard:overview#queues", "cross_tenant")
@pytest.mark.covers("dashboard:overview#failures", "cross_tenant")
def test_the_overview_never_counts_another_organizations_jobs(
    signed_in, member, project, queue, other_project, other_queue, make_queue
):
    outsider = Engine(other_project)
    make_queue("their-secret-queue", project=other_project)
    for _ in range(4):
        outsider.submit()
    outsider.succeeded()
    outsider.dead(error="their private failure")
    client = signed_in(member)
    page = client.get("/?window=24h")
    assert counter(page.content, "pending") == 0
    assert counter(page.content, "succeeded") == 0
    assert counter(page.content, "dead") == 0
    for region in ("counters", "chart", "queues", "failures"):
        content = htmx(client, f"/?partial={region}&window=24h").content
        assert b"their-secret-queue" not in content
        assert b"their private failure" not in content
    assert b"0 succeeded and 0 failed" in htmx(client, "/?partial=chart&window=24h").content


def test_an_empty_project_tells_a_new_user_how_to_submit_a_job(signed_in, member, queue):
    page = signed_in(member).get("/")
    content = page.content.decode()
    assert "Submit your first job" in content
    assert "http://testserver/api/v1/jobs" in content
    assert '"queue": "default"' in content.replace("&quot;", '"')
    assert "taskforge-worker --queues default:1" in content


def test_a_viewer_reads_the_overview(signed_in, viewer, busy_project):
    page = signed_in(viewer).get("/")
    assert page.status_code == 200
    assert b"Read-only" in page.content
