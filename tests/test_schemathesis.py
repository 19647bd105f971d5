"""schemathesis against the gateway's own OpenAPI document, over real HTTP.

Every operation gets a fixed budget of generated requests from a fixed seed (valid ones,
and for a body as many that break the schema), always with a valid key: none may end in a
5xx, and every 4xx must be an OpenAI-shaped error. Every other valid body names a model the
fake Puter serves, so that the relay's success paths run too, not only model_not_found.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import requests
import schemathesis
from django.conf import settings as django_settings
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis.config import SchemathesisConfig
from schemathesis.core.transport import Response
from schemathesis.generation import GenerationMode
from schemathesis.generation.case import Case as GenericCase
from schemathesis.schemas import APIOperation as GenericOperation

from accounts.models import UsageLog
from gateway.api import api
from gateway.models import VideoJob, VideoStatus
from tests.conftest import Gateway

pytestmark = pytest.mark.django_db(transaction=True)
# Hypothesis keeps caches in its home directory: under VAR_DIR, never in the checkout.
set_hypothesis_home_dir(Path(django_settings.VAR_DIR) / "hypothesis")
Operation = GenericOperation[Any, Any, Any, Any]
Case = GenericCase[Operation]

SEED = 20261126
TARGET = 2000  # generated requests in all, at least
KNOWN_MODELS = ("gpt-4o-mini", "gpt-5-nano", "claude-sonnet-4-5")
# The key is always the valid one: a generated bad key would be a failed authentication, and
# the failed-auth throttle would then refuse this address on the shared gateway for a minute.
CONFIG = SchemathesisConfig.from_dict({"generation": {"with-security-parameters": False}})


def plan_runs() -> dict[str, tuple[int, int]]:
    """(modes, examples per mode) for every operation, so that they add up to TARGET.

    A body can be valid or break the schema (two modes); a path parameter is any string, so
    only valid ones exist; an operation without parameters has exactly one request to send.
    """
    document = api.get_openapi_schema(path_prefix="/v1")
    shapes = {
        f"{method.upper()} {path}": (
            2 if "requestBody" in operation else 1 if operation.get("parameters") else 0
        )
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }
    per_mode = math.ceil(TARGET / max(sum(shapes.values()), 1))
    return {label: (max(modes, 1), per_mode if modes else 1) for label, modes in shapes.items()}


PLAN = plan_runs()


@dataclass
class Tally:
    calls: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def record(self, status: int, problem: str | None) -> None:
        self.calls += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if problem is not None and len(self.problems) < 20:
            self.problems.append(problem)


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


def problem_with(response: Response) -> str | None:
    """What is wrong with a reply, or None: no 5xx, and a 4xx in OpenAI's error shape."""
    status = response.status_code
    if status >= 500:
        return f"{status}: {response.text[:300]}"
    if status < 400:
        return None
    if response.headers.get("content-type", [""])[0] != "application/json":
        return f"{status} is not JSON: {response.text[:200]}"
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"{status} has no error object: {response.text[:200]}"
    shaped = (
        isinstance(error, dict)
        and set(error) == {"message", "type", "param", "code"}
        and isinstance(error["message"], str)
        and bool(error["message"])
        and isinstance(error["type"], str)
        and isinstance(error["param"], str | None)
        and isinstance(error["code"], str | None)
    )
    return None if shaped else f"{status} is not OpenAI-shaped: {response.text[:200]}"


def with_known_models(strategy: st.SearchStrategy[Case]) -> st.SearchStrategy[Case]:
    """Every other valid body names a model the fake serves, so success paths run too."""
    counter = itertools.count()

    def rename(case: Case) -> Case:
        turn = next(counter)
        body = case.body
        if turn % 2 and isinstance(body, dict) and isinstance(body.get("model"), str):
            body["model"] = KNOWN_MODELS[turn // 2 % len(KNOWN_MODELS)]
        return case

    return strategy.map(rename)


def describe(case: Case) -> str:
    body = repr(case.body)[:300] if case.body is not None else ""
    return f"{case.method} {case.formatted_path} query={case.query} {body}"


def strategies_for(operation: Operation, modes: int) -> list[st.SearchStrategy[Case]]:
    valid = with_known_models(operation.as_strategy(GenerationMode.POSITIVE))
    if modes == 1:
        return [valid]
    return [valid, operation.as_strategy(GenerationMode.NEGATIVE)]


@pytest.mark.parametrize("label", sorted(PLAN))
@pytest.mark.usefixtures("fake", "upstream")
def test_generated_requests_get_no_5xx_and_openai_shaped_4xx(
    gateway: Gateway, alice_key: str, session: requests.Session, label: str
) -> None:
    schema = schemathesis.openapi.from_url(gateway.v1 + "/openapi.json", config=CONFIG)
    operation = schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the served document"
    modes, examples = PLAN[label]
    headers = {"Authorization": f"Bearer {alice_key}"}
    tally = Tally()
    log_start = len(gateway.log_text())

    def exercise(case: Case) -> None:
        response = case.call(base_url=gateway.url, session=session, headers=headers, timeout=15)
        problem = problem_with(response)
        tally.record(response.status_code, problem and f"{describe(case)}\n  -> {problem}")

    run = settings(
        max_examples=examples,
        database=None,  # the same requests on every run, nothing written to the checkout
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # report every problem, unshrunk
        suppress_health_check=list(HealthCheck),
    )
    for strategy in strategies_for(operation, modes):
        seed(SEED)(run(given(strategy)(exercise)))()
    wait_for_video_jobs()

    assert tally.problems == []
    assert tally.calls >= modes * examples, tally.statuses
    # Nothing went wrong quietly either: a row that could not be written is logged, not sent.
    logged = gateway.log_text()[log_start:]
    assert [line[:500] for line in logged.splitlines() if '"level":"error"' in line] == []
    assert "journalled" not in logged


def wait_for_video_jobs() -> None:
    """Video jobs run on in the gateway after their request: let them end inside this test."""
    deadline = time.monotonic() + 60
    while VideoJob.objects.filter(
        status__in=[VideoStatus.QUEUED, VideoStatus.IN_PROGRESS]
    ).exists():
        assert time.monotonic() < deadline, "video jobs still running a minute later"
        time.sleep(0.05)


def test_the_plan_sends_at_least_the_target_number_of_requests() -> None:
    assert sum(modes * examples for modes, examples in PLAN.values()) >= TARGET


# --- what schemathesis found, and the bounds it asked for ---------------------------------


def post_chat(gateway: Gateway, key: str, content: bytes) -> httpx.Response:
    return httpx.post(
        gateway.v1 + "/chat/completions",
        content=content,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=15,
    )


def chat_json(**fields: str) -> bytes:
    """A chat body with raw JSON text for some fields, as no JSON library would write it."""
    parts = ['"model": "gpt-4o-mini"', '"messages": [{"role": "user", "content": "hi"}]']
    parts += [f'"{name}": {raw}' for name, raw in fields.items()]
    return ("{" + ", ".join(parts) + "}").encode()


def refusal(reply: httpx.Response) -> dict[str, object]:
    assert reply.status_code == 400, reply.text
    body = reply.json()
    assert set(body) == {"error"}
    return body["error"]  # type: ignore[no-any-return]


@pytest.mark.usefixtures("fake", "upstream")
@pytest.mark.parametrize("raw", [str(2**64), "1e30", str(-(2**63) - 1)])
def test_an_integer_beyond_64_bits_is_a_400_naming_its_field(
    gateway: Gateway, alice_key: str, raw: str
) -> None:
    error = refusal(post_chat(gateway, alice_key, chat_json(seed=raw)))
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", "seed", None)


@pytest.mark.usefixtures("fake", "upstream")
def test_a_huge_integer_inside_a_free_form_field_is_no_server_error(
    gateway: Gateway, alice_key: str
) -> None:
    # orjson reads it as a float, which serializes again for the upstream.
    reply = post_chat(gateway, alice_key, chat_json(response_format='{"n": ' + str(2**70) + "}"))
    assert reply.status_code == 200, reply.text


def nested_list(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.usefixtures("fake", "upstream")
@pytest.mark.parametrize("depth", [65, 300, 5000])
def test_json_nested_past_64_levels_is_a_clear_400(
    gateway: Gateway, alice_key: str, depth: int
) -> None:
    # The body object and the `tools` list are the first two levels.
    error = refusal(post_chat(gateway, alice_key, chat_json(tools=nested_list(depth - 1))))
    assert error == {
        "message": "The request body nests JSON deeper than 64 levels.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


@pytest.mark.usefixtures("fake", "upstream")
def test_json_nested_64_levels_deep_reaches_the_upstream(gateway: Gateway, alice_key: str) -> None:
    # Levels: the body, `response_format`, its `x` list, and 61 more.
    raw = '{"x": ' + nested_list(62) + "}"
    reply = post_chat(gateway, alice_key, chat_json(response_format=raw))
    assert reply.status_code == 200, reply.text


@pytest.mark.usefixtures("fake", "upstream")
def test_more_than_2048_messages_is_a_400_naming_messages(gateway: Gateway, alice_key: str) -> None:
    messages = ", ".join(['{"role": "user", "content": "hi"}'] * 2049)
    body = ('{"model": "gpt-4o-mini", "messages": [' + messages + "]}").encode()
    error = refusal(post_chat(gateway, alice_key, body))
    assert (error["param"], error["code"]) == ("messages", None)
    assert "at most 2048" in str(error["message"])


@pytest.mark.usefixtures("fake", "upstream")
def test_a_nul_in_the_model_name_still_leaves_its_row(gateway: Gateway, alice_key: str) -> None:
    # PostgreSQL refuses NUL in text: the row keeps U+FFFD in its place.
    body = b'{"model": "gpt\\u0000x", "messages": [{"role": "user", "content": "hi"}]}'
    reply = post_chat(gateway, alice_key, body)
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "model_not_found"
    row = UsageLog.objects.get()
    assert (row.model, row.status, row.http_status) == ("gpt\ufffdx", "invalid_request", 404)
    assert "\x00" not in row.error


@pytest.mark.usefixtures("fake", "upstream")
def test_a_nul_in_a_video_prompt_still_makes_a_job(gateway: Gateway, alice_key: str) -> None:
    reply = httpx.post(
        gateway.v1 + "/videos",
        content=b'{"prompt": "a cat\\u0000"}',
        headers={"Authorization": f"Bearer {alice_key}", "Content-Type": "application/json"},
        timeout=15,
    )
    assert reply.status_code == 200, reply.text
    assert VideoJob.objects.get().prompt == "a cat\ufffd"
    wait_for_video_jobs()


@pytest.mark.usefixtures("fake", "upstream")
def test_a_refused_body_with_an_overlong_model_name_still_leaves_its_row(
    gateway: Gateway, alice_key: str
) -> None:
    # The schema never saw this model name: the row cuts it to its column's 200 characters.
    body = orjson.dumps({"model": "m" * 500, "messages": "not a list"})
    assert post_chat(gateway, alice_key, body).status_code == 400
    row = UsageLog.objects.get()
    assert (row.model, row.status, row.http_status) == ("m" * 200, "invalid_request", 400)
