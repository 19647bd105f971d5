"""The ASGI handler for `/v1`: Django's request handling without the portal's middleware.

Every `MiddlewareMixin` runs through `sync_to_async` in async mode (thread hops on every
request), so `/v1` gets only the async-native API_MIDDLEWARE. Oversized bodies are refused
here, before Django reads them.
"""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.utils.module_loading import import_string

API_PATHS = ("/v1/", "/healthz", "/readyz", "/metrics")


def is_api_path(path: str) -> bool:
    return path == "/v1" or path.startswith(API_PATHS)


class BodyTooLarge(Exception):
    """The request body passed MAX_REQUEST_BYTES."""


class ApiHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware: list[Any] = []
        self._template_response_middleware: list[Any] = []
        self._exception_middleware: list[Any] = []
        get_response = self._get_response_async  # type: ignore[attr-defined]  # not in stubs
        handler = convert_exception_to_response(get_response)
        for path in reversed(settings.API_MIDDLEWARE):
            middleware = import_string(path)
            if not getattr(middleware, "async_capable", False):
                raise ImproperlyConfigured(f"API middleware {path} must be async-capable.")
            handler = convert_exception_to_response(middleware(handler))
        self._middleware_chain = handler

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if _declared_length(scope) > settings.MAX_REQUEST_BYTES:
            await _send_too_large(send)
            return
        try:
            await super().handle(scope, receive, send)
        except BodyTooLarge:
            await _send_too_large(send)

    async def read_body(self, receive: Any) -> Any:
        # A chunked body declares no length: count what arrives.
        limit = settings.MAX_REQUEST_BYTES
        received = 0

        async def counting_receive() -> dict[str, Any]:
            nonlocal received
            message: dict[str, Any] = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge()
            return message

        return await super().read_body(counting_receive)


def _declared_length(scope: dict[str, Any]) -> int:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


async def _send_too_large(send: Any) -> None:
    limit = settings.MAX_REQUEST_BYTES
    body = orjson.dumps(
        {
            "error": {
                "message": f"Request body is larger than the limit of {limit} bytes.",
                "type": "invalid_request_error",
                "param": None,
                "code": "request_too_large",
            }
        }
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
