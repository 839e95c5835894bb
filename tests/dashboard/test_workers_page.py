"""The Workers page: status, heartbeat age, load and queues of the project's workers; drain."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from jobs import queries
from jobs.models import Job, JobState
from tests.conftest import bearer
from tests.dashboard.conftest import htmx, post_form
from workers import views
from workers.models import QueueWorkerAssignment, Worker, WorkerStatus

pytestmark = pytest.mark.django_db


def make_worker(project, name, *, status=WorkerStatus.ONLINE, capacity=4, seen_ago=0, **fields):
    return Worker.objects.create(
        organization_id=project.organization_id,
        project=project,
        name=name,
        status=status,
        capacity=capacity,
        last_heartbeat=timezone.now() - timedelta(seconds=seen_ago),
        **fields,
    )


def assign(worker, queue, weight=1, active=True):
    return QueueWorkerAssignment.objects.create(
        organization_id=worker.organization_id,
        queue=queue,
        worker=worker,
        weight=weight,
        is_active=active,
    )


def make_job(queue, *, worker=None, state=JobState.PROCESSING):
    held = state == JobState.PROCESSING
    return Job.objects.create(
        organization_id=queue.organization_id,
        project=queue.project,
        queue=queue,
        job_type="hello",
        state=state,
        worker_id=worker.pk if worker else None,
        lease_token=uuid.uuid4() if held else None,
    )


def row_of(html: str, worker) -> str:
    """The <tr> of ``worker`` in a page or region."""
    start = html.index(f'data-worker="{worker.pk}"')
    return html[html.rindex("<tr", 0, start) : html.index("</tr>", start)]


def drain_url(worker) -> str:
    return f"/workers/{worker.pk}/drain"


def drain(client, worker_or_url, **extra):
    """POST the page's drain form (the page first, as a browser would: it sets the CSRF cookie)."""
    client.get("/workers")
    url = worker_or_url if isinstance(worker_or_url, str) else drain_url(worker_or_url)
    return post_form(client, url, **extra)


def status_of(worker) -> str:
    return Worker.objects.all_tenants().values_list("status", flat=True).get(pk=worker.pk)


# --- The page ---------------------------------------------------------------------------------


@pytest.mark.covers("dashboard:workers", "happy")
def test_a_member_sees_each_worker_with_status_load_queues_and_type(
    signed_in, member, project, queue, make_queue
):
    emails = make_queue("emails")
    busy = make_worker(project, "busy-1", capacity=8, worker_type="specialized_io")
    assign(busy, queue, weight=3)
    assign(busy, emails, weight=1, active=False)
    make_job(queue, worker=busy)
    make_job(queue, worker=busy)
    make_job(queue, worker=busy, state=JobState.SUCCEEDED)

    response = signed_in(member).get("/workers")

    assert response.status_code == 200
    html = response.content.decode()
    row = row_of(html, busy)
    assert "busy-1" in row
    assert 'class="badge status-online"' in row
    assert 'data-running="2">2 / 8<' in row
    assert '>default</a> <span class="muted">\u00d73</span>' in row
    # The inactive assignment is there, muted and said to be inactive.
    assert 'class="muted" title="Inactive' in row and ">emails</a>" in row and "(inactive)" in row
    assert row.index(">default</a>") < row.index(">emails</a>")
    assert ">I/O-bound</td>" in row
    assert "<time" in row
    # A member may drain it, behind a confirmation naming its running jobs.
    assert f'action="/workers/{busy.pk}/drain"' in row
    assert "It finishes its 2 running jobs and takes no new ones." in row


def test_running_counts_only_the_processing_jobs_each_worker_holds(
    signed_in, member, project, queue, other_queue
):
    first = make_worker(project, "first", capacity=3)
    second = make_worker(project, "second", capacity=5)
    make_job(queue, worker=first)
    make_job(queue, worker=first, state=JobState.SUCCEEDED)
    make_job(queue, worker=second)
    make_job(queue, worker=second)
    make_job(queue, worker=second)
    make_job(queue, state=JobState.PENDING)
    # Another organization's processing job naming our worker's id counts for nobody here.
    make_job(other_queue, worker=first)

    html = signed_in(member).get("/workers").content.decode()

    assert 'data-running="1">1 / 3<' in row_of(html, first)
    assert 'data-running="3">3 / 5<' in row_of(html, second)
    assert 'data-running="4" data-capacity="8"' in html
    assert 'data-count-online="2"' in html


def test_offline_workers_are_greyed_with_when_they_were_last_seen(signed_in, member, project):
    gone = make_worker(project, "gone", status=WorkerStatus.OFFLINE, seen_ago=3 * 3600)

    html = signed_in(member).get("/workers").content.decode()

    row = row_of(html, gone)
    assert 'class="offline"' in row
    assert "last seen <time" in row and "3 h ago</time>" in row
    assert 'class="badge status-offline"' in row
    assert "/drain" not in row
    assert 'data-count-offline="1"' in html


def test_a_silent_worker_not_yet_offline_shows_how_long_it_has_been_silent(
    signed_in, member, project, settings
):
    settings.TASKFORGE_WORKER_TIMEOUT_SECONDS = 30
    settings.TASKFORGE_LEASE_SECONDS = 60
    fine = make_worker(project, "fine", seen_ago=2)
    quiet = make_worker(project, "quiet", seen_ago=20)
    overdue = make_worker(project, "overdue", seen_ago=45)

    html = signed_in(member).get("/workers").content.decode()

    assert "silent" not in row_of(html, fine)
    assert '<span class="badge warn"' in row_of(html, quiet)
    assert ">silent 20 s</span>" in row_of(html, quiet)
    # Past the offline timeout and still online: the dispatcher should have acted.
    assert '<span class="badge bad"' in row_of(html, overdue)
    assert ">silent 45 s</span>" in row_of(html, overdue)
    assert "is a dispatcher running?" in row_of(html, overdue)


def test_online_workers_come_first_then_draining_then_offline_latest_seen_first(
    signed_in, member, project
):
    old = make_worker(project, "a-old", status=WorkerStatus.OFFLINE, seen_ago=7200)
    recent = make_worker(project, "b-recent", status=WorkerStatus.OFFLINE, seen_ago=60)
    draining = make_worker(project, "c-draining", status=WorkerStatus.DRAINING)
    zed = make_worker(project, "z-online", seen_ago=5)
    alpha = make_worker(project, "y-online", seen_ago=1)

    html = signed_in(member).get("/workers").content.decode()

    order = [alpha, zed, draining, recent, old]
    positions = [html.index(f'data-worker="{w.pk}"') for w in order]
    assert positions == sorted(positions)


def test_only_the_offline_workers_seen_last_are_listed_and_the_rest_counted(
    signed_in, member, project, monkeypatch
):
    monkeypatch.setattr(views, "OFFLINE_CAP", 2)
    live = make_worker(project, "live")
    seen = [
        make_worker(project, f"seen-{i}", status=WorkerStatus.OFFLINE, seen_ago=60 * i)
        for i in range(1, 5)
    ]

    html = signed_in(member).get("/workers").content.decode()

    listed = [w for w in [live, *seen] if f'data-worker="{w.pk}"' in html]
    assert listed == [live, seen[0], seen[1]]
    assert 'data-offline-hidden="2"' in html
    assert "2 more offline workers, last seen earlier, not listed." in html
    assert 'data-count-offline="4"' in html


def test_offline_workers_are_counted_up_to_a_bound(signed_in, member, project, monkeypatch):
    monkeypatch.setattr(views, "OFFLINE_CAP", 1)
    monkeypatch.setattr(views, "OFFLINE_COUNT_CAP", 3)
    for i in range(5):
        make_worker(project, f"gone-{i}", status=WorkerStatus.OFFLINE, seen_ago=60 * (i + 1))

    html = signed_in(member).get("/workers").content.decode()

    assert 'data-count-offline="3">3+</div>' in html
    assert "2+ more offline workers, last seen earlier, not listed." in html


def test_a_fleet_larger_than_the_list_says_how_many_are_not_shown(
    signed_in, member, project, monkeypatch
):
    monkeypatch.setattr(views, "LIVE_CAP", 2)
    workers = [make_worker(project, f"w{i}") for i in range(3)]

    html = signed_in(member).get("/workers").content.decode()

    assert [w for w in workers if f'data-worker="{w.pk}"' in html] == workers[:2]
    assert "Showing the first 2 of 3 online and draining workers" in html
    assert 'data-count-online="3"' in html
    assert 'data-capacity="12"' in html


def test_a_project_without_workers_says_how_to_start_one(signed_in, member, queue):
    html = signed_in(member).get("/workers").content.decode()

    assert "Start a worker" in html
    assert "taskforge-worker --queues default:1 myapp.handlers" in html
    assert "export TASKFORGE_URL=http://testserver " in html
    assert "<table" not in html


@pytest.mark.covers("dashboard:workers", "access")
def test_a_signed_out_visitor_is_sent_to_sign_in(client):
    response = client.get("/workers")
    assert response.status_code == 302
    assert response["Location"] == "/login?next=%2Fworkers"


@pytest.mark.covers("dashboard:workers", "cross_tenant")
def test_the_list_never_shows_another_organizations_workers(
    signed_in, member, project, other_project
):
    ours = make_worker(project, "ours")
    theirs = make_worker(other_project, "theirs-secret", capacity=50)

    html = signed_in(member).get("/workers").content.decode()

    assert f'data-worker="{ours.pk}"' in html
    assert str(theirs.pk) not in html and "theirs-secret" not in html
    assert 'data-count-online="1"' in html
    assert 'data-capacity="4"' in html


def test_a_viewer_sees_the_workers_without_a_drain_button(signed_in, viewer, project):
    worker = make_worker(project, "w1")

    html = signed_in(viewer).get("/workers").content.decode()

    assert f'data-worker="{worker.pk}"' in html
    assert "/drain" not in html and "data-confirm" not in html


# --- The live region --------------------------------------------------------------------------


@pytest.mark.covers("dashboard:workers#table", "happy")
def test_the_table_region_refreshes_alone(signed_in, member, project, queue):
    worker = make_worker(project, "w1", capacity=2)
    make_job(queue, worker=worker)

    response = htmx(signed_in(member), "/workers?partial=table")

    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="workers"')
    assert "<html" not in html and "Workers <span" not in html
    assert 'data-running="1">1 / 2<' in row_of(html, worker)
    assert 'hx-get="/workers?partial=table"' in html


@pytest.mark.covers("dashboard:workers#table", "access")
def test_a_signed_out_poll_of_the_region_redirects_the_whole_page(client):
    response = client.get("/workers?partial=table", headers={"HX-Request": "true"})
    assert response.status_code == 204
    assert response["HX-Redirect"] == "/login?next=%2Fworkers%3Fpartial%3Dtable"


@pytest.mark.covers("dashboard:workers#table", "cross_tenant")
def test_the_region_never_shows_another_organizations_workers(
    signed_in, member, project, other_project
):
    make_worker(project, "ours")
    theirs = make_worker(other_project, "theirs-secret")

    html = htmx(signed_in(member), "/workers?partial=table").content.decode()

    assert "ours" in html
    assert str(theirs.pk) not in html and "theirs-secret" not in html


def test_an_unknown_region_is_a_404(signed_in, member):
    assert signed_in(member).get("/workers?partial=nope").status_code == 404


# --- Drain ------------------------------------------------------------------------------------


@pytest.mark.covers("dashboard:worker-drain", "happy")
def test_draining_from_the_page_does_what_the_apis_drain_does(
    signed_in, member, project, queue, make_api_key
):
    by_page = make_worker(project, "by-page")
    by_api = make_worker(project, "by-api")
    make_job(queue, worker=by_page)
    client = signed_in(member)

    response = drain(client, by_page)

    assert response.status_code == 302
    assert response["Location"] == "/workers"
    _, raw = make_api_key(scopes=["workers"])
    assert bearer(raw).post(f"/api/v1/workers/{by_api.pk}/drain").json() == {"status": "draining"}
    assert status_of(by_page) == status_of(by_api) == WorkerStatus.DRAINING
    # Its job is still its own: draining lets it finish.
    assert Job.objects.for_project(project).get(worker_id=by_page.pk).state == JobState.PROCESSING
    page = client.get("/workers").content.decode()
    assert "Draining by-page: it finishes its 1 running job and takes no new ones." in page
    assert 'class="badge status-draining"' in row_of(page, by_page)
    assert "/drain" not in row_of(page, by_page)
    # The message is shown once.
    assert "Draining by-page" not in client.get("/workers").content.decode()


@pytest.mark.django_db(transaction=True)
def test_draining_from_the_page_wakes_the_workers_long_poll_as_the_api_does(
    signed_in, member, project
):
    worker = make_worker(project, "w1")
    wanted = {"dbname", "user", "password", "host", "port"}
    params = {k: v for k, v in connection.get_connection_params().items() if k in wanted}
    channel = queries.worker_channel(worker.pk)
    with psycopg.connect(**params, autocommit=True) as listener:
        listener.execute(f"LISTEN {channel}")

        drain(signed_in(member), worker)

        notifies = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.channel for n in notifies] == [channel]


def test_draining_with_htmx_answers_the_refreshed_table_and_a_toast(
    signed_in, member, project, queue
):
    worker = make_worker(project, "w1")
    other = make_worker(project, "w2")
    make_job(queue, worker=worker)
    make_job(queue, worker=worker)

    response = drain(signed_in(member), worker, headers={"HX-Request": "true"})

    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="workers"')
    assert 'data-status="draining"' in row_of(html, worker)
    assert 'data-status="online"' in row_of(html, other)
    assert 'data-count-draining="1"' in html
    toast = json.loads(response["HX-Trigger"])["tf:toast"]
    assert toast["message"] == "Draining w1: it finishes its 2 running jobs and takes no new ones."


@pytest.mark.parametrize(
    ("status", "said"),
    [
        (WorkerStatus.DRAINING, "w1 is already draining: it gets no new jobs."),
        (WorkerStatus.OFFLINE, "w1 is offline: there is nothing to drain."),
    ],
)
def test_draining_a_worker_that_is_not_online_says_why_and_changes_nothing(
    signed_in, member, project, status, said
):
    worker = make_worker(project, "w1", status=status, seen_ago=600)
    client = signed_in(member)

    plain = drain(client, worker)
    assert plain.status_code == 302
    assert said in client.get("/workers").content.decode()

    response = drain(client, worker, headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert json.loads(response["HX-Trigger"])["tf:toast"]["message"].startswith(said)
    assert status_of(worker) == status


@pytest.mark.covers("dashboard:worker-drain", "access")
def test_a_viewer_may_not_drain(signed_in, viewer, project):
    worker = make_worker(project, "w1")

    response = drain(signed_in(viewer), worker)

    assert response.status_code == 403
    assert status_of(worker) == WorkerStatus.ONLINE


@pytest.mark.covers("dashboard:worker-drain", "access")
def test_a_signed_out_visitor_may_not_drain(client, project):
    worker = make_worker(project, "w1")

    response = client.post(drain_url(worker))

    assert response.status_code == 302
    assert response["Location"].startswith("/login?next=")
    assert status_of(worker) == WorkerStatus.ONLINE


def test_drain_answers_only_posts(signed_in, member, project):
    worker = make_worker(project, "w1")
    assert signed_in(member).get(drain_url(worker)).status_code == 405
    assert status_of(worker) == WorkerStatus.ONLINE


@pytest.mark.covers("dashboard:worker-drain", "cross_tenant")
def test_an_outsider_draining_another_organizations_worker_gets_the_404_page(
    signed_in, member, org, other_project, cross_tenant_denials
):
    theirs = make_worker(other_project, "theirs")

    response = drain(signed_in(member), theirs)

    assert response.status_code == 404
    assert b"<html" in response.content
    assert status_of(theirs) == WorkerStatus.ONLINE
    assert cross_tenant_denials(org) == [("worker", str(theirs.pk))]


def test_draining_a_worker_that_does_not_exist_is_a_404(signed_in, member, project):
    response = drain(signed_in(member), f"/workers/{uuid.uuid4()}/drain")
    assert response.status_code == 404
