"""Browser fixtures: Debian's Chromium, driven by Playwright, against a live gateway.

Playwright's sync API keeps an asyncio loop running on the thread that started it, and
Django refuses ORM calls on such a thread. So the browser lives on a thread of its own:
tests hand it their steps (`Tab.do`) and keep the database work on the main thread.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from tests.conftest import BASE_DIR, Fake, Gateway, start_gateway

T = TypeVar("T")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
ARTIFACTS = Path(settings.VAR_DIR) / "test-artifacts"
STEP_TIMEOUT_MS = 10_000


class BrowserThread:
    """One Chromium for the session, reached only through `run` on its own thread."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="browser")
        self._playwright: Playwright | None = None
        self.browser: Browser | None = None
        self.run(self._start)

    def _start(self) -> None:
        self._playwright = sync_playwright().start()
        self.browser = self._playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )

    def run(self, steps: Callable[..., T], *args: Any) -> T:
        return self._pool.submit(steps, *args).result()

    def close(self) -> None:
        def stop() -> None:
            if self.browser is not None:
                self.browser.close()
            if self._playwright is not None:
                self._playwright.stop()

        self.run(stop)
        self._pool.shutdown()


@dataclass
class Tab:
    """A page in a fresh browser context (its own cookies); its steps run on the browser thread."""

    thread: BrowserThread
    context: BrowserContext
    page: Page
    screenshots: list[Path] = field(default_factory=list)

    def do(self, steps: Callable[[Page], T]) -> T:
        return self.thread.run(steps, self.page)

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.do(lambda page: page.screenshot(path=str(path), full_page=True))
        self.screenshots.append(path)
        return path


@pytest.fixture(scope="session")
def static_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The portal's static files, Chart.js from node_modules included, as `make run` has them."""
    root = tmp_path_factory.mktemp("static")
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=BASE_DIR,
        env={**os.environ, "STATIC_ROOT": str(root)},
        check=True,
    )
    assert (root / "vendor" / "chart.js" / "chart.umd.min.js").exists(), "run `npm ci` first"
    return root


@pytest.fixture(scope="session")
def portal(
    django_db_setup: None, django_db_blocker: Any, fake_server: Fake, static_root: Path
) -> Iterator[Gateway]:
    with django_db_blocker.unblock():
        server = start_gateway(fake_server.url, "portal", STATIC_ROOT=str(static_root))
    yield server
    server.process.terminate()
    server.process.wait(10)


@pytest.fixture(scope="session")
def browser_thread() -> Iterator[BrowserThread]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    thread = BrowserThread()
    yield thread
    thread.close()


@pytest.fixture
def open_tab(browser_thread: BrowserThread, portal: Gateway) -> Iterator[Callable[[], Tab]]:
    tabs: list[Tab] = []

    def open_one() -> Tab:
        def start() -> tuple[BrowserContext, Page]:
            assert browser_thread.browser is not None
            context = browser_thread.browser.new_context(
                base_url=portal.url, viewport={"width": 1280, "height": 860}
            )
            context.grant_permissions(["clipboard-read", "clipboard-write"], origin=portal.url)
            context.set_default_timeout(STEP_TIMEOUT_MS)
            return context, context.new_page()

        context, page = browser_thread.run(start)
        tabs.append(Tab(browser_thread, context, page))
        return tabs[-1]

    yield open_one
    for tab in tabs:
        browser_thread.run(tab.context.close)


def signed_in_tab(open_tab: Callable[[], Tab], portal: Gateway, user: User) -> Tab:
    """A tab whose browser holds a session of `user`, as the login form would leave it."""
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    key = session.session_key
    assert key is not None
    tab = open_tab()
    name = settings.SESSION_COOKIE_NAME
    tab.do(lambda page: page.context.add_cookies([{"name": name, "value": key, "url": portal.url}]))
    return tab


def wait_until(check: Callable[[], T | None], *, timeout: float = 5.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("the condition did not hold in time")
