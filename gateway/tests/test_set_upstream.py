"""`set_upstream`: the operator's switch, weight, cap and priority for one upstream."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from gateway.models import Upstream, UpstreamState


def run(*args: str) -> str:
    out = StringIO()
    call_command("set_upstream", *args, stdout=out, stderr=StringIO())
    return out.getvalue().strip()


@pytest.fixture
def upstream() -> Upstream:
    row = Upstream(label="main", state=UpstreamState.COOLING, consecutive_failures=4)
    row.token = "secret-token-123"
    row.save()
    return row


@pytest.mark.django_db
def test_set_upstream_changes_weight_cap_and_priority(upstream: Upstream) -> None:
    assert run("main", "--weight", "5", "--max-concurrency", "20", "--priority", "2") == "main"
    upstream.refresh_from_db()
    assert (upstream.weight, upstream.max_concurrency, upstream.priority) == (5, 20, 2)


@pytest.mark.django_db
def test_disabling_and_enabling_gives_a_clean_healthy_start(upstream: Upstream) -> None:
    run("main", "--disable")
    upstream.refresh_from_db()
    assert upstream.enabled is False
    run("main", "--enable")
    upstream.refresh_from_db()
    assert (upstream.enabled, upstream.state, upstream.consecutive_failures) == (
        True,
        UpstreamState.HEALTHY,
        0,
    )


@pytest.mark.django_db
def test_set_upstream_refuses_unknown_labels_and_bad_values(upstream: Upstream) -> None:
    with pytest.raises(CommandError, match="No upstream is labelled 'nope'"):
        run("nope", "--weight", "2")
    with pytest.raises(CommandError, match="--weight must be at least 1"):
        run("main", "--weight", "0")
