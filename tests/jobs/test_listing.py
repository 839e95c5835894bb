"""Finding jobs (jobs/services/listing.py): parameters and the search box, payload search,
keyset pages both ways, the capped count, and the API list and bulk filter that use them."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from accounts.models import AuditLog
from jobs import services
from jobs.models import Job, JobState
from jobs.services.listing import (
    MAX_PAYLOAD_TERMS,
    JobQuery,
    count_matching,
    filtered,
    page,
    parse_search,
)
from jobs.specs import JobSpec
from taskforge.lib.errors import ValidationFailed

JOB_ID = uuid.UUID("01a20ec4-8823-71e4-9d2d-06a56a43a1c8")


def refused(where, build):
    with pytest.raises(ValidationFailed) as caught:
        build()
    assert caught.value.details == {"field": where}, caught.value.message
    assert caught.value.message.startswith(f"{where}: ")
    return caught.value.message


# --- parameters ---------------------------------------------------------------------------------


def test_from_params_reads_every_field():
    query = JobQuery.from_params(
        {
            "state": "dead",
            "queue": "emails",
            "job_type": "send",
            "tag": "vip",
            "created_after": "2024-01-01T02:00:00+02:00",
            "created_before": "2024-02-01T00:00:00Z",
            "id": str(JOB_ID),
            "idempotency_key": "welcome-1",
            "payload": ["user_id:42", 'name:"Ada"', "order.paid:true"],
            "q": "mail",
            "limit": "10",
        }
    )
    assert query == JobQuery(
        state="dead",
        queue="emails",
        job_type="send",
        tag="vip",
        created_after=datetime(2024, 1, 1, tzinfo=UTC),
        created_before=datetime(2024, 2, 1, tzinfo=UTC),
        id=JOB_ID,
        idempotency_key="welcome-1",
        payload=((("user_id",), 42), (("name",), "Ada"), (("order", "paid"), True)),
        q="mail",
    )


def test_empty_parameters_count_as_absent():
    assert JobQuery.from_params({"state": "", "queue": "", "payload": [""], "search": ""}) == (
        JobQuery()
    )
    assert JobQuery().is_empty
    assert not JobQuery(tag="x").is_empty


def test_a_query_dict_gives_repeated_payload_parameters(rf):
    request = rf.get("/", {"payload": ["user_id:42", "order.currency:eur"], "state": "pending"})
    query = JobQuery.from_params(request.GET)
    assert query.payload == ((("user_id",), 42), (("order", "currency"), "eur"))
    assert query.state == "pending"


@pytest.mark.parametrize(
    "query",
    [
        JobQuery(),
        JobQuery(state="pending", queue="emails", tag="a b", q="x y"),
        JobQuery(created_after=datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)),
        JobQuery(created_before=datetime(2024, 1, 1, tzinfo=UTC), id=JOB_ID),
        JobQuery(idempotency_key="k:1", job_type="emails.send"),
        JobQuery(
            payload=(
                (("user_id",), 42),
                (("user_id",), "42"),
                (("name",), "Ada Lovelace"),
                (("order", "total"), 9.5),
                (("flag",), False),
                (("gone",), None),
                (("city",), 'Zürich "quoted" \\ back'),
                (("text",), "true"),
            )
        ),
    ],
)
def test_to_params_round_trips(query):
    assert JobQuery.from_params(query.to_params()) == query


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"state": "bogus"}, "state"),
        ({"state": "PENDING"}, "state"),
        ({"created_after": "2024-01-01T00:00:00"}, "created_after"),
        ({"created_before": "yesterday"}, "created_before"),
        ({"created_after": "2024-13-45T00:00:00Z"}, "created_after"),
        ({"created_after": "9999-12-31T23:59:59-23:59"}, "created_after"),
        ({"id": "not-a-uuid"}, "id"),
        ({"queue": "a\x00b"}, "queue"),
        ({"job_type": "a\x00b"}, "job_type"),
        ({"q": "a\x00b"}, "q"),
        ({"idempotency_key": "k\x00"}, "idempotency_key"),
        ({"tag": "t" * 101}, "tag"),
        ({"queue": "q" * 101}, "queue"),
        ({"job_type": "j" * 201}, "job_type"),
        ({"idempotency_key": "k" * 256}, "idempotency_key"),
        ({"q": "q" * 256}, "q"),
        ({"state": ["dead"]}, "state"),
        ({"payload": "user_id"}, "payload"),
        ({"payload": ":42"}, "payload"),
        ({"payload": "user id:42"}, "payload"),
        ({"payload": "a..b:1"}, "payload"),
        ({"payload": "a:"}, "payload"),
        ({"payload": 'a:{"b": 1}'}, "payload"),
        ({"payload": "a:[1]"}, "payload"),
        ({"payload": 'a:"unclosed'}, "payload"),
        ({"payload": 'a:"\\u0000"'}, "payload"),
        ({"payload": 'a:"\\ud800"'}, "payload"),
        ({"payload": "a:x\x00"}, "payload"),
        ({"payload": "a\x00b:1"}, "payload"),
        ({"payload": "a\ud800:1"}, "payload"),
        ({"payload": "a:\ud800"}, "payload"),
        ({"payload": "a:" + "v" * 1001}, "payload"),
        ({"payload": ".".join(["k"] * 11) + ":1"}, "payload"),
        ({"payload": [f"k{n}:1" for n in range(MAX_PAYLOAD_TERMS + 1)]}, "payload"),
        ({"payload": [42]}, "payload"),
        ({"search": "colour:red"}, "search"),
        ({"search": "state:bogus"}, "search"),
        ({"search": 'payload.name:"Ada'}, "search"),
        ({"search": "s" * 2001}, "search"),
        ({"search": "state:dead state:pending"}, "search"),
        ({"search": "state:dead", "state": "pending"}, "search"),
    ],
)
def test_bad_input_is_a_validation_error_naming_the_parameter(params, field):
    refused(field, lambda: JobQuery.from_params(params))


def test_not_a_number_or_an_overflowing_number_is_text():
    query = JobQuery.from_params({"payload": ["a:NaN", "b:1e999", "c:Infinity"]})
    assert query.payload == ((("a",), "NaN"), (("b",), "1e999"), (("c",), "Infinity"))


# --- the search box -----------------------------------------------------------------------------


def test_the_search_box_sets_each_qualified_field():
    query = parse_search(
        "state:Dead queue:emails type:send_email tag:vip key:order:7 "
        f"id:{JOB_ID} after:2024-01-01T00:00:00Z before:2024-02-01T00:00:00+01:00"
    )
    assert query == JobQuery(
        state="dead",
        queue="emails",
        job_type="send_email",
        tag="vip",
        idempotency_key="order:7",
        id=JOB_ID,
        created_after=datetime(2024, 1, 1, tzinfo=UTC),
        created_before=datetime(2024, 1, 31, 23, tzinfo=UTC),
    )


def test_payload_terms_take_json_values_quoted_strings_and_nested_paths():
    query = parse_search(
        'payload.user_id:42 payload.name:"Ada Lovelace" payload.order.paid:true '
        'payload.code:"42" payload.city:Zürich payload.Note:a:b'
    )
    assert query.payload == (
        (("user_id",), 42),
        (("name",), "Ada Lovelace"),
        (("order", "paid"), True),
        (("code",), "42"),
        (("city",), "Zürich"),
        (("Note",), "a:b"),
    )


def test_a_bare_uuid_is_the_id_and_other_words_are_the_free_text():
    assert parse_search(f"  {JOB_ID}  ") == JobQuery(id=JOB_ID)
    assert parse_search('emails "send now"  welcome') == JobQuery(q="emails send now welcome")
    assert parse_search(JOB_ID.hex) == JobQuery(q=JOB_ID.hex)


def test_the_search_param_narrows_the_other_parameters():
    query = JobQuery.from_params(
        {"state": "dead", "payload": "a:1", "search": "state:dead queue:emails payload.b:2"}
    )
    assert query == JobQuery(state="dead", queue="emails", payload=((("a",), 1), (("b",), 2)))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("colour:red", "unknown qualifier colour:"),
        ("state:", "state: needs a value"),
        ("tag:", "tag: needs a value"),
        ('tag:"x', "not closed"),
        ('tag:"x"y', "quote"),
        ('ab"c"', "quote"),
        ("payload.:1", "keys joined by dots"),
        ("id:nope", "id: must be a job id"),
        ("after:soon", "after: must be an ISO-8601 time"),
        ("state:done", "state: must be one of"),
        ('tag:"\\x"', "not a valid quoted value"),
        (f"{JOB_ID} 2166c9ba-755e-4311-b3a5-0e4ea0ee5fee", "id is given twice"),
    ],
)
def test_a_bad_search_names_the_search_and_says_why(text, says):
    message = refused("search", lambda: parse_search(text))
    assert says in message


# --- filtering against the database -------------------------------------------------------------


def submit(project, **fields):
    fields.setdefault("queue", "default")
    fields.setdefault("job_type", "t")
    job, _ = services.submit_job(project, JobSpec(**fields))
    return job


def matching(project, **params):
    return set(filtered(project, JobQuery.from_params(params)).values_list("pk", flat=True))


@pytest.mark.django_db(transaction=True)
def test_a_payload_number_matches_the_number_and_its_string_form(project, queue):
    number = submit(project, payload={"user_id": 42})
    text = submit(project, payload={"user_id": "42"})
    submit(project, payload={"user_id": 43})
    submit(project, payload={"user_id": "042"})
    assert matching(project, payload="user_id:42") == {number.pk, text.pk}
    assert matching(project, payload='user_id:"42"') == {text.pk}


@pytest.mark.django_db(transaction=True)
def test_payload_terms_nest_and_all_must_match(project, queue):
    eur = submit(project, payload={"user_id": 7, "order": {"currency": "eur", "paid": True}})
    submit(project, payload={"user_id": 7, "order": {"currency": "usd", "paid": True}})
    submit(project, payload={"user_id": 8, "order": {"currency": "eur", "paid": True}})
    flat = submit(project, payload={"order.currency": "eur"})
    params = {"payload": ["order.currency:eur", "user_id:7", "order.paid:true"]}
    assert matching(project, **params) == {eur.pk}
    assert matching(project, payload="order.currency:eur") != {flat.pk}
    assert flat.pk not in matching(project, payload="order.currency:eur")


@pytest.mark.django_db(transaction=True)
def test_a_payload_string_that_is_not_json_matches_as_text(project, queue):
    ada = submit(project, payload={"name": "Ada Lovelace", "flag": "true"})
    submit(project, payload={"name": "Ada", "flag": True})
    assert matching(project, search='payload.name:"Ada Lovelace"') == {ada.pk}
    assert matching(project, payload="name:Ada Lovelace") == {ada.pk}
    assert matching(project, payload='flag:"true"') == {ada.pk}


@pytest.mark.django_db(transaction=True)
def test_the_payload_search_is_answered_by_the_gin_index(project, queue):
    for start in range(0, 3000, 1000):
        specs = [
            JobSpec(queue="default", job_type="t", payload={"user_id": n})
            for n in range(start, start + 1000)
        ]
        services.submit_jobs(project, specs)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE jobs_job")
    for params in ({"payload": "user_id:42"}, {"payload": 'user_id:"42"'}):
        plan = (
            filtered(project, JobQuery.from_params(params)).order_by("-created_at")[:50].explain()
        )
        assert "job_payload_path" in plan, plan
    plan = filtered(project, JobQuery.from_params({"payload": "user_id:42"})).explain()
    # The number and its string form: two scans of the GIN index, OR-ed as bitmaps.
    assert plan.count("job_payload_path") == 2 and "BitmapOr" in plan, plan


@pytest.mark.django_db(transaction=True)
def test_every_filter_narrows_and_combines(project, queue, make_queue):
    make_queue("reports")
    welcome = submit(project, job_type="emails.send", tags=["vip"], idempotency_key="welcome-1")
    report = submit(project, queue="reports", job_type="reports.build", tags=["vip", "monthly"])
    digest = services.cancel_job(project, submit(project, job_type="emails.digest").pk)
    for month, job in enumerate((welcome, report, digest), start=1):
        Job.objects.for_project(project).filter(pk=job.pk).update(
            created_at=datetime(2024, month, 1, tzinfo=UTC)
        )
    assert matching(project, state="cancelled") == {digest.pk}
    assert matching(project, queue="reports") == {report.pk}
    assert matching(project, queue="missing") == set()
    assert matching(project, job_type="emails.send") == {welcome.pk}
    assert matching(project, tag="vip") == {welcome.pk, report.pk}
    assert matching(project, created_after="2024-02-01T00:00:00Z") == {report.pk, digest.pk}
    assert matching(project, created_before="2024-02-01T00:00:00Z") == {welcome.pk}
    assert matching(project, id=str(report.pk)) == {report.pk}
    assert matching(project, idempotency_key="welcome-1") == {welcome.pk}
    assert matching(project, q="EMAILS.") == {welcome.pk, digest.pk}
    assert matching(project, q="x.b") == set()
    assert matching(project, q="welcome-1") == {welcome.pk}
    assert matching(project, q=str(digest.pk)) == {digest.pk}
    assert matching(project, search=f"tag:vip queue:reports {report.pk}") == {report.pk}
    assert matching(project, search="type:emails.send state:pending vip") == set()


@pytest.mark.django_db(transaction=True)
def test_free_text_is_literal_not_a_pattern(project, queue):
    dotted = submit(project, job_type="a.b")
    submit(project, job_type="axb")
    percent = submit(project, job_type="50%_off")
    assert matching(project, q="a.b") == {dotted.pk}
    assert matching(project, q="%_") == {percent.pk}
    assert matching(project, q="(") == set()


@pytest.mark.django_db(transaction=True)
def test_another_projects_jobs_never_match(project, queue, other_project, other_queue):
    ours = submit(project, payload={"user_id": 1}, idempotency_key="k", tags=["x"])
    theirs = submit(other_project, payload={"user_id": 1}, idempotency_key="k", tags=["x"])
    for params in (
        {"payload": "user_id:1"},
        {"idempotency_key": "k"},
        {"tag": "x"},
        {"q": "k"},
        {"queue": "default"},
        {"id": str(theirs.pk)},
    ):
        found = matching(project, **params)
        assert theirs.pk not in found, params
    assert matching(project, tag="x") == {ours.pk}
    assert count_matching(project, JobQuery(tag="x")) == (1, False)
    walked = page(project, JobQuery(payload=((("user_id",), 1),)))
    assert [job.pk for job in walked.rows] == [ours.pk]


# --- pages --------------------------------------------------------------------------------------


@pytest.fixture
def hundred_jobs(project, queue):
    """100 jobs: 40 share one created_at (so the id breaks ties), the others a microsecond
    apart; newest first as the list orders them."""
    ids = [
        job.pk
        for job in services.submit_jobs(
            project, [JobSpec(queue="default", job_type="t")] * 100
        ).jobs
    ]
    base = datetime(2024, 5, 1, 12, 0, 0, 500000, tzinfo=UTC)
    for n, pk in enumerate(ids[40:], start=1):
        Job.objects.for_project(project).filter(pk=pk).update(
            created_at=base + timedelta(microseconds=n)
        )
    Job.objects.for_project(project).filter(pk__in=ids[:40]).update(created_at=base)
    return list(
        Job.objects.for_project(project).order_by("-created_at", "-pk").values_list("pk", flat=True)
    )


def pks(jobs_page):
    return [job.pk for job in jobs_page.rows]


@pytest.mark.django_db(transaction=True)
def test_pages_walk_older_and_back_newer_without_gaps_or_duplicates(project, hundred_jobs):
    query = JobQuery()
    first = page(project, query, limit=30)
    assert pks(first) == hundred_jobs[:30]
    assert first.newer_cursor is None
    walked, current = [first], first
    while current.older_cursor:
        current = page(project, query, before=current.older_cursor, limit=30)
        walked.append(current)
    assert [pk for p in walked for pk in pks(p)] == hundred_jobs
    assert [len(p.rows) for p in walked] == [30, 30, 30, 10]
    back = [current]
    while current.newer_cursor:
        current = page(project, query, after=current.newer_cursor, limit=30)
        back.append(current)
    assert [pks(p) for p in back] == [pks(p) for p in reversed(walked)]


@pytest.mark.django_db(transaction=True)
def test_going_newer_to_the_top_gives_the_whole_first_page(project, hundred_jobs):
    query = JobQuery()
    second = page(project, query, before=page(project, query, limit=30).older_cursor, limit=30)
    # Only 30 jobs are newer than the second page: with 40 a page, the first page is served.
    top = page(project, query, after=second.newer_cursor, limit=40)
    assert pks(top) == hundred_jobs[:40]
    assert top.newer_cursor is None
    assert pks(page(project, query, before=top.older_cursor, limit=40)) == hundred_jobs[40:80]


@pytest.mark.django_db(transaction=True)
def test_a_page_past_the_end_is_empty_and_leads_back(project, hundred_jobs):
    query = JobQuery()
    last = page(project, query, before=page(project, query, limit=99).older_cursor, limit=5)
    assert pks(last) == hundred_jobs[99:]
    assert last.older_cursor is None
    # Older than the oldest job (its cursor, as a page starting with it issues it): nothing,
    # and the way back leads to the jobs just newer.
    beyond = page(project, query, before=last.newer_cursor, limit=5)
    assert beyond.rows == []
    assert beyond.older_cursor is None
    back = page(project, query, after=beyond.newer_cursor, limit=5)
    assert pks(back) == hundred_jobs[94:99]


@pytest.mark.django_db(transaction=True)
def test_cursors_keep_microseconds_and_compare_strictly(project, hundred_jobs):
    query = JobQuery()
    one = page(project, query, limit=1)
    assert pks(one) == hundred_jobs[:1]
    nxt = page(project, query, before=one.older_cursor, limit=1)
    assert pks(nxt) == hundred_jobs[1:2]
    newest = Job.objects.for_project(project).get(pk=hundred_jobs[0]).created_at
    following = Job.objects.for_project(project).get(pk=hundred_jobs[1]).created_at
    assert newest - following == timedelta(microseconds=1)


@pytest.mark.django_db(transaction=True)
def test_pages_apply_the_query(project, queue):
    tagged = [submit(project, tags=["keep"]).pk for _ in range(5)]
    submit(project, tags=["other"])
    first = page(project, JobQuery(tag="keep"), limit=3)
    rest = page(project, JobQuery(tag="keep"), before=first.older_cursor, limit=3)
    assert set(pks(first) + pks(rest)) == set(tagged)
    assert rest.older_cursor is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("cursor", ["garbage", "", "MjAyNC0wMS0wMVQwMDowMDowMCswMDowMHx6eno="])
def test_a_bad_cursor_or_limit_names_its_parameter(project, queue, cursor):
    submit(project)
    if cursor:
        refused("before", lambda: page(project, JobQuery(), before=cursor))
        refused("after", lambda: page(project, JobQuery(), after=cursor))
    good = page(project, JobQuery(), limit=1)
    refused("after", lambda: page(project, JobQuery(), before="x", after="y"))
    refused("limit", lambda: page(project, JobQuery(), limit=0))
    refused("limit", lambda: page(project, JobQuery(), limit=501))
    assert len(good.rows) == 1


# --- counting -----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_count_stops_at_its_cap(project, queue):
    services.submit_jobs(project, [JobSpec(queue="default", job_type="t", tags=["x"])] * 5)
    submit(project)
    assert count_matching(project, JobQuery(tag="x"), cap=3) == (3, True)
    assert count_matching(project, JobQuery(tag="x"), cap=5) == (5, False)
    assert count_matching(project, JobQuery(tag="x")) == (5, False)
    assert count_matching(project, JobQuery(queue="missing")) == (0, False)


# --- bulk actions by query ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_bulk_action_takes_a_query(project, queue, other_project, other_queue):
    hit = [submit(project, payload={"user_id": 5}) for _ in range(2)]
    miss = submit(project, payload={"user_id": 6})
    theirs = submit(other_project, payload={"user_id": 5})
    query = parse_search("payload.user_id:5 state:pending")
    assert services.bulk_action(project, "cancel", query=query) == 2
    states = dict(Job.objects.all_tenants().values_list("pk", "state"))
    assert {states[job.pk] for job in hit} == {JobState.CANCELLED}
    assert states[miss.pk] == states[theirs.pk] == JobState.PENDING


@pytest.mark.django_db(transaction=True)
def test_a_bulk_action_refuses_an_empty_query_or_no_target(project, queue, org):
    submit(project)
    refused("filter", lambda: services.bulk_action(project, "cancel", query=JobQuery()))
    refused("ids", lambda: services.bulk_action(project, "cancel"))
    refused("ids", lambda: services.bulk_action(project, "cancel", ids=[], query=JobQuery(q="t")))
    assert set(Job.objects.for_project(project).values_list("state", flat=True)) == {"pending"}
    assert not AuditLog.objects.for_org(org).exists()


# --- the API ------------------------------------------------------------------------------------

URL = "/api/v1/jobs"


@pytest.fixture
def client(key_client, queue):
    return key_client("jobs:read", "jobs:write")


def listed(response):
    assert response.status_code == 200, response.content
    return {uuid.UUID(job["id"]) for job in response.json()["results"]}


@pytest.mark.django_db(transaction=True)
def test_the_api_list_filters_by_repeated_payload_parameters(client, project):
    both = submit(project, payload={"user_id": 42, "plan": "pro"})
    submit(project, payload={"user_id": 42, "plan": "free"})
    text = submit(project, payload={"user_id": "42", "plan": "pro"})
    found = listed(client.get(f"{URL}?payload=user_id:42&payload=plan:pro"))
    assert found == {both.pk, text.pk}
    assert listed(client.get(URL, {"search": "payload.plan:pro payload.user_id:42"})) == found


@pytest.mark.django_db(transaction=True)
def test_the_api_list_next_link_keeps_the_payload_terms(client, project):
    for _ in range(3):
        submit(project, payload={"n": 1})
    submit(project, payload={"n": 2})
    first = client.get(URL, {"payload": "n:1", "limit": 2}).json()
    assert "payload=n%3A1" in first["next"]
    second = client.get(first["next"]).json()
    assert len(first["results"]) + len(second["results"]) == 3


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"payload": "user_id"}, "payload"),
        ({"payload": "a:[1]"}, "payload"),
        ({"search": "colour:red"}, "search"),
        ({"id": "nope"}, "id"),
        ({"tag": "t" * 101}, "tag"),
    ],
)
def test_the_api_list_refuses_bad_filters_with_400(client, project, params, field):
    submit(project)
    response = client.get(URL, params)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["details"]["field"] == field


@pytest.mark.django_db(transaction=True)
def test_the_bulk_filter_takes_the_list_filters(client, project):
    hit = submit(project, payload={"user_id": 9}, tags=["t"])
    submit(project, payload={"user_id": 9}, tags=["u"])
    Job.objects.for_project(project).filter(pk=hit.pk).update(
        created_at=datetime(2024, 1, 1, tzinfo=UTC)
    )
    body = {
        "action": "cancel",
        "filter": {
            "payload": ["user_id:9"],
            "created_before": "2024-06-01T00:00:00Z",
            "search": "tag:t",
        },
    }
    response = client.post(f"{URL}/bulk", body, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"affected": 1}
    assert Job.objects.for_project(project).get(pk=hit.pk).state == JobState.CANCELLED


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"payload": "user_id:9"}, "payload"),
        ({"payload": ["user_id"]}, "payload"),
        ({"created_after": "soon"}, "created_after"),
        ({"search": "colour:red"}, "search"),
    ],
)
def test_a_bad_bulk_filter_is_400_and_changes_nothing(client, project, bad, field):
    job = submit(project, payload={"user_id": 9})
    response = client.post(f"{URL}/bulk", {"action": "cancel", "filter": bad}, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert field in error["message"]
    assert Job.objects.for_project(project).get(pk=job.pk).state == JobState.PENDING
