"""A person signs in, makes a key, copies it, calls with it, sees it in usage and revokes it."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page

from gateway.models import Upstream
from tests.browser.conftest import ARTIFACTS, Tab
from tests.conftest import ISSUED_SECRETS, Gateway

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "blue-Harbor-42"
CHART_SUM = "id => Chart.getChart(id).data.datasets.map(d => d.data.reduce((a, b) => a + b, 0))"


def chat(portal: Gateway, secret: str) -> httpx.Response:
    return httpx.post(
        portal.v1 + "/chat/completions",
        headers={"Authorization": f"Bearer {secret}"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello!"}]},
        timeout=10,
    )


def sign_in(page: Page) -> str:
    page.goto("/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/")
    return page.locator("h1").inner_text()


def create_and_copy_key(page: Page) -> tuple[str, str, str]:
    page.goto("/keys/")
    assert page.locator(".empty").first.inner_text() == "No keys yet: create your first one below."
    page.get_by_label("Name").fill("laptop")
    page.get_by_label("Requests per minute").fill("30")
    page.get_by_role("button", name="Create key").click()
    shown = page.locator("#new-secret").input_value()
    page.get_by_role("button", name="Copy").click()
    page.locator("#copy-status").filter(has_text="Copied").wait_for()
    copied = page.evaluate("navigator.clipboard.readText()")
    return shown, copied, page.locator("#copy-status").inner_text()


def usage_figures(page: Page) -> tuple[str, list[int], list[int], list[str]]:
    page.goto("/usage/")
    page.wait_for_function("() => window.Chart && Chart.getChart('requests-chart')")
    requests = page.evaluate(CHART_SUM, "requests-chart")
    tokens = page.evaluate(CHART_SUM, "tokens-chart")
    totals = page.locator("section[aria-labelledby=totals-title] .stats").inner_text()
    row = page.locator("section[aria-labelledby=key-title] tbody tr").first
    per_key = row.locator("th, td").all_text_contents()
    return totals, requests, tokens, per_key


def fits_a_phone(page: Page) -> bool:
    """The usage page at a phone's width: nothing wider than the screen."""
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/usage/")
    page.wait_for_function("() => Chart.getChart('requests-chart')")
    fits = bool(page.evaluate("document.documentElement.scrollWidth <= 390"))
    page.screenshot(path=str(ARTIFACTS / "portal-usage-phone.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 860})
    return fits


def revoke(page: Page) -> str:
    page.goto("/keys/")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke").click()
    return page.locator(".messages").inner_text()


def test_a_key_made_in_the_portal_works_shows_in_usage_and_stops_when_revoked(
    open_tab: Callable[[], Tab], portal: Gateway, upstream: Upstream
) -> None:
    User.objects.create_user("alice", password=PASSWORD)
    tab = open_tab()
    tab.do(lambda page: page.goto("/login/"))
    tab.screenshot("portal-login")

    assert tab.do(sign_in) == "Hello, alice"
    shown, copied, status = tab.do(create_and_copy_key)
    ISSUED_SECRETS.append(shown)
    tab.screenshot("portal-keys-new-secret")
    first = chat(portal, copied)
    totals, requests, tokens, per_key = tab.do(usage_figures)
    tab.screenshot("portal-usage")
    phone = tab.do(fits_a_phone)
    tab.do(lambda page: page.goto("/"))
    tab.do(lambda page: page.wait_for_function("() => Chart.getChart('recent-chart')"))
    tab.screenshot("portal-overview")
    message = tab.do(revoke)
    after = chat(portal, copied)

    assert copied == shown
    assert phone is True
    assert shown.startswith("sk-")
    assert status == "Copied to the clipboard."
    assert first.status_code == 200, first.text
    usage = first.json()["usage"]
    assert requests == [1, 0, 0]  # answered, errors, refused
    assert sum(tokens) == usage["total_tokens"]
    assert f"Requests\n1\nPrompt tokens\n{usage['prompt_tokens']}" in totals
    assert per_key[:2] == [f"{shown[:11]}… (laptop)", "1"]
    assert per_key[4] == str(usage["total_tokens"])
    assert message == f"Key {shown[:11]}… revoked: it stopped working."
    assert after.status_code == 401
    assert after.json()["error"]["code"] == "invalid_api_key"
