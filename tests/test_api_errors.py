"""Every error a client can see on `/v1` has OpenAI's shape and the right status."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from django.utils import timezone

from accounts.keys import revoke_key
from accounts.models import ApiKey, UsageLog, UsageStatus
from gateway.models import Upstream
from tests.conftest import Gateway

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def post(gateway: Gateway, key: str | None, body: Any = CHAT, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    headers.update(kwargs.pop("headers", {}))
    if isinstance(body, bytes):
        kwargs["content"] = body
        headers["Content-Type"] = "application/json"
    else:
        kwargs["json"] = body
    return httpx.post(gateway.v1 + "/chat/completions", headers=headers, timeout=10, **kwargs)


def error_of(reply: httpx.Response) -> dict[str, Any]:
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["x-request-id"]
    body = reply.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]  # type: ignore[no-any-return]


@pytest.mark.usefixtures("upstream")
def test_missing_key_is_401_invalid_api_key(gateway: Gateway) -> None:
    reply = post(gateway, None)
    assert reply.status_code == 401
    error = error_of(reply)
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "invalid_api_key",
        None,
    )
    assert UsageLog.objects.count() == 0


@pytest.mark.usefixtures("upstream", "alice_key")
def test_wrong_key_is_401_and_leaves_no_row(gateway: Gateway) -> None:
    reply = post(gateway, "sk-" + "x" * 48)
    assert reply.status_code == 401
    assert error_of(reply)["code"] == "invalid_api_key"
    assert UsageLog.objects.count() == 0


@pytest.mark.usefixtures("upstream")
def test_revoked_key_is_401(gateway: Gateway, alice_key: str) -> None:
    revoke_key(prefix=alice_key[:11])
    reply = post(gateway, alice_key)
    assert reply.status_code == 401
    assert error_of(reply)["code"] == "invalid_api_key"


@pytest.mark.usefixtures("upstream")
def test_expired_key_is_401_key_expired(gateway: Gateway, alice_key: str) -> None:
    ApiKey.objects.filter(prefix=alice_key[:11]).update(
        expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    reply = post(gateway, alice_key)
    assert reply.status_code == 401
    assert error_of(reply) == {
        "message": "This API key has expired.",
        "type": "invalid_request_error",
        "param": None,
        "code": "key_expired",
    }


@pytest.mark.usefixtures("upstream")
def test_x_api_key_header_is_accepted(gateway: Gateway, alice_key: str) -> None:
    reply = post(gateway, None, headers={"x-api-key": alice_key})
    assert reply.status_code == 200
    assert reply.json()["object"] == "chat.completion"


@pytest.mark.usefixtures("upstream")
def test_malformed_json_is_400_and_an_invalid_request_row(gateway: Gateway, alice_key: str) -> None:
    reply = post(gateway, alice_key, b'{"model": "gpt-4o-mini", "messages": [')
    assert reply.status_code == 400
    assert error_of(reply) == {
        "message": "The request body is not valid JSON.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    row = UsageLog.objects.get()
    assert (row.status, row.http_status, row.model) == (UsageStatus.INVALID_REQUEST, 400, "")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "gpt-4o-mini"}, "messages"),
        ({"model": "gpt-4o-mini", "messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({**CHAT, "temperature": "hot"}, "temperature"),
        ({**CHAT, "temperature": 7}, "temperature"),
        ({**CHAT, "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({**CHAT, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({**CHAT, "stream": "sometimes"}, "stream"),
        ({**CHAT, "max_tokens": 0}, "max_tokens"),
        ({**CHAT, "n": 2}, "n"),
    ],
)
@pytest.mark.usefixtures("upstream")
def test_invalid_body_is_400_naming_the_param(
    gateway: Gateway, alice_key: str, body: dict[str, Any], param: str
) -> None:
    reply = post(gateway, alice_key, body)
    assert reply.status_code == 400
    error = error_of(reply)
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    row = UsageLog.objects.get()
    assert (row.status, row.http_status) == (UsageStatus.INVALID_REQUEST, 400)
    assert row.model == body.get("model", "")


@pytest.mark.usefixtures("upstream")
def test_unknown_parameters_are_ignored(gateway: Gateway, alice_key: str) -> None:
    reply = post(gateway, alice_key, {**CHAT, "frequency_penalty": 0.5, "metadata": {"a": 1}})
    assert reply.status_code == 200


def test_unknown_route_is_an_openai_404(gateway: Gateway, alice_key: str) -> None:
    reply = httpx.get(
        gateway.v1 + "/no/such/route", headers={"Authorization": f"Bearer {alice_key}"}
    )
    assert reply.status_code == 404
    error = error_of(reply)
    assert (error["type"], error["code"]) == ("invalid_request_error", "not_found")


def test_wrong_method_is_an_openai_405(gateway: Gateway, alice_key: str) -> None:
    reply = httpx.get(
        gateway.v1 + "/chat/completions", headers={"Authorization": f"Bearer {alice_key}"}
    )
    assert reply.status_code == 405
    assert error_of(reply)["code"] == "method_not_allowed"
    assert reply.headers["allow"] == "POST"


def test_oversized_body_is_413_before_it_is_read(gateway: Gateway, alice_key: str) -> None:
    huge = b'{"model": "gpt-4o-mini", "pad": "' + b"x" * (33 * 1024 * 1024) + b'"}'
    reply = post(gateway, alice_key, huge)
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == "request_too_large"
    assert UsageLog.objects.count() == 0


def test_oversized_chunked_body_is_413(gateway: Gateway, alice_key: str) -> None:
    def chunks() -> Any:
        for _ in range(40):
            yield b"x" * (1024 * 1024)

    reply = httpx.post(
        gateway.v1 + "/chat/completions",
        headers={"Authorization": f"Bearer {alice_key}", "Content-Type": "application/json"},
        content=chunks(),
        timeout=10,
    )
    assert "content-length" not in reply.request.headers
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == "request_too_large"


def test_model_outside_the_keys_list_is_403_and_a_rejected_row(
    gateway: Gateway, make_key: Callable[..., str], upstream: Upstream
) -> None:
    key = make_key("carol", allowed_models=("gpt-5-nano",))
    reply = post(gateway, key)
    assert reply.status_code == 403
    assert error_of(reply) == {
        "message": "This key may not use the model 'gpt-4o-mini'.",
        "type": "permission_error",
        "param": "model",
        "code": "model_not_allowed",
    }
    row = UsageLog.objects.get()
    assert (row.status, row.http_status) == (UsageStatus.REJECTED, 403)


def test_no_upstream_at_all_is_503_upstream_unavailable(gateway: Gateway, alice_key: str) -> None:
    reply = post(gateway, alice_key)
    assert reply.status_code == 503
    assert error_of(reply)["code"] == "upstream_unavailable"
    row = UsageLog.objects.get()
    assert (row.status, row.upstream) == (UsageStatus.UPSTREAM_ERROR, None)


def test_request_id_from_the_client_is_kept(
    gateway: Gateway, alice_key: str, upstream: Upstream
) -> None:
    reply = post(gateway, alice_key, headers={"x-request-id": "trace-123"})
    assert reply.headers["x-request-id"] == "trace-123"
    assert UsageLog.objects.get().request_id == "trace-123"
