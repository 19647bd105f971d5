"""Probes bring upstreams back: `check_upstreams`, the admin's "Test now", the server's prober."""

from __future__ import annotations

import datetime as dt
import io
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from gateway.models import Provider, Upstream, UpstreamState
from gateway.prober import DISABLED_PROBE_EVERY, due_ids
from tests.conftest import Fake, Gateway, OpenAIFake, start_gateway

pytestmark = pytest.mark.django_db(transaction=True)

MakeUpstream = Callable[..., Upstream]
LATER = dt.timedelta(hours=1)


def cooled(
    make: MakeUpstream, label: str, token: str, failure: str = "server", **fields: Any
) -> Upstream:
    return make(
        label=label,
        token=token,
        state=UpstreamState.COOLING,
        cooldown_until=dt.datetime.now(dt.UTC) + LATER,
        consecutive_failures=3,
        last_failure=failure,
        **fields,
    )


def states() -> dict[str, tuple[str, str]]:
    return {u.label: (u.state, u.last_failure) for u in Upstream.objects.all()}


def test_check_upstreams_probes_every_enabled_upstream_and_prints_a_table(
    fake: Fake, fake_openai: OpenAIFake, make_upstream: MakeUpstream
) -> None:
    puter, openai = (
        {"base_url": fake.url},
        {"provider": Provider.OPENAI, "base_url": fake_openai.base_url},
    )
    cooled(make_upstream, "revived", "ok-revived", **puter)
    make_upstream(label="bad", token="bad-token", **puter)
    make_upstream(label="busy", token="busy-token", **puter)
    make_upstream(label="oa-ok", token="ok-oa-token", **openai)
    cooled(make_upstream, "oa-limited", "ok-limited", "rate_limited", **openai)
    make_upstream(label="off", token="ok-probe-off-token", enabled=False, **puter)
    out, err = io.StringIO(), io.StringIO()

    call_command("check_upstreams", stdout=out, stderr=err)

    rows = [line.split(None, 5) for line in out.getvalue().splitlines()]
    assert rows[0] == ["label", "provider", "account", "state", "ms", "result"]
    table = {
        row[0]: (row[1], row[2], row[3], row[5] if len(row) > 5 else row[4]) for row in rows[1:]
    }
    assert table["bad"] == ("puter", "bad", "disabled", "auth: Authentication failed")
    assert table["busy"] == ("puter", "busy", "cooling", "rate_limited: Too many requests.")
    assert table["revived"] == ("puter", "revived", "healthy", "ok")
    assert table["oa-ok"] == ("openai", "oa-ok", "healthy", "ok")
    assert table["oa-limited"][2:] == (
        "cooling",
        "ok, still cooling: a model listing proves no rate limit or credit",
    )
    assert set(table) == {"bad", "busy", "revived", "oa-ok", "oa-limited"}
    assert err.getvalue() == "2 of 5 upstream(s) healthy.\n"
    assert states()["revived"] == (UpstreamState.HEALTHY, "server")
    # Puter's probe is one token of a cheap chat model: the model listing needs no token.
    probe = next(r for r in fake.stats()["requests"] if r["path"] == "/drivers/call")
    assert (probe["body"]["args"]["model"], probe["body"]["args"]["max_tokens"]) == (
        "gpt-4o-mini",
        1,
    )


def test_the_admin_action_test_now_probes_the_selected_upstreams(
    fake: Fake, make_upstream: MakeUpstream
) -> None:
    revived = cooled(make_upstream, "revived", "ok-revived", base_url=fake.url)
    bad = make_upstream(label="bad", token="bad-token", base_url=fake.url)
    untouched = cooled(make_upstream, "untouched", "ok-untouched", base_url=fake.url)
    client = Client()
    client.force_login(User.objects.create(username="root", is_staff=True, is_superuser=True))

    response = client.post(
        reverse("admin:gateway_upstream_changelist"),
        {"action": "test_now", "_selected_action": [revived.pk, bad.pk]},
        follow=True,
    )

    shown = sorted(str(message) for message in get_messages(response.wsgi_request))
    assert len(shown) == 2
    assert shown[0].startswith("bad: disabled, auth: Authentication failed in ")
    assert shown[1].startswith("revived: healthy, ok in ")
    assert states() == {
        "revived": (UpstreamState.HEALTHY, "server"),
        "bad": (UpstreamState.DISABLED, "auth"),
        "untouched": (UpstreamState.COOLING, "server"),
    }
    untouched.refresh_from_db()
    assert untouched.cooldown_until is not None


def test_the_admin_shows_why_and_since_when_an_upstream_is_out(
    fake: Fake, make_upstream: MakeUpstream
) -> None:
    make_upstream(label="bad", token="bad-token", base_url=fake.url)
    call_command("check_upstreams", stdout=io.StringIO(), stderr=io.StringIO())
    client = Client()
    client.force_login(User.objects.create(username="root", is_staff=True, is_superuser=True))
    page = client.get(reverse("admin:gateway_upstream_changelist")).content.decode()
    assert "Authentication failed" in page
    assert "column-last_error_at" in page
    assert "column-last_failure" in page


# --- the server's prober ------------------------------------------------------------------


@pytest.fixture(scope="module")
def probing_gateways(
    django_db_setup: None, django_db_blocker: Any, fake_server: Fake
) -> Iterator[list[Gateway]]:
    with django_db_blocker.unblock():
        servers = [
            start_gateway(fake_server.url, f"pool-prober-{n}", UPSTREAM_PROBE_INTERVAL="0.25")
            for n in (1, 2)
        ]
    yield servers
    for server in servers:
        server.process.terminate()
        server.process.wait(10)


def wake(gateway: Gateway, key: str) -> httpx.Response:
    """Any model call starts the instance's prober."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(gateway.v1 + "/chat/completions", json=body, headers=headers, timeout=10)


def test_the_servers_prober_brings_a_cooled_upstream_back(
    probing_gateways: list[Gateway], fake: Fake, alice_key: str, make_upstream: MakeUpstream
) -> None:
    upstream = cooled(make_upstream, "cooled", "ok-cooled")
    first = probing_gateways[0]
    assert wake(first, alice_key).json()["error"]["code"] == "upstream_unavailable"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        upstream.refresh_from_db()
        if upstream.state == UpstreamState.HEALTHY:
            break
        time.sleep(0.05)
    assert (upstream.state, upstream.cooldown_until, upstream.consecutive_failures) == (
        UpstreamState.HEALTHY,
        None,
        0,
    )
    assert wake(first, alice_key).status_code == 200


def test_one_prober_probes_at_a_time_across_instances(
    probing_gateways: list[Gateway], fake: Fake, alice_key: str, make_upstream: MakeUpstream
) -> None:
    # A rate-limited account: each probe is refused and the upstream stays cooling.
    cooled(make_upstream, "busy", "busy-token", "rate_limited")
    for gateway in probing_gateways:
        wake(gateway, alice_key)
    time.sleep(0.5)
    before = fake.stats()["calls"]
    time.sleep(3)
    probes = fake.stats()["calls"] - before
    # Elected rounds are at least 0.225 s apart (0.9 of the interval): at most 14 in 3 s;
    # two instances probing on their own would make about twice as many.
    assert 5 <= probes <= 15, probes
    assert states()["busy"] == (UpstreamState.COOLING, "rate_limited")


def test_a_round_probes_cooling_upstreams_and_disabled_ones_every_few_minutes(
    make_upstream: MakeUpstream,
) -> None:
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=DISABLED_PROBE_EVERY + 1)
    just_now = dt.datetime.now(dt.UTC)
    make_upstream(label="healthy", token="ok-due-healthy-token")
    cooled(make_upstream, "cooling", "ok-due-cooling-token")
    make_upstream(
        label="old", token="ok-due-old-token", state=UpstreamState.DISABLED, last_error_at=long_ago
    )
    make_upstream(
        label="new", token="ok-due-new-token", state=UpstreamState.DISABLED, last_error_at=just_now
    )
    cooled(make_upstream, "off", "ok-due-off-token", enabled=False)
    due = set(Upstream.objects.filter(pk__in=due_ids()).values_list("label", flat=True))
    assert due == {"cooling", "old"}
