"""The dashboard in a real browser: Playwright driving Debian's chromium
(``make test`` installs it) against a real ``instar serve`` process, with real
workers and the CLI as subprocesses, on each backend.

Every page a test opens is watched: a request to another host, a Content
Security Policy violation or a server traceback fails the test. Screenshots
go to ``build/screenshots`` (not committed) for a reviewer to look at.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

import instar
from instar.web import tokens
from tests.browser.dashboard_app import handlers
from tests.web.conftest import free_port, stop

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
APP = "tests.browser.dashboard_app:app"
SCREENSHOTS = ROOT / "build" / "screenshots"
SQLITE_ONLY = pytest.mark.parametrize("database", ["sqlite"], indirect=True)
"""For a test of what the page itself does (the session, escaping, the
stream's reconnection), whose reads and writes behind it run on both backends
in the other tests here and in tests/web: it runs once, to keep `make test`
within its ten minutes."""


# Module scope, not session: sync Playwright keeps an event loop running in
# the main thread while it is open, and the tests after these call asyncio.run.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
    yield launched
    launched.close()


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@dataclass
class Dashboard:
    """One ``instar serve`` on a fixed port (so that a restart keeps its URL)."""

    database: str
    port: int
    admin: str
    process: subprocess.Popen[str] | None = None
    logs: list[str] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "instar.cli.main",
                "serve",
                "--database",
                self.database,
                "--app",
                APP,
                "--port",
                str(self.port),
            ],
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"instar serve exited: {self.process.communicate()[1]}")
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("instar serve did not answer within 20 s")

    def stop(self) -> None:
        if self.process is not None:
            self.logs.append(stop(self.process))
            self.process = None

    def token(self, name: str, *scopes: str) -> str:
        with instar.App(self.database) as app:
            return tokens.create(app.engine.store, name, scopes, None, app.clock.now())

    def app(self) -> instar.App:
        """An App on the dashboard's database with the handlers registered."""
        return handlers(instar.App(self.database))

    def cli(self, *args: str) -> str:
        """Run ``instar ARGS`` as a terminal would; its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "instar.cli.main", *args, "--database", self.database],
            cwd=ROOT,
            env={**_env(), "INSTAR_APP": APP},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def worker(self, *extra: str) -> subprocess.Popen[bytes]:
        """A worker process on the dashboard's database (stopped after the test)."""
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "instar.cli.main",
                "worker",
                "--app",
                APP,
                "--database",
                self.database,
                "--quiet",
                *extra,
            ],
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.workers.append(process)
        return process

    @contextmanager
    def session(self, token: str | None = None) -> Iterator[httpx.Client]:
        """An HTTP client signed in through the form, as a browser is (no JavaScript)."""
        with httpx.Client(base_url=self.url, timeout=30) as client:
            form = client.get("/login").text
            csrf = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            answer = client.post(
                "/login", data={"token": token or self.admin, "next": "/", "csrf": csrf}
            )
            assert answer.status_code == 303, answer.text
            yield client

    def sign_in(self, page: Page, token: str | None = None) -> None:
        page.goto(f"{self.url}/login")
        page.fill("#token", token or self.admin)
        page.click("button[type=submit]")
        page.wait_for_url(f"{self.url}/")


@pytest.fixture
def dashboard(database: str) -> Iterator[Dashboard]:
    with instar.App(database) as app:
        app.migrate()
        admin = tokens.create(app.engine.store, "ops-admin", ["admin"], None, app.clock.now())
    served = Dashboard(database, free_port(), admin)
    served.start()
    try:
        yield served
    finally:
        for process in served.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        served.stop()
    for log in served.logs:
        assert "Traceback" not in log, log


@dataclass
class Watched:
    """What a page did that no page may do: requests to other hosts, CSP violations."""

    foreign: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)


@contextmanager
def watched_context(
    browser: Browser, dashboard: Dashboard, scheme: Literal["light", "dark"] = "light"
) -> Iterator[tuple[BrowserContext, Watched]]:
    context = browser.new_context(color_scheme=scheme, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    seen = Watched()

    def on_request(request: object) -> None:
        url = getattr(request, "url", "")
        if not (url.startswith(dashboard.url) or url.startswith("data:")):
            seen.foreign.append(url)

    def on_console(message: object) -> None:
        text = getattr(message, "text", "")
        if "Content Security Policy" in text or "Refused to" in text:
            seen.violations.append(text)

    context.on("request", on_request)
    context.on("console", on_console)
    try:
        yield context, seen
    finally:
        context.close()
    assert seen.foreign == [], f"requests left for another host: {seen.foreign}"
    assert seen.violations == [], f"the page broke its Content Security Policy: {seen.violations}"


@pytest.fixture
def page(browser: Browser, dashboard: Dashboard) -> Iterator[Page]:
    """A signed-in page (as the admin token), watched."""
    with watched_context(browser, dashboard) as (context, _):
        page = context.new_page()
        page.on("dialog", lambda dialog: dialog.accept())
        dashboard.sign_in(page)
        yield page


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
