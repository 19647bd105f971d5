"""Tools, vision, JSON mode, stop, legacy completions, aliases and GET /v1/key, via the SDK."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import (
    ChatCompletionMessage,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)
from openai.types.shared_params import ResponseFormatJSONSchema

from accounts.models import UsageLog, UsageStatus
from gateway.aliases import add_alias
from gateway.models import Upstream
from gateway.testing.fake_scenarios import chunk_texts, expected_text
from tests.conftest import Fake, Gateway

pytestmark = pytest.mark.django_db(transaction=True)

TOOLS: list[ChatCompletionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"Look up {name}.",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
    for name in ("get_weather", "get_time")
]
ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Weather and time?"}]
PNG = "data:image/png;base64,iVBORw0KGgo="


def sdk(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0)


def function_calls(message: ChatCompletionMessage) -> list[ChatCompletionMessageFunctionToolCall]:
    calls = message.tool_calls or []
    assert all(isinstance(c, ChatCompletionMessageFunctionToolCall) for c in calls)
    return [c for c in calls if isinstance(c, ChatCompletionMessageFunctionToolCall)]


def last_args(fake: Fake) -> dict[str, Any]:
    return fake.stats()["requests"][-1]["body"]["args"]  # type: ignore[no-any-return]


@pytest.mark.usefixtures("upstream")
def test_tool_calls_stream_into_the_same_result_as_the_complete_answer(
    gateway: Gateway, fake: Fake, alice_key: str
) -> None:
    client = sdk(gateway, alice_key)
    whole = client.chat.completions.create(model="gpt-4o-mini+tools", messages=ASK, tools=TOOLS)
    calls = function_calls(whole.choices[0].message)
    assert whole.choices[0].finish_reason == "tool_calls"
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("call_0", "get_weather", {"q": "x"}),
        ("call_1", "get_time", {"q": "x"}),
    ]
    with client.chat.completions.stream(
        model="gpt-4o-mini+tools", messages=ASK, tools=TOOLS
    ) as stream:
        streamed = stream.get_final_completion()
    again = function_calls(streamed.choices[0].message)
    assert streamed.choices[0].finish_reason == "tool_calls"
    assert [(c.id, c.function.name, c.function.arguments) for c in again] == [
        (c.id, c.function.name, c.function.arguments) for c in calls
    ]
    assert streamed.choices[0].message.content == whole.choices[0].message.content
    # Streams with tools are asked of Puter whole: its stream may drop parallel calls.
    assert last_args(fake)["stream"] is False
    follow_up: list[ChatCompletionMessageParam] = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": c.function.arguments},
                }
                for c in calls
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_1", "content": "noon"},
    ]
    final = client.chat.completions.create(model="gpt-4o-mini", messages=follow_up, tools=TOOLS)
    assert final.choices[0].message.content == expected_text(5)
    sent = last_args(fake)["messages"]
    assert sent[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert sent[2] == {"role": "tool", "tool_call_id": "call_0", "content": "sunny"}


@pytest.mark.usefixtures("upstream")
def test_tool_choice_none_sends_no_tools_and_a_named_one_sends_only_it(
    gateway: Gateway, fake: Fake, alice_key: str
) -> None:
    client = sdk(gateway, alice_key)
    client.chat.completions.create(
        model="gpt-4o-mini+tools", messages=ASK, tools=TOOLS, tool_choice="none"
    )
    assert "tools" not in last_args(fake)
    named = client.chat.completions.create(
        model="gpt-4o-mini+tools",
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert [t["function"]["name"] for t in last_args(fake)["tools"]] == ["get_time"]
    assert [c.function.name for c in function_calls(named.choices[0].message)] == ["get_time"]


@pytest.mark.usefixtures("upstream")
def test_image_parts_reach_puter_as_specified_for_gpt_and_claude(
    gateway: Gateway, fake: Fake, alice_key: str
) -> None:
    client = sdk(gateway, alice_key)
    message: ChatCompletionMessageParam = {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": PNG}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        ],
    }
    client.chat.completions.create(model="gpt-4o-mini", messages=[message])
    assert last_args(fake)["messages"][0]["content"][1:] == [
        {"type": "image_url", "image_url": {"url": PNG}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    client.chat.completions.create(model="claude-sonnet-4-5", messages=[message])
    sent = last_args(fake)
    assert sent["messages"][0]["content"][1:] == [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
    ]
    assert sent["temperature"] == 1.0


@pytest.mark.usefixtures("upstream")
def test_json_mode_is_emulated_with_a_system_instruction_carrying_the_schema(
    gateway: Gateway, fake: Fake, alice_key: str
) -> None:
    schema: dict[str, object] = {"type": "object", "properties": {"city": {"type": "string"}}}
    messages: list[ChatCompletionMessageParam] = [{"role": "system", "content": "Be brief."}, *ASK]
    response_format: ResponseFormatJSONSchema = {
        "type": "json_schema",
        "json_schema": {"name": "place", "schema": schema},
    }
    sdk(gateway, alice_key).chat.completions.create(
        model="claude-sonnet-4-5", messages=messages, response_format=response_format
    )
    sent = last_args(fake)
    system = sent["messages"][0]
    assert system["role"] == "system"
    assert system["content"].startswith("Be brief.\n\nReply with one JSON value only")
    assert json.dumps(schema, separators=(",", ":")) in system["content"]
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    assert sent["response_format"]["type"] == "json_schema"


@pytest.mark.usefixtures("upstream")
def test_a_stop_sequence_split_across_two_upstream_lines_still_cuts_the_reply(
    gateway: Gateway, fake: Fake, alice_key: str
) -> None:
    client = sdk(gateway, alice_key)
    assert chunk_texts(3)[:2] == ["Hello ", "w1 "]  # "o w" spans the first two lines
    whole = client.chat.completions.create(model="gpt-4o-mini", messages=ASK, stop=["o w"])
    assert whole.choices[0].message.content == "Hell"
    assert whole.choices[0].finish_reason == "stop"
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini+pace20", messages=ASK, stop="o w", stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hell"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert UsageLog.objects.filter(status=UsageStatus.OK).count() == 2


@pytest.mark.usefixtures("upstream")
def test_legacy_completions_work_streaming_and_not(
    gateway: Gateway, fake: Fake, alice_key: str
) -> None:
    client = sdk(gateway, alice_key)
    done = client.completions.create(model="gpt-5-nano", prompt="Once upon a time")
    assert done.object == "text_completion"
    assert done.choices[0].text == expected_text(5)
    assert done.choices[0].finish_reason == "stop"
    assert last_args(fake)["messages"] == [{"role": "user", "content": "Once upon a time"}]
    parts = list(
        client.completions.create(
            model="gpt-5-nano", prompt=["Once"], stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(p.choices[0].text for p in parts if p.choices) == expected_text(5)
    assert parts[-1].usage is not None
    rows = UsageLog.objects.order_by("created")
    assert [r.endpoint for r in rows] == ["completions", "completions"]
    echo = httpx.post(
        gateway.v1 + "/completions",
        json={"model": "gpt-5-nano", "prompt": "x", "echo": True},
        headers={"Authorization": f"Bearer {alice_key}"},
    )
    assert echo.status_code == 400
    assert echo.json()["error"]["param"] == "echo"


def test_an_alias_reaches_its_target_and_falls_back_when_the_target_fails(
    gateway: Gateway, fake: Fake, alice_key: str, make_upstream: Callable[..., Upstream]
) -> None:
    make_upstream(label="claude-only", token="crash-claude", models=["claude-sonnet-4-5"])
    make_upstream(label="nano-only", token="ok-nano", models=["gpt-5-nano"])
    add_alias(alias="smart", target="claude-sonnet-4-5", fallbacks=["gpt-5-nano"])
    add_alias(alias="quick", target="gpt-5-nano", fallbacks=[])
    client = sdk(gateway, alice_key)
    assert {"smart", "quick"} <= {m.id for m in client.models.list()}
    quick = client.chat.completions.create(model="quick", messages=ASK)
    assert quick.model == "quick"
    assert last_args(fake)["model"] == "gpt-5-nano"
    smart = client.chat.completions.create(model="smart", messages=ASK)
    assert smart.model == "smart"
    assert smart.choices[0].message.content == expected_text(5)
    row = UsageLog.objects.get(model="smart")
    assert (row.status, row.upstream_model) == (UsageStatus.OK, "gpt-5-nano")
    assert row.upstream is not None
    assert row.upstream.label == "nano-only"


@pytest.mark.usefixtures("upstream")
def test_key_report_totals_equal_the_sum_of_the_rows(
    gateway: Gateway, fake: Fake, make_key: Callable[..., str]
) -> None:
    key = make_key("erin", rpm=60, token_budget=100_000, budget_period="month")
    client = sdk(gateway, key)
    client.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    list(client.chat.completions.create(model="claude-sonnet-4-5", messages=ASK, stream=True))
    client.completions.create(model="gpt-5-nano", prompt="hi")
    httpx.post(
        gateway.v1 + "/chat/completions",
        json={"model": "gpt-4o-mini"},
        headers={"Authorization": f"Bearer {key}"},
    )
    report = httpx.get(gateway.v1 + "/key", headers={"Authorization": f"Bearer {key}"}).json()
    rows = list(UsageLog.objects.all())
    total = sum(r.total_tokens for r in rows)
    assert report["object"] == "key"
    assert report["prefix"] == key[:11]
    assert report["name"] == "erin-test"
    assert report["usage"] == {
        "requests": len(rows),
        "prompt_tokens": sum(r.prompt_tokens for r in rows),
        "completion_tokens": sum(r.completion_tokens for r in rows),
        "total_tokens": total,
    }
    assert len(rows) == 4
    assert report["limits"] == {
        "rpm": 60,
        "tpm": None,
        "max_concurrency": None,
        "token_budget": 100_000,
        "budget_period": "month",
        "allowed_models": [],
    }
    # rpm counts admitted calls; the body refused before admission used none of it.
    assert report["remaining"]["requests_this_minute"] == 60 - 3
    assert report["remaining"]["tokens_in_budget"] == 100_000 - total
    assert report["remaining"]["tokens_this_minute"] is None
    assert report["remaining"]["budget_resets_at"] > report["created"]
