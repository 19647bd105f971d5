"""OpenAI-shaped errors: the one form every client-visible failure takes (DESIGN.md 5)."""

from __future__ import annotations

from typing import Any

import orjson
from django.http import HttpResponse

from gateway.providers.base import FailureKind, UpstreamFailure


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
    kind, code = kinds.get(
        status, ("api_error" if status >= 500 else "invalid_request_error", None)
    )
    return OpenAIError(status, message, type=kind, code=code)


def upstream_unavailable() -> OpenAIError:
    return OpenAIError(
        503,
        "No upstream is available to serve this request right now.",
        type="api_error",
        code="upstream_unavailable",
    )


def upstream_busy() -> OpenAIError:
    return OpenAIError(
        503,
        "Every upstream is at its concurrency cap; retry shortly.",
        type="api_error",
        code="upstream_busy",
        headers={"Retry-After": "1"},
    )


def error_for_failures(failures: list[UpstreamFailure], model: str) -> OpenAIError:
    """What the client sees when no upstream answered (PUTER.md part A, error table)."""
    if not failures:
        return upstream_unavailable()
    kinds = {failure.kind for failure in failures}
    last = failures[-1]
    if kinds == {FailureKind.RATE_LIMITED}:
        wait = max(int(f.retry_after or 1) for f in failures)
        return OpenAIError(
            429,
            "Every upstream is rate limited; retry shortly.",
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(max(wait, 1))},
        )
    if kinds <= {FailureKind.AUTH, FailureKind.QUOTA, FailureKind.RATE_LIMITED}:
        return upstream_unavailable()
    return _error_for(last, model)


def _error_for(failure: UpstreamFailure, model: str) -> OpenAIError:
    kind = failure.kind
    if kind is FailureKind.MODEL_NOT_FOUND:
        return model_not_found(model)
    if kind is FailureKind.BAD_REQUEST:
        return OpenAIError(400, f"The upstream refused the request: {failure.message}")
    if kind is FailureKind.FORBIDDEN_MODEL:
        return OpenAIError(
            403, failure.message, type="permission_error", code="model_not_allowed", param="model"
        )
    if kind is FailureKind.TIMEOUT:
        return OpenAIError(
            504, "The upstream did not answer in time.", type="api_error", code="upstream_timeout"
        )
    if kind in {FailureKind.AUTH, FailureKind.QUOTA}:
        return upstream_unavailable()
    return OpenAIError(
        502, f"The upstream failed: {failure.message}", type="api_error", code="upstream_error"
    )
