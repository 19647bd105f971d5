"""`/playground/`: try models from the portal with the signed-in session, not a pasted key.

Calls go through the same relay as `/v1/chat/completions`, charged to the user's key named
`playground` (made on first use), so they are limited, metered and shown like any other.
These views sit on the portal's stack: session login and CSRF protect them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST
from pydantic import BaseModel, ValidationError

from accounts.db_thread import run_in_db_thread
from accounts.keys import KeyFacts, KeyQuotaExceeded, facts_of
from accounts.portal_keys import playground_key
from gateway.api import param_of
from gateway.catalogue import models_for
from gateway.errors import OpenAIError, invalid_request
from gateway.logs import request_id_var
from gateway.media_api import ImageRequest
from gateway.media_relay import generate_images
from gateway.middleware import request_id_for
from gateway.providers.puter_media import DEFAULT_IMAGE_MODEL
from gateway.relay import chat_completions
from gateway.schemas import ChatCompletionRequest

SchemaT = TypeVar("SchemaT", bound=BaseModel)

QUOTA_MESSAGE = (
    "The playground needs a key of its own, and you hold as many keys as the operator "
    "allows: revoke one on the Keys page first."
)


def _playground_facts(user: User) -> KeyFacts:
    """The facts of the user's playground key, made now if missing: one database step."""
    return facts_of(playground_key(user=user))


async def _signed_in(request: HttpRequest) -> User | None:
    user = await request.auser()
    if not isinstance(user, User):
        return None  # AnonymousUser
    # Templates read request.user; give them the user already loaded, not a lazy query.
    request.user = user
    return user


@login_required
@require_GET
async def playground(request: HttpRequest) -> HttpResponse:
    user = await _signed_in(request)
    assert user is not None  # login_required
    problem = ""
    models: list[dict[str, Any]] = []
    try:
        models = await models_for(await run_in_db_thread(_playground_facts, user))
    except KeyQuotaExceeded:
        problem = QUOTA_MESSAGE
    context = {
        "models": [model["id"] for model in models],
        "image_model": DEFAULT_IMAGE_MODEL,
        "problem": problem,
    }
    response: HttpResponse = await sync_to_async(render)(
        request, "gateway/playground.html", context
    )
    return response


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid_request("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise invalid_request("The request body must be a JSON object.")
    return data


def _validated(schema: type[SchemaT], data: dict[str, Any]) -> SchemaT:
    """The body as `schema` reads it, or the 400 `/v1` would answer, naming the field."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = param_of(("body", "payload", *first["loc"]))
        raise invalid_request(f"{first['msg']} (at '{param}').", param=param) from None


def chat_body(raw: bytes) -> dict[str, Any]:
    """The relay's body: the page's chat request, validated, always streamed with usage."""
    data = _json_object(raw)
    data.update(stream=True, stream_options={"include_usage": True})
    return _validated(ChatCompletionRequest, data).model_dump(exclude_none=True)


async def _answer(
    request: HttpRequest, call: Callable[[KeyFacts], Awaitable[HttpResponseBase]]
) -> HttpResponseBase:
    """`call` with the facts of the signed-in user's playground key; errors in OpenAI's shape."""
    request_id = request_id_for(request)
    token = request_id_var.set(request_id)
    try:
        user = await _signed_in(request)
        if user is None:
            raise OpenAIError(401, "Sign in to use the playground.", code="not_signed_in")
        try:
            facts = await run_in_db_thread(_playground_facts, user)
        except KeyQuotaExceeded:
            raise OpenAIError(
                403, QUOTA_MESSAGE, type="permission_error", code="key_quota"
            ) from None
        response: HttpResponseBase = await call(facts)
    except OpenAIError as error:
        response = error.response()
    finally:
        request_id_var.reset(token)
    response["x-request-id"] = request_id
    return response


@require_POST
async def chat(request: HttpRequest) -> HttpResponseBase:
    """One streamed chat answer, charged to the user's playground key."""

    async def call(facts: KeyFacts) -> HttpResponseBase:
        return await chat_completions(request, facts, chat_body(request.body))

    return await _answer(request, call)


@require_POST
async def images(request: HttpRequest) -> HttpResponseBase:
    """One image, as `/v1/images/generations` makes it, charged to the playground key."""

    async def call(facts: KeyFacts) -> HttpResponseBase:
        asked = _validated(ImageRequest, _json_object(request.body))
        return await generate_images(
            request,
            facts,
            prompt=asked.prompt,
            model=asked.model,
            n=1,
            size=asked.size,
            quality=asked.quality,
            response_format="b64_json",
        )

    return await _answer(request, call)
