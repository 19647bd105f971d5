"""Prometheus metrics: what the gateway counts, and the text a scraper reads at `/metrics`.

Each request is recorded once when it ends (relay `finish()` for model calls, ApiMiddleware
for the rest), never per chunk. With several uvicorn workers, point PROMETHEUS_MULTIPROC_DIR
at an empty directory shared by them: prometheus-client then keeps the values in files there
and a scrape adds up every worker. Without it each process answers for itself alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
from django.http import HttpRequest
from django.http.response import HttpResponse, HttpResponseBase
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from gateway.usage import Outcome, UsageMeter

# Seconds. Model calls run from milliseconds (refusals) to minutes (long streams).
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
UPSTREAM_STATES = ("healthy", "cooling", "disabled")

REQUESTS = Counter(
    "gateway_requests", "Requests answered, by route and HTTP status.", ["route", "status"]
)
LATENCY = Histogram(
    "gateway_request_duration_seconds",
    "Time from the request to its last byte (a stream's end), by route.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
TTFT = Histogram(
    "gateway_time_to_first_token_seconds",
    "Time from the request to the first token sent to the client, by route.",
    ["route"],
    buckets=TTFT_BUCKETS,
)
TOKENS = Counter("gateway_tokens", "Tokens metered, by model and kind.", ["model", "kind"])
REFUSALS = Counter(
    "gateway_refusals", "Requests refused with a 4xx, by OpenAI error code.", ["code"]
)
# livesum: a scrape adds up the workers still alive, so a dead worker's streams drop out.
IN_FLIGHT = Gauge(
    "gateway_in_flight_requests",
    "Requests being served, streams included.",
    multiprocess_mode="livesum",
)

# Request ids in flight in this process. A stream outlives the middleware, so whichever of
# the middleware and `finish()` comes last ends it; a set makes the second end a no-op.
_open: set[str] = set()


def multiprocess_dir() -> str:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def request_started(request_id: str) -> None:
    if request_id not in _open:
        _open.add(request_id)
        IN_FLIGHT.inc()


def request_ended(request_id: str) -> None:
    if request_id in _open:
        _open.discard(request_id)
        IN_FLIGHT.dec()


def model_route(endpoint: str) -> str:
    """`chat.completions` → `/v1/chat/completions`: the same label the middleware uses."""
    return "/v1/" + endpoint.replace(".", "/")


def observe_model_call(meter: UsageMeter, outcome: Outcome) -> None:
    """Count one model call when its row is written; ends its in-flight mark."""
    route = model_route(meter.endpoint)
    REQUESTS.labels(route=route, status=str(outcome.http_status)).inc()
    LATENCY.labels(route=route).observe(meter.elapsed_ms() / 1000)
    ttft = meter.ttft_ms()
    if ttft is not None:
        TTFT.labels(route=route).observe(ttft / 1000)
    # Only models that produced tokens get a series: a client cannot mint labels at will.
    if outcome.usage.prompt_tokens or outcome.usage.completion_tokens:
        TOKENS.labels(model=meter.model, kind="prompt").inc(outcome.usage.prompt_tokens)
        TOKENS.labels(model=meter.model, kind="completion").inc(outcome.usage.completion_tokens)
    request_ended(meter.request_id)


def observe_response(
    request: HttpRequest, response: HttpResponseBase, request_id: str, seconds: float
) -> None:
    """Count what the middleware answered: refusals always, the rest unless metered."""
    if 400 <= response.status_code < 500:
        REFUSALS.labels(code=error_code(response)).inc()
    metered = getattr(request, "gateway_logged", False)
    if not metered:
        route = route_of(request)
        REQUESTS.labels(route=route, status=str(response.status_code)).inc()
        LATENCY.labels(route=route).observe(seconds)
    # A metered stream is still running: its `finish()` ends it.
    if not (metered and response.streaming):
        request_ended(request_id)


def route_of(request: HttpRequest) -> str:
    """The URL pattern, never the raw path: model ids and unknown paths are unbounded."""
    match = getattr(request, "resolver_match", None)
    return "/" + match.route if match is not None and match.route else "unmatched"


def error_code(response: HttpResponseBase) -> str:
    """The OpenAI error code of an error reply, its type when the code is null."""
    if not isinstance(response, HttpResponse):
        return "unknown"
    try:
        error = orjson.loads(response.content)["error"]
        return str(error.get("code") or error.get("type") or "unknown")
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return "unknown"


@dataclass(frozen=True, slots=True)
class UpstreamSnapshot:
    label: str
    state: str
    enabled: bool


class UpstreamStates(Collector):
    """One scrape's view of the pool, read from the database: every instance agrees."""

    def __init__(self, upstreams: list[UpstreamSnapshot]) -> None:
        self.upstreams = upstreams

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "gateway_upstream_state",
            "1 for the state each upstream is in, 0 for the others.",
            labels=["upstream", "state"],
        )
        enabled = GaugeMetricFamily(
            "gateway_upstream_enabled",
            "1 when the operator enabled the upstream.",
            labels=["upstream"],
        )
        for upstream in self.upstreams:
            for name in UPSTREAM_STATES:
                state.add_metric([upstream.label, name], float(upstream.state == name))
            enabled.add_metric([upstream.label], float(upstream.enabled))
        yield state
        yield enabled


def exposition(upstreams: list[UpstreamSnapshot]) -> bytes:
    """The Prometheus text format: this process's (or every worker's) metrics and the pool."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped upstream
        own = generate_latest(registry)
    else:
        own = generate_latest(REGISTRY)
    pool = CollectorRegistry()
    pool.register(UpstreamStates(upstreams))
    return own + generate_latest(pool)
