"""The playground's session route refuses what it must before any upstream is called.

Its streaming and its stop button are tested live, in tests/browser/.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from django.contrib.auth.models import User
from django.test import Client

from accounts.models import ApiKey, UsageLog, UserLimits
from accounts.portal_keys import playground_key

# The playground reaches the database from the API's database threads: committed rows only.
pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def alice() -> User:
    return User.objects.create(username="alice")


@pytest.fixture
def alice_client(alice: User) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def post(client: Client, body: Any, route: str = "chat") -> Any:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(f"/playground/{route}", raw, content_type="application/json")


@pytest.mark.parametrize("route", ["chat", "images"])
def test_a_stranger_gets_an_openai_shaped_401_and_no_row(route: str) -> None:
    response = post(Client(), BODY, route)

    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "message": "Sign in to use the playground.",
            "type": "invalid_request_error",
            "param": None,
            "code": "not_signed_in",
        }
    }
    assert response["x-request-id"].startswith("req_")
    assert not UsageLog.objects.exists()


def test_a_call_without_the_csrf_token_is_refused(alice: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    response = post(client, BODY)

    assert response.status_code == 403
    assert not ApiKey.objects.exists()


def test_only_post_reaches_the_chat_and_image_routes(alice_client: Client) -> None:
    assert alice_client.get("/playground/chat").status_code == 405
    assert alice_client.get("/playground/images").status_code == 405


def test_an_image_without_a_prompt_is_a_400_naming_the_field(alice_client: Client) -> None:
    response = post(alice_client, {"prompt": ""}, "images")

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "prompt"
    assert not UsageLog.objects.exists()


@pytest.mark.parametrize(
    ("body", "message", "param"),
    [
        (b"{nope", "The request body is not valid JSON.", None),
        (b"[1]", "The request body must be a JSON object.", None),
        (
            {"model": "gpt-4o-mini", "messages": []},
            "List should have at least 1 item after validation, not 0 (at 'messages').",
            "messages",
        ),
        (
            {**BODY, "temperature": 3},
            "Input should be less than or equal to 2 (at 'temperature').",
            "temperature",
        ),
    ],
)
def test_a_bad_body_is_a_400_naming_the_field(
    alice_client: Client, body: Any, message: str, param: str | None
) -> None:
    response = post(alice_client, body)

    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": message,
        "type": "invalid_request_error",
        "param": param,
        "code": None,
    }
    assert not UsageLog.objects.exists()


def test_the_playground_key_is_made_once_and_remade_after_a_revocation(alice: User) -> None:
    first = playground_key(user=alice)
    again = playground_key(user=alice)
    first.revoked_at = first.created
    first.save()
    fresh = playground_key(user=alice)

    assert again.pk == first.pk
    assert fresh.pk != first.pk
    assert (fresh.name, fresh.user_id) == ("playground", alice.pk)
    assert fresh.rpm is not None


def test_a_user_at_the_key_cap_is_told_to_revoke_one(alice_client: Client, alice: User) -> None:
    UserLimits.objects.create(user=alice, max_keys=0)

    response = post(alice_client, BODY)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "key_quota"
    assert "revoke one on the Keys page first" in response.json()["error"]["message"]
