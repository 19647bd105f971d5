"""OpenAI-shaped errors: the one form every client-visible failure takes (DESIGN.md 5)."""

from __future__ import annotations

from typing import Any

import orjson
from django.http import HttpResponse


class OpenAIError(Exception):
    """An error the client sees as `{"error": {message, type, param, code}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> HttpResponse:
        response = HttpResponse(
            orjson.dumps(self.body()), status=self.status, content_type="application/json"
        )
        for name, value in self.headers.items():
            response[name] = value
        return response


def invalid_api_key() -> OpenAIError:
    return OpenAIError(
        401,
        "Incorrect API key provided. Pass a gateway key as 'Authorization: Bearer sk-...'.",
        code="invalid_api_key",
    )


def key_expired() -> OpenAIError:
    return OpenAIError(401, "This API key has expired.", code="key_expired")


def invalid_request(message: str, *, param: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param)


def model_not_found(model: str) -> OpenAIError:
    return OpenAIError(
        404,
        f"The model '{model}' does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


def model_not_allowed(model: str) -> OpenAIError:
    return OpenAIError(
        403,
        f"This key may not use the model '{model}'.",
        type="permission_error",
        code="model_not_allowed",
        param="model",
    )


def status_error(status: int, message: str) -> OpenAIError:
    """An error for a bare HTTP status that no operation produced (404, 405, 500)."""
    kinds = {
        404: ("invalid_request_error", "not_found"),
        405: ("invalid_request_error", "method_not_allowed"),
    }
    kind, code = kinds.get(status, ("api_error" if status >= 500 else "invalid_request_error", None))
    return OpenAIError(status, message, type=kind, code=code)
