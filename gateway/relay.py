"""The path of one chat call: admit, try upstreams, relay the answer, write its row."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from accounts.keys import KeyFacts
from accounts.models import Endpoint, UsageStatus
from gateway.admission import Refused, Route, admit_request
from gateway.errors import OpenAIError, error_for_failures
from gateway.limits import hand_over
from gateway.logs import request_id_var
from gateway.metrics import observe_model_call
from gateway.openai_format import DONE, ChunkWriter, chat_completion, error_event
from gateway.pool import HeldStream, Lease, acquire, call_on, same_service
from gateway.prober import ensure_prober
from gateway.providers.base import (
    ChatResult,
    ChatStream,
    FailureKind,
    Finish,
    ReasoningDelta,
    StreamFailed,
    TextDelta,
    ToolCallEvent,
    UpstreamFailure,
    UpstreamTarget,
    UsageEvent,
    without_secret,
)
from gateway.providers.playback import ResultStream
from gateway.providers.registry import provider_for
from gateway.row_writer import write_row
from gateway.sse import SSEResponse
from gateway.text_completion_format import TextChunkWriter, text_completion
from gateway.text_filters import FilterChain, filters_for
from gateway.upstream_client import upstream_client
from gateway.usage import Outcome, UsageMeter, no_usage, usage_row

logger = logging.getLogger("gateway.request")
T = TypeVar("T")

# Calls that are metered: an authenticated call refused for its body still leaves a row.
METERED_PATHS = {
    "/v1/chat/completions": Endpoint.CHAT,
    "/v1/completions": Endpoint.COMPLETIONS,
    "/v1/images/generations": Endpoint.IMAGES,
    "/v1/audio/speech": Endpoint.SPEECH,
    "/v1/videos": Endpoint.VIDEOS,
}


def new_meter(
    request: HttpRequest, key: KeyFacts, endpoint: str, body: dict[str, Any]
) -> UsageMeter:
    # The relay writes the request's log line itself, also for streams that outlive the view.
    request.gateway_logged = True  # type: ignore[attr-defined]
    return UsageMeter(
        request_id=request_id_var.get(),
        key_id=key.id,
        user_id=key.user_id,
        key_prefix=key.prefix,
        endpoint=endpoint,
        model=str(body.get("model") or ""),
        stream=bool(body.get("stream")),
        messages=body.get("messages") or [],
    )


@dataclass(frozen=True, slots=True)
class ReplyFormat:
    """How an answer is rendered: chat completions, or legacy text completions."""

    endpoint: str
    render: Callable[..., dict[str, Any]]
    writer: Callable[[str], ChunkWriter]


CHAT_FORMAT = ReplyFormat(Endpoint.CHAT, chat_completion, ChunkWriter)
TEXT_FORMAT = ReplyFormat(Endpoint.COMPLETIONS, text_completion, TextChunkWriter)


async def chat_completions(
    request: HttpRequest, key: KeyFacts, body: dict[str, Any], reply: ReplyFormat = CHAT_FORMAT
) -> HttpResponseBase:
    meter = new_meter(request, key, reply.endpoint, body)
    try:
        admission = await admit_request(
            key=key,
            model=meter.model,
            client_ip=request.META.get("REMOTE_ADDR", ""),
            now=meter.created,
            reserve=True,
        )
        meter.grant, meter.lease = admission.grant, admission.lease
        try:
            if meter.stream:
                response: HttpResponseBase = await _stream(meter, admission.routes, body, reply)
            else:
                response = await _complete(meter, admission.routes, body, reply)
        except OpenAIError as upstream_error:
            upstream_error.headers = {**admission.grant.headers, **upstream_error.headers}
            raise
        for name, value in admission.grant.headers.items():
            response[name] = value
        return response
    except Refused as refused:
        error = refused.error
        await finish(meter, Outcome(refused.status, error.status, no_usage(), error=error.message))
        raise error from None
    except asyncio.CancelledError:
        usage, estimated = meter.usage(complete=False)
        await finish(meter, Outcome(UsageStatus.CLIENT_DISCONNECTED, 499, usage, estimated))
        raise
    except DatabaseError:
        # Outside admission's own check (a pool or alias refresh): the row goes to the journal.
        await finish(meter, database_failed())
        raise
    except Exception:
        # Upstream failures wrote their row already; this is the gateway's own failure.
        await finish(meter, gateway_failed())
        raise


def database_failed() -> Outcome:
    """The row of a call refused because the gateway's database failed (a 503)."""
    return Outcome(UsageStatus.REJECTED, 503, no_usage(), error="the database is unavailable")


def gateway_failed() -> Outcome:
    return Outcome(UsageStatus.UPSTREAM_ERROR, 500, no_usage(), error="the gateway failed")


async def record_invalid(
    request: HttpRequest, key: KeyFacts, endpoint: str, model: str, error: OpenAIError
) -> None:
    """The row of an authenticated call whose body was refused before admission."""
    meter = new_meter(request, key, endpoint, {"model": model})
    status = UsageStatus.INVALID_REQUEST
    await finish(meter, Outcome(status, error.status, no_usage(), error=error.message))


async def record_refused_body(request: HttpRequest) -> None:
    """The row of a call whose body ninja refused after authentication."""
    error: OpenAIError | None = getattr(request, "refused_body", None)
    key = getattr(request, "auth", None)
    endpoint = METERED_PATHS.get(request.path)
    if error is None or not isinstance(key, KeyFacts) or endpoint is None:
        return
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        body = None
    model = body.get("model") if isinstance(body, dict) else None
    await record_invalid(request, key, endpoint, model if isinstance(model, str) else "", error)


async def _complete(
    meter: UsageMeter, routes: list[Route], body: dict[str, Any], reply: ReplyFormat
) -> HttpResponse:
    client = upstream_client()

    async def call(target: UpstreamTarget, model: str) -> ChatResult:
        return await provider_for(target).complete(client, target, {**body, "model": model})

    result = await failover_routes(meter, routes, call, hold=_kept_by(meter))
    filters = filters_for(body)
    result.content = filters.apply(result.content)
    if filters.stopped and not result.tool_calls:
        result.finish_reason = "stop"
    meter.reported = None if filters.stopped else result.usage
    meter.upstream_model = result.served_model or meter.upstream_model
    meter.add_delivered(
        result.reasoning + result.content + "".join(c.name + c.arguments for c in result.tool_calls)
    )
    usage, estimated = meter.usage(complete=True)
    await finish(meter, Outcome(UsageStatus.OK, 200, usage, estimated))
    return HttpResponse(
        orjson.dumps(reply.render(result, model=meter.model, usage=usage)),
        content_type="application/json",
    )


def _kept_by(meter: UsageMeter) -> Callable[[T, Lease], T]:
    """A `hold` that leaves the account's slot with the meter, given back with the row."""

    def keep(value: T, lease: Lease) -> T:
        meter.lease = lease
        return value

    return keep


def _wants_tools(body: dict[str, Any]) -> bool:
    return bool(body.get("tools")) and body.get("tool_choice") != "none"


async def _stream(
    meter: UsageMeter, routes: list[Route], body: dict[str, Any], reply: ReplyFormat
) -> SSEResponse:
    client = upstream_client()

    async def call(target: UpstreamTarget, model: str) -> ChatStream:
        provider, request = provider_for(target), {**body, "model": model}
        if _wants_tools(request):
            # Puter's stream may drop parallel tool calls: ask for the whole answer.
            return ResultStream(await provider.complete(client, target, request))
        return await provider.open_stream(client, target, request)

    keep = _kept_by(meter)
    upstream = await failover_routes(
        meter, routes, call, hold=lambda stream, lease: keep(HeldStream(stream, lease), lease)
    )
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    source = relay_chunks(
        upstream, meter, reply.writer(meter.model), filters_for(body), include_usage=include_usage
    )
    # Start the relay here, so that its `finally` owns the upstream and the row from now on.
    first = await anext(source, b"")
    return SSEResponse(source, first=first)


async def failover(
    meter: UsageMeter,
    targets: list[UpstreamTarget],
    call: Callable[[UpstreamTarget], Awaitable[T]],
) -> T:
    """Try upstreams in order until one answers; nothing has reached the client yet."""
    return await failover_routes(
        meter, [Route(meter.model, targets)], lambda target, _model: call(target)
    )


async def failover_routes(
    meter: UsageMeter,
    routes: list[Route],
    call: Callable[[UpstreamTarget, str], Awaitable[T]],
    *,
    hold: Callable[[T, Lease], T] | None = None,
) -> T:
    """Try each route's upstreams until one answers; the row if none does.

    Each try holds a slot of its upstream's account: given back when the call returns, or
    handed to `hold`, which binds it to the value (a stream) that gives it back on close.
    """
    ensure_prober()
    failures: list[UpstreamFailure] = []
    deadline = time.monotonic() + settings.UPSTREAM_QUEUE_TIMEOUT
    for route in routes:
        left = list(route.targets)
        for attempt in range(1, settings.UPSTREAM_MAX_TRIES + 1):
            # Start another try only while a client may still wait for its first byte; the
            # first try always starts, however long admission took.
            late = meter.elapsed_ms() > settings.UPSTREAM_READ_TIMEOUT * 1000
            if not left or (failures and late):
                break
            lease = _reserved(meter, left) or await _lease(meter, left, deadline)
            target = lease.target
            left.remove(target)
            meter.upstream_id, meter.upstream_label = target.id, target.label
            meter.upstream_model = route.model
            try:
                return await call_on(lease, call, route.model, hold=hold)
            except UpstreamFailure as failure:
                _log_try(meter, attempt, target, failure)
                failures.append(failure)
                if failure.kind is FailureKind.MODEL_NOT_FOUND:
                    # Another service may serve it; this one's other tokens would not.
                    left = [t for t in left if not same_service(t, target)]
                elif failure.kind.is_clients_fault:
                    break
        if failures and failures[-1].kind is FailureKind.BAD_REQUEST:
            break  # another model would refuse the same request
    raise await _refused(meter, failures)


def _reserved(meter: UsageMeter, targets: list[UpstreamTarget]) -> Lease | None:
    """The account slot admission took for the first try, if it is still to be used."""
    lease = meter.lease
    if lease is None or lease.holder is None or lease.target not in targets:
        return None
    return lease


async def _lease(meter: UsageMeter, targets: list[UpstreamTarget], deadline: float) -> Lease:
    """A slot on the best free upstream, or the row and the 503 of a call that got none."""
    try:
        return await acquire(targets, deadline=deadline)
    except OpenAIError as error:
        meter.upstream_id, meter.upstream_label, meter.upstream_model = None, "", ""
        outcome = Outcome(UsageStatus.UPSTREAM_ERROR, error.status, no_usage(), error=error.message)
        await finish(meter, outcome)
        raise


def _log_try(
    meter: UsageMeter, attempt: int, target: UpstreamTarget, failure: UpstreamFailure
) -> None:
    logger.warning(
        "upstream try failed",
        extra={
            "request_id": meter.request_id,
            "try": attempt,
            "upstream": target.label,
            "failure": failure.kind.value,
            "upstream_status": failure.status,
            "reason": failure.message,
            "ms": meter.elapsed_ms(),
        },
    )


async def _refused(meter: UsageMeter, failures: list[UpstreamFailure]) -> OpenAIError:
    """Write the row of a call no upstream answered; the error to raise."""
    error = error_for_failures(failures, meter.model)
    clients_fault = bool(failures) and failures[-1].kind.is_clients_fault
    status = UsageStatus.INVALID_REQUEST if clients_fault else UsageStatus.UPSTREAM_ERROR
    if not failures:
        meter.upstream_id, meter.upstream_label, meter.upstream_model = None, "", ""
    await finish(meter, Outcome(status, error.status, no_usage(), error=error.message))
    return error


async def relay_chunks(
    upstream: ChatStream,
    meter: UsageMeter,
    writer: ChunkWriter,
    filters: FilterChain,
    *,
    include_usage: bool,
) -> AsyncGenerator[bytes, None]:
    """Upstream events → OpenAI chunks, metered; the row is written whatever happens.

    The chunks of the events that arrived together go out in one write; none waits for an
    event still to come.
    """
    tool_index = 0
    reason = "stop"
    out = Batch()
    try:
        # The role goes out at once: the client's first byte need not wait for a token.
        yield writer.role()
        async for event in upstream.events():
            if isinstance(event, TextDelta):
                text = filters.feed(event.text)
                if text:
                    out.add(writer.content(text), text)
                if filters.stopped:
                    meter.reported = None  # the upstream's figure counts text never sent
                    break
            elif isinstance(event, ReasoningDelta):
                chunk = writer.reasoning(event.text)
                if chunk:
                    out.add(chunk, event.text)
            elif isinstance(event, ToolCallEvent):
                out.add(writer.tool_call(tool_index, event), event.name + event.arguments)
                tool_index += 1
            elif isinstance(event, UsageEvent):
                meter.reported = event.usage
            elif isinstance(event, Finish):
                reason = event.reason
            else:
                event = _token_hidden(event, meter)
                out.delivered_to(meter)  # the client receives them with the error
                # The row is written before the last event: a client that saw it finds it.
                await finish(meter, _failed_midway(meter, event))
                yield out.take() + error_event(event.message, event.code)
                return
            if out and not upstream.buffered:
                yield out.take()
                out.delivered_to(meter)
        rest = filters.flush()
        if rest:
            out.add(writer.content(rest), rest)
        out.delivered_to(meter)
        usage, estimated = meter.usage(complete=True)
        tail = writer.finish("tool_calls" if tool_index else reason)
        if include_usage:
            tail += writer.usage(usage)
        await finish(meter, Outcome(UsageStatus.OK, 200, usage, estimated))
        yield out.take() + tail + DONE
    finally:
        await upstream.aclose()
        if not meter.recorded:
            usage, estimated = meter.usage(complete=False)
            await finish(meter, Outcome(UsageStatus.CLIENT_DISCONNECTED, 200, usage, estimated))


class Batch:
    """Chunks waiting for one write, and the text they carry (metered once written)."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._texts: list[str] = []

    def __bool__(self) -> bool:
        return bool(self._chunks)

    def add(self, chunk: bytes, text: str) -> None:
        self._chunks.append(chunk)
        self._texts.append(text)

    def take(self) -> bytes:
        chunks, self._chunks = self._chunks, []
        return b"".join(chunks)

    def delivered_to(self, meter: UsageMeter) -> None:
        for text in self._texts:
            meter.add_delivered(text)
        self._texts = []


def _hand_over(meter: UsageMeter) -> list[tuple[str, str]]:
    """The shared slots the request still holds, as (scope, holder); it holds none now."""
    held = [
        meter.grant and hand_over(meter.grant),
        meter.lease and meter.lease.hand_over(),
    ]
    return [slot for slot in held if slot]


def _token_hidden(event: StreamFailed, meter: UsageMeter) -> StreamFailed:
    """Some upstreams quote the credential they were sent in their error messages."""
    if meter.lease is None:
        return event
    return StreamFailed(without_secret(event.message, meter.lease.target.token), event.code)


def _failed_midway(meter: UsageMeter, event: StreamFailed) -> Outcome:
    usage, estimated = meter.usage(complete=False)
    return Outcome(UsageStatus.UPSTREAM_ERROR, 200, usage, estimated, error=event.message)


async def finish(meter: UsageMeter, outcome: Outcome) -> None:
    """Write the one row of this request (never twice) and its log line; its slots go back
    with the row (gateway/row_writer.py)."""
    if meter.recorded:
        return
    meter.recorded = True
    try:
        # Goes on if this call is cancelled (a second cancel): the row is never lost.
        await write_row(usage_row(meter, outcome, held=_hand_over(meter)))
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("usage row not written", extra={"key": meter.key_prefix})
    logger.info(
        "model call",
        extra={
            # Explicit: a stream outlives the middleware that set the context variable.
            "request_id": meter.request_id,
            "key": meter.key_prefix,
            "route": meter.endpoint,
            "model": meter.model,
            "upstream": meter.upstream_label or None,
            "stream": meter.stream,
            "status": outcome.status.value,
            "http_status": outcome.http_status,
            "ms": meter.elapsed_ms(),
            "ttft_ms": meter.ttft_ms(),
            "prompt_tokens": outcome.usage.prompt_tokens,
            "completion_tokens": outcome.usage.completion_tokens,
            "estimated": outcome.estimated,
        },
    )
    observe_model_call(meter, outcome)
