"""After its creation, no secret shows anywhere: logs, replies, error pages, the admin, rows.

One flow creates every kind of secret the way operators and users do (commands, the admin,
the portal), uses them over real HTTP against a live gateway, provokes the errors clients,
users and upstreams cause, then searches every surface it saw for every secret.
"""

from __future__ import annotations

import io
import logging
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client, override_settings

from accounts.models import ApiKey, UsageLog
from gateway.models import Upstream
from gateway.testing.fake_puter import Receive, Scope, Send
from tests.conftest import Fake, Gateway, serve_in_thread, start_gateway
from tests.test_secrets import Surfaces, every_stored_value

pytestmark = pytest.mark.django_db(transaction=True)

METRICS_TOKEN = "metrics-" + secrets.token_urlsafe(24)
MAX_BYTES = 64 * 1024
KEY_PATTERN = re.compile(r"sk-[A-Za-z0-9_-]{48}")
HELLO = [{"role": "user", "content": "hi"}]


async def echoing_upstream(scope: Scope, receive: Receive, send: Send) -> None:
    """An OpenAI-compatible server that fails every call, quoting the credential it was sent.

    Careless upstreams do this. `echo-400` fails as the client's fault, `echo-midstream`
    after its first chunk, anything else as a 500.
    """
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    credential = dict(scope["headers"]).get(b"authorization", b"").decode()
    error = {"message": f"Rejected credential {credential}", "type": "invalid_request_error"}
    if b"echo-midstream" in body:
        first = {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}
        events = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in (first, {"error": error}))
        sse = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": sse})
        await send({"type": "http.response.body", "body": events})
        return
    status = 400 if b"echo-400" in body else 500
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": orjson.dumps({"error": error})})


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    with serve_in_thread(echoing_upstream, "echoing upstream") as url:
        yield url


@pytest.fixture(scope="module")
def live(django_db_setup: None, fake_server: Fake) -> Iterator[Gateway]:
    server = start_gateway(
        fake_server.url,
        "secrets",
        METRICS_TOKEN=METRICS_TOKEN,
        MAX_REQUEST_BYTES=str(MAX_BYTES),
        # Failures are provoked on purpose: keep the upstreams in the pool for the next call.
        UPSTREAM_FAILURES_TO_COOL="1000",
    )
    yield server
    server.process.terminate()
    server.process.wait(10)


@dataclass
class Ledger:
    """The flow's secrets, the one page or output that showed each, and every later surface."""

    secrets: dict[str, str] = field(default_factory=dict)
    shown_in: dict[str, str] = field(default_factory=dict)  # secret label -> creation text
    after: Surfaces = field(default_factory=Surfaces)

    def secret(self, label: str, value: str, *, shown_in: str = "") -> str:
        assert len(value) >= 16, label  # shorter strings turn up by chance
        self.secrets[label] = value
        if shown_in:
            self.shown_in[label] = shown_in
        return value


class Browser:
    """A person's browser on the live gateway: cookies, the CSRF token, every page it got."""

    def __init__(self, live: Gateway, who: str, after: Surfaces) -> None:
        self.http = httpx.Client(base_url=live.url, timeout=30, follow_redirects=True)
        self.who, self.after = who, after

    def csrf(self) -> str:
        return self.http.cookies["csrftoken"]

    def get(self, path: str, status: int = 200) -> httpx.Response:
        return self.after.add_reply(f"{self.who}: GET {path}", self.http.get(path), status)

    def post(self, path: str, data: dict[str, Any], status: int = 200) -> httpx.Response:
        reply = self.http.post(path, data={**data, "csrfmiddlewaretoken": self.csrf()})
        return self.after.add_reply(f"{self.who}: POST {path}", reply, status)

    def show_once(self, path: str, data: dict[str, Any]) -> tuple[str, str]:
        """POST a form that answers with a new key; the key and the page, kept apart."""
        reply = self.http.post(path, data={**data, "csrfmiddlewaretoken": self.csrf()})
        assert reply.status_code == 200, reply.text[:500]
        assert "no-store" in reply.headers["cache-control"]
        (key,) = set(KEY_PATTERN.findall(reply.text))
        return key, reply.text


def sign_in(live: Gateway, path: str, username: str, password: str, after: Surfaces) -> Browser:
    browser = Browser(live, username, after)
    browser.get(path)  # sets the CSRF cookie
    # The real password with a wrong name: the refusal must not echo it back.
    refused = browser.post(path, {"username": "no-" + username, "password": password})
    assert "sessionid" not in browser.http.cookies, refused.text[:300]
    browser.post(path, {"username": username, "password": password})
    assert "sessionid" in browser.http.cookies
    return browser


def command(ledger: Ledger, name: str, *args: str, stdin: str = "") -> str:
    """Run a management command; its stderr is a later surface, its stdout is returned."""
    out, err = io.StringIO(), io.StringIO()
    extra = {"stdin": io.StringIO(stdin)} if stdin else {}
    call_command(name, *args, stdout=out, stderr=err, **extra)
    ledger.after.add(" ".join((name, *args, "stderr")), err.getvalue())
    return out.getvalue()


def new_key(ledger: Ledger, label: str, name: str, *args: str) -> str:
    out = command(ledger, name, *args)
    assert KEY_PATTERN.fullmatch(out.strip()), out  # stdout is the key alone
    return ledger.secret(label, out.strip(), shown_in=out)


def create_with_commands(ledger: Ledger, echo_url: str) -> None:
    puter_token = ledger.secret("PUTER_TOKENS token", "ok-" + secrets.token_urlsafe(24))
    with override_settings(ADMIN_PASSWORD="", PUTER_TOKENS=[puter_token]):
        out = command(ledger, "bootstrap")
    shown = re.fullmatch(r"Admin password: (\S+)\nAPI key: (\S+)\n", out)
    assert shown is not None, out
    ledger.secret("admin password", shown[1], shown_in=out)
    ledger.secret("bootstrap key", shown[2], shown_in=out)
    bob = ledger.secret("bob's password", secrets.token_urlsafe(18))
    ledger.after.add("create_user stdout", command(ledger, "create_user", "bob", stdin=bob))
    bad = ledger.secret("wrong upstream token", "bad-" + secrets.token_urlsafe(24))
    # The highest tier: the first call tries it, fails and disables it.
    out = command(ledger, "add_upstream", "--label", "wrong-token", "--priority", "5", stdin=bad)
    ledger.after.add("add_upstream stdout", out)
    token = ledger.secret("echoed Puter token", "ok-puter-" + secrets.token_urlsafe(24))
    options = ("--label", "echo-puter", "--base-url", echo_url, "--models", "echo-puter")
    out = command(ledger, "add_upstream", *options, "--priority", "10", stdin=token)
    ledger.after.add("add_upstream stdout", out)
    new_key(ledger, "key for one model", "issue_key", "dave", "--models", "gpt-4o-mini")
    new_key(ledger, "key of 1 rpm", "issue_key", "dave", "--rpm", "1")
    revoked = new_key(ledger, "revoked key", "issue_key", "erin")
    ledger.after.add("revoke_key stdout", command(ledger, "revoke_key", revoked[:11]))
    old = new_key(ledger, "key rotated away", "issue_key", "erin")
    new_key(ledger, "rotated command key", "rotate_key", old[:11], "--grace-minutes", "0")


def create_in_the_admin(admin: Browser, ledger: Ledger, echo_url: str) -> None:
    token = ledger.secret("echoed upstream token", "ok-echo-" + secrets.token_urlsafe(24))
    upstream = {
        **{"label": "echo", "provider": "openai", "base_url": echo_url + "/v1", "token": token},
        **{"account": "", "weight": "1", "max_concurrency": "3", "priority": "10"},
        **{"models": "echo-400, echo-500, echo-midstream", "_save": "Save"},
    }
    admin.post("/admin/gateway/upstream/add/", upstream)
    assert Upstream.objects.get(label="echo").token == token
    password = ledger.secret("carol's password", secrets.token_urlsafe(18))
    user = {"username": "carol", "usable_password": "true", "_save": "Save"}
    admin.post("/admin/auth/user/add/", {**user, "password1": password, "password2": password})
    carol = User.objects.get(username="carol")
    assert carol.check_password(password)
    form = {"user": str(carol.pk), "name": "from-admin", "budget_period": "none", "_save": "Save"}
    key, page = admin.show_once("/admin/accounts/apikey/add/", form)
    ledger.secret("admin-made key", key, shown_in=page)


def create_in_the_portal(bob: Browser, ledger: Ledger) -> None:
    key, page = bob.show_once("/keys/", {"name": "laptop"})
    ledger.secret("portal key rotated away", key, shown_in=page)
    rotated, page = bob.show_once(f"/keys/{key[:11]}/rotate/", {})
    ledger.secret("rotated portal key", rotated, shown_in=page)


def call(ledger: Ledger, live: Gateway, name: str, key: str, status: int, **body: Any) -> None:
    reply = httpx.post(
        live.v1 + "/chat/completions",
        json={"messages": HELLO, **body},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    ledger.after.add_reply(f"API: {name}", reply, status)


def use_the_api(ledger: Ledger, live: Gateway) -> None:
    keys, add = ledger.secrets, ledger.after.add_reply
    portal = keys["rotated portal key"]
    call(ledger, live, "chat", portal, 200, model="gpt-4o-mini")
    call(ledger, live, "stream", portal, 200, model="gpt-4o-mini", stream=True)
    old = keys["portal key rotated away"]
    call(ledger, live, "old secret in its grace", old, 200, model="gpt-5-nano")
    call(ledger, live, "wrong key", portal[:-4] + "abcd", 401, model="gpt-4o-mini")
    call(ledger, live, "revoked key", keys["revoked key"], 401, model="gpt-4o-mini")
    call(ledger, live, "rotated-away key", keys["key rotated away"], 401, model="gpt-4o-mini")
    call(ledger, live, "model not allowed", keys["key for one model"], 403, model="gpt-5-nano")
    call(ledger, live, "first of 1 rpm", keys["key of 1 rpm"], 200, model="gpt-4o-mini")
    call(ledger, live, "past 1 rpm", keys["key of 1 rpm"], 429, model="gpt-4o-mini")
    call(ledger, live, "upstream 500", portal, 502, model="gpt-4o-mini+http500")
    call(ledger, live, "upstream down", portal, 502, model="gpt-4o-mini+down")
    call(ledger, live, "error first", portal, 502, model="claude-sonnet-4-5+errorfirst")
    call(ledger, live, "error mid-stream", portal, 200, model="gpt-4o-mini+failafter2", stream=True)
    call(ledger, live, "echoing upstream 400", portal, 400, model="echo-400")
    call(ledger, live, "echoing upstream 500", portal, 404, model="echo-500")
    midstream = {"model": "echo-midstream", "stream": True}
    call(ledger, live, "echoing upstream mid-stream", portal, 200, **midstream)
    call(ledger, live, "echoing Puter upstream", portal, 404, model="echo-puter")
    auth = {"Authorization": f"Bearer {keys['bootstrap key']}"}
    add("API: models", httpx.get(live.v1 + "/models", headers=auth), 200)
    add("API: key", httpx.get(live.v1 + "/key", headers=auth), 200)
    add("API: unknown route", httpx.get(live.v1 + "/nope", headers=auth), 404)
    add("API: wrong method", httpx.get(live.v1 + "/chat/completions", headers=auth), 405)
    huge = b'{"model": "fake", "pad": "' + b"x" * MAX_BYTES + b'"}'
    add("API: too large", httpx.post(live.v1 + "/chat/completions", content=huge), 413)
    scrape = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    add("metrics", httpx.get(live.url + "/metrics", headers=scrape), 200)
    add("metrics, wrong token", httpx.get(live.url + "/metrics", headers=auth), 401)
    add("healthz", httpx.get(live.url + "/healthz"), 200)
    add("readyz", httpx.get(live.url + "/readyz"), 200)


def visit_the_admin(admin: Browser) -> None:
    for path in ("/admin/", "/admin/overview/", "/admin/overview/export.csv"):
        admin.get(path)
    pages = {
        "accounts/apikey": ApiKey,
        "gateway/upstream": Upstream,
        "auth/user": User,
        "accounts/usagelog": UsageLog,
    }
    for path, model in pages.items():
        admin.get(f"/admin/{path}/")
        for pk in model._default_manager.values_list("pk", flat=True):
            admin.get(f"/admin/{path}/{pk}/change/")
    every = list(Upstream.objects.values_list("pk", flat=True))
    admin.post("/admin/gateway/upstream/", {"action": "test_now", "_selected_action": every})


def visit_the_portal(bob: Browser, live: Gateway) -> None:
    for path in ("/", "/keys/", "/usage/", "/usage/export.csv", "/playground/"):
        bob.get(path)
    chat = {"model": "gpt-4o-mini", "messages": HELLO}
    reply = bob.http.post("/playground/chat", json=chat, headers={"X-CSRFToken": bob.csrf()})
    bob.after.add_reply("bob: playground chat", reply, 200)
    bob.get("/no-such-page/", 404)
    bob.get("/admin/")  # not staff: the admin's login page says so
    bob.get("/admin/overview/")
    forged = httpx.post(live.url + "/keys/", data={"name": "x"}, cookies=bob.http.cookies)
    bob.after.add_reply("bob: POST /keys/ without a CSRF token", forged, 403)


def collect_in_process(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    for form in ("csv", "jsonl"):
        ledger.after.add(f"export_usage {form}", command_out("export_usage", "--format", form))
    client = Client(raise_request_exception=False)
    client.force_login(User.objects.get(username="bob"))

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("a fault inside the keys page")

    monkeypatch.setattr("accounts.views_keys.own_keys", broken)
    page = client.get("/keys/")
    assert page.status_code == 500
    headers = "\n".join(f"{name}: {value}" for name, value in page.headers.items())
    ledger.after.add("portal 500 page", f"{headers}\n\n{page.content.decode()}")


def command_out(name: str, *args: str) -> str:
    out = io.StringIO()
    call_command(name, *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def assert_surfaces_were_seen(ledger: Ledger, log: str) -> None:
    """The surfaces hold what they should, so that a secret's absence means something."""
    texts = ledger.after.texts
    used = ("rotated portal key", "key of 1 rpm", "key for one model", "bootstrap key")
    for label in used:
        assert ledger.secrets[label][:11] in log, label  # calls are logged by key prefix
    key_list = texts["admin: GET /admin/accounts/apikey/"]
    assert all(key.prefix in key_list for key in ApiKey.objects.all())
    upstreams = texts["admin: GET /admin/gateway/upstream/"]
    assert "Authentication failed" in upstreams  # the wrong token's last error is shown
    assert "Rejected credential Bearer" in upstreams  # so is the echoing upstream's
    assert "Rejected credential" in texts["API: echoing upstream 400"]
    assert "Rejected credential" in texts["API: echoing upstream mid-stream"]
    assert ledger.secrets["rotated portal key"][:11] in texts["export_usage csv"]
    assert "gateway_" in texts["metrics"]


def test_no_secret_shows_anywhere_after_its_creation(
    live: Gateway,
    fake: Fake,
    echo_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO)
    start = live.log_path.stat().st_size
    ledger = Ledger()
    create_with_commands(ledger, echo_url)
    operator, password = settings.ADMIN_USERNAME, ledger.secrets["admin password"]
    admin = sign_in(live, "/admin/login/", operator, password, ledger.after)
    bob = sign_in(live, "/login/", "bob", ledger.secrets["bob's password"], ledger.after)
    create_in_the_admin(admin, ledger, echo_url)
    sign_in(live, "/login/", "carol", ledger.secrets["carol's password"], ledger.after).get("/")
    create_in_the_portal(bob, ledger)
    use_the_api(ledger, live)
    visit_the_portal(bob, live)  # first: the playground makes a key the admin then lists
    visit_the_admin(admin)
    collect_in_process(ledger, monkeypatch)
    with live.log_path.open(errors="replace") as file:
        file.seek(start)
        log = ledger.after.add("gateway log", file.read())
    ledger.after.add("database", every_stored_value())
    ledger.after.add("in-process log", caplog.text)
    ledger.secret("METRICS_TOKEN", METRICS_TOKEN)
    ledger.secret("DJANGO_SECRET_KEY", settings.SECRET_KEY)
    for n, fernet in enumerate(settings.TOKEN_ENCRYPTION_KEYS):
        ledger.secret(f"TOKEN_ENCRYPTION_KEY {n}", fernet)

    assert_surfaces_were_seen(ledger, log)
    for label, page in ledger.shown_in.items():
        assert page.count(ledger.secrets[label]) == 1, f"{label} not shown exactly once"
    leaks = ledger.after.leaks(ledger.secrets)
    assert not leaks, "secrets found after their creation:\n" + "\n".join(leaks)
    assert fake.stats()["calls"] >= 5
