from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from gateway.models import Provider, Upstream, UpstreamState
from gateway.token_cipher import decrypt_token
from gateway.upstreams import add_upstream, import_puter_tokens, set_enabled

pytestmark = pytest.mark.django_db

TOKEN = "puter-secret-token-0123456789"


def run(*args: str, stdin: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdin=StringIO(stdin), stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def raw_upstream_rows() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM gateway_upstream")
        return repr(cursor.fetchall())


def test_add_upstream_reads_the_token_from_stdin_and_prints_the_label() -> None:
    out, err = run("add_upstream", "--label", "pool-1", stdin=TOKEN + "\n")

    assert out == "pool-1\n"
    assert err == "Added puter upstream pool-1.\n"
    upstream = Upstream.objects.get()
    assert upstream.label == "pool-1"
    assert upstream.provider == Provider.PUTER
    assert upstream.base_url == ""
    assert upstream.account == ""
    assert upstream.account_name == "pool-1"
    assert upstream.weight == 1
    assert upstream.max_concurrency == 3
    assert upstream.priority == 0
    assert upstream.models == []
    assert upstream.enabled is True
    assert upstream.state == UpstreamState.HEALTHY
    assert upstream.consecutive_failures == 0
    assert upstream.token == TOKEN


def test_the_token_is_stored_only_as_ciphertext() -> None:
    run("add_upstream", "--label", "pool-1", stdin=TOKEN)

    assert TOKEN not in raw_upstream_rows()
    assert decrypt_token(Upstream.objects.get().token_encrypted) == TOKEN


def test_add_upstream_takes_every_setting() -> None:
    out, _err = run(
        "add_upstream",
        "--label=openrouter",
        "--account=team",
        "--provider=openai",
        "--base-url=https://openrouter.example/api/v1/",
        "--weight=5",
        "--max-concurrency=10",
        "--priority=-1",
        "--models=gpt-4o, gpt-4o-mini,",
        stdin=TOKEN,
    )

    assert out == "openrouter\n"
    upstream = Upstream.objects.get()
    assert upstream.provider == Provider.OPENAI
    assert upstream.account == "team"
    assert upstream.base_url == "https://openrouter.example/api/v1"
    assert (upstream.weight, upstream.max_concurrency, upstream.priority) == (5, 10, -1)
    assert upstream.models == ["gpt-4o", "gpt-4o-mini"]
    assert upstream.token == TOKEN


@pytest.mark.parametrize("stdin", ["", " \n"])
def test_add_upstream_refuses_an_empty_token(stdin: str) -> None:
    with pytest.raises(CommandError, match="No token on stdin"):
        run("add_upstream", "--label", "pool-1", stdin=stdin)

    assert not Upstream.objects.exists()


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--provider", "openai"], "An OpenAI-compatible upstream needs a base URL."),
        (["--provider", "anthropic"], "The provider must be one of puter, openai."),
        (["--base-url", "ftp://example.com"], "'ftp://example.com' is not an http(s) URL."),
        (["--weight", "0"], "The weight must be at least 1."),
        (["--max-concurrency", "0"], "The concurrency cap must be at least 1."),
        (["--weight", "heavy"], "--weight must be a whole number, not 'heavy'."),
    ],
)
def test_add_upstream_refuses_bad_settings(args: list[str], reason: str) -> None:
    with pytest.raises(CommandError) as caught:
        run("add_upstream", "--label", "pool-1", *args, stdin=TOKEN)

    assert str(caught.value) == reason
    assert not Upstream.objects.exists()


def test_add_upstream_refuses_a_taken_label() -> None:
    run("add_upstream", "--label", "pool-1", stdin=TOKEN)

    with pytest.raises(CommandError, match=r"An upstream labelled 'pool-1' already exists\."):
        run("add_upstream", "--label", "pool-1", stdin="another-token")

    assert Upstream.objects.get().token == TOKEN


def test_add_upstream_errors_never_echo_the_token() -> None:
    with pytest.raises(CommandError) as caught:
        run("add_upstream", "--label", "", stdin=TOKEN)

    assert TOKEN not in str(caught.value)


def test_add_upstream_function_raises_field_errors() -> None:
    with pytest.raises(ValidationError) as caught:
        add_upstream(label="x", token="t", provider="openai", weight=0)

    assert caught.value.message_dict == {
        "base_url": ["An OpenAI-compatible upstream needs a base URL."],
        "weight": ["The weight must be at least 1."],
    }


def test_import_puter_tokens_labels_by_hash_and_skips_known_ones() -> None:
    first = import_puter_tokens(["tok-a", " tok-b ", "", "tok-a"])
    again = import_puter_tokens(["tok-b", "tok-c"])

    def label(token: str) -> str:
        return "puter-" + hashlib.sha256(token.encode()).hexdigest()[:8]

    assert [u.label for u in first] == [label("tok-a"), label("tok-b")]
    assert [u.label for u in again] == [label("tok-c")]
    stored = {u.label: u for u in Upstream.objects.all()}
    assert sorted(stored) == sorted([label("tok-a"), label("tok-b"), label("tok-c")])
    assert stored[label("tok-b")].token == "tok-b"
    assert stored[label("tok-c")].provider == Provider.PUTER
    assert "tok-a" not in raw_upstream_rows()


def test_set_enabled_false_only_switches_the_upstream_off() -> None:
    upstream = add_upstream(label="pool-1", token=TOKEN)

    set_enabled(upstream=upstream, enabled=False)

    upstream.refresh_from_db()
    assert upstream.enabled is False
    assert upstream.state == UpstreamState.HEALTHY


def test_set_enabled_true_gives_a_clean_healthy_start() -> None:
    upstream = add_upstream(label="pool-1", token=TOKEN)
    Upstream.objects.filter(pk=upstream.pk).update(
        enabled=False,
        state=UpstreamState.DISABLED,
        consecutive_failures=4,
        cooldown_until=datetime(2030, 1, 1, tzinfo=UTC),
        last_error="401 from upstream",
    )
    upstream.refresh_from_db()

    set_enabled(upstream=upstream, enabled=True)

    upstream.refresh_from_db()
    assert upstream.enabled is True
    assert upstream.state == UpstreamState.HEALTHY
    assert upstream.consecutive_failures == 0
    assert upstream.cooldown_until is None
    assert upstream.last_error == "401 from upstream"
