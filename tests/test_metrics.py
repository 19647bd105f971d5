"""`/metrics` over real HTTP: off without a token, Bearer-only with one, and what it counts."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.models import Upstream, UpstreamState
from tests.conftest import Fake, Gateway, start_gateway

pytestmark = pytest.mark.django_db(transaction=True)

METRICS_TOKEN = "metrics-token-for-tests-0123456789"
SCRAPE = {"Authorization": f"Bearer {METRICS_TOKEN}"}
CHAT = "/v1/chat/completions"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def scraped_gateway(django_db_setup: None, fake_server: Fake) -> Iterator[Gateway]:
    server = start_gateway(fake_server.url, "metrics", METRICS_TOKEN=METRICS_TOKEN)
    yield server
    server.process.terminate()
    server.process.wait(10)


def scrape(gateway: Gateway) -> Samples:
    reply = httpx.get(gateway.url + "/metrics", headers=SCRAPE, timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def chat(gateway: Gateway, key: str, model: str = "gpt-4o-mini") -> httpx.Response:
    return httpx.post(
        gateway.v1 + "/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


def test_metrics_is_an_openai_shaped_404_without_a_token(gateway: Gateway) -> None:
    reply = httpx.get(gateway.url + "/metrics", headers=SCRAPE, timeout=10)
    assert reply.status_code == 404
    assert reply.json() == {
        "error": {
            "message": "Not found.",
            "type": "invalid_request_error",
            "param": None,
            "code": "not_found",
        }
    }


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": METRICS_TOKEN}],
    ids=["missing", "wrong", "not-bearer"],
)
def test_metrics_refuses_anything_but_the_bearer_token(
    scraped_gateway: Gateway, headers: dict[str, str]
) -> None:
    reply = httpx.get(scraped_gateway.url + "/metrics", headers=headers, timeout=10)
    assert reply.status_code == 401
    assert reply.json() == {
        "error": {
            "message": "Pass the metrics token as 'Authorization: Bearer ...'.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }


@pytest.mark.usefixtures("upstream", "fake")
def test_a_chat_call_counts_its_request_latency_ttft_and_tokens(
    scraped_gateway: Gateway, alice_key: str
) -> None:
    before = scrape(scraped_gateway)
    reply = chat(scraped_gateway, alice_key)
    after = scrape(scraped_gateway)

    assert reply.status_code == 200
    usage = reply.json()["usage"]

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("gateway_requests_total", route=CHAT, status="200") == 1
    assert delta("gateway_request_duration_seconds_count", route=CHAT) == 1
    assert delta("gateway_time_to_first_token_seconds_count", route=CHAT) == 1
    tokens = {"model": "gpt-4o-mini"}
    assert delta("gateway_tokens_total", kind="prompt", **tokens) == usage["prompt_tokens"]
    assert delta("gateway_tokens_total", kind="completion", **tokens) == usage["completion_tokens"]
    # The scrape itself is the one request in flight.
    assert value(after, "gateway_in_flight_requests") == 1


@pytest.mark.usefixtures("upstream", "fake")
def test_a_stream_is_in_flight_until_it_ends_and_counted_once(
    scraped_gateway: Gateway, alice_key: str
) -> None:
    before = scrape(scraped_gateway)
    body = {
        "model": "gpt-4o-mini+pace100",
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    headers = {"Authorization": f"Bearer {alice_key}"}
    with (
        httpx.Client(timeout=10) as http,
        http.stream("POST", scraped_gateway.url + CHAT, json=body, headers=headers) as reply,
    ):
        lines = reply.iter_lines()
        next(line for line in lines if '"content"' in line)
        during = scrape(scraped_gateway)
        assert [line for line in lines if line.startswith("data: ")][-1] == "data: [DONE]"
    after = wait_for(scraped_gateway, "gateway_requests_total", before, route=CHAT, status="200")

    assert value(during, "gateway_in_flight_requests") == 2  # the stream and the scrape
    assert value(after, "gateway_in_flight_requests") == 1
    assert value(during, "gateway_requests_total", route=CHAT, status="200") == value(
        before, "gateway_requests_total", route=CHAT, status="200"
    )
    ttft = "gateway_time_to_first_token_seconds_count"
    assert value(after, ttft, route=CHAT) - value(before, ttft, route=CHAT) == 1


def wait_for(gateway: Gateway, name: str, before: Samples, **labels: str) -> Samples:
    """A scrape once `name` has grown: a stream's row is written just after its last byte."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        samples = scrape(gateway)
        if value(samples, name, **labels) > value(before, name, **labels):
            return samples
        time.sleep(0.02)
    raise AssertionError(f"{name} did not grow")


@pytest.mark.usefixtures("upstream", "fake")
def test_refusals_are_counted_by_their_openai_code(
    scraped_gateway: Gateway, alice_key: str
) -> None:
    before = scrape(scraped_gateway)
    assert chat(scraped_gateway, "sk-" + "x" * 48).status_code == 401
    assert chat(scraped_gateway, alice_key, model="no-such-model").status_code == 404
    invalid = httpx.post(
        scraped_gateway.url + CHAT,
        json={"model": "gpt-4o-mini"},
        headers={"Authorization": f"Bearer {alice_key}"},
        timeout=10,
    )
    assert invalid.status_code == 400
    after = scrape(scraped_gateway)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("gateway_refusals_total", code="invalid_api_key") == 1
    assert delta("gateway_refusals_total", code="model_not_found") == 1
    assert delta("gateway_refusals_total", code="invalid_request_error") == 1
    # A 401 has no key and no row: the middleware counts it under the route's pattern.
    assert delta("gateway_requests_total", route=CHAT, status="401") == 1
    assert delta("gateway_requests_total", route=CHAT, status="404") == 1
    assert delta("gateway_requests_total", route=CHAT, status="400") == 1


@pytest.mark.usefixtures("fake")
def test_route_labels_are_url_patterns_never_raw_paths(
    scraped_gateway: Gateway, alice_key: str
) -> None:
    headers = {"Authorization": f"Bearer {alice_key}"}
    before = scrape(scraped_gateway)
    for path in ("/v1/models/a-model-id", "/v1/no/such/route"):
        httpx.get(scraped_gateway.url + path, headers=headers, timeout=10)
    after = scrape(scraped_gateway)
    pattern = "/v1/models/<path:model_id>"
    assert (
        value(after, "gateway_requests_total", route=pattern, status="404")
        - value(before, "gateway_requests_total", route=pattern, status="404")
        == 1
    )
    assert (
        value(after, "gateway_requests_total", route="unmatched", status="404")
        - value(before, "gateway_requests_total", route="unmatched", status="404")
        == 1
    )
    assert not [labels for (_name, labels) in after if ("route", "/v1/no/such/route") in labels]


def test_upstream_states_come_from_the_database(
    scraped_gateway: Gateway, make_upstream: Callable[..., Upstream]
) -> None:
    make_upstream("main")
    make_upstream("resting", token="ok-resting", state=UpstreamState.COOLING)
    make_upstream("off", token="ok-off", enabled=False, state=UpstreamState.DISABLED)
    samples = scrape(scraped_gateway)
    states = {
        (upstream, state): value(samples, "gateway_upstream_state", upstream=upstream, state=state)
        for upstream in ("main", "resting", "off")
        for state in ("healthy", "cooling", "disabled")
    }
    assert states == {
        ("main", "healthy"): 1, ("main", "cooling"): 0, ("main", "disabled"): 0,
        ("resting", "healthy"): 0, ("resting", "cooling"): 1, ("resting", "disabled"): 0,
        ("off", "healthy"): 0, ("off", "cooling"): 0, ("off", "disabled"): 1,
    }  # fmt: skip
    enabled = {u: value(samples, "gateway_upstream_enabled", upstream=u) for u in ("main", "off")}
    assert enabled == {"main": 1, "off": 0}


@pytest.mark.usefixtures("fake")
def test_two_workers_add_up_in_multiprocess_mode(
    django_db_setup: None, fake_server: Fake, alice_key: str, tmp_path: Path
) -> None:
    server = start_gateway(
        fake_server.url,
        "metrics-workers",
        workers=2,
        METRICS_TOKEN=METRICS_TOKEN,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path),
    )
    try:
        # Each worker writes its files on import: wait until both are up.
        deadline = time.monotonic() + 20
        while len(list(tmp_path.glob("gauge_livesum_*.db"))) < 2:
            assert time.monotonic() < deadline, "the second worker did not start"
            time.sleep(0.05)
        headers = {"Authorization": f"Bearer {alice_key}"}

        def call(_: int) -> int:
            # A new connection each time, many at once, so that both workers take some.
            return httpx.get(server.v1 + "/key", headers=headers, timeout=10).status_code

        with ThreadPoolExecutor(10) as pool:
            assert list(pool.map(call, range(40))) == [200] * 40
        counts = [
            value(scrape(server), "gateway_requests_total", route="/v1/key", status="200")
            for _ in range(6)
        ]
    finally:
        server.process.terminate()
        server.process.wait(10)
    assert counts == [40] * 6
    assert len(list(tmp_path.glob("counter_*.db"))) == 2
