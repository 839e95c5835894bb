"""The Queues pages: the list with its create form, a queue's numbers, chart and settings, and
the actions on a queue (pause, resume, purge)."""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta

import pytest
from django.db.models import Count
from django.utils import timezone

from accounts.models import AuditLog
from jobs.models import Job, JobState
from queues.models import Queue
from tests.api.conftest import WORK_QUEUE, Engine
from tests.dashboard.conftest import htmx, post_form
from workers.models import QueueWorkerAssignment, Worker, WorkerStatus

pytestmark = pytest.mark.django_db

HX = {"HX-Request": "true"}
# A queue only the other organization has: "default" exists in both.
THEIRS = "globex-only"


@pytest.fixture
def engine(project, queue):
    return Engine(project)


@pytest.fixture
def their_queue(other_project):
    return Queue.objects.create(
        organization_id=other_project.organization_id, project=other_project, name=THEIRS
    )


def post(client, path, data=None, **extra):
    """post_form, after a page has given the client its CSRF cookie (a signed-in client's GET
    of /login is a redirect that sets none)."""
    if "csrftoken" not in client.cookies:
        client.get("/queues")
    return post_form(client, path, data, **extra)


def queue_named(project, name):
    return Queue.objects.for_project(project).filter(name=name).first()


def make_worker(project, name, queue, *, status=WorkerStatus.ONLINE):
    worker = Worker.objects.create(
        organization_id=project.organization_id, project=project, name=name, status=status
    )
    QueueWorkerAssignment.objects.create(
        organization_id=project.organization_id, queue=queue, worker=worker
    )
    return worker


def make_job(queue, state=JobState.PENDING, **fields):
    if state == JobState.PROCESSING:
        fields.update(worker_id=uuid.uuid4(), lease_token=uuid.uuid4())
    return Job.objects.create(
        organization_id=queue.organization_id,
        project=queue.project,
        queue=queue,
        job_type="hello",
        state=state,
        **fields,
    )


def jobs_in(queue):
    return dict(
        Job.objects.for_project(queue.project)
        .filter(queue=queue)
        .values_list("state")
        .annotate(n=Count("pk"))
    )


def field_error(html: str, field: str) -> str:
    """The error shown under the form input named ``field`` (its ``…-error`` paragraph)."""
    match = re.search(rf'<p class="field-error" id="[a-z]+-{field}-error">([^<]*)</p>', html)
    assert match, f"no error next to {field}"
    return match.group(1)


def live_regions(html: str) -> list[str]:
    """The regions a page polls, in order."""
    return re.findall(r'data-live hx-get="\?partial=(\w+)"', html)


def toast(response) -> str:
    return json.loads(response["HX-Trigger"])["tf:toast"]["message"]


def row_of(html: str, name: str) -> str:
    start = html.index(f'data-queue="{name}"')
    return html[html.rindex("<tr", 0, start) : html.index("</tr>", start)]


def cell_values(row: str) -> list[str]:
    return [
        re.sub(r"<[^>]+>", "", cell).strip()
        for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    ]


def settings_form(queue: Queue, **changes: str) -> dict[str, str]:
    """The settings form as the page posts it: every field, with ``changes``."""
    values = {
        "name": queue.name,
        "priority": str(queue.priority),
        "max_concurrency": "" if queue.max_concurrency is None else str(queue.max_concurrency),
        "max_attempts": str(queue.max_attempts),
        "timeout_seconds": str(queue.timeout_seconds),
        "rate_limit_per_second": ""
        if queue.rate_limit_per_second is None
        else str(queue.rate_limit_per_second),
        "retention_days": str(queue.retention_days),
        "backoff_base_seconds": str(queue.backoff_base_seconds),
        "backoff_max_seconds": str(queue.backoff_max_seconds),
        "backoff_multiplier": str(queue.backoff_multiplier),
        "backoff_jitter": queue.backoff_jitter,
    }
    return {**values, **changes}


# --- The list ---------------------------------------------------------------------------------


@pytest.mark.covers("dashboard:queues", "happy")
def test_the_list_shows_each_queue_with_depth_health_and_workers(
    signed_in, member, project, queue, make_queue
):
    emails = make_queue("emails", paused=True)
    for _ in range(3):
        make_job(emails)
    make_job(emails, JobState.SCHEDULED, run_at=timezone.now() + timedelta(hours=1))
    make_job(emails, JobState.PROCESSING)
    make_job(emails, JobState.DEAD)
    make_worker(project, "w-online", emails)
    make_worker(project, "w-offline", emails, status=WorkerStatus.OFFLINE)

    response = signed_in(member).get("/queues")

    assert response.status_code == 200
    html = response.content.decode()
    row = row_of(html, "emails")
    assert 'href="/queues/emails"' in row
    assert '<span class="badge paused">paused</span>' in row
    # pending, scheduled, blocked, running, dead, oldest pending, per min, failing, workers
    cells = cell_values(row)
    assert cells[:5] == ["3", "1", "0", "1", "1"]
    assert cells[5] != "—"  # three pending jobs: the oldest has an age
    assert cells[8] == "1"  # one online worker serves it; the offline one does not count
    default_cells = cell_values(row_of(html, "default"))
    assert default_cells[:5] == ["0", "0", "0", "0", "0"]
    assert default_cells[5] == "—"
    assert "none" in default_cells[8]
    # A member may create a queue here.
    assert 'id="create-queue"' in html
    assert live_regions(html) == ["table"]


@pytest.mark.covers("dashboard:queues", "access")
def test_a_signed_out_visitor_is_sent_to_sign_in(client):
    response = client.get("/queues")
    assert response.status_code == 302
    assert response["Location"] == "/login?next=%2Fqueues"


@pytest.mark.covers("dashboard:queues", "access")
def test_a_viewer_sees_no_create_form_and_cannot_create(signed_in, viewer, project, queue):
    client = signed_in(viewer)
    page = client.get("/queues")
    assert page.status_code == 200
    assert b'<form method="post" action="/queues"' not in page.content
    assert b'id="create-queue"' not in page.content

    response = post(client, "/queues", {"name": "sneaky"})

    assert response.status_code == 403
    assert queue_named(project, "sneaky") is None


@pytest.mark.covers("dashboard:queues", "cross_tenant")
def test_the_list_never_shows_another_organizations_queues(signed_in, member, queue, their_queue):
    html = signed_in(member).get("/queues").content.decode()
    assert 'data-queue="default"' in html
    assert THEIRS not in html


def test_a_project_without_queues_explains_them_and_offers_the_form(
    signed_in, member, viewer, queue
):
    queue.delete()
    html = signed_in(member).get("/queues").content.decode()
    assert "A queue is a named line of jobs" in html
    assert 'id="create-queue"' in html
    viewer_html = signed_in(viewer).get("/queues").content.decode()
    assert "A queue is a named line of jobs" in viewer_html
    assert "ask a member or an admin" in viewer_html
    assert 'id="create-queue"' not in viewer_html


@pytest.mark.covers("dashboard:queues#table", "happy")
def test_the_table_region_alone_follows_the_backlog(signed_in, member, queue):
    client = signed_in(member)
    before = htmx(client, "/queues?partial=table")
    assert before.status_code == 200
    assert b"<html" not in before.content
    assert b'id="create-queue"' not in before.content
    assert cell_values(row_of(before.content.decode(), "default"))[0] == "0"
    make_job(queue)
    make_job(queue)
    after = htmx(client, "/queues?partial=table")
    assert cell_values(row_of(after.content.decode(), "default"))[0] == "2"


@pytest.mark.covers("dashboard:queues#table", "access")
def test_a_signed_out_poll_of_the_table_goes_to_sign_in(client):
    response = client.get("/queues?partial=table", headers=HX)
    assert response.status_code == 204
    assert response["HX-Redirect"] == "/login?next=%2Fqueues%3Fpartial%3Dtable"


@pytest.mark.covers("dashboard:queues#table", "cross_tenant")
def test_the_table_region_never_shows_another_organizations_queues(
    signed_in, member, queue, their_queue
):
    make_job(their_queue)
    region = htmx(signed_in(member), "/queues?partial=table").content.decode()
    assert 'data-queue="default"' in region
    assert THEIRS not in region


# --- Creating a queue -------------------------------------------------------------------------


@pytest.mark.covers("dashboard:queues", "happy")
def test_a_member_creates_a_queue_with_its_settings(signed_in, member, org, project, queue):
    response = post(
        signed_in(member),
        "/queues",
        {
            "name": "emails",
            "priority": "7",
            "max_concurrency": "20",
            "max_attempts": "8",
            "timeout_seconds": "60",
            "rate_limit_per_second": "",
            "retention_days": "14",
            "backoff_base_seconds": "2",
            "backoff_max_seconds": "600",
            "backoff_multiplier": "3",
            "backoff_jitter": "equal",
        },
    )

    assert response.status_code == 302
    assert response["Location"] == "/queues/emails"
    created = queue_named(project, "emails")
    assert (created.priority, created.max_concurrency, created.max_attempts) == (7, 20, 8)
    assert (created.timeout_seconds, created.retention_days) == (60, 14)
    assert created.rate_limit_per_second is None
    assert (created.backoff_base_seconds, created.backoff_max_seconds) == (2.0, 600.0)
    assert (created.backoff_multiplier, created.backoff_jitter) == (3.0, "equal")
    [audit] = AuditLog.objects.for_org(org).filter(action="queue.created")
    assert audit.target_id == "emails"
    assert audit.actor_user == member


def test_only_a_name_is_needed_and_the_rest_default(signed_in, member, project, queue):
    response = post(signed_in(member), "/queues", {"name": "bare", "priority": ""})
    assert response.status_code == 302
    created = queue_named(project, "bare")
    assert (created.priority, created.max_attempts, created.max_concurrency) == (5, 5, None)


def test_creating_over_htmx_answers_the_form_and_the_table_with_a_toast(
    signed_in, member, project, queue
):
    response = post(signed_in(member), "/queues", {"name": "reports"}, headers=HX)

    assert response.status_code == 200
    assert toast(response) == "Queue reports created."
    html = response.content.decode()
    assert html.lstrip().startswith('<section class="panel" id="create-queue"')
    assert 'href="/queues/reports">reports</a> created' in html
    # The table comes along out of band, with the new queue in it.
    assert 'id="queue-table"' in html and 'hx-swap-oob="true"' in html
    assert 'data-queue="reports"' in html
    assert "<html" not in html
    assert queue_named(project, "reports") is not None


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"name": "emails", "priority": "42"}, "priority", "less than or equal to 9"),
        ({"name": "my queue"}, "name", "Use 1-100 characters of A-Z a-z 0-9 _ . : - only."),
        ({"name": ""}, "name", "may not be blank"),
        ({"name": "x", "max_attempts": "lots"}, "max_attempts", "A valid integer is required."),
        ({"name": "x", "rate_limit_per_second": "0"}, "rate_limit_per_second", "greater than"),
        ({"name": "x", "backoff_multiplier": "0.5"}, "backoff_multiplier", "greater than"),
        ({"name": "x", "backoff_jitter": "some"}, "backoff_jitter", "not a valid choice"),
        ({"name": "..."}, "name", "only dots"),
    ],
)
def test_bad_input_is_refused_next_to_its_field(
    signed_in, member, project, queue, data, field, message
):
    response = post(signed_in(member), "/queues", data)

    assert response.status_code == 400
    html = response.content.decode()
    assert message in field_error(html, field)
    assert 'aria-invalid="true"' in html
    # The page is whole, with what was typed still in the form.
    assert 'data-queue="default"' in html
    assert f'value="{data["name"]}"' in html
    assert Queue.objects.for_project(project).count() == 1


def test_a_name_already_used_is_a_409_next_to_the_name(signed_in, member, project, queue):
    response = post(signed_in(member), "/queues", {"name": "default", "priority": "3"})

    assert response.status_code == 409
    assert field_error(response.content.decode(), "name") == (
        "A queue named &#x27;default&#x27; already exists in this project"
    )
    assert queue_named(project, "default").priority == 5


def test_a_service_rule_across_fields_is_shown_next_to_the_field_it_names(
    signed_in, member, project, queue
):
    data = {"name": "x", "backoff_base_seconds": "100", "backoff_max_seconds": "10"}
    response = post(signed_in(member), "/queues", data)

    assert response.status_code == 400
    html = response.content.decode()
    assert "Must be at least backoff.base_seconds (100.0)" in field_error(
        html, "backoff_max_seconds"
    )
    # The backoff section opens to show it.
    assert '<details class="collapsible" open>' in html
    assert queue_named(project, "x") is None


def test_bad_input_over_htmx_answers_the_form_with_its_errors(signed_in, member, project, queue):
    response = post(signed_in(member), "/queues", {"name": "a b"}, headers=HX)
    assert response.status_code == 200  # htmx swaps only a 2xx answer
    html = response.content.decode()
    assert html.lstrip().startswith('<section class="panel" id="create-queue"')
    assert "Use 1-100 characters" in field_error(html, "name")
    assert "HX-Trigger" not in response


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"name": "x" * 5000},
        {"name": "nul\x00byte"},
        {"name": "é"},
        {"name": "x", "priority": "9" * 2000},
        {"name": "x", "priority": "1e3"},
        {"name": "x", "rate_limit_per_second": "nan"},
        {"name": "x", "rate_limit_per_second": "inf"},
        {"name": "x", "timeout_seconds": "-1"},
        {"name": "x", "max_concurrency": "\x00"},
        {"name": "x", "backoff_base_seconds": "1e400"},
        {"name": "x", "retention_days": "  "},
        {"name": "x", "unknown": "ignored", "paused": "true"},
    ],
)
def test_no_input_makes_a_500(signed_in, member, project, queue, data):
    response = post(signed_in(member), "/queues", data)
    assert response.status_code in (302, 400)
    created = queue_named(project, "x")
    if response.status_code == 302:
        assert created is not None and not created.paused
    else:
        assert (
            b'class="field-error"' in response.content or b'class="alert error"' in response.content
        )


# --- The queue page ---------------------------------------------------------------------------


@pytest.mark.covers("dashboard:queue", "happy")
def test_a_member_sees_a_queues_numbers_chart_and_settings(
    signed_in, member, project, queue, make_queue
):
    queue.max_concurrency = 12
    queue.save()
    for _ in range(2):
        make_job(queue)
    make_job(queue, JobState.SCHEDULED, run_at=timezone.now() + timedelta(minutes=5))
    make_worker(project, "w1", queue)

    response = signed_in(member).get("/queues/default")

    assert response.status_code == 200
    html = response.content.decode()
    assert re.search(r'data-state="pending".*?data-count="2"', html, re.S)
    assert re.search(r'data-state="scheduled".*?data-count="1"', html, re.S)
    assert 'data-workers-online="1"' in html
    assert '<svg class="chart"' in html
    # The settings form holds the queue's values, and the actions are offered.
    assert 'name="max_concurrency" type="text" value="12"' in html
    assert 'name="backoff_max_seconds" type="text" value="3600"' in html
    assert 'action="/queues/default/pause"' in html
    assert 'action="/queues/default/purge"' in html
    assert live_regions(html) == ["stats", "chart"]
    assert "Submit a job to default" not in html


def test_an_empty_queue_shows_how_to_submit_and_run_its_first_job(signed_in, member, make_queue):
    make_queue("emails")
    html = signed_in(member).get("/queues/emails").content.decode()
    assert "Submit a job to emails" in html
    assert "&quot;queue&quot;: &quot;emails&quot;" in html
    assert "taskforge-worker --queues emails:1" in html


def test_an_unknown_queue_is_the_404_page(signed_in, member, queue):
    response = signed_in(member).get("/queues/nope")
    assert response.status_code == 404
    assert b"Not found" in response.content


@pytest.mark.covers("dashboard:queue", "access")
def test_a_signed_out_visitor_of_a_queue_is_sent_to_sign_in(client, queue):
    response = client.get("/queues/default")
    assert response.status_code == 302
    assert response["Location"] == "/login?next=%2Fqueues%2Fdefault"


@pytest.mark.covers("dashboard:queue", "access")
def test_a_viewer_sees_the_settings_but_no_controls_and_cannot_save(
    signed_in, viewer, org, project, queue
):
    client = signed_in(viewer)
    html = client.get("/queues/default").content.decode()
    assert "Max concurrency" in html and "no cap" in html
    assert "<form" not in html.split('<main id="main">')[1]
    assert "Purge" not in html

    response = post(client, "/queues/default", settings_form(queue, priority="1"))

    assert response.status_code == 403
    assert queue_named(project, "default").priority == 5
    assert not AuditLog.objects.for_org(org).filter(action="queue.updated").exists()


@pytest.mark.covers("dashboard:queue", "cross_tenant")
def test_another_organizations_queue_is_a_404(
    signed_in, member, org, their_queue, other_project, cross_tenant_denials
):
    client = signed_in(member)
    assert client.get(f"/queues/{THEIRS}").status_code == 404
    response = post(client, f"/queues/{THEIRS}", settings_form(their_queue, priority="1"))
    assert response.status_code == 404
    assert b"Not found" in response.content
    assert queue_named(other_project, THEIRS).priority == 5


# --- Its live regions -------------------------------------------------------------------------


@pytest.mark.covers("dashboard:queue#stats", "happy")
def test_the_stats_region_alone_follows_the_queue(signed_in, member, project, queue):
    client = signed_in(member)
    make_job(queue)
    before = htmx(client, "/queues/default?partial=stats")
    assert before.status_code == 200
    html = before.content.decode()
    assert html.lstrip().startswith('<section id="stats"')
    assert "<html" not in html and 'id="settings"' not in html
    assert re.search(r'data-state="pending".*?data-count="1"', html, re.S)
    assert 'data-workers-online="0"' in html
    assert "No online worker serves this queue" in html
    make_job(queue)
    make_worker(project, "w1", queue)
    after = htmx(client, "/queues/default?partial=stats").content.decode()
    assert re.search(r'data-state="pending".*?data-count="2"', after, re.S)
    assert 'data-workers-online="1"' in after


@pytest.mark.covers("dashboard:queue#stats", "access")
@pytest.mark.covers("dashboard:queue#chart", "access")
def test_signed_out_polls_of_the_queue_regions_go_to_sign_in(client, queue):
    for region in ("stats", "chart"):
        response = client.get(f"/queues/default?partial={region}", headers=HX)
        assert response.status_code == 204
        assert response["HX-Redirect"].startswith("/login?next=%2Fqueues%2Fdefault")


@pytest.mark.covers("dashboard:queue#stats", "cross_tenant")
@pytest.mark.covers("dashboard:queue#chart", "cross_tenant")
def test_another_organizations_queue_regions_are_404(signed_in, member, their_queue):
    client = signed_in(member)
    for region in ("stats", "chart"):
        assert htmx(client, f"/queues/{THEIRS}?partial={region}").status_code == 404


@pytest.mark.covers("dashboard:queue#chart", "happy")
def test_the_chart_region_counts_what_the_queue_finished(signed_in, member, project, engine):
    engine.succeeded()
    engine.succeeded()
    engine.dead()
    region = htmx(signed_in(member), f"/queues/{WORK_QUEUE}?partial=chart&window=24h")
    assert region.status_code == 200
    html = region.content.decode()
    assert html.lstrip().startswith('<section class="panel" id="chart"')
    assert "2 succeeded and 1 failed" in html
    assert 'aria-current="true">24h' in html
    # Another queue of the project finished nothing.
    other = htmx(signed_in(member), "/queues/default?partial=chart").content.decode()
    assert "0 succeeded and 0 failed" in other


def test_an_unknown_region_is_a_404(signed_in, member, queue):
    assert signed_in(member).get("/queues/default?partial=settings").status_code == 404


# --- Settings ---------------------------------------------------------------------------------


@pytest.mark.covers("dashboard:queue", "happy")
def test_saving_the_settings_persists_and_audits_them(signed_in, member, org, project, queue):
    form = settings_form(
        queue, priority="8", max_concurrency="3", rate_limit_per_second="0.5", backoff_jitter="none"
    )
    response = post(signed_in(member), "/queues/default", form)

    assert response.status_code == 302
    assert response["Location"] == "/queues/default"
    saved = queue_named(project, "default")
    assert (saved.priority, saved.max_concurrency, saved.rate_limit_per_second) == (8, 3, 0.5)
    assert saved.backoff_jitter == "none"
    [audit] = AuditLog.objects.for_org(org).filter(action="queue.updated")
    assert audit.actor_user == member
    assert set(audit.metadata["changes"]) == {
        "priority", "max_concurrency", "rate_limit_per_second", "backoff_jitter"
    }  # fmt: skip


def test_emptying_a_cap_removes_it_and_emptying_a_required_field_keeps_it(
    signed_in, member, project, queue
):
    queue.max_concurrency = 4
    queue.rate_limit_per_second = 2.0
    queue.save()
    form = settings_form(queue, max_concurrency="", rate_limit_per_second=" ", priority="")
    response = post(signed_in(member), "/queues/default", form)
    assert response.status_code == 302
    saved = queue_named(project, "default")
    assert (saved.max_concurrency, saved.rate_limit_per_second, saved.priority) == (None, None, 5)


def test_saving_over_htmx_answers_the_settings_region_with_a_toast(
    signed_in, member, project, queue
):
    response = post(
        signed_in(member), "/queues/default", settings_form(queue, retention_days="30"), headers=HX
    )
    assert response.status_code == 200
    assert toast(response) == "Settings saved."
    html = response.content.decode()
    assert html.lstrip().startswith('<section class="panel" id="settings"')
    assert 'name="retention_days" type="text" value="30"' in html
    assert queue_named(project, "default").retention_days == 30


def test_renaming_over_htmx_sends_the_browser_to_the_new_url(signed_in, member, project, queue):
    response = post(
        signed_in(member), "/queues/default", settings_form(queue, name="main"), headers=HX
    )
    assert response["HX-Redirect"] == "/queues/main"
    assert queue_named(project, "main") is not None
    plain = post(signed_in(member), "/queues/main", settings_form(queue, name="primary"))
    assert plain["Location"] == "/queues/primary"


def test_bad_settings_are_shown_next_to_their_fields_and_nothing_changes(
    signed_in, member, org, project, queue, make_queue
):
    make_queue("emails")
    client = signed_in(member)
    bad = post(client, "/queues/default", settings_form(queue, priority="42", max_attempts="0"))
    assert bad.status_code == 400
    html = bad.content.decode()
    assert "less than or equal to 9" in field_error(html, "priority")
    assert "greater than or equal to 1" in field_error(html, "max_attempts")
    assert 'value="42"' in html
    assert '<section id="stats"' in html  # the whole page, not a fragment

    taken = post(client, "/queues/default", settings_form(queue, name="emails"))
    assert taken.status_code == 409
    assert "already exists" in field_error(taken.content.decode(), "name")

    over_htmx = post(
        client, "/queues/default", settings_form(queue, backoff_max_seconds="0.5"), headers=HX
    )
    assert over_htmx.status_code == 200
    assert "at least" in field_error(over_htmx.content.decode(), "backoff_max_seconds")

    assert queue_named(project, "default").priority == 5
    assert queue_named(project, "default").backoff_max_seconds == 3600
    assert not AuditLog.objects.for_org(org).filter(action="queue.updated").exists()


# --- Pause and resume -------------------------------------------------------------------------


@pytest.mark.covers("dashboard:queue-pause", "happy")
def test_pausing_over_htmx_answers_the_stats_region_with_a_toast(
    signed_in, member, org, project, queue
):
    response = post(signed_in(member), "/queues/default/pause", headers=HX)

    assert response.status_code == 200
    assert toast(response) == "Queue default paused: no new jobs start."
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="stats"')
    assert 'data-paused="true"' in html
    assert 'action="/queues/default/resume"' in html
    assert queue_named(project, "default").paused
    [audit] = AuditLog.objects.for_org(org).filter(action="queue.paused")
    assert audit.actor_user == member


def test_pausing_with_a_plain_form_redirects_back(signed_in, member, project, queue):
    response = post(signed_in(member), "/queues/default/pause")
    assert response.status_code == 302
    assert response["Location"] == "/queues/default"
    assert queue_named(project, "default").paused
    html = signed_in(member).get("/queues").content.decode()
    assert '<span class="badge paused">paused</span>' in row_of(html, "default")


@pytest.mark.covers("dashboard:queue-resume", "happy")
def test_resuming_over_htmx_answers_the_stats_region_with_a_toast(
    signed_in, member, org, project, make_queue
):
    make_queue("held", paused=True)
    response = post(signed_in(member), "/queues/held/resume", headers=HX)

    assert response.status_code == 200
    assert toast(response) == "Queue held resumed."
    html = response.content.decode()
    assert 'data-paused="false"' in html
    assert 'action="/queues/held/pause"' in html
    assert not queue_named(project, "held").paused
    assert AuditLog.objects.for_org(org).filter(action="queue.resumed").count() == 1


@pytest.mark.covers("dashboard:queue-pause", "access")
@pytest.mark.covers("dashboard:queue-resume", "access")
def test_a_viewer_can_neither_pause_nor_resume(signed_in, viewer, project, queue, make_queue):
    make_queue("held", paused=True)
    client = signed_in(viewer)
    html = client.get("/queues/default").content.decode()
    assert "/pause" not in html and "/resume" not in html

    assert post(client, "/queues/default/pause", headers=HX).status_code == 403
    assert post(client, "/queues/held/resume").status_code == 403

    assert not queue_named(project, "default").paused
    assert queue_named(project, "held").paused


@pytest.mark.covers("dashboard:queue-pause", "access")
@pytest.mark.covers("dashboard:queue-resume", "access")
@pytest.mark.covers("dashboard:queue-purge", "access")
def test_signed_out_actions_go_to_sign_in_and_change_nothing(client, project, queue):
    make_job(queue)
    for action in ("pause", "resume", "purge"):
        response = client.post(f"/queues/default/{action}")
        assert response.status_code == 302
        assert response["Location"].startswith("/login?next=")
    assert not queue_named(project, "default").paused
    assert jobs_in(queue) == {JobState.PENDING: 1}


@pytest.mark.covers("dashboard:queue-pause", "cross_tenant")
@pytest.mark.covers("dashboard:queue-resume", "cross_tenant")
def test_another_organizations_queue_cannot_be_paused_or_resumed(
    signed_in, member, other_project, their_queue
):
    client = signed_in(member)
    assert post(client, f"/queues/{THEIRS}/pause").status_code == 404
    assert not queue_named(other_project, THEIRS).paused
    their_queue.paused = True
    their_queue.save()
    assert post(client, f"/queues/{THEIRS}/resume", headers=HX).status_code == 404
    assert queue_named(other_project, THEIRS).paused


def test_actions_take_only_posts(signed_in, member, queue):
    client = signed_in(member)
    for action in ("pause", "resume", "purge"):
        assert client.get(f"/queues/default/{action}").status_code == 405


# --- Purge ------------------------------------------------------------------------------------


@pytest.mark.covers("dashboard:queue-purge", "happy")
def test_purging_removes_the_waiting_jobs_the_confirmation_counted(
    signed_in, member, org, project, queue
):
    for _ in range(3):
        make_job(queue)
    make_job(queue, JobState.SCHEDULED, run_at=timezone.now() + timedelta(hours=1))
    make_job(queue, JobState.PROCESSING)
    make_job(queue, JobState.SUCCEEDED)
    client = signed_in(member)

    page = client.get("/queues/default").content.decode()
    dialog = page[page.index('<dialog id="purge-dialog"') : page.index("</dialog>")]
    assert (
        "This deletes <strong data-purge-total>4</strong> waiting jobs: 3 pending and 1 scheduled."
        in dialog
    )
    assert "Purge 4 jobs" in dialog

    response = post(client, "/queues/default/purge", headers=HX)

    assert response.status_code == 200
    assert toast(response) == "Purged 4 waiting jobs of default."
    html = response.content.decode()
    assert re.search(r'data-state="pending".*?data-count="0"', html, re.S)
    assert jobs_in(queue) == {JobState.PROCESSING: 1, JobState.SUCCEEDED: 1}
    [audit] = AuditLog.objects.for_org(org).filter(action="queue.purged")
    assert audit.metadata == {"deleted": 4}
    assert audit.actor_user == member


def test_purging_with_a_plain_form_redirects_back(signed_in, member, queue):
    make_job(queue)
    response = post(signed_in(member), "/queues/default/purge")
    assert response.status_code == 302
    assert response["Location"] == "/queues/default"
    assert jobs_in(queue) == {}


def test_the_confirmation_says_a_capped_count_is_capped(signed_in, member, queue, settings):
    settings.TASKFORGE_DASHBOARD_EXACT_COUNT_LIMIT = 2
    for _ in range(3):
        make_job(queue)
    page = signed_in(member).get("/queues/default").content.decode()
    dialog = page[page.index('<dialog id="purge-dialog"') : page.index("</dialog>")]
    # Past the cap the number is "at least" (or the planner's estimate): never a fake exact.
    assert re.search(r"<strong data-purge-total>[^<]*\+</strong>", dialog) or "≈" in dialog


@pytest.mark.covers("dashboard:queue-purge", "access")
def test_a_viewer_sees_no_purge_and_cannot_purge(signed_in, viewer, org, queue):
    make_job(queue)
    client = signed_in(viewer)
    assert "purge-dialog" not in client.get("/queues/default").content.decode()
    response = post(client, "/queues/default/purge", headers=HX)
    assert response.status_code == 403
    assert jobs_in(queue) == {JobState.PENDING: 1}
    assert not AuditLog.objects.for_org(org).filter(action="queue.purged").exists()


@pytest.mark.covers("dashboard:queue-purge", "cross_tenant")
def test_another_organizations_queue_cannot_be_purged(signed_in, member, queue, their_queue):
    make_job(their_queue)
    make_job(queue)
    response = post(signed_in(member), f"/queues/{THEIRS}/purge")
    assert response.status_code == 404
    assert jobs_in(their_queue) == {JobState.PENDING: 1}
    assert jobs_in(queue) == {JobState.PENDING: 1}
