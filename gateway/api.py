"""The `/v1` API: thin async operations over the relay, and OpenAI-shaped error handlers."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.utils import timezone
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from accounts.db_thread import run_in_db_thread
from accounts.keys import KeyFacts
from accounts.models import Endpoint
from accounts.usage_queries import key_report
from gateway.auth import ApiKeyAuth
from gateway.body_parser import BodyParser, UnreadableBody
from gateway.catalogue import models_for
from gateway.counters import CountersUnavailable, peek
from gateway.errors import OpenAIError, invalid_api_key, invalid_request, model_not_found
from gateway.limits import limits_unavailable, rpm_scope
from gateway.media_api import media_router
from gateway.relay import METERED_PATHS, TEXT_FORMAT, chat_completions, record_invalid
from gateway.schemas import ChatCompletionRequest, CompletionRequest

logger = logging.getLogger("gateway.api")

api = NinjaAPI(
    title="puter-gateway",
    version="1",
    description="OpenAI-compatible API over Puter's AI API.",
    urls_namespace="v1",
    auth=ApiKeyAuth(),
    docs_url=None,
    parser=BodyParser(),
)
api.add_router("/", media_router)


def _json(payload: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(orjson.dumps(payload), status=status, content_type="application/json")


@api.get("/models", summary="List the models this key may use")
async def list_models(request: HttpRequest) -> HttpResponse:
    key: KeyFacts = request.auth  # type: ignore[attr-defined]
    return _json({"object": "list", "data": await models_for(key)})


@api.get("/models/{path:model_id}", summary="Retrieve one model")
async def retrieve_model(request: HttpRequest, model_id: str) -> HttpResponse:
    key: KeyFacts = request.auth  # type: ignore[attr-defined]
    wanted = model_id.lower()
    for model in await models_for(key):
        if model["id"] == wanted:
            return _json(model)
    raise model_not_found(model_id)


@api.post("/chat/completions", summary="Create a chat completion (streaming or not)")
async def create_chat_completion(
    request: HttpRequest, payload: ChatCompletionRequest
) -> HttpResponseBase:
    key: KeyFacts = request.auth  # type: ignore[attr-defined]
    refusal = _unsupported(payload)
    if refusal is not None:
        await record_invalid(request, key, Endpoint.CHAT, payload.model, refusal)
        raise refusal
    return await chat_completions(request, key, payload.model_dump(exclude_none=True))


@api.post("/completions", summary="Create a legacy text completion (mapped onto chat)")
async def create_completion(request: HttpRequest, payload: CompletionRequest) -> HttpResponseBase:
    key: KeyFacts = request.auth  # type: ignore[attr-defined]
    refusal = _unsupported_legacy(payload)
    if refusal is not None:
        await record_invalid(request, key, Endpoint.COMPLETIONS, payload.model, refusal)
        raise refusal
    prompt = payload.prompt if isinstance(payload.prompt, str) else payload.prompt[0]
    body = payload.model_dump(exclude_none=True, exclude={"prompt", "echo", "logprobs"})
    body["messages"] = [{"role": "user", "content": prompt}]
    return await chat_completions(request, key, body, TEXT_FORMAT)


@api.get("/key", summary="This key's limits, usage so far and what remains")
async def describe_key(request: HttpRequest) -> HttpResponse:
    key: KeyFacts = request.auth  # type: ignore[attr-defined]
    requests = 0
    if key.limits.rpm is not None:
        try:
            requests = (await peek(rpm_scope(key))).count
        except CountersUnavailable:
            raise limits_unavailable().error from None
    report = await run_in_db_thread(key_report, key.id, timezone.now(), requests_minute=requests)
    return _json(report)


def _unsupported_legacy(payload: CompletionRequest) -> OpenAIError | None:
    if isinstance(payload.prompt, list) and len(payload.prompt) != 1:
        return invalid_request("Send exactly one prompt per request.", param="prompt")
    if payload.echo:
        return invalid_request("echo is not supported by this gateway.", param="echo")
    if payload.n is not None and payload.n > 1:
        return invalid_request("Only n=1 is supported by this gateway.", param="n")
    if payload.logprobs is not None:
        return invalid_request("logprobs are not available from the upstream.", param="logprobs")
    return None


def _unsupported(payload: ChatCompletionRequest) -> OpenAIError | None:
    if payload.n is not None and payload.n > 1:
        return invalid_request("Only n=1 is supported by this gateway.", param="n")
    if payload.logprobs:
        return invalid_request("logprobs are not available from the upstream.", param="logprobs")
    return None


# --- errors ----------------------------------------------------------------------------


@api.exception_handler(OpenAIError)
def on_openai_error(request: HttpRequest, exc: OpenAIError) -> HttpResponse:
    return exc.response()


@api.exception_handler(ValidationError)
def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    first = exc.errors[0] if exc.errors else {}
    param = param_of(first.get("loc", ()))
    message = str(first.get("msg", "Invalid request."))
    error = invalid_request(f"{message} (at '{param}')." if param else message, param=param)
    _note_refused_body(request, error)
    return error.response()


@api.exception_handler(AuthenticationError)
def on_authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return invalid_api_key().response()


@api.exception_handler(HttpError)
def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if exc.status_code == 400:
        # ninja wraps the parser's error: its message is the one meant for the client.
        cause = exc.__cause__
        reason = (
            str(cause)
            if isinstance(cause, UnreadableBody)
            else "The request body is not valid JSON."
        )
        error = invalid_request(reason)
        _note_refused_body(request, error)
        return error.response()
    return OpenAIError(exc.status_code, str(exc)).response()


@api.exception_handler(Http404)
def on_not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return OpenAIError(404, "Not found.", code="not_found").response()


@api.exception_handler(DatabaseError)
def on_database_error(request: HttpRequest, exc: DatabaseError) -> HttpResponse:
    # A key the process has not seen lately cannot be checked: refuse, never let it pass.
    logger.warning("database unavailable on %s: %s", request.path, type(exc).__name__)
    return OpenAIError(
        503,
        "The gateway's database is unavailable; retry shortly.",
        type="api_error",
        code="database_unavailable",
        headers={"Retry-After": "1"},
    ).response()


@api.exception_handler(Exception)
def on_unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    logger.exception("unhandled error on %s", request.path)
    return OpenAIError(
        500,
        "The gateway failed unexpectedly; the request id identifies it in the logs.",
        type="api_error",
    ).response()


_TYPE_TAGS = ("str", "int", "float", "bool", "dict", "list", "none", "literal")


def param_of(loc: Any) -> str | None:
    """`("body", "payload", "messages", 0, "role")` → `messages[0].role`."""
    parts: list[str] = []
    for item in list(loc)[2:]:
        if isinstance(item, int):
            parts.append(f"[{item}]")
            continue
        text = str(item)
        if "[" in text or "-" in text or text.lower() in _TYPE_TAGS:
            break  # pydantic's names for union members, not fields
        parts.append(("." if parts else "") + text)
    return "".join(parts) or None


def _note_refused_body(request: HttpRequest, error: OpenAIError) -> None:
    """Let the middleware write the row of an authenticated, metered call."""
    if isinstance(getattr(request, "auth", None), KeyFacts) and request.path in METERED_PATHS:
        request.refused_body = error  # type: ignore[attr-defined]
