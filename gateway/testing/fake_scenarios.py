"""What the fake Puter answers: its model catalogue, scenario directives and reply content.

Everything here is pure and deterministic, so tests can compute exactly what a client of the
fake should receive (`chunk_texts`, `expected_text`, `expected_usage`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

DEFAULT_CHUNKS = 5
HIDDEN_IDS = frozenset({"fake", "costly", "abuse", "model-fallback-test-1"})
LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua."
)
CLAUDE_MESSAGE_ID = "msg_01FakePuterMessage"
ZERO_UUID = "00000000-0000-0000-0000-000000000000"
MID_STREAM_ERROR = "upstream exploded"
REASONING_TEXTS = ("think0 ", "think1 ")
GEMINI_THINKING_TOKENS = 3
TOOL_INPUT: dict[str, object] = {"q": "x"}
ANTHROPIC_PROVIDERS = frozenset({"claude", "fake-chat"})
_OPENAI_COST_KEYS = ("prompt_tokens", "completion_tokens")

JsonDict = dict[str, Any]


class ModelNotFound(LookupError):
    """The base model of a model string is not in the catalogue."""


class ScenarioError(ValueError):
    """A model string carries a directive the fake does not know."""


# Puter's cost estimate in US cents per call, by provider.
_USD_CENTS = {
    "openai-completion": 0.0004,
    "deepseek": 0.0004,
    "gemini": 0.0002,
    "claude": 0.01,
    "fake-chat": 0.0,
}


@dataclass(frozen=True)
class FakeModel:
    id: str
    provider: str
    aliases: tuple[str, ...]
    input_cost: float
    output_cost: float
    context: int = 128_000
    max_tokens: int = 16_384

    @property
    def legacy_driver(self) -> str:
        """The v1 driver name; each fake provider's service bears the provider's name."""
        return self.provider

    @property
    def usd_cents(self) -> float:
        return _USD_CENTS[self.provider]

    @property
    def anthropic(self) -> bool:
        return self.provider in ANTHROPIC_PROVIDERS


# Puter's free lorem-ipsum model: hidden from listings, still callable.
FAKE_MODEL = FakeModel("fake", "fake-chat", (), 0, 0)
MODELS: tuple[FakeModel, ...] = (
    FakeModel("gpt-5-nano", "openai-completion", ("openai/gpt-5-nano",), 5, 40, 400_000, 128_000),
    FakeModel("gpt-4o-mini", "openai-completion", ("GPT 4o mini", "gpt-4o-mini-latest"), 15, 60),
    FakeModel("claude-sonnet-4-5", "claude", ("Claude Sonnet 4.5",), 300, 1500, 200_000, 64_000),
    FakeModel("gemini-2.5-flash", "gemini", ("google/gemini-2.5-flash",), 30, 250, 1_048_576),
    FakeModel("deepseek-chat", "deepseek", ("deepseek/deepseek-chat",), 28, 42, 128_000, 8_192),
    FAKE_MODEL,
)

_MODEL_INDEX: dict[str, FakeModel] = {
    key.strip().lower(): model for model in MODELS for key in (model.id, *model.aliases)
}


def find_model(name: str) -> FakeModel | None:
    """Resolve a model id or alias the way Puter does: case and outer whitespace ignored."""
    return _MODEL_INDEX.get(name.strip().lower())


def listed_models() -> list[FakeModel]:
    return [model for model in MODELS if model.id not in HIDDEN_IDS]


def model_details(model: FakeModel) -> JsonDict:
    """Describe a model as Puter v2's `/puterai/chat/models/details` does."""
    keys = ("input_tokens", "output_tokens") if model.anthropic else _OPENAI_COST_KEYS
    return {
        "id": model.id,
        "provider": model.provider,
        "aliases": list(model.aliases),
        "modalities": {"input": ["text", "image"], "output": ["text"]},
        "tool_call": True,
        "context": model.context,
        "max_tokens": model.max_tokens,
        "costs_currency": "usd-cents",
        "input_cost_key": keys[0],
        "output_cost_key": keys[1],
        "costs": {"tokens": 1_000_000, keys[0]: model.input_cost, keys[1]: model.output_cost},
    }


@dataclass(frozen=True)
class Scenario:
    """Behaviour requested through `+directive` suffixes of the model name."""

    chunks: int = DEFAULT_CHUNKS
    pace_ms: int = 0
    delay_ms: int = 0
    fail_after: int | None = None
    hang_after: int | None = None
    error_first: str | None = None
    empty_stream: bool = False
    no_usage: bool = False
    usage_bare: bool = False
    down: bool = False
    http500: bool = False
    substitute: bool = False
    reasoning: bool = False
    tools: bool = False

    @property
    def hangs(self) -> bool:
        """Whether a stream stays open after its text, until the client leaves."""
        failing = self.fail_after is not None or self.error_first is not None
        return self.hang_after is not None and not failing


_FLAG_DIRECTIVES = {
    "emptystream": "empty_stream",
    "nousage": "no_usage",
    "usagebare": "usage_bare",
    "down": "down",
    "http500": "http500",
    "substitute": "substitute",
    "reasoning": "reasoning",
    "tools": "tools",
}
ERROR_FIRST_MESSAGES = {
    "errorfirst": "529 overloaded_error: Overloaded",
    "errorfirst429": "429 rate_limit_error: rate limited",
    "errorfirst400": "400 invalid_request_error: prompt is too long: 200001 tokens > 200000",
}
_NUMERIC_DIRECTIVES = {
    "chunks": "chunks",
    "pace": "pace_ms",
    "delay": "delay_ms",
    "failafter": "fail_after",
    "hangafter": "hang_after",
}
_NUMERIC_RE = re.compile(r"(chunks|pace|delay|failafter|hangafter)(\d+)")
DIRECTIVES = (*_FLAG_DIRECTIVES, *ERROR_FIRST_MESSAGES, *(f"{n}N" for n in _NUMERIC_DIRECTIVES))


def _parse_directive(raw: str) -> tuple[str, object]:
    key = raw.strip().lower()
    if key in _FLAG_DIRECTIVES:
        return _FLAG_DIRECTIVES[key], True
    if key in ERROR_FIRST_MESSAGES:
        return "error_first", ERROR_FIRST_MESSAGES[key]
    match = _NUMERIC_RE.fullmatch(key)
    if match is None:
        raise ScenarioError(f"Unknown scenario directive: {raw}")
    return _NUMERIC_DIRECTIVES[match[1]], int(match[2])


def parse_scenario(directives: Sequence[str]) -> Scenario:
    changes: dict[str, Any] = dict(_parse_directive(raw) for raw in directives)
    return Scenario(**changes)


def resolve(model_name: str) -> tuple[FakeModel, Scenario]:
    """Split `base+directive+...` into a catalogue model and its scenario."""
    base, *directives = model_name.split("+")
    model = find_model(base)
    if model is None:
        raise ModelNotFound(f"Model not found: {model_name}")
    return model, parse_scenario(directives)


def chunk_texts(n_chunks: int) -> list[str]:
    """Text of each streamed `text` event: "Hello ", then "w1 ", "w2 ", ..."""
    return ["Hello " if i == 0 else f"w{i} " for i in range(n_chunks)]


def expected_text(n_chunks: int) -> str:
    return "".join(chunk_texts(n_chunks))


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        text = content.get("text")
        return text if isinstance(text, str) else _content_text(content.get("content"))
    if isinstance(content, list):
        return "".join(_content_text(part) for part in content)
    return ""


def _message_text(message: object) -> str:
    if isinstance(message, Mapping):
        return _content_text(message.get("content"))
    return _content_text(message)


def prompt_tokens(messages: Sequence[object]) -> int:
    """Prompt size the fake bills: 3 + per message (characters of its text // 4 + 4)."""
    return 3 + sum(len(_message_text(message)) // 4 + 4 for message in messages)


def thinking_tokens(model: FakeModel, scenario: Scenario) -> int:
    """Gemini reports thinking apart from completion tokens; the others fold it in or omit it."""
    return GEMINI_THINKING_TOKENS if model.provider == "gemini" and scenario.reasoning else 0


def expected_usage(model: str, messages: Sequence[object], n_chunks: int) -> tuple[int, int]:
    """True (prompt, completion) totals a client must compute after normalising the usage."""
    fake_model, scenario = resolve(model)
    return prompt_tokens(messages), n_chunks + thinking_tokens(fake_model, scenario)


def tool_names(tools: object) -> list[str]:
    """Names of the first two tools, in OpenAI or Anthropic tool format."""
    if not isinstance(tools, list):
        return []
    names = [_tool_name(tool) for tool in tools]
    return [name for name in names if name][:2]


def _tool_name(tool: object) -> str:
    if not isinstance(tool, Mapping):
        return ""
    function = tool.get("function")
    name = function.get("name") if isinstance(function, Mapping) else tool.get("name")
    return name if isinstance(name, str) else ""


@dataclass(frozen=True)
class Turn:
    """One planned chat reply: what to say and how to bill it."""

    model: FakeModel
    scenario: Scenario
    prompt: int
    texts: tuple[str, ...]
    truncated: bool
    tools: tuple[str, ...]
    v1: bool

    @property
    def completion(self) -> int:
        return len(self.texts) + thinking_tokens(self.model, self.scenario)


def _max_tokens(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text_count(scenario: Scenario, max_tokens: int | None) -> tuple[int, bool]:
    forced = scenario.fail_after if scenario.fail_after is not None else scenario.hang_after
    if forced is not None:
        return forced, False
    if scenario.empty_stream:
        return 0, False
    if max_tokens is not None and max_tokens < scenario.chunks:
        return max(0, max_tokens), True
    return scenario.chunks, False


def plan_turn(model: FakeModel, scenario: Scenario, args: Mapping[str, Any], *, v1: bool) -> Turn:
    messages = args.get("messages")
    count, truncated = _text_count(scenario, _max_tokens(args.get("max_tokens")))
    tools = tool_names(args.get("tools")) if scenario.tools and not truncated else []
    return Turn(
        model=model,
        scenario=scenario,
        prompt=prompt_tokens(messages if isinstance(messages, list) else []),
        texts=tuple(chunk_texts(count)),
        truncated=truncated,
        tools=tuple(tools),
        v1=v1,
    )


def _cached(prompt: int) -> int:
    return 16 if prompt > 50 else 0


def _openai_usage(turn: Turn) -> JsonDict:
    # These providers subtract cached tokens from prompt_tokens.
    cached = _cached(turn.prompt)
    return {
        "prompt_tokens": turn.prompt - cached,
        "completion_tokens": len(turn.texts),
        "cached_tokens": cached,
    }


def _deepseek_usage(turn: Turn) -> JsonDict:
    # DeepSeek keeps cached tokens inside prompt_tokens.
    return {
        "prompt_tokens": turn.prompt,
        "completion_tokens": len(turn.texts),
        "cached_tokens": _cached(turn.prompt),
    }


def _gemini_usage(turn: Turn) -> JsonDict:
    return {
        "prompt_tokens": turn.prompt,
        "completion_tokens": len(turn.texts),
        "cached_tokens": 0,
        "thinking_tokens": thinking_tokens(turn.model, turn.scenario),
    }


def _claude_usage(turn: Turn) -> JsonDict:
    return {
        "input_tokens": turn.prompt,
        "ephemeral_5m_input_tokens": 0,
        "ephemeral_1h_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": turn.completion,
    }


_USAGE_BUILDERS: dict[str, Callable[[Turn], JsonDict]] = {
    "openai-completion": _openai_usage,
    "deepseek": _deepseek_usage,
    "gemini": _gemini_usage,
    "claude": _claude_usage,
}


def provider_usage(turn: Turn) -> JsonDict:
    """Usage as Puter v2 reports it for the model's provider, `usd_cents` included."""
    return {**_USAGE_BUILDERS[turn.model.provider](turn), "usd_cents": turn.model.usd_cents}


def v1_usage(turn: Turn) -> object:
    """v1 non-stream usage: an array for OpenAI-wire providers, raw Anthropic usage for Claude."""
    if turn.model.anthropic:
        return _anthropic_raw_usage(turn)
    return [
        {"type": kind, "model": turn.model.id, "amount": amount, "cost": 0}
        for kind, amount in (("prompt", turn.prompt), ("completion", turn.completion))
    ]


def _anthropic_raw_usage(turn: Turn) -> JsonDict:
    return {
        "input_tokens": turn.prompt,
        "output_tokens": turn.completion,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def tool_use_lines(turn: Turn) -> list[JsonDict]:
    return [
        {"type": "tool_use", "id": f"call_{i}", "name": name, "input": TOOL_INPUT, "text": ""}
        for i, name in enumerate(turn.tools)
    ]


def stream_lines(turn: Turn) -> list[JsonDict]:
    """NDJSON events of a streamed reply, before any hang (the caller handles `hangafterN`)."""
    if turn.scenario.error_first is not None:
        return [{"type": "error", "message": turn.scenario.error_first}]
    lines: list[JsonDict] = []
    if turn.scenario.reasoning and not turn.scenario.empty_stream:
        lines += [{"type": "reasoning", "reasoning": text} for text in REASONING_TEXTS]
    lines += [{"type": "text", "text": text} for text in turn.texts]
    if turn.scenario.fail_after is not None:
        return [*lines, {"type": "error", "message": MID_STREAM_ERROR}]
    if turn.scenario.hang_after is not None:
        return lines
    lines += tool_use_lines(turn)
    return lines + _usage_lines(turn)


def _usage_lines(turn: Turn) -> list[JsonDict]:
    scenario = turn.scenario
    if turn.v1 or scenario.no_usage or scenario.empty_stream:
        return []
    if scenario.usage_bare:
        return [{"type": "usage"}]
    return [{"type": "usage", "usage": provider_usage(turn)}]


def substitute_lines(*, v1: bool) -> list[JsonDict]:
    """A streamed silent substitution: one lorem-ipsum line and a cost-free usage line."""
    usage: list[JsonDict] = [] if v1 else [{"type": "usage", "usage": {"usd_cents": None}}]
    return [{"type": "text", "text": LOREM}, *usage]


def substitute_result() -> JsonDict:
    """Puter's fake-chat answer: an Anthropic-shaped lorem-ipsum message."""
    usage = {"input_tokens": 0, "output_tokens": 1}
    message = {
        "id": ZERO_UUID,
        "type": "message",
        "role": "assistant",
        "model": "fake",
        "content": [{"type": "text", "text": LOREM}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }
    return {
        "message": message,
        "usage": usage,
        "finish_reason": "stop",
        "via_ai_chat_service": True,
    }


def _result_usage(turn: Turn) -> JsonDict:
    """The `usage` entries of a non-stream result, as the scenario asks."""
    if turn.scenario.no_usage:
        return {}
    if turn.scenario.usage_bare:
        return {"usage": {}}
    return {"usage": v1_usage(turn) if turn.v1 else provider_usage(turn)}


def _openai_message(turn: Turn) -> JsonDict:
    message: JsonDict = {"role": "assistant", "content": "".join(turn.texts), "refusal": None}
    if turn.scenario.reasoning:
        message["reasoning"] = "".join(REASONING_TEXTS)
    if turn.tools:
        message["tool_calls"] = [
            {
                "id": line["id"],
                "type": "function",
                "function": {"name": line["name"], "arguments": orjson.dumps(TOOL_INPUT).decode()},
            }
            for line in tool_use_lines(turn)
        ]
    return message


def _openai_result(turn: Turn) -> JsonDict:
    finish = "tool_calls" if turn.tools else "length" if turn.truncated else "stop"
    return {
        "index": 0,
        "message": _openai_message(turn),
        "logprobs": None,
        "finish_reason": finish,
        **_result_usage(turn),
        "via_ai_chat_service": True,
    }


def _claude_content(turn: Turn) -> list[JsonDict]:
    blocks: list[JsonDict] = []
    if turn.scenario.reasoning:
        thinking = "".join(REASONING_TEXTS)
        blocks.append({"type": "thinking", "thinking": thinking, "signature": "fake-signature"})
    blocks.append({"type": "text", "text": "".join(turn.texts)})
    return blocks + [
        {k: v for k, v in line.items() if k != "text"} for line in tool_use_lines(turn)
    ]


def _claude_result(turn: Turn) -> JsonDict:
    stop = "tool_use" if turn.tools else "max_tokens" if turn.truncated else "end_turn"
    message: JsonDict = {
        "id": CLAUDE_MESSAGE_ID,
        "type": "message",
        "role": "assistant",
        "model": turn.model.id,
        "content": _claude_content(turn),
        "stop_reason": stop,
        "stop_sequence": None,
    }
    if not (turn.scenario.no_usage or turn.scenario.usage_bare):
        message["usage"] = _anthropic_raw_usage(turn)
    return {
        "message": message,
        **_result_usage(turn),
        "finish_reason": "stop",
        "via_ai_chat_service": True,
    }


def chat_result(turn: Turn) -> JsonDict:
    """The `result` of a non-stream chat call, shaped by the provider that served it."""
    if turn.model.anthropic:
        return _claude_result(turn)
    return _openai_result(turn)
