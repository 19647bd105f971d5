"""`GET /v1/models`: Puter's catalogue in OpenAI's shape, filtered by the key's allow-list."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import openai
import pytest

from gateway.models import Upstream
from tests.conftest import Fake, Gateway

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.usefixtures("upstream")
def test_models_lists_ids_and_spaceless_aliases_but_never_hidden_ones(
    gateway: Gateway, fake: Fake, alice_key: str
) -> None:
    sdk = openai.OpenAI(base_url=gateway.v1, api_key=alice_key, max_retries=0)
    models = {model.id: model for model in sdk.models.list()}
    assert {"gpt-5-nano", "gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-flash"} <= set(models)
    assert "gpt-4o-mini-latest" in models  # an alias without whitespace
    assert "gpt 4o mini" not in models  # an alias with a space is a label, not an id
    assert not {"fake", "costly", "abuse", "model-fallback-test-1"} & set(models)
    assert all(model_id == model_id.lower() for model_id in models)
    claude = models["claude-sonnet-4-5"]
    assert (claude.object, claude.owned_by) == ("model", "claude")


def test_models_respect_the_keys_allowed_models(
    gateway: Gateway, fake: Fake, make_key: Callable[..., str], upstream: Upstream
) -> None:
    key = make_key("dora", allowed_models=("gpt-5-nano", "Claude-Sonnet-4-5"))
    reply = httpx.get(gateway.v1 + "/models", headers={"Authorization": f"Bearer {key}"})
    assert reply.status_code == 200
    body = reply.json()
    assert body["object"] == "list"
    assert sorted(model["id"] for model in body["data"]) == ["claude-sonnet-4-5", "gpt-5-nano"]


@pytest.mark.usefixtures("upstream")
def test_one_model_is_found_case_insensitively_and_an_unknown_one_is_404(
    gateway: Gateway, fake: Fake, alice_key: str
) -> None:
    headers = {"Authorization": f"Bearer {alice_key}"}
    found = httpx.get(gateway.v1 + "/models/GPT-5-Nano", headers=headers)
    assert found.status_code == 200
    assert found.json() == {
        "id": "gpt-5-nano",
        "object": "model",
        "created": 0,
        "owned_by": "openai-completion",
    }
    missing = httpx.get(gateway.v1 + "/models/nope", headers=headers)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


def test_models_need_a_key(gateway: Gateway) -> None:
    reply = httpx.get(gateway.v1 + "/models")
    assert reply.status_code == 401
    assert reply.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.usefixtures("upstream")
def test_max_tokens_cuts_the_answer_with_finish_reason_length(
    gateway: Gateway, fake: Fake, alice_key: str
) -> None:
    sdk = openai.OpenAI(base_url=gateway.v1, api_key=alice_key, max_retries=0)
    for model in ("gpt-4o-mini", "claude-sonnet-4-5"):
        reply = sdk.chat.completions.create(
            model=model, max_tokens=2, messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].finish_reason == "length"
        assert reply.choices[0].message.content == "Hello w1 "
        sent = fake.stats()["requests"][-1]["body"]["args"]
        assert sent["max_tokens"] == 2
