"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a live server.

What an operator does on a normal day, end to end: sign in, create a queue, watch jobs
submitted through the API arrive on the Overview without a reload, filter jobs by state and by
a payload field, retry every dead job matching a filter, read a dead job's error and logs,
drain a worker; and what a viewer and an outsider may not do. The network is cut off from
every other host, as on a machine without internet: a page that needed a CDN would break.

Screenshots of every page at 1280 and 390 px go to test-artifacts/dashboard/ (git-ignored),
to be looked at; the phone-width pages are also checked not to scroll sideways.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

import tf
from accounts.models import Project, Role, User
from jobs import services as job_services
from jobs.models import Job, JobState
from queues.models import Queue
from tests.api.conftest import Engine
from workers.models import Worker, WorkerStatus

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
PASSWORD = "correct-horse-battery"
WIDTHS = {"desktop": 1280, "phone": 390}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not tf.CHROMIUM.exists(),
        reason=f"BROWSER TESTS SKIPPED: {tf.CHROMIUM} is missing; `python3 tf.py test` installs "
        "Debian's chromium when run as root (apt-get install -y chromium)",
    ),
]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread; the tests' own ORM
    # calls (building data, checking the database) are ordinary blocking calls all the same.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(tf.CHROMIUM))
            yield browser
            browser.close()
    finally:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


class Session:
    """One browser context (its own cookies) on the live server, cut off from other hosts."""

    def __init__(
        self, browser: Any, base_url: str, width: int = 1280, scheme: str = "light"
    ) -> None:
        self.base_url = base_url
        self.foreign: list[str] = []
        self.context = browser.new_context(
            viewport={"width": width, "height": 900}, color_scheme=scheme
        )
        self.context.set_default_timeout(15_000)
        ours = urlsplit(base_url).netloc
        self.context.route("**/*", lambda route: self._offline(route, ours))
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _offline(self, route: Any, ours: str) -> None:
        if urlsplit(route.request.url).netloc == ours:
            route.continue_()
        else:
            self.foreign.append(route.request.url)
            route.abort("internetdisconnected")

    def go(self, path: str) -> Any:
        return self.page.goto(self.base_url + path)

    def sign_in(self, email: str, password: str = PASSWORD) -> None:
        self.go("/login")
        self.page.get_by_label("Email").fill(email)
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(lambda url: "/login" not in url)

    def set_refresh(self, seconds: int) -> None:
        self.page.select_option("#live-interval", str(seconds))

    def mark_page(self) -> None:
        """Tag the current document, to prove later that nothing reloaded it."""
        self.page.evaluate("window.__tfUnreloaded = true")

    def unreloaded(self) -> bool:
        return bool(self.page.evaluate("window.__tfUnreloaded === true"))

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()
        assert self.foreign == [], f"pages asked other hosts for {self.foreign}"
        assert self.errors == [], f"JavaScript errors: {self.errors}"


@pytest.fixture
def open_session(chromium: Any, live_server: Any) -> Iterator[Callable[..., Session]]:
    sessions: list[Session] = []

    def make(width: int = 1280, scheme: str = "light") -> Session:
        session = Session(chromium, live_server.url, width, scheme)
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        session.close()


def person(org: Any, role: str, name: str | None = None) -> User:
    return User.objects.create_user(
        f"{name or role}@{org.slug}.example", PASSWORD, organization=org, role=role
    )


def api_client(live_server: Any, raw_key: str) -> httpx.Client:
    return httpx.Client(
        base_url=live_server.url, headers={"Authorization": f"Bearer {raw_key}"}, timeout=10
    )


def test_sign_in_create_a_queue_and_watch_api_jobs_arrive_live(
    open_session, live_server, org, project, queue, make_api_key
):
    member = person(org, Role.MEMBER)
    session = open_session()
    session.sign_in(member.email)
    page = session.page

    session.go("/queues")
    page.get_by_label("Name", exact=True).fill("emails")
    page.get_by_role("button", name="Create queue").click()
    page.get_by_role("link", name="emails", exact=True).first.wait_for()
    assert Queue.objects.for_project(project).filter(name="emails").exists()

    session.go("/")
    session.set_refresh(2)
    pending = page.locator('[data-state="pending"] [data-count]')
    assert pending.get_attribute("data-count") == "0"
    session.mark_page()
    _, raw = make_api_key(scopes=["jobs:write"])
    with api_client(live_server, raw) as api:
        for n in range(3):
            response = api.post(
                "/api/v1/jobs",
                json={"queue": "emails", "job_type": "send", "payload": {"user_id": n}},
            )
            assert response.status_code == 201, response.text
    page.wait_for_function(
        "document.querySelector('[data-state=\"pending\"] [data-count]')"
        ".getAttribute('data-count') === '3'",
        timeout=15_000,
    )
    assert session.unreloaded(), "the counters changed by reloading the page"
    assert page.locator("[data-live-control]").get_attribute("data-state") == "on"
    session.shot("overview-live")


def test_filter_jobs_by_state_and_by_a_payload_field(open_session, org, project, queue):
    engine = Engine(project)
    for user_id in (42, 42, 7):
        engine.submit(job_type="send", payload={"user_id": user_id})
    engine.dead(error="card declined")
    member = person(org, Role.MEMBER)
    session = open_session()
    session.sign_in(member.email)
    page = session.page

    session.go("/jobs")
    page.select_option("#f-state", "dead")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**state=dead**")
    rows = page.locator("#table tbody tr")
    assert rows.count() == 1
    assert "dead" in rows.first.inner_text()

    session.go("/jobs")
    page.fill("#f-search", "payload.user_id:42")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**search=**")
    assert page.locator("#table tbody tr").count() == 2
    session.shot("jobs-payload-search")


def test_bulk_retry_every_dead_job_matching_a_filter(open_session, org, project, queue):
    engine = Engine(project)
    mailed = [engine.dead(job_type="send_email", error="SMTP 550") for _ in range(3)]
    other = [engine.dead(job_type="resize", error="bad image") for _ in range(2)]
    member = person(org, Role.MEMBER)
    session = open_session()
    session.sign_in(member.email)
    page = session.page

    session.go("/jobs?state=dead&job_type=send_email")
    session.mark_page()
    page.locator("[data-retry-all]").click()
    dialog = page.locator("dialog#confirm-retry-all")
    dialog.wait_for(state="visible")
    assert "send_email" in dialog.inner_text()
    dialog.locator("[data-confirm-ok]").click()
    page.locator("#toasts .toast").first.wait_for()
    assert "3" in page.locator("#toasts .toast").first.inner_text()
    assert session.unreloaded()
    retried = Job.objects.for_project(project).filter(pk__in=[j.pk for j in mailed])
    assert set(retried.values_list("state", flat=True)) <= {JobState.PENDING, JobState.SCHEDULED}
    untouched = Job.objects.for_project(project).filter(pk__in=[j.pk for j in other])
    assert set(untouched.values_list("state", flat=True)) == {JobState.DEAD}


def test_open_a_dead_job_and_read_its_error_and_logs(open_session, org, project, queue):
    engine = Engine(project)
    job, assigned = engine.start(job_type="charge")
    job_services.append_logs(
        project,
        job.pk,
        lease_token=assigned.lease_token,
        entries=[{"level": "error", "message": "gateway said: insufficient funds"}],
    )
    job_services.fail_job(
        project,
        job.pk,
        lease_token=assigned.lease_token,
        error="CardDeclined: 402",
        retryable=False,
        traceback=(
            "Traceback (most recent call last):\n"
            '  File "/srv/shop/billing/charge.py", line 41, in charge\n'
            "    response = gateway.capture(order.total, card=order.card_token)\n"
            '  File "/srv/shop/billing/gateway.py", line 118, in capture\n'
            "    raise CardDeclined(response.status)\n"
            "billing.gateway.CardDeclined: 402\n"
        ),
    )
    member = person(org, Role.MEMBER)
    session = open_session()
    session.sign_in(member.email)
    page = session.page

    session.go("/jobs?state=dead")
    page.locator(f'#table a[href="/jobs/{job.pk}"]').first.click()
    page.wait_for_url(f"**/jobs/{job.pk}")
    assert "CardDeclined: 402" in page.locator("#executions").inner_text()
    logs = page.locator("#executions details").first
    if logs.get_attribute("open") is None:
        logs.locator("summary").click()
    assert "gateway said: insufficient funds" in logs.inner_text()
    assert 'File "/srv/shop/billing/gateway.py", line 118' in logs.inner_text()
    session.shot("job-dead")


def test_drain_a_worker(open_session, org, project, queue):
    engine = Engine(project)
    engine.ensure_worker()
    worker = engine.worker
    assert worker is not None
    member = person(org, Role.MEMBER)
    session = open_session()
    session.sign_in(member.email)
    page = session.page

    session.go("/workers")
    session.mark_page()
    page.get_by_role("button", name=f"Drain {worker.name}").click()
    page.locator(f"dialog#drain-{worker.pk} [data-confirm-ok]").click()
    page.locator("#toasts .toast").first.wait_for()
    worker.refresh_from_db()
    assert worker.status == WorkerStatus.DRAINING
    assert "draining" in page.locator("#workers").inner_text()
    assert session.unreloaded()


def test_a_viewer_sees_no_write_control_and_is_refused_posting(open_session, org, project, queue):
    engine = Engine(project)
    engine.dead(error="boom")
    engine.ensure_worker()
    viewer = person(org, Role.VIEWER)
    session = open_session()
    session.sign_in(viewer.email)
    page = session.page
    job = Job.objects.for_project(project).get(state=JobState.DEAD)
    for path in ("/", "/queues", "/queues/default", "/jobs", f"/jobs/{job.pk}", "/workers"):
        session.go(path)
        # The only forms that post are the switcher and sign-out, open to every role.
        actions = page.eval_on_selector_all(
            "form[method=post], [hx-post]", "els => els.map(e => e.getAttribute('action'))"
        )
        assert set(actions) <= {"/switch", "/logout"}, (path, actions)
        assert page.locator("input[data-row]").count() == 0
    status = page.evaluate(
        """async () => {
            const cookie = document.cookie.split('; ').find(c => c.startsWith('csrftoken='));
            const token = cookie.split('=')[1];
            const body = new URLSearchParams({csrfmiddlewaretoken: token});
            const response = await fetch('/queues/default/pause', {method: 'POST', body});
            return response.status;
        }"""
    )
    assert status == 403
    assert not Queue.objects.for_project(project).get(name="default").paused


def test_an_outsider_gets_a_404_for_another_organizations_job(
    open_session, org, project, queue, other_org, other_project, other_queue
):
    theirs = Engine(other_project).submit(job_type="secret")
    member = person(org, Role.MEMBER)
    session = open_session()
    session.sign_in(member.email)
    response = session.go(f"/jobs/{theirs.pk}")
    assert response.status == 404
    assert "Not found" in session.page.inner_text("main")
    assert "secret" not in session.page.content()


def test_every_page_at_desktop_and_phone_width(open_session, org, project, queue, make_queue):
    engine = Engine(project)
    make_queue("emails")
    for n in range(5):
        engine.submit(queue="emails", job_type="send", payload={"user_id": n})
    engine.succeeded(result={"ok": True}, logs=("sent",))
    dead = engine.dead(error="SMTP 550 mailbox unavailable")
    engine.ensure_worker()
    Worker.objects.create(
        organization=org, project=project, name="old-worker", status=WorkerStatus.OFFLINE
    )
    member = person(org, Role.MEMBER)
    empty_org_admin = _empty_organization()
    pages = {
        "overview": "/",
        "queues": "/queues",
        "queue": "/queues/emails",
        "jobs": "/jobs",
        "dead-letters": "/jobs?state=dead",
        "job": f"/jobs/{dead.pk}",
        "workers": "/workers",
        "not-found": "/jobs/00000000-0000-0000-0000-000000000000",
    }
    for label, width in WIDTHS.items():
        anonymous = open_session(width)
        for name, path in (("login", "/login"), ("signup", "/signup")):
            anonymous.go(path)
            anonymous.shot(f"{name}-{label}")
            assert_fits(anonymous, width, name)
        session = open_session(width)
        session.sign_in(member.email)
        for name, path in pages.items():
            session.go(path)
            session.page.wait_for_load_state("networkidle")
            session.shot(f"{name}-{label}")
            assert_fits(session, width, name)
        # The system's dark theme, as an operator at night sees it (colours, contrast).
        dark = open_session(width, "dark")
        dark.sign_in(member.email)
        for name in ("overview", "jobs", "job"):
            dark.go(pages[name])
            dark.page.wait_for_load_state("networkidle")
            assert (
                dark.page.evaluate("getComputedStyle(document.body).backgroundColor")
                != "rgb(246, 247, 249)"
            ), "the dark theme did not apply"
            dark.shot(f"{name}-{label}-dark")
        newcomer = open_session(width)
        newcomer.sign_in(empty_org_admin.email)
        for name, path in (("overview", "/"), ("jobs", "/jobs"), ("workers", "/workers")):
            newcomer.go(path)
            newcomer.shot(f"empty-{name}-{label}")
            assert_fits(newcomer, width, f"empty {name}")


def assert_fits(session: Session, width: int, name: str) -> None:
    """The page does not scroll sideways (wide tables scroll inside their own box)."""
    scroll = session.page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"{name} is {scroll} px wide at {width} px"


def _empty_organization() -> User:
    from tests.conftest import build_tenant

    org, _, _ = build_tenant("newco")
    assert Project.objects.for_org(org).exists()
    return person(org, Role.ADMIN, "founder")
