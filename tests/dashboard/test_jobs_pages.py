"""The Jobs pages: the list (filters, search, keyset pages, bulk actions, dead letters) and one
job's page (summary, why it waits, timeline, attempts with logs, graph, retry and cancel)."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from accounts.models import Role, User
from jobs import services
from jobs.models import ExecutionLog, Job, JobState
from jobs.services import listing
from jobs.specs import JobSpec
from queues.models import Queue
from taskforge.views.jobs import bulk_sentence, describe, timeline
from tests.api.conftest import WORK_QUEUE, Engine
from tests.dashboard.conftest import htmx, post_form

pytestmark = pytest.mark.django_db

HX = {"HX-Request": "true"}
# A polled region (the shell's refresh control is data-live-control).
LIVE = b" data-live hx-get="
DETAIL_REGIONS = ["summary", "why", "timeline", "executions", "graph"]


@pytest.fixture
def engine(project, queue):
    return Engine(project)


@pytest.fixture
def other_engine(other_project, other_queue):
    return Engine(other_project)


@pytest.fixture
def outsider(other_org):
    """A member of the other organization."""
    return User.objects.create_user(
        "member@globex.example", "correct-horse-battery", organization=other_org, role=Role.MEMBER
    )


def post(client, path, data=None, **extra):
    """post_form, after a page gave the client its CSRF cookie."""
    if "csrftoken" not in client.cookies:
        client.get("/jobs")
    return post_form(client, path, data, **extra)


def row_ids(content: bytes) -> list[str]:
    return re.findall(r'<tr data-job="([0-9a-f-]{36})"', content.decode())


def link(content: bytes, name: str) -> str | None:
    match = re.search(rf'href="([^"]+)" rel="\w+" data-page="{name}"', content.decode())
    return html.unescape(match.group(1)) if match else None


def states(project) -> dict[str, str]:
    return {
        str(pk): state for pk, state in Job.objects.for_project(project).values_list("pk", "state")
    }


def text(content: bytes) -> str:
    """The page's text, tags dropped and spaces squeezed, to assert on sentences."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", content.decode())))


def dead_with_logs(engine: Engine, error: str, lines: list[str], **fields) -> Job:
    job, assigned = engine.start(**fields)
    services.append_logs(
        engine.project,
        job.pk,
        lease_token=assigned.lease_token,
        entries=[{"level": "error", "message": line} for line in lines],
    )
    return services.fail_job(
        engine.project, job.pk, lease_token=assigned.lease_token, error=error, retryable=False
    )


# --- The list -------------------------------------------------------------------------------------


@pytest.mark.covers("dashboard:jobs", "happy")
def test_the_list_shows_the_projects_jobs_with_state_time_and_worker(
    signed_in, member, engine, make_queue
):
    make_queue("emails")
    pending = engine.submit(queue="emails", job_type="send_email")
    running = engine.processing(job_type="resize")
    done = engine.succeeded(job_type="report")
    page = signed_in(member).get("/jobs")
    assert page.status_code == 200
    assert row_ids(page.content) == [str(done.pk), str(running.pk), str(pending.pk)]
    body = text(page.content)
    assert "send_email" in body and "/queues/emails" in page.content.decode()
    # The time that matters for each state, and the running job's worker.
    assert re.search(r"due (now|\d+ s ago)", body)
    assert re.search(r"started (now|\d+ s ago)", body)
    assert re.search(r"succeeded (now|\d+ s ago)", body)
    assert "api-test-worker" in body
    assert "1/5" in body  # attempts/max of the ones that ran
    # Chips count by state and link to the state filter.
    assert 'href="/jobs?state=pending"' in page.content.decode()
    # Members get the bulk controls.
    assert b"data-row" in page.content and b"data-select-page" in page.content
    # The table is a live region that keeps the filters.
    assert b'data-live hx-get="/jobs?partial=table"' in page.content


@pytest.mark.covers("dashboard:jobs", "happy")
def test_filtering_by_state_lists_only_that_state(signed_in, member, engine):
    dead = engine.dead()
    engine.submit()
    engine.succeeded()
    page = signed_in(member).get("/jobs?state=dead")
    assert page.status_code == 200
    assert row_ids(page.content) == [str(dead.pk)]
    assert "Dead letters" in text(page.content)


@pytest.mark.covers("dashboard:jobs", "happy")
def test_filtering_by_queue_type_and_tag(signed_in, member, engine, make_queue):
    make_queue("emails")
    wanted = engine.submit(queue="emails", job_type="send_email", tags=["vip"])
    engine.submit(queue="emails", job_type="send_email")
    engine.submit(queue="emails", job_type="other", tags=["vip"])
    engine.submit(job_type="send_email", tags=["vip"])
    page = signed_in(member).get("/jobs?queue=emails&job_type=send_email&tag=vip")
    assert row_ids(page.content) == [str(wanted.pk)]
    # The filter form shows what the URL asked for.
    assert b'<option value="emails" selected>' in page.content


@pytest.mark.covers("dashboard:jobs", "happy")
def test_the_payload_search_finds_exactly_the_matching_jobs(signed_in, member, engine):
    ours = [engine.submit(payload={"user_id": 42, "n": n}) for n in range(3)]
    as_text = engine.submit(payload={"user_id": "42"})
    engine.submit(payload={"user_id": 43})
    engine.submit(payload={"other": 42})
    page = signed_in(member).get("/jobs", {"search": "payload.user_id:42"})
    assert page.status_code == 200
    assert set(row_ids(page.content)) == {str(j.pk) for j in [*ours, as_text]}
    # The search box keeps what was typed.
    assert b'value="payload.user_id:42"' in page.content


@pytest.mark.covers("dashboard:jobs", "happy")
def test_the_search_finds_a_job_by_id_and_by_idempotency_key(signed_in, member, engine):
    keyed = engine.submit(idempotency_key="welcome-42")
    other = engine.submit()
    client = signed_in(member)
    assert row_ids(client.get("/jobs", {"search": "key:welcome-42"}).content) == [str(keyed.pk)]
    assert row_ids(client.get("/jobs", {"search": str(other.pk)}).content) == [str(other.pk)]


@pytest.mark.covers("dashboard:jobs", "happy")
def test_created_after_from_a_datetime_local_input_is_utc(signed_in, member, engine, project):
    old = engine.submit()
    new = engine.submit()
    moment = datetime(2030, 1, 2, 3, 4, tzinfo=UTC)
    Job.objects.for_project(project).filter(pk=new.pk).update(created_at=moment)
    client = signed_in(member)
    after = client.get("/jobs", {"created_after": "2030-01-02T03:04"})
    assert row_ids(after.content) == [str(new.pk)]
    assert b'value="2030-01-02T03:04' in after.content
    before = client.get("/jobs", {"created_before": "2030-01-02T03:04"})
    assert row_ids(before.content) == [str(old.pk)]


@pytest.mark.covers("dashboard:jobs", "happy")
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"state": "finished"}, "state"),
        ({"search": "payload.user_id:"}, "search"),
        ({"search": "colour:red"}, "search"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"before": "not-a-cursor"}, "before"),
    ],
)
def test_a_bad_filter_is_a_400_with_the_message_next_to_the_filters(
    signed_in, member, engine, params, field
):
    engine.submit()
    page = signed_in(member).get("/jobs", params)
    assert page.status_code == 400
    match = re.search(
        r'<div class="alert error" role="alert" id="filter-error">([^<]+)', page.content.decode()
    )
    assert match and match.group(1).startswith(f"{field}:"), page.content.decode()[:3000]
    assert row_ids(page.content) == []
    # The region stops polling a filter that cannot work.
    assert LIVE not in page.content


@pytest.mark.covers("dashboard:jobs", "happy")
def test_an_empty_project_shows_the_first_steps(signed_in, member, queue):
    page = signed_in(member).get("/jobs")
    assert page.status_code == 200
    assert b'id="first-steps"' in page.content
    assert b"/api/v1/jobs" in page.content


@pytest.mark.covers("dashboard:jobs", "happy")
def test_a_filter_matching_nothing_offers_to_clear_it(signed_in, member, engine):
    engine.submit()
    page = signed_in(member).get("/jobs?state=dead&job_type=nothing")
    assert page.status_code == 200
    assert b'id="no-match"' in page.content
    assert "No jobs match: no dead jobs of type nothing." in text(page.content)
    assert b'href="/jobs">Clear the filters' in page.content
    assert b'id="first-steps"' not in page.content


@pytest.mark.covers("dashboard:jobs", "happy")
def test_keyset_pages_walk_120_jobs_older_then_newer_without_gaps_or_duplicates(
    signed_in, member, engine, project
):
    # One batch: every job has the same created_at, so the pages must break ties by id.
    submitted = services.submit_jobs(project, [JobSpec(queue="default", job_type="t")] * 120)
    # And a few distinct times, so both parts of the keyset are exercised.
    Job.objects.for_project(project).filter(pk__in=submitted.ids[:30]).update(
        created_at=datetime(2020, 1, 1, tzinfo=UTC)
    )
    expected = [
        str(pk)
        for pk in Job.objects.for_project(project)
        .order_by("-created_at", "-pk")
        .values_list("pk", flat=True)
    ]
    client = signed_in(member)
    pages = []
    page = client.get("/jobs")
    assert link(page.content, "newer") is None
    while True:
        pages.append(row_ids(page.content))
        older = link(page.content, "older")
        if older is None:
            break
        assert "offset" not in older.lower()
        page = client.get(older)
        assert page.status_code == 200
    assert [len(p) for p in pages] == [50, 50, 20]
    assert [pk for p in pages for pk in p] == expected
    # And back up from the last page, newer each time, to the first page.
    back = [row_ids(page.content)]
    while (newer := link(page.content, "newer")) is not None:
        page = client.get(newer)
        back.append(row_ids(page.content))
    assert back == pages[::-1]


@pytest.mark.covers("dashboard:jobs#table", "happy")
def test_the_table_region_alone_follows_the_filter_and_new_jobs(signed_in, member, engine):
    engine.dead()
    client = signed_in(member)
    before = htmx(client, "/jobs?state=dead&partial=table")
    assert before.status_code == 200
    assert b"<html" not in before.content
    assert b'id="table"' in before.content
    assert b'hx-get="/jobs?state=dead&amp;partial=table"' in before.content
    assert len(row_ids(before.content)) == 1
    engine.submit()  # pending: not in the filter
    second = engine.dead()
    after = htmx(client, "/jobs?state=dead&partial=table")
    assert row_ids(after.content)[0] == str(second.pk)
    assert len(row_ids(after.content)) == 2


@pytest.mark.covers("dashboard:jobs", "access")
def test_a_signed_out_visitor_is_sent_to_sign_in(client, engine):
    engine.submit()
    response = client.get("/jobs?state=dead")
    assert response.status_code == 302
    assert response["Location"].startswith("/login?next=")
    assert "state%3Ddead" in response["Location"]


@pytest.mark.covers("dashboard:jobs#table", "access")
def test_a_signed_out_poll_of_the_table_gets_no_rows(client, engine):
    engine.submit(job_type="secret_type")
    response = htmx(client, "/jobs?partial=table")
    assert response.status_code == 204
    assert response["HX-Redirect"].startswith("/login")
    assert b"secret_type" not in response.content


@pytest.mark.covers("dashboard:jobs", "access")
def test_a_viewer_reads_the_list_without_bulk_controls(signed_in, viewer, engine):
    engine.dead()
    page = signed_in(viewer).get("/jobs?state=dead")
    assert page.status_code == 200
    assert len(row_ids(page.content)) == 1
    for control in (
        b"data-row",
        b"data-select-page",
        b"data-all-matching",
        b"data-retry-all",
        b"jobs/bulk",
    ):
        assert control not in page.content, control


@pytest.mark.covers("dashboard:jobs", "cross_tenant")
@pytest.mark.covers("dashboard:jobs#table", "cross_tenant")
def test_the_list_never_shows_another_organizations_jobs(
    signed_in, member, engine, other_engine, other_project
):
    mine = engine.submit(payload={"user_id": 42})
    theirs = [
        other_engine.submit(payload={"user_id": 42}, job_type="their_type"),
        other_engine.dead(),
    ]
    client = signed_in(member)
    for path, expected in (
        ("/jobs", [str(mine.pk)]),
        ("/jobs?search=payload.user_id:42", [str(mine.pk)]),
        (f"/jobs?search={theirs[0].pk}", []),
        (f"/jobs?id={theirs[1].pk}", []),
    ):
        page = client.get(path)
        assert page.status_code == 200
        assert row_ids(page.content) == expected
        assert b"their_type" not in page.content
    region = htmx(client, "/jobs?state=dead&partial=table")
    assert row_ids(region.content) == []
    # The state chips count our project only.
    assert "dead 0" in text(client.get("/jobs").content)


# --- Bulk actions ------------------------------------------------------------------------------


@pytest.fixture
def dead_letters(engine, other_engine):
    """Dead jobs of two types on the work queue, a pending one, and the other tenant's dead."""
    wanted = [engine.dead(job_type="send_email") for _ in range(3)]
    other_type = engine.dead(job_type="resize")
    pending = engine.submit(job_type="send_email")
    foreign = [other_engine.dead(job_type="send_email") for _ in range(2)]
    return wanted, other_type, pending, foreign


@pytest.mark.covers("dashboard:jobs-bulk", "happy")
def test_retry_all_matching_the_filter_retries_exactly_those(
    signed_in, member, project, other_project, dead_letters
):
    wanted, other_type, pending, _ = dead_letters
    theirs_before = states(other_project)
    client = signed_in(member)
    page = client.get(f"/jobs?state=dead&queue={WORK_QUEUE}&job_type=send_email")
    # The all-matching checkbox knows the total, and the dialogs restate the filter.
    assert b'data-all-matching data-total="3"' in page.content
    assert "Retry all 3 dead jobs" in text(page.content)
    assert f"Retry 3 dead jobs in queue {WORK_QUEUE} of type send_email?" in text(page.content)
    response = post(
        client,
        "/jobs/bulk",
        {
            "action": "retry",
            "all_matching": "1",
            "state": "dead",
            "queue": WORK_QUEUE,
            "job_type": "send_email",
        },
    )
    assert response.status_code == 302
    assert response["Location"] == f"/jobs?state=dead&queue={WORK_QUEUE}&job_type=send_email"
    after = states(project)
    assert {after[str(j.pk)] for j in wanted} == {JobState.PENDING}
    assert after[str(other_type.pk)] == JobState.DEAD
    assert after[str(pending.pk)] == JobState.PENDING
    assert states(other_project) == theirs_before


@pytest.mark.covers("dashboard:jobs-bulk", "happy")
def test_bulk_by_htmx_answers_with_the_table_and_a_toast(signed_in, member, project, dead_letters):
    wanted, *_ = dead_letters
    client = signed_in(member)
    client.get("/jobs")
    data = {"action": "retry", "all_matching": "1", "state": "dead", "job_type": "send_email"}
    response = post(client, "/jobs/bulk", data, headers=HX)
    assert response.status_code == 200
    assert json.loads(response["HX-Trigger"]) == {"tf:toast": {"message": "Retried 3 jobs."}}
    assert b'id="table"' in response.content and b"<html" not in response.content
    # The refreshed table is still the filtered one, now empty of those jobs.
    assert b"partial=table" in response.content and b"job_type=send_email" in response.content
    assert set(row_ids(response.content)).isdisjoint({str(j.pk) for j in wanted})


@pytest.mark.covers("dashboard:jobs-bulk", "happy")
def test_bulk_cancel_of_a_selection_changes_only_the_selected(signed_in, member, engine, project):
    jobs = [engine.submit() for _ in range(3)]
    response = post(
        signed_in(member),
        "/jobs/bulk",
        {"action": "cancel", "ids": [str(jobs[0].pk), str(jobs[2].pk)]},
    )
    assert response.status_code == 302
    after = states(project)
    assert [after[str(j.pk)] for j in jobs] == [
        JobState.CANCELLED,
        JobState.PENDING,
        JobState.CANCELLED,
    ]


@pytest.mark.covers("dashboard:jobs-bulk", "happy")
def test_bulk_delete_of_a_selection(signed_in, member, engine, project):
    doomed, kept = engine.dead(), engine.dead()
    response = post(
        signed_in(member), "/jobs/bulk", {"action": "delete", "ids": [str(doomed.pk)]}, headers=HX
    )
    assert json.loads(response["HX-Trigger"])["tf:toast"]["message"] == "Deleted 1 job."
    assert set(states(project)) == {str(kept.pk)}


@pytest.mark.covers("dashboard:jobs-bulk", "happy")
@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"action": "retry"}, "ids: select jobs first"),
        ({"action": "retry", "ids": ["nope"]}, "ids: must be job ids"),
        ({"action": "explode", "ids": ["0190a000-0000-7000-8000-000000000000"]}, "action: must be"),
        ({"action": "retry", "all_matching": "1"}, "filter: give at least one field"),
        ({"action": "retry", "all_matching": "1", "state": "finished"}, "state: must be one of"),
    ],
)
def test_a_refused_bulk_action_says_why_and_changes_nothing(
    signed_in, member, engine, project, data, message
):
    engine.dead()
    before = states(project)
    client = signed_in(member)
    plain = post(client, "/jobs/bulk", data)
    assert plain.status_code == 400
    assert message in plain.content.decode()
    hx = post(client, "/jobs/bulk", data, headers=HX)
    toast = json.loads(hx["HX-Trigger"])["tf:toast"]
    assert toast["kind"] == "error" and toast["message"].startswith(message)
    assert states(project) == before


@pytest.mark.covers("dashboard:jobs-bulk", "access")
def test_a_viewer_cannot_post_bulk_actions(signed_in, viewer, project, dead_letters):
    before = states(project)
    client = signed_in(viewer)
    for data in (
        {"action": "retry", "all_matching": "1", "state": "dead"},
        {"action": "delete", "ids": list(before)},
    ):
        response = post(client, "/jobs/bulk", data)
        assert response.status_code == 403
        assert states(project) == before


@pytest.mark.covers("dashboard:jobs-bulk", "access")
def test_a_signed_out_bulk_post_goes_to_sign_in(client, project, dead_letters):
    before = states(project)
    response = client.post("/jobs/bulk", {"action": "delete", "ids": list(before)})
    assert response.status_code == 302 and response["Location"].startswith("/login")
    assert states(project) == before


@pytest.mark.covers("dashboard:jobs-bulk", "cross_tenant")
def test_bulk_actions_never_reach_another_organizations_jobs(
    signed_in, member, other_project, dead_letters
):
    *_, foreign = dead_letters
    theirs_before = states(other_project)
    client = signed_in(member)
    by_ids = post(
        client, "/jobs/bulk", {"action": "delete", "ids": [str(j.pk) for j in foreign]}, headers=HX
    )
    assert json.loads(by_ids["HX-Trigger"])["tf:toast"]["message"].startswith("Deleted no job")
    by_filter = post(
        client, "/jobs/bulk", {"action": "retry", "all_matching": "1", "state": "dead"}, headers=HX
    )
    assert json.loads(by_filter["HX-Trigger"])["tf:toast"]["message"] == "Retried 4 jobs."
    assert states(other_project) == theirs_before


@pytest.mark.covers("dashboard:jobs", "happy")
def test_the_dead_letter_view_offers_retry_all(signed_in, member, dead_letters):
    page = signed_in(member).get("/jobs?state=dead")
    body = text(page.content)
    assert "Retry all 4 dead jobs" in body
    assert "Retry 4 dead jobs?" in body  # the retry-all dialog restates the filter
    form = re.search(r"<form class=\"tools\".*?</form>", page.content.decode(), re.S).group(0)
    assert 'name="all_matching" value="1"' in form and 'name="state" value="dead"' in form


@pytest.mark.covers("dashboard:jobs-bulk", "happy")
def test_past_the_count_cap_the_total_says_so_and_all_matching_still_acts_on_every_job(
    signed_in, member, project
):
    specs = [JobSpec(queue="default", job_type="fan_out")] * 1000
    services.submit_jobs(project, specs)
    services.submit_jobs(project, specs[:5])
    client = signed_in(member)
    page = client.get("/jobs?job_type=fan_out")
    assert b'data-all-matching data-total="1,000+"' in page.content
    assert "1,000+ matching" in text(page.content)
    data = {"action": "cancel", "all_matching": "1", "job_type": "fan_out"}
    response = post(client, "/jobs/bulk", data, headers=HX)
    assert json.loads(response["HX-Trigger"])["tf:toast"]["message"] == "Cancelled 1,005 jobs."
    assert set(states(project).values()) == {JobState.CANCELLED}


@pytest.mark.covers("dashboard:jobs", "happy")
def test_the_state_chips_count_the_filtered_queue(signed_in, member, engine, make_queue):
    make_queue("emails")
    for _ in range(2):
        engine.submit(queue="emails")
    engine.submit()
    client = signed_in(member)
    assert "pending 3" in text(client.get("/jobs").content)
    page = client.get("/jobs?queue=emails&job_type=t")
    assert "pending 2" in text(page.content)
    assert 'href="/jobs?state=pending&amp;queue=emails"' in page.content.decode()


def test_describe_restates_a_filter_in_words():
    query = listing.JobQuery.from_params(
        {
            "state": "dead",
            "queue": "emails",
            "job_type": "send_email",
            "search": "payload.user_id:42 tag:vip",
        }
    )
    assert bulk_sentence("retry", 1204, query) == (
        "Retry 1,204 dead jobs in queue emails of type send_email tagged vip "
        "whose payload user_id is 42"
    )
    assert describe(listing.JobQuery()) == "jobs"
    window = listing.JobQuery(
        created_after=datetime(2024, 5, 1, tzinfo=UTC),
        created_before=datetime(2024, 5, 2, tzinfo=UTC),
    )
    assert describe(window) == "jobs created between 2024-05-01 00:00 UTC and 2024-05-02 00:00 UTC"


# --- One job -------------------------------------------------------------------------------------


@pytest.mark.covers("dashboard:job", "happy")
def test_a_dead_jobs_page_shows_its_error_payload_attempt_and_logs(signed_in, member, engine):
    job = dead_with_logs(
        engine,
        "SMTP refused recipient",
        ["connecting to smtp", "refused: 550", "<b>not markup</b>"],
        payload={"user_id": 42},
        tags=["vip"],
        idempotency_key="welcome-42",
    )
    page = signed_in(member).get(f"/jobs/{job.pk}")
    assert page.status_code == 200
    body = text(page.content)
    assert "SMTP refused recipient" in body
    assert "connecting to smtp" in body and "refused: 550" in body
    # Log lines are the worker's text, never markup.
    assert b"&lt;b&gt;not markup&lt;/b&gt;" in page.content and b"<b>not" not in page.content
    assert '"user_id": 42' in body
    assert "welcome-42" in body and "vip" in body
    assert "api-test-worker" in body
    assert b'<details class="collapsible" open>' in page.content
    # Finished: nothing polls any more, there is no "why", and a member may retry it.
    assert LIVE not in page.content
    assert b'<div id="why" hidden' in page.content
    assert b'data-action="retry"' in page.content and b'data-action="cancel"' not in page.content


@pytest.mark.covers("dashboard:job", "happy")
def test_an_unfinished_job_polls_and_offers_cancel(signed_in, member, engine):
    job = engine.submit()
    page = signed_in(member).get(f"/jobs/{job.pk}")
    assert page.content.count(LIVE) == 5
    assert b'data-action="cancel"' in page.content and b'data-action="retry"' not in page.content


@pytest.mark.covers("dashboard:job#summary", "happy")
def test_the_summary_region_follows_the_state(signed_in, member, engine, project):
    job, assigned = engine.start()
    client = signed_in(member)
    running = htmx(client, f"/jobs/{job.pk}?partial=summary")
    assert running.status_code == 200 and b"<html" not in running.content
    assert b'data-state="processing"' in running.content and LIVE in running.content
    assert b"Lease expires" in running.content
    services.complete_job(project, job.pk, lease_token=assigned.lease_token, result={"sent": True})
    finished = htmx(client, f"/jobs/{job.pk}?partial=summary")
    assert b'data-state="succeeded"' in finished.content
    assert '"sent": true' in text(finished.content)
    # Terminal: the region comes back without data-live, so polling stops.
    assert LIVE not in finished.content


@pytest.mark.covers("dashboard:job#why", "happy")
def test_the_why_region_names_a_paused_queue(signed_in, member, engine, make_queue):
    make_queue("held", paused=True)
    job = engine.submit(queue="held")
    region = htmx(signed_in(member), f"/jobs/{job.pk}?partial=why")
    assert region.status_code == 200
    assert b'id="why"' in region.content and LIVE in region.content
    assert "paused" in text(region.content).lower()
    assert "held" in text(region.content)


@pytest.mark.covers("dashboard:job#why", "happy")
def test_the_why_region_names_the_parents_a_job_waits_for(signed_in, member, engine):
    parent = engine.submit()
    child = engine.submit(depends_on=[parent.pk])
    region = htmx(signed_in(member), f"/jobs/{child.pk}?partial=why")
    assert f'href="/jobs/{parent.pk}"' in region.content.decode()


@pytest.mark.covers("dashboard:job#timeline", "happy")
def test_the_timeline_region_shows_the_steps_with_durations(signed_in, member, engine):
    job = engine.succeeded()
    region = htmx(signed_in(member), f"/jobs/{job.pk}?partial=timeline")
    assert region.status_code == 200
    steps = re.findall(r'<li class="(\w*)"[^>]*data-step="(\w+)"', region.content.decode())
    assert steps == [
        ("done", "submitted"),
        ("done", "pending"),
        ("done", "processing"),
        ("done", "succeeded"),
    ]
    assert "took" in text(region.content)


def test_the_timeline_of_a_delayed_job_shows_when_it_runs(engine):
    job = engine.submit(run_at=datetime.now(UTC) + timedelta(hours=2))
    steps = timeline(job, datetime.now(UTC))
    assert [(s.name, s.status) for s in steps] == [
        ("submitted", "done"),
        ("scheduled", "current"),
        ("pending", ""),
        ("processing", ""),
        ("outcome", ""),
    ]
    assert steps[1].at == job.run_at


@pytest.mark.covers("dashboard:job#executions", "happy")
def test_the_executions_region_lists_attempts_with_capped_logs(signed_in, member, engine, project):
    job, assigned = engine.start()
    services.append_logs(
        project, job.pk, lease_token=assigned.lease_token,
        entries=[{"message": f"line {n}"} for n in range(250)],
    )  # fmt: skip
    services.fail_job(
        project, job.pk, lease_token=assigned.lease_token, error="kaput", retryable=False
    )
    region = htmx(signed_in(member), f"/jobs/{job.pk}?partial=executions")
    assert region.status_code == 200
    body = text(region.content)
    assert "kaput" in body and "api-test-worker" in body
    assert "250 lines, the last 200 shown" in body
    assert "line 249" in body and "line 50 " in body and "line 49 " not in body
    assert ExecutionLog.objects.for_org(project.organization).filter(job_id=job.pk).count() == 250


def test_the_job_page_shows_a_sub_priority_when_there_is_one(signed_in, member, engine):
    plain = engine.submit(priority=5)
    ordered = engine.submit(priority=7, sub_priority=-40)
    client = signed_in(member)
    assert "sub-priority" not in text(client.get(f"/jobs/{plain.pk}").content)
    assert "7 (sub-priority -40)" in text(client.get(f"/jobs/{ordered.pk}").content)


@pytest.mark.covers("dashboard:job#executions", "happy")
def test_the_executions_region_shows_a_failures_traceback_escaped(
    signed_in, member, engine, project
):
    job, assigned = engine.start()
    trace = (
        "Traceback (most recent call last):\n"
        '  File "/srv/app/billing.py", line 9, in charge\n'
        "    raise CardDeclined('<b>402</b>')\n"
        "billing.CardDeclined: <b>402</b>\n"
    )
    services.fail_job(
        project, job.pk, lease_token=assigned.lease_token, error="billing.CardDeclined: 402",
        retryable=False, traceback=trace,
    )  # fmt: skip
    region = htmx(signed_in(member), f"/jobs/{job.pk}?partial=executions")
    content = region.content.decode()
    assert "Traceback and logs" in text(region.content)
    assert 'File "/srv/app/billing.py", line 9, in charge' in text(region.content)
    assert "&lt;b&gt;402&lt;/b&gt;" in content and "<b>402</b>" not in content


@pytest.mark.covers("dashboard:job#graph", "happy")
def test_the_graph_region_shows_parents_children_and_batch(signed_in, member, engine, project):
    batch = services.submit_jobs(
        project,
        [
            JobSpec(queue="default", job_type="parent", ref="a"),
            JobSpec(
                queue="default", job_type="child", depends_on_refs=["a"], on_parent_failure="run"
            ),
        ],
    )
    parent_id, child_id = batch.ids
    client = signed_in(member)
    of_parent = htmx(client, f"/jobs/{parent_id}?partial=graph")
    assert of_parent.status_code == 200
    assert f'href="/jobs/{child_id}"' in of_parent.content.decode()
    assert "it runs anyway" in text(of_parent.content)
    assert "0 of 2 finished" in text(of_parent.content)
    of_child = htmx(client, f"/jobs/{child_id}?partial=graph")
    assert f'href="/jobs/{parent_id}"' in of_child.content.decode()
    assert "1 pending" in text(of_child.content)


@pytest.mark.covers("dashboard:job", "access")
def test_a_signed_out_visitor_of_a_job_is_sent_to_sign_in(client, engine):
    job = engine.submit()
    response = client.get(f"/jobs/{job.pk}")
    assert response.status_code == 302
    assert response["Location"] == f"/login?next=%2Fjobs%2F{job.pk}"


@pytest.mark.covers("dashboard:job#summary", "access")
@pytest.mark.covers("dashboard:job#why", "access")
@pytest.mark.covers("dashboard:job#timeline", "access")
@pytest.mark.covers("dashboard:job#executions", "access")
@pytest.mark.covers("dashboard:job#graph", "access")
@pytest.mark.parametrize("region", DETAIL_REGIONS)
def test_a_signed_out_poll_of_a_job_region_gets_nothing(client, engine, region):
    job = engine.submit(job_type="secret_type")
    response = htmx(client, f"/jobs/{job.pk}?partial={region}")
    assert response.status_code == 204
    assert response["HX-Redirect"].startswith("/login")
    assert b"secret_type" not in response.content


@pytest.mark.covers("dashboard:job", "access")
def test_a_viewer_reads_a_job_without_action_buttons(signed_in, viewer, engine):
    dead, pending = engine.dead(), engine.submit()
    client = signed_in(viewer)
    for job in (dead, pending):
        page = client.get(f"/jobs/{job.pk}")
        assert page.status_code == 200
        assert b"data-action" not in page.content
        assert b"/retry" not in page.content and b"/cancel" not in page.content


@pytest.mark.covers("dashboard:job", "cross_tenant")
@pytest.mark.covers("dashboard:job#summary", "cross_tenant")
@pytest.mark.covers("dashboard:job#why", "cross_tenant")
@pytest.mark.covers("dashboard:job#timeline", "cross_tenant")
@pytest.mark.covers("dashboard:job#executions", "cross_tenant")
@pytest.mark.covers("dashboard:job#graph", "cross_tenant")
@pytest.mark.parametrize("region", [None, *DETAIL_REGIONS])
def test_another_organizations_job_is_the_404_page(
    signed_in, outsider, engine, org, cross_tenant_denials, region
):
    job = engine.dead(job_type="acme_secret", error="acme private error")
    path = f"/jobs/{job.pk}" + (f"?partial={region}" if region else "")
    response = signed_in(outsider).get(path)
    assert response.status_code == 404
    assert b"Not found" in response.content
    assert b"acme_secret" not in response.content and b"acme private error" not in response.content
    assert ("job", str(job.pk)) in cross_tenant_denials(outsider.organization)


# --- Retry and cancel ----------------------------------------------------------------------------


@pytest.mark.covers("dashboard:job-retry", "happy")
def test_retrying_a_dead_job_runs_it_again(signed_in, member, engine, project):
    job = engine.dead()
    response = post(signed_in(member), f"/jobs/{job.pk}/retry")
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}"
    assert states(project)[str(job.pk)] == JobState.PENDING


@pytest.mark.covers("dashboard:job-retry", "happy")
def test_retry_by_htmx_answers_every_region_live_again_with_a_toast(
    signed_in, member, engine, project
):
    job = engine.dead()
    response = post(signed_in(member), f"/jobs/{job.pk}/retry", headers=HX)
    assert response.status_code == 200
    assert json.loads(response["HX-Trigger"])["tf:toast"]["message"].startswith("Job retried")
    content = response.content.decode()
    assert content.strip().startswith('<section class="panel" id="summary"')
    assert 'data-state="pending"' in content
    # The regions that stopped polling when the job died come back, out of band, polling again.
    for region in DETAIL_REGIONS[1:]:
        assert re.search(rf'id="{region}"[^>]* data-live hx-get[^>]*hx-swap-oob="true"', content), (
            region
        )


@pytest.mark.covers("dashboard:job-retry", "happy")
def test_retrying_a_succeeded_job_is_refused_with_the_services_message(
    signed_in, member, engine, project
):
    job = engine.succeeded()
    client = signed_in(member)
    plain = post(client, f"/jobs/{job.pk}/retry")
    assert plain.status_code == 409
    assert "only dead or cancelled jobs can be retried" in text(plain.content)
    hx = post(client, f"/jobs/{job.pk}/retry", headers=HX)
    toast = json.loads(hx["HX-Trigger"])["tf:toast"]
    assert toast["kind"] == "error" and "only dead or cancelled" in toast["message"]
    assert states(project)[str(job.pk)] == JobState.SUCCEEDED


@pytest.mark.covers("dashboard:job-cancel", "happy")
def test_cancelling_a_running_job(signed_in, member, engine, project):
    job = engine.processing()
    response = post(signed_in(member), f"/jobs/{job.pk}/cancel", headers=HX)
    assert response.status_code == 200
    assert json.loads(response["HX-Trigger"]) == {"tf:toast": {"message": "Job cancelled."}}
    assert b'data-state="cancelled"' in response.content
    assert states(project)[str(job.pk)] == JobState.CANCELLED
    again = post(signed_in(member), f"/jobs/{job.pk}/cancel")
    assert again.status_code == 409 and "already ended cancelled" in text(again.content)


@pytest.mark.covers("dashboard:job-retry", "access")
@pytest.mark.covers("dashboard:job-cancel", "access")
@pytest.mark.parametrize("action", ["retry", "cancel"])
def test_a_viewer_cannot_retry_or_cancel(signed_in, viewer, engine, project, action):
    job = engine.dead() if action == "retry" else engine.submit()
    before = states(project)
    response = post(signed_in(viewer), f"/jobs/{job.pk}/{action}")
    assert response.status_code == 403
    assert states(project) == before


@pytest.mark.covers("dashboard:job-retry", "cross_tenant")
@pytest.mark.covers("dashboard:job-cancel", "cross_tenant")
@pytest.mark.parametrize("action", ["retry", "cancel"])
def test_retry_and_cancel_of_another_organizations_job_are_404(
    signed_in, outsider, engine, project, action
):
    job = engine.dead() if action == "retry" else engine.submit()
    before = states(project)
    client = signed_in(outsider)
    for extra in ({}, {"headers": HX}):
        response = post(client, f"/jobs/{job.pk}/{action}", **extra)
        assert response.status_code == 404
    assert states(project) == before


def test_the_actions_take_no_get(signed_in, member, engine):
    job = engine.dead()
    client = signed_in(member)
    assert client.get(f"/jobs/{job.pk}/retry").status_code == 405
    assert client.get("/jobs/bulk").status_code == 405
    assert Queue.objects.for_project(engine.project).filter(name=WORK_QUEUE).exists()
