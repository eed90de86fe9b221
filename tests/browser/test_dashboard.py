"""The dashboard as an operator uses it, in chromium, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from typing import Literal

import httpx
from playwright.sync_api import Browser, Page, expect

from instar.lifecycle import State
from tests.browser.conftest import SQLITE_ONLY, Dashboard, screenshot, watched_context

PAGES = ["/", "/jobs", "/jobs/1", "/queues", "/workers", "/awakeables"]


def wait_for(check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"not true within {timeout} s: {check}")


@SQLITE_ONLY
def test_without_a_session_every_page_asks_for_a_token_and_a_wrong_one_is_refused(
    browser: Browser, dashboard: Dashboard
) -> None:
    with watched_context(browser, dashboard) as (context, _):
        page = context.new_page()
        page.goto(f"{dashboard.url}/queues")
        expect(page).to_have_url(f"{dashboard.url}/login?next=%2Fqueues")
        page.fill("#token", "instar_not-a-token")
        page.click("button[type=submit]")
        expect(page.locator(".problem")).to_have_text("That token is unknown or revoked.")
        page.fill("#token", dashboard.admin)
        page.click("button[type=submit]")
        expect(page).to_have_url(f"{dashboard.url}/queues")
        cookie = next(c for c in context.cookies() if c["name"] == "instar_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert dashboard.admin not in cookie["value"]


def test_every_page_renders_with_jobs_in_both_themes_and_writes_its_screenshot(
    browser: Browser, dashboard: Dashboard, database: str
) -> None:
    with dashboard.app() as app:
        app.enqueue("signup", {"user": {"email": "bob@example.com"}, "password": "hunter2"})
        app.enqueue("hello", {"name": "amy"}, queue="emails")
    backend = database.split(":", 1)[0]
    backgrounds = {}
    schemes: tuple[Literal["light", "dark"], ...] = ("light", "dark")
    for scheme in schemes:
        with watched_context(browser, dashboard, scheme) as (context, _):
            page = context.new_page()
            dashboard.sign_in(page)
            for path in PAGES:
                response = page.goto(f"{dashboard.url}{path}")
                assert response is not None and response.status == 200, path
                expect(page.locator("#live-status")).to_have_text("live")
                name = path.strip("/").replace("/", "-") or "overview"
                screenshot(page, f"{backend}-{name}-{scheme}")
            backgrounds[scheme] = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert backgrounds["light"] != backgrounds["dark"]


@SQLITE_ONLY
def test_the_overview_draws_every_state_and_every_move_of_the_lifecycle_table(
    page: Page, dashboard: Dashboard
) -> None:
    from instar.lifecycle import JOBS

    page.goto(f"{dashboard.url}/")
    for state in State:
        expect(page.locator(f"#node-{state.value}")).to_have_count(1)
    moves = sum(len(JOBS.targets(s)) for s in State)
    expect(page.locator("svg.lifecycle path.edge")).to_have_count(moves)
    page.click("#node-ready")
    expect(page).to_have_url(f"{dashboard.url}/jobs?state=ready")


def test_the_overview_ready_count_climbs_as_five_jobs_are_enqueued_from_a_terminal(
    page: Page, dashboard: Dashboard
) -> None:
    page.goto(f"{dashboard.url}/")
    expect(page.locator("#live-status")).to_have_text("live")
    expect(page.locator("#count-ready")).to_have_text("0")
    page.evaluate("window.notReloaded = true")
    for n in range(5):
        dashboard.cli("enqueue", "hello", "--args", json.dumps({"name": f"n{n}"}))
    expect(page.locator("#count-ready")).to_have_text("5")
    expect(page.locator("#activity li")).to_have_count(5)
    assert page.evaluate("window.notReloaded") is True


@SQLITE_ONLY
def test_a_running_jobs_progress_bar_moves_and_its_phase_changes(
    page: Page, dashboard: Dashboard
) -> None:
    with dashboard.app() as app:
        job = app.enqueue("phases", {"steps": 3, "pause": 1.0})
    page.goto(f"{dashboard.url}/jobs/{job.id}")
    expect(page.locator("#job-state")).to_have_text("ready")
    dashboard.worker()
    expect(page.locator("#job-phase")).to_have_text("stage 1")
    expect(page.locator("#job-phase")).to_have_text("stage 2")
    expect(page.locator("#job-progress")).to_have_attribute("value", re.compile(r"^2(\.0)?$"))
    expect(page.locator("#job-state")).to_have_text("completed")


def test_cancelling_from_the_page_with_the_keyboard_turns_the_badge_to_cancelled_and_the_timeline_names_the_token(  # noqa: E501
    page: Page, dashboard: Dashboard
) -> None:
    with dashboard.app() as app:
        job = app.enqueue("hello")
    page.goto(f"{dashboard.url}/jobs/{job.id}")
    page.focus("#verb-cancel")
    page.keyboard.press("Enter")
    expect(page.locator("#job-state")).to_have_text("cancelled")
    expect(page.locator("#timeline tbody tr").last.locator(".actor")).to_have_text("ops-admin")
    expect(page.locator("#verb-cancel")).to_be_disabled()


def test_two_tabs_acting_on_one_job_one_wins_and_the_other_shows_why(
    browser: Browser, dashboard: Dashboard
) -> None:
    with dashboard.app() as app:
        job = app.enqueue("hello")
    with watched_context(browser, dashboard) as (context, _):
        first, second = context.new_page(), context.new_page()
        statuses: list[int] = []
        for tab in (first, second):
            tab.on("dialog", lambda dialog: dialog.accept())
            tab.on("response", lambda response: statuses.append(response.status))
        dashboard.sign_in(first)
        # The second tab is one left open: it hears nothing of the first one's action.
        second.route("**/ui/events*", lambda route: route.abort())
        for tab in (first, second):
            tab.goto(f"{dashboard.url}/jobs/{job.id}")
        first.click("#verb-cancel")
        expect(first.locator("#job-state")).to_have_text("cancelled")
        second.click("#verb-pause")
        expect(second.locator("#refusal")).to_contain_text("cancelled")
        expect(second.locator("#job-state")).to_have_text("cancelled")
        assert not [s for s in statuses if s >= 500]
    with dashboard.app() as app:
        assert app.get(job.id).state is State.CANCELLED


def test_resolving_an_awakeable_from_the_inbox_moves_its_job_on(
    page: Page, dashboard: Dashboard
) -> None:
    with dashboard.app() as app:
        job = app.enqueue("approval")
    dashboard.worker()
    page.goto(f"{dashboard.url}/awakeables")
    wait_for(lambda: page.reload() and page.locator(".awakeable").count() == 1)
    page.fill("textarea[name=value]", '{"by": "ops"}')
    page.click(".awakeable button:has-text('Resolve')")
    expect(page.locator(".empty")).to_have_text("No job waits for an answer.")
    page.goto(f"{dashboard.url}/jobs/{job.id}")
    expect(page.locator("#job-state")).to_have_text("completed")
    expect(page.locator("#job-result")).to_contain_text("approved by ops")


@SQLITE_ONLY
def test_pausing_a_queue_stops_new_starts_until_it_is_resumed(
    page: Page, dashboard: Dashboard
) -> None:
    with dashboard.app() as app:
        app.enqueue("hello")
    page.goto(f"{dashboard.url}/queues")
    page.click("tr[data-queue=default] button:has-text('Pause')")
    expect(page.locator("tr[data-queue=default] .badge")).to_have_text("paused")
    with dashboard.app() as app:
        job = app.enqueue("hello")
    dashboard.worker()
    time.sleep(2.0)  # time for the worker to have claimed it, were the queue open
    with dashboard.app() as app:
        assert app.get(job.id).state is State.READY
    page.click("tr[data-queue=default] button:has-text('Resume')")
    expect(page.locator("tr[data-queue=default] td").nth(0)).to_have_text("active")
    with dashboard.app() as app:
        wait_for(lambda: app.get(job.id).state is State.COMPLETED)


def test_retry_all_matching_previews_then_applies_and_skips_what_the_table_refuses(
    page: Page, dashboard: Dashboard
) -> None:
    with dashboard.app() as app:
        failing = [app.enqueue("boom", {"label": str(n)}) for n in range(3)]
    dashboard.cli("worker", "--app", "tests.browser.dashboard_app:app", "--burst", "--quiet")
    with dashboard.app() as app:
        assert {app.get(j.id).state for j in failing} == {State.FAILED}
        waiting = [app.enqueue("boom", {"label": "later"}, delay=3600) for _ in range(2)]
    page.goto(f"{dashboard.url}/jobs?name=boom")
    expect(page.locator("table.jobs tbody tr")).to_have_count(5)
    page.select_option("select[name=verb]", "retry")
    page.click("#bulk-preview")
    expect(page.locator("#bulk-result")).to_contain_text("5 jobs match")
    expect(page.locator("#bulk-allowed")).to_have_text("3")
    page.click("#bulk-apply")
    expect(page.locator("#bulk-state")).to_have_text("done")
    expect(page.locator("#bulk-applied")).to_have_text("3")
    with dashboard.app() as app:
        assert {app.get(j.id).state for j in failing} == {State.READY}
        assert {app.get(j.id).state for j in waiting} == {State.SCHEDULED}
        assert app.history(failing[0].id)[-1].actor == "ops-admin"


@SQLITE_ONLY
def test_a_read_only_token_sees_every_action_disabled_and_a_forged_post_gets_403(
    browser: Browser, dashboard: Dashboard
) -> None:
    with dashboard.app() as app:
        job = app.enqueue("hello")
    reader = dashboard.token("viewer", "read")
    with watched_context(browser, dashboard) as (context, _):
        page = context.new_page()
        dashboard.sign_in(page, reader)
        expect(page.locator(".who")).to_contain_text("read-only")
        page.goto(f"{dashboard.url}/jobs/{job.id}")
        buttons = page.locator(".actions button")
        expect(buttons).to_have_count(5)
        for n in range(5):
            expect(buttons.nth(n)).to_be_disabled()
        page.goto(f"{dashboard.url}/queues")
        expect(page.locator("tr[data-queue=default] button")).to_be_disabled()
        csrf = page.locator("input[name=csrf]").first.get_attribute("value") or ""
        # With the page's own CSRF token, the scope still refuses.
        refused = page.request.post(f"{dashboard.url}/jobs/{job.id}/cancel", form={"csrf": csrf})
        assert refused.status == 403
        assert "operate" in refused.text()
    # An admin's browser tricked into posting without the form's token: refused too.
    with watched_context(browser, dashboard) as (context, _):
        page = context.new_page()
        dashboard.sign_in(page)
        forged = page.request.post(f"{dashboard.url}/jobs/{job.id}/cancel", form={"csrf": "x"})
        assert forged.status == 403
    with dashboard.app() as app:
        assert app.get(job.id).state is State.READY


@SQLITE_ONLY
def test_markup_in_arguments_errors_and_phases_renders_as_text_and_secrets_are_masked(
    page: Page, dashboard: Dashboard
) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    with dashboard.app() as app:
        failing = app.enqueue("boom", {"label": "<img src=x onerror=alert(1)>"})
        secret = app.enqueue(
            "signup", {"user": {"email": "<script>alert(2)</script>"}, "password": "hunter2"}
        )
    dashboard.cli("worker", "--app", "tests.browser.dashboard_app:app", "--burst", "--quiet")
    page.goto(f"{dashboard.url}/jobs/{failing.id}")
    expect(page.locator("#job-error")).to_contain_text("<script>alert('boom <img src=x")
    expect(page.locator("#job-args")).to_contain_text("<img src=x onerror=alert(1)>")
    page.goto(f"{dashboard.url}/jobs/{secret.id}")
    expect(page.locator("#job-args")).to_contain_text('"email": "<script>alert(2)</script>"')
    expect(page.locator("#job-args")).to_contain_text('"password": "••••••"')
    assert "hunter2" not in page.content()
    page.goto(f"{dashboard.url}/jobs?name=boom")
    expect(page.locator("table.jobs tbody tr")).to_have_count(1)
    assert dialogs == []


@SQLITE_ONLY
def test_stopping_the_server_ten_seconds_shows_reconnecting_then_every_missed_transition_once(
    page: Page, dashboard: Dashboard
) -> None:
    page.goto(f"{dashboard.url}/")
    expect(page.locator("#live-status")).to_have_text("live")
    dashboard.stop()
    expect(page.locator("#live-status")).to_have_text("reconnecting…")
    with dashboard.app() as app:
        missed = [app.enqueue("hello", {"name": f"m{n}"}) for n in range(3)]
        app.cancel(missed[0].id, "terminal")
    time.sleep(10)
    dashboard.start()
    expect(page.locator("#live-status")).to_have_text("live", timeout=20_000)
    expect(page.locator("#activity li")).to_have_count(4)
    ids = page.locator("#activity li").evaluate_all("items => items.map(i => i.dataset.event)")
    assert len(set(ids)) == 4
    expect(page.locator("#count-ready")).to_have_text("2")
    expect(page.locator("#count-cancelled")).to_have_text("1")


def test_a_worker_killed_with_sigkill_shows_its_job_orphaned_then_ready_then_completed(
    page: Page, dashboard: Dashboard
) -> None:
    with dashboard.app() as app:
        job = app.enqueue("steady", {"seconds": 3.0})
    page.goto(f"{dashboard.url}/jobs/{job.id}")
    doomed = dashboard.worker()
    expect(page.locator("#job-state")).to_have_text("running")
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait()
    dashboard.worker()
    expect(page.locator("#job-state")).to_have_text("completed", timeout=40_000)
    moves = page.locator("#timeline tbody tr.move .badge").all_inner_texts()
    assert moves[moves.index("orphaned") :] == ["orphaned", "ready", "running", "completed"]


@SQLITE_ONLY
def test_the_event_stream_and_counts_need_a_session(dashboard: Dashboard) -> None:
    for path in ("/ui/events", "/ui/counts"):
        answer = httpx.get(f"{dashboard.url}{path}", timeout=5)
        assert answer.status_code == 401
        assert answer.headers["hx-redirect"].startswith("/login")


@SQLITE_ONLY
def test_a_sign_in_form_from_another_site_is_refused(dashboard: Dashboard) -> None:
    answer = httpx.post(
        f"{dashboard.url}/login", data={"token": dashboard.admin, "next": "/"}, timeout=10
    )
    assert answer.status_code == 403
    assert "instar_session" not in answer.cookies


@SQLITE_ONLY
def test_an_open_overview_asks_nothing_while_nothing_moves_and_once_per_burst(
    page: Page, dashboard: Dashboard
) -> None:
    page.goto(f"{dashboard.url}/")
    expect(page.locator("#live-status")).to_have_text("live")
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    page.wait_for_timeout(3000)  # nothing moves (a sleep that lets the page's events in)
    assert asked == []
    with dashboard.app() as app:
        app.enqueue_many("hello", [{"name": f"b{n}"} for n in range(20)])
    expect(page.locator("#count-ready")).to_have_text("20")
    expect(page.locator("#activity li")).to_have_count(20)
    page.wait_for_timeout(2000)  # room for any further request the burst would cause
    assert [url for url in asked if "/ui/counts" in url] == [f"{dashboard.url}/ui/counts"]
    assert [url for url in asked if "/ui/counts" not in url] == []


@SQLITE_ONLY
def test_the_job_list_keeps_its_filter_in_the_url_and_pages_stay_stable_while_jobs_arrive(
    page: Page, dashboard: Dashboard
) -> None:
    with dashboard.app() as app:
        first = app.enqueue_many("hello", [{"name": f"p{n}"} for n in range(60)])
        app.enqueue("signup", {"user": {"email": "x@example.com"}, "password": "p"})
    page.goto(f"{dashboard.url}/jobs")
    page.fill("input[name=name]", "hello")
    page.click("button:has-text('Filter')")
    expect(page).to_have_url(re.compile(r"name=hello"))
    expect(page.locator("table.jobs tbody tr")).to_have_count(50)
    shown = page.locator("table.jobs tbody tr td:first-child").all_inner_texts()
    with dashboard.app() as app:
        app.enqueue_many("hello", [{"name": f"late{n}"} for n in range(5)])
    page.click("#older")
    rest = page.locator("table.jobs tbody tr td:first-child").all_inner_texts()
    assert sorted(int(i) for i in shown + rest) == sorted(j.id for j in first)
    page.goto(f"{dashboard.url}/jobs?args=name:p7")
    expect(page.locator("table.jobs tbody tr")).to_have_count(1)
    page.goto(f"{dashboard.url}/jobs?args=nonsense")
    expect(page.locator(".problem")).to_contain_text("path:value")


@SQLITE_ONLY
def test_a_token_that_may_not_read_cannot_sign_in(dashboard: Dashboard) -> None:
    resolver = dashboard.token("resolver", "resolve")
    with httpx.Client(base_url=dashboard.url, timeout=30) as client:
        form = client.get("/login").text
        csrf = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        answer = client.post("/login", data={"token": resolver, "next": "/", "csrf": csrf})
        assert answer.status_code == 403
        assert "needs a token with the &#39;read&#39; scope" in answer.text
        assert "instar_session" not in client.cookies
        assert client.get("/jobs").status_code in (303, 307)


@SQLITE_ONLY
def test_an_open_event_stream_ends_soon_after_its_token_is_revoked(dashboard: Dashboard) -> None:
    secret = dashboard.token("watcher", "read")
    with dashboard.session(secret) as client:
        with client.stream("GET", "/ui/events", timeout=30) as stream:
            time.sleep(5.5)  # past the stream's recheck interval
            dashboard.cli("token", "revoke", "watcher")
            with dashboard.app() as app:
                job = app.enqueue("hello", {"name": "after revocation"})
            received = b"".join(stream.iter_raw())  # ends: the server closed it
        assert f'"job_id":{job.id}'.encode() not in received
        assert client.get("/").status_code in (303, 307)  # back to sign in


@SQLITE_ONLY
def test_hostile_form_and_header_values_get_clear_answers_not_server_errors(
    dashboard: Dashboard,
) -> None:
    with dashboard.app() as app:
        job = app.enqueue("approval")
    dashboard.worker()
    with dashboard.app() as app:
        wait_for(lambda: bool(app.awakeables(job.id)))
        awakeable = app.awakeables(job.id)[0]
    with dashboard.session() as client:
        page = client.get("/awakeables").text
        csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        deep = client.post(
            f"/awakeables/{awakeable.id}/resolve",
            data={"csrf": csrf, "value": "[" * 5000 + "]" * 5000},
        )
        assert deep.status_code == 409 and "must be JSON" in deep.text
        for path in ("/jobs/abc", "/jobs/0", "/jobs/99999999999999999999"):
            assert client.get(path).status_code == 404, path
        assert "before must be a job id" in client.get("/jobs?before=-1").text
        assert "printable keys" in client.get("/jobs?args=a%00:1").text
        odd = {b"Last-Event-ID": "\u00b2".encode("latin-1")}
        with client.stream("GET", "/ui/events", headers=odd) as stream:
            assert stream.status_code == 200  # read from now on, as without one
    api = httpx.get(
        f"{dashboard.url}/api/v1/events/stream",
        headers={
            b"Authorization": f"Bearer {dashboard.admin}".encode(),
            b"Last-Event-ID": "\u00b2".encode("latin-1"),
        },
    )
    assert api.status_code == 400
