"""An operator sees everyone's usage and the pool; a user reaches no one else's data."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import httpx
import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import Page

from accounts.keys import KeyLimits, issue_key
from accounts.models import ApiKey
from gateway.models import Upstream, UpstreamState
from tests.browser.conftest import Tab, signed_in_tab
from tests.conftest import ISSUED_SECRETS, Gateway

pytestmark = pytest.mark.django_db(transaction=True)


def alices_key(portal: Gateway) -> ApiKey:
    """Alice's key with one real call on it, so the rollup has a row to show."""
    alice = User.objects.create_user("alice")
    key, secret = issue_key(user=alice, name="notebook", limits=KeyLimits())
    ISSUED_SECRETS.append(secret)
    reply = httpx.post(
        portal.v1 + "/chat/completions",
        headers={"Authorization": f"Bearer {secret}"},
        json={"model": "gpt-5-nano", "messages": [{"role": "user", "content": "Hi"}]},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    return key


def overview(page: Page) -> dict[str, object]:
    page.goto("/admin/")
    page.get_by_role("link", name="Usage overview").click()
    page.wait_for_function("() => window.Chart && Chart.getChart('users-chart')")
    return {
        "title": page.locator("h1").inner_text(),
        "requests": page.locator("#total-requests").inner_text(),
        "users": page.evaluate("Chart.getChart('users-chart').data.labels"),
        "pool_chart": page.evaluate("Chart.getChart('pool-chart').data.datasets[0].data"),
        "pool": [
            row.locator("th, td").all_inner_texts()
            for row in page.locator("#pool-table tbody tr").all()
        ],
        "download": page.locator("#ledger-download").get_attribute("href"),
        "ledger": page.request.get(page.locator("#ledger-download").get_attribute("href") or "")
        .text()
        .splitlines(),
    }


def test_an_operator_sees_another_users_usage_and_the_upstream_pool(
    open_tab: Callable[[], Tab], portal: Gateway, upstream: Upstream
) -> None:
    alices_key(portal)
    Upstream.objects.create(
        label="spare",
        token_encrypted=upstream.token_encrypted,
        state=UpstreamState.COOLING,
        cooldown_until=timezone.now() + dt.timedelta(minutes=5),
        consecutive_failures=3,
        last_error="HTTP 503 from upstream",
    )
    root = User.objects.create_user("root", is_staff=True, is_superuser=True)
    tab = signed_in_tab(open_tab, portal, root)

    tab.do(lambda page: page.goto("/admin/"))
    tab.screenshot("admin-index")
    seen = tab.do(overview)
    tab.screenshot("admin-overview")

    assert seen["title"] == "Usage overview"
    assert seen["requests"] == "1"
    assert seen["users"] == ["alice"]
    assert seen["pool_chart"] == [1, 1, 0]
    pool = seen["pool"]
    assert isinstance(pool, list)
    assert [row[0] for row in pool] == ["puter-main", "spare"]
    assert pool[1][2] == "cooling"
    assert pool[1][7] == "HTTP 503 from upstream"
    today = timezone.now().astimezone(dt.UTC).date()
    start = (today - dt.timedelta(days=29)).isoformat()
    assert seen["download"] == f"/admin/overview/export.csv?start={start}&end={today.isoformat()}"
    ledger = seen["ledger"]
    assert isinstance(ledger, list)
    assert len(ledger) == 2  # the header and alice's one request
    assert ledger[1].endswith(",alice")


def visits(page: Page, key: ApiKey) -> dict[str, object]:
    page.goto("/keys/")
    csrf = page.locator("input[name=csrfmiddlewaretoken]").first.input_value()
    admin = page.goto("/admin/")
    admin_text = page.locator("#content").inner_text()
    overview_page = page.goto("/admin/overview/")
    overview_url = page.url
    return {
        "admin_url": admin.url if admin else "",
        "admin_text": admin_text,
        "overview_url": overview_url,
        "overview_status": overview_page.status if overview_page else 0,
        "usage": page.request.get(f"/usage/?key={key.prefix}").status,
        "export": page.request.get(f"/usage/export.csv?key={key.prefix}").status,
        "revoke": page.request.post(
            f"/keys/{key.prefix}/revoke/", headers={"X-CSRFToken": csrf, "Referer": page.url}
        ).status,
        "rotate": page.request.post(
            f"/keys/{key.prefix}/rotate/", headers={"X-CSRFToken": csrf, "Referer": page.url}
        ).status,
        "keys_page": (page.goto("/keys/") and page.locator("main").inner_text()) or "",
    }


def test_a_user_reaches_neither_the_admin_nor_another_users_data(
    open_tab: Callable[[], Tab], portal: Gateway, upstream: Upstream
) -> None:
    key = alices_key(portal)
    carol = User.objects.create_user("carol")
    tab = signed_in_tab(open_tab, portal, carol)

    seen = tab.do(lambda page: visits(page, key))

    assert seen["overview_url"] == f"{portal.url}/admin/login/?next=/admin/overview/"
    assert "You are authenticated as carol, but are not authorized" in str(seen["admin_text"])
    assert (seen["usage"], seen["export"], seen["revoke"], seen["rotate"]) == (404, 404, 404, 404)
    assert key.prefix not in str(seen["keys_page"])
    key.refresh_from_db()
    assert key.revoked_at is None
    assert key.previous_digest == ""
