"""A fake of Puter's AI API (PUTER.md part B), v2 by default, for tests, demos and benchmarks.

A raw ASGI app. The caller's token prefix chooses account behaviours (`bad`, `broke`, `busy`,
`crash`, and `v1` for the old wire), and `+directive` suffixes of the model name choose how a
chat reply goes (see `fake_scenarios`); images, speech and video are `fake_media`'s.
`/_fake/stats` shows what the fake saw.

Run it standalone: `python -m gateway.testing.fake_puter --port N [--host H] [--fast]`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import orjson
import uvicorn

from gateway.testing import fake_media
from gateway.testing import fake_scenarios as scenarios
from gateway.testing.fake_scenarios import FakeModel, JsonDict, Scenario
from gateway.testing.fake_scenarios import chunk_texts as chunk_texts
from gateway.testing.fake_scenarios import expected_text as expected_text
from gateway.testing.fake_scenarios import expected_usage as expected_usage
from gateway.testing.one_write import OneWriteHttp

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

CHAT_INTERFACE = "puter-chat-completion"
PLAIN_JSON_TYPE = "text/plain;actually=json"
NDJSON_TYPE = b"application/x-ndjson"
API_ERROR_TYPE = "heyputer:api/APIError"
V1_ORIGIN = "https://api.puter.com"
DEFAULT_MODEL = "gpt-5-nano"
RECORDED_REQUESTS = 50
TOKEN_BEHAVIOURS = ("bad", "broke", "busy", "crash")
V1_NO_FUNDS = "Available funding is insufficient for this request."


@dataclass(eq=False)
class ApiError(Exception):
    """A Puter error reply; `real_status` errors keep their status even on the v1 wire."""

    status: int
    code: str
    message: str
    extra: JsonDict = field(default_factory=dict)
    plain: bool = False
    real_status: bool = False


def render_error(err: ApiError, *, v1: bool) -> tuple[int, object, Headers]:
    """Status, body and headers of an error on the v2 wire or, for v1 callers, the old one."""
    if v1 and err.plain:
        return 200, {"success": False, "error": err.message}, []
    if v1 and err.real_status:
        return err.status, {"message": err.message, "code": err.code}, []
    if v1:
        detail = {"$": API_ERROR_TYPE, "code": err.code, "message": err.message}
        return 200, {"success": False, "error": {**detail, "status": err.status, **err.extra}}, []
    headers = [(b"x-needs-upgrade", b"true")] if err.status == 402 else []
    body = {"error": err.message, "message": err.message, "code": err.code, **err.extra}
    return err.status, body, headers


@dataclass(frozen=True)
class Caller:
    token: str
    v1: bool
    behaviour: str

    @property
    def key(self) -> str:
        return self.token[:8]


def classify_token(token: str) -> Caller:
    """Read behaviours from the token: an optional `v1` prefix, then one of TOKEN_BEHAVIOURS."""
    v1 = token.startswith("v1")
    rest = token[2:] if v1 else token
    behaviour = next((name for name in TOKEN_BEHAVIOURS if rest.startswith(name)), "")
    return Caller(token=token, v1=v1, behaviour=behaviour)


_TOKEN_ERRORS: dict[tuple[str, bool], tuple[int, str, str]] = {
    ("bad", False): (401, "token_auth_failed", "Authentication failed"),
    ("bad", True): (401, "token_auth_failed", "Authentication failed."),
    ("broke", False): (402, "insufficient_funds", "No usage left for request."),
    ("broke", True): (402, "insufficient_funds", V1_NO_FUNDS),
    ("busy", False): (429, "too_many_requests", "Too many requests."),
    ("busy", True): (429, "rate_limit_exceeded", "Rate limit exceeded."),
    ("crash", False): (500, "internal_error", "Internal Server Error"),
    ("crash", True): (500, "internal_error", "Internal Server Error"),
}


def reject_token(caller: Caller, *behaviours: str) -> None:
    """Raise the error of the caller's behaviour when it is one of `behaviours`."""
    if caller.behaviour not in behaviours:
        return
    status, code, message = _TOKEN_ERRORS[(caller.behaviour, caller.v1)]
    raise ApiError(status, code, message, real_status=caller.behaviour == "bad")


def find_token(payload: Mapping[str, object], headers: Mapping[str, str]) -> str:
    """Take the token from the body, else `Authorization: Bearer`, else `x-api-key`."""
    body_token = payload.get("auth_token")
    authorization = headers.get("authorization", "")
    if isinstance(body_token, str) and body_token.strip():
        token = body_token.strip().removeprefix("Bearer ").strip()
    elif authorization[:7].lower() == "bearer " and authorization[7:].strip():
        token = authorization[7:].strip()
    else:
        token = headers.get("x-api-key", "").strip()
    if not token:
        raise ApiError(401, "token_missing", "Missing authentication token", real_status=True)
    return token


def _redact(secret: str) -> str:
    return f"{secret[:8]}..."


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    redacted = dict(headers)
    authorization = redacted.get("authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        bearer = scheme.lower() == "bearer" and token
        redacted["authorization"] = (
            f"{scheme} {_redact(token)}" if bearer else _redact(authorization)
        )
    if "x-api-key" in redacted:
        redacted["x-api-key"] = _redact(redacted["x-api-key"])
    return redacted


def redact_body(body: object) -> object:
    if isinstance(body, dict) and isinstance(body.get("auth_token"), str):
        return {**body, "auth_token": _redact(body["auth_token"])}
    return body


@dataclass
class Stats:
    """Counters for tests: calls of /drivers/call, concurrency, and how streams ended."""

    calls: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    in_flight_by_token: dict[str, int] = field(default_factory=dict)
    max_in_flight_by_token: dict[str, int] = field(default_factory=dict)
    streams_completed: int = 0
    streams_disconnected: int = 0
    # The client port of each connection that brought a call: a reused connection adds none.
    connections: set[int] = field(default_factory=set)
    # time.monotonic() of each line of the latest stream, for tests in this process.
    last_stream_line_times: list[float] = field(default_factory=list)
    requests: deque[JsonDict] = field(default_factory=lambda: deque(maxlen=RECORDED_REQUESTS))

    def begin(self, scope: Scope) -> None:
        self.connections.add((scope.get("client") or ("", 0))[1])
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def begin_token(self, key: str) -> None:
        now = self.in_flight_by_token.get(key, 0) + 1
        self.in_flight_by_token[key] = now
        self.max_in_flight_by_token[key] = max(self.max_in_flight_by_token.get(key, 0), now)

    def end(self, key: str | None) -> None:
        self.in_flight -= 1
        if key is not None:
            self.in_flight_by_token[key] -= 1
            if not self.in_flight_by_token[key]:
                del self.in_flight_by_token[key]

    def snapshot(self) -> JsonDict:
        return {
            **asdict(self),
            "connections": sorted(self.connections),
            "requests": list(self.requests),
        }


class Peer:
    """Watch the client connection so that pauses and hangs end when the client leaves."""

    def __init__(self, receive: Receive) -> None:
        self.gone = asyncio.Event()
        self._receive = receive
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.gone.set()

    async def pause(self, seconds: float) -> bool:
        """Wait; return False as soon as the client has left."""
        if seconds <= 0:
            # Yield anyway so concurrent streams interleave and a disconnect gets noticed.
            await asyncio.sleep(0)
            return not self.gone.is_set()
        with suppress(TimeoutError):
            await asyncio.wait_for(self.gone.wait(), seconds)
        return not self.gone.is_set()

    async def close(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task


async def send_json(
    send: Send, status: int, payload: object, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = orjson.dumps(payload)
    start_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": start_headers})
    await send({"type": "http.response.body", "body": body})


async def send_stream(
    send: Send,
    peer: Peer,
    lines: Sequence[JsonDict],
    *,
    pace: float,
    hang: bool,
    times: list[float] | None = None,
    together: bool = False,
) -> bool:
    """Send NDJSON lines one body message each, or all in one when `together` and unpaced;
    return False when the client left first."""
    if times is not None:
        times.clear()
    headers = [(b"content-type", NDJSON_TYPE)]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if together and not pace and lines:
        body = b"".join(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE) for line in lines)
        if times is not None:
            times.extend([time.monotonic()] * len(lines))
        await send({"type": "http.response.body", "body": body, "more_body": True})
        lines = ()
    for index, line in enumerate(lines):
        if not await peer.pause(pace if index else 0):
            return False
        body = orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)
        if times is not None:
            times.append(time.monotonic())
        await send({"type": "http.response.body", "body": body, "more_body": True})
    if hang:
        await peer.gone.wait()
        return False
    await send({"type": "http.response.body", "body": b""})
    return True


@dataclass
class Call:
    """One /drivers/call request after authentication and dispatch."""

    send: Send
    peer: Peer
    stats: Stats
    payload: JsonDict
    caller: Caller
    driver: str
    base_url: str = ""  # where the caller reached the fake, for result URLs
    lines_together: bool = False  # an unpaced stream's lines in one write (FakePuter.fast)

    @property
    def args(self) -> JsonDict:
        args = self.payload.get("args")
        return args if isinstance(args, dict) else {}


async def send_result(call: Call, result: object, metadata: JsonDict | None = None) -> None:
    envelope: JsonDict = {"success": True, "result": result, "service": {"name": "ai-chat"}}
    if metadata is not None:
        envelope["metadata"] = metadata
    await send_json(call.send, 200, envelope)


def _model_not_found(name: object, *, v1: bool) -> ApiError:
    if not v1:
        return ApiError(400, "bad_request", f"Model not found: {name}")
    message = (
        f'Field "model" is invalid. Expected a valid model name from '
        f"{V1_ORIGIN}/puterai/chat/models. Got {name}."
    )
    return ApiError(400, "field_invalid", message)


def chat_model(call: Call) -> tuple[FakeModel, Scenario]:
    name = call.args.get("model") or DEFAULT_MODEL
    if not isinstance(name, str):
        raise _model_not_found(name, v1=call.caller.v1)
    try:
        model, scenario = scenarios.resolve(name)
    except scenarios.ModelNotFound as exc:
        raise _model_not_found(name, v1=call.caller.v1) from exc
    except scenarios.ScenarioError as exc:
        raise ApiError(400, "bad_request", str(exc)) from exc
    if call.caller.v1 and call.driver != model.legacy_driver:
        raise _model_not_found(name, v1=True)
    return model, scenario


def _lacks_content(message: object) -> bool:
    if not isinstance(message, dict):
        return False
    return not ("content" in message or "tool_calls" in message or message.get("role") == "tool")


def validate_messages(messages: object) -> None:
    if not isinstance(messages, list):
        raise ApiError(400, "bad_request", "messages is required and must be an array")
    if any(_lacks_content(message) for message in messages):
        raise ApiError(400, "bad_request", "each message must have a 'content' property")


def _attempts_error(
    model: FakeModel, status: int, code: str, error: str, reply: tuple[int, str, str]
) -> ApiError:
    attempt = {"model": model.id, "provider": model.provider, "status": status, "code": code}
    return ApiError(*reply, extra={"attempts": [{**attempt, "error": error}]})


_UNAVAILABLE = (400, "upstream_provider_unavailable", "AI provider unavailable")
# Non-stream replies to a failing first upstream call, by the upstream's status.
_FIRST_FAILURES: dict[int, tuple[int, str, str]] = {
    429: (429, "upstream_rate_limited", "AI provider rate limit exceeded"),
    400: (400, "upstream_bad_request", ""),
}


def _error_first_reply(model: FakeModel, message: str) -> ApiError:
    status_text, code, _ = message.split(" ", 2)
    status = int(status_text)
    reply = _FIRST_FAILURES.get(status, _UNAVAILABLE)
    reply = (reply[0], reply[1], reply[2] or message)
    return _attempts_error(model, status, code.rstrip(":"), message, reply)


def scenario_error(model: FakeModel, scenario: Scenario, *, stream: bool) -> ApiError | None:
    """The JSON error a scenario answers with before any stream starts, if any."""
    if scenario.down:
        return _attempts_error(model, 502, "server_error", "bad gateway", _UNAVAILABLE)
    if scenario.http500:
        return ApiError(500, "internal_error", "Internal Server Error")
    if stream:
        return None
    if scenario.error_first is not None:
        return _error_first_reply(model, scenario.error_first)
    if scenario.fail_after is not None:
        return _attempts_error(model, 500, "server_error", scenarios.MID_STREAM_ERROR, _UNAVAILABLE)
    return None


async def chat_complete(call: Call) -> None:
    model, scenario = chat_model(call)
    reject_token(call.caller, "broke")
    validate_messages(call.args.get("messages"))
    stream = call.args.get("stream") is True
    if not await call.peer.pause(scenario.delay_ms / 1000):
        call.stats.streams_disconnected += 1
        return
    error = scenario_error(model, scenario, stream=stream)
    if error is not None:
        raise error
    if stream:
        await _stream_chat(call, model, scenario)
    elif scenario.hang_after is not None:
        await call.peer.gone.wait()
        call.stats.streams_disconnected += 1
    else:
        await _send_chat(call, model, scenario)


def _substitutes(model: FakeModel, scenario: Scenario) -> bool:
    return scenario.substitute or model is scenarios.FAKE_MODEL


def _turn(call: Call, model: FakeModel, scenario: Scenario) -> scenarios.Turn:
    return scenarios.plan_turn(model, scenario, call.args, v1=call.caller.v1)


async def _stream_chat(call: Call, model: FakeModel, scenario: Scenario) -> None:
    if _substitutes(model, scenario):
        lines = scenarios.substitute_lines(v1=call.caller.v1)
    else:
        lines = scenarios.stream_lines(_turn(call, model, scenario))
    pace = scenario.pace_ms / 1000
    times = call.stats.last_stream_line_times
    sent = await send_stream(
        call.send, call.peer, lines, pace=pace, hang=scenario.hangs, times=times,
        together=call.lines_together,
    )  # fmt: skip
    if sent:
        call.stats.streams_completed += 1
    else:
        call.stats.streams_disconnected += 1


async def _send_chat(call: Call, model: FakeModel, scenario: Scenario) -> None:
    substitute = _substitutes(model, scenario)
    served = scenarios.FAKE_MODEL if substitute else model
    if substitute:
        result = scenarios.substitute_result()
    else:
        result = scenarios.chat_result(_turn(call, model, scenario))
    metadata: JsonDict = {"service_used": served.provider}
    if not call.caller.v1:
        metadata["providerUsed"] = served.id
    await send_result(call, result, metadata)


async def chat_models(call: Call) -> None:
    await send_result(call, [scenarios.model_details(model) for model in scenarios.listed_models()])


async def chat_list(call: Call) -> None:
    await send_result(call, [model.id for model in scenarios.listed_models()])


Handler = Callable[[Call], Awaitable[None]]


@dataclass(frozen=True)
class DriverInterface:
    """A driver interface: its v2 driver name, its v1 driver names and its methods."""

    driver: str
    legacy_default: str
    legacy_drivers: frozenset[str]
    methods: Mapping[str, Handler]
    aliases: frozenset[str] = frozenset()  # v2 names that act as provider hints (media)


INTERFACES: dict[str, DriverInterface] = {
    CHAT_INTERFACE: DriverInterface(
        driver="ai-chat",
        legacy_default="openai-completion",
        legacy_drivers=frozenset(model.legacy_driver for model in scenarios.MODELS),
        methods={"complete": chat_complete, "models": chat_models, "list": chat_list},
    ),
    # Image generation, speech and video (PUTER.md B 4 to B 6).
    **fake_media.interfaces(),
}


def resolve_driver(interface: str, spec: DriverInterface, name: object, caller: Caller) -> str:
    """The driver a call runs on; v2 knows one name per interface, v1 only provider names."""
    if not caller.v1:
        if name in (None, "", spec.driver) or name in spec.aliases:
            return str(name or spec.driver)
        message = f"Driver not found: {interface}:{name}"
        raise ApiError(404, "not_found", message)
    if name in (None, ""):
        return spec.legacy_default
    if name == spec.driver:
        message = f"Calling {spec.driver} directly is not yet supported"
        raise ApiError(400, "bad_request", message, plain=True)
    if name not in spec.legacy_drivers:
        message = f"No implementation available for {interface}:{name}"
        raise ApiError(502, "no_implementation_available", message)
    return str(name)


def dispatch(payload: JsonDict, caller: Caller) -> tuple[Handler, str]:
    interface, method = payload.get("interface"), payload.get("method")
    if not (isinstance(interface, str) and interface and isinstance(method, str) and method):
        raise ApiError(400, "bad_request", "interface and method are required", real_status=True)
    spec = INTERFACES.get(interface)
    if spec is None:
        raise ApiError(404, "not_found", f"Interface not found: {interface}")
    driver = resolve_driver(interface, spec, payload.get("driver", payload.get("service")), caller)
    handler = spec.methods.get(method)
    if handler is None:
        raise ApiError(404, "not_found", f"Method not found: {interface}:{method}")
    return handler, driver


async def serve_call(
    request: Request,
    peer: Peer,
    stats: Stats,
    payload: JsonDict,
    caller: Caller,
    *,
    lines_together: bool = False,
) -> None:
    reject_token(caller, "bad", "crash")
    handler, driver = dispatch(payload, caller)
    reject_token(caller, "busy")
    base_url = "http://" + request.headers.get("host", "")
    call = Call(request.send, peer, stats, payload, caller, driver, base_url, lines_together)
    await handler(call)


def is_json_type(content_type: str) -> bool:
    # Puter parses `text/plain;actually=json` only when the header is exactly that string.
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or content_type == PLAIN_JSON_TYPE


def decode_body(content_type: str, body: bytes) -> tuple[JsonDict | None, object]:
    """The request payload (None when the JSON is malformed) and what to record of the body."""
    if not is_json_type(content_type):
        return {}, body.decode("utf-8", "replace") or None
    if not body.strip():
        return {}, None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, body.decode("utf-8", "replace")
    return (parsed if isinstance(parsed, dict) else {}), parsed


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None when the client left before sending it."""
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


@dataclass
class Request:
    scope: Scope
    receive: Receive
    send: Send
    headers: dict[str, str]


Route = Callable[[Request], Awaitable[None]]


def with_session_cookie(send: Send, caller: Caller) -> Send:
    """Answers set the caller's session cookie, as a login to Puter's site does. A gateway
    that kept it would send one account's session along with another account's calls."""
    session = hashlib.sha256(caller.token.encode()).hexdigest()[:16]
    cookie = (b"set-cookie", f"puter_session={session}; Path=/; HttpOnly".encode())

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), cookie]}
        await send(message)

    return sending


class FakePuter:
    """The ASGI app. `fast`, for benchmarks, keeps no request bodies and sends an unpaced
    stream's lines in one write, as ../shared/bench's fake upstream sends its events (so
    that a proxy's reads of either are alike); paced streams go line by line either way."""

    def __init__(self, *, fast: bool = False) -> None:
        self.fast = fast
        self.stats = Stats()
        self._routes: dict[tuple[str, str], Route] = {
            ("POST", "/drivers/call"): self._drivers_call,
            ("GET", "/puterai/chat/models"): self._models,
            ("GET", "/puterai/chat/models/details"): self._model_details,
            ("GET", "/puterai/video/models"): fake_media.video_models,
            ("GET", "/_fake/stats"): self._stats,
            ("POST", "/_fake/reset"): self._reset,
            ("GET", "/_fake/health"): self._health,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope["headers"]
        }
        request = Request(scope=scope, receive=receive, send=send, headers=headers)
        route = self._routes.get((scope["method"], scope["path"]))
        if route is None and scope["method"] == "GET" and scope["path"].startswith("/_fake/media/"):
            route = fake_media.serve_media
        if route is None:
            status, body, _ = render_error(ApiError(404, "not_found", "Not found"), v1=False)
            await send_json(send, status, body)
            return
        await route(request)

    def _record(self, request: Request, body: object) -> None:
        self.stats.requests.append(
            {
                "path": request.scope["path"],
                "headers": redact_headers(request.headers),
                "body": None if self.fast else redact_body(body),
            }
        )

    def _accept(self, request: Request, body: bytes) -> JsonDict:
        payload, recorded = decode_body(request.headers.get("content-type", ""), body)
        self._record(request, recorded)
        if payload is None:
            message = "Malformed JSON in request body"
            raise ApiError(400, "client_bad_json", message, real_status=True)
        return payload

    async def _drivers_call(self, request: Request) -> None:
        stats, peer = self.stats, Peer(request.receive)
        stats.begin(request.scope)
        caller: Caller | None = None
        try:
            body = await read_body(request.receive)
            if body is None:
                return
            peer.start()
            payload = self._accept(request, body)
            caller = classify_token(find_token(payload, request.headers))
            stats.begin_token(caller.key)
            request = replace(request, send=with_session_cookie(request.send, caller))
            await serve_call(request, peer, stats, payload, caller, lines_together=self.fast)
        except ApiError as err:
            status, reply, headers = render_error(err, v1=caller is not None and caller.v1)
            await send_json(request.send, status, reply, headers)
        finally:
            await peer.close()
            stats.end(caller.key if caller else None)

    async def _models(self, request: Request) -> None:
        self._record(request, None)
        await send_json(
            request.send, 200, {"models": [model.id for model in scenarios.listed_models()]}
        )

    async def _model_details(self, request: Request) -> None:
        self._record(request, None)
        models = [scenarios.model_details(model) for model in scenarios.listed_models()]
        await send_json(request.send, 200, {"models": models})

    async def _stats(self, request: Request) -> None:
        await send_json(request.send, 200, self.stats.snapshot())

    async def _reset(self, request: Request) -> None:
        self.stats = Stats()
        await send_json(request.send, 200, {"ok": True})

    async def _health(self, request: Request) -> None:
        await send_json(request.send, 200, {"ok": True})


app = FakePuter()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the fake Puter AI API.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--fast", action="store_true",
        help="for benchmarks: keep no request bodies; an unpaced stream's lines in one write, "
        "each response's head in the write of its body",
    )  # fmt: skip
    options = parser.parse_args(argv)
    app.fast = options.fast
    uvicorn.run(
        app, host=options.host, port=options.port, log_level="warning", lifespan="off",
        access_log=False, http=OneWriteHttp if options.fast else "auto",
    )  # fmt: skip


if __name__ == "__main__":
    main()
