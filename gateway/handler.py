"""The ASGI handler for `/v1`: Django's request handling without the portal's middleware.

Every `MiddlewareMixin` runs through `sync_to_async` in async mode (thread hops on every
request), so `/v1` gets only the async-native API_MIDDLEWARE. Oversized bodies are refused
here, before Django reads them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.urls import set_script_prefix
from django.utils.module_loading import import_string

from accounts.db_thread import call_in_flight

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
            with call_in_flight():
                await self._handle(scope, receive, send)
        except BodyTooLarge:
            await _send_too_large(send)

    async def _handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Django's ASGIHandler.handle (5.2), without its two thread hops per request.

        Django sends `request_started`, and closes the response (which sends
        `request_finished`), through `sync_to_async`. Their receivers close the calling
        thread's database connections; `/v1` opens none in this thread (its database steps
        run in accounts.db_thread), so the first is skipped and the close runs inline.
        """
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            assert error_response is not None  # Django returns one of the two
            body_file.close()
            await self.send_response(error_response, send)
            error_response.close()
            return
        response = await self._respond_unless_gone(request, receive, send)
        if response is not None:
            response.close()
        body_file.close()

    async def _respond_unless_gone(
        self, request: HttpRequest, receive: Any, send: Any
    ) -> HttpResponseBase | None:
        """Run the view and send its response; cancel it if the client leaves first.

        The view runs in this task: one started for it (as Django does) would begin only at
        the event loop's next turn, which under load is a millisecond or more of every
        call's latency. A listener cancels this task when the client disconnects.
        """
        task = asyncio.current_task()
        assert task is not None  # an ASGI app always runs in a task
        finished = gone = False

        def on_disconnect(listener: asyncio.Task[None]) -> None:
            nonlocal gone
            if listener.cancelled():
                return
            left = isinstance(listener.exception(), RequestAborted)  # retrieved either way
            if left and not finished:
                gone = True
                task.cancel()

        listener = asyncio.create_task(self.listen_for_disconnect(receive))
        listener.add_done_callback(on_disconnect)
        response: HttpResponseBase | None = None
        try:
            response = await self.run_get_response(request)
            await self.send_response(response, send)
        except asyncio.CancelledError:
            if not gone:
                raise  # not the client's leaving: the server's, say
            task.uncancel()  # the client left; the view has cleaned up after itself
        finally:
            finished = True
            listener.cancel()
        return response

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
