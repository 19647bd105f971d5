"""The only middleware on `/v1`: request ids, OpenAI-shaped errors, one log line."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable

from django.http import HttpRequest
from django.http.response import HttpResponseBase

from gateway.errors import status_error
from gateway.ids import hex_id
from gateway.logs import request_id_var
from gateway.metrics import observe_response, request_ended, request_started
from gateway.relay import record_refused_body
from gateway.sse import SSEResponse

logger = logging.getLogger("gateway.request")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_REASONS = {
    404: "Unknown route. See /v1/models, /v1/chat/completions and the README.",
    405: "This route does not accept that HTTP method.",
    500: "The gateway failed unexpectedly; the request id identifies it in the logs.",
}

GetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


def request_id_for(request: HttpRequest) -> str:
    """The caller's `x-request-id` when it is a sane token, else a fresh one."""
    supplied = request.headers.get("x-request-id", "")
    return supplied if _CLIENT_ID.match(supplied) else "req_" + hex_id(12)


class ApiMiddleware:
    async_capable = True
    sync_capable = False

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        request_id = request_id_for(request)
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        request_started(request_id)
        try:
            response = await self.get_response(request)
            if getattr(request, "refused_body", None) is not None:
                await record_refused_body(request)
            response = _openai_shaped(response)
            response["x-request-id"] = request_id
            if not getattr(request, "gateway_logged", False) and not isinstance(
                response, SSEResponse
            ):
                _log(request, response, started)
            observe_response(request, response, request_id, time.perf_counter() - started)
            return response
        except BaseException:
            request_ended(request_id)  # cancelled (the client left) or failed: no longer served
            raise
        finally:
            request_id_var.reset(token)


def _openai_shaped(response: HttpResponseBase) -> HttpResponseBase:
    """Django's own 404, 405 and 500 pages become OpenAI errors on `/v1`."""
    if response.status_code < 400 or response.get("Content-Type", "").startswith(
        "application/json"
    ):
        return response
    status = response.status_code
    reason = _REASONS.get(status, response.reason_phrase or "Request failed.")
    shaped = status_error(status, reason).response()
    if "Allow" in response:
        shaped["Allow"] = response["Allow"]
    return shaped


def _log(request: HttpRequest, response: HttpResponseBase, started: float) -> None:
    logger.info(
        "request",
        extra={
            "key": getattr(request, "key_prefix", None),
            "route": request.path,
            "method": request.method,
            "http_status": response.status_code,
            "ms": int((time.perf_counter() - started) * 1000),
        },
    )
