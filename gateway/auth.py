"""Bearer (or `x-api-key`) authentication of `/v1` calls against the key table."""

from __future__ import annotations

import functools
from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from ninja.security import HttpBearer

from accounts.db_thread import run_shared_in_db_thread
from accounts.keys import KeyFacts, cached_key_facts, digest_key, load_key_facts
from gateway.auth_throttle import note_auth_failure, refuse_if_throttled
from gateway.errors import OpenAIError, invalid_api_key, key_expired


def presented_key(request: HttpRequest) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key", "").strip()


async def authenticate_key(raw_key: str) -> KeyFacts:
    """The key's facts, or an OpenAI-shaped 401; the database only on a cache miss."""
    if not raw_key.startswith("sk-") or len(raw_key) > 200:
        raise invalid_api_key()
    digest = digest_key(raw_key)
    hit, facts = cached_key_facts(digest)
    if not hit:
        load = functools.partial(load_key_facts, digest)
        facts = await run_shared_in_db_thread(("key", digest), load)
    now = timezone.now()
    if facts is None or facts.revoked or facts.secret_retired(now):
        raise invalid_api_key()
    if facts.is_expired(now):
        raise key_expired()
    return facts


class ApiKeyAuth(HttpBearer):
    async def __call__(self, request: HttpRequest) -> KeyFacts:
        client_ip = request.META.get("REMOTE_ADDR", "")
        await refuse_if_throttled(client_ip)
        try:
            facts = await authenticate_key(presented_key(request))
        except OpenAIError:
            await note_auth_failure(client_ip)
            raise
        request.key_prefix = facts.prefix  # type: ignore[attr-defined]  # for the log line
        return facts

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        raise NotImplementedError("ApiKeyAuth authenticates in __call__")
