"""Admission: may this key make this call, and which upstreams may serve it."""

from __future__ import annotations

from accounts.keys import KeyFacts
from accounts.models import UsageStatus
from gateway.catalogue import allowed
from gateway.errors import OpenAIError, model_not_allowed
from gateway.pool import candidates
from gateway.providers.base import UpstreamTarget


class Refused(Exception):
    """Admission said no; the error is what the client sees, the status what the row says."""

    def __init__(self, error: OpenAIError, status: UsageStatus) -> None:
        super().__init__(error.message)
        self.error = error
        self.status = status


async def admit_request(*, key: KeyFacts, model: str) -> list[UpstreamTarget]:
    """Check the key's allow-lists and return the upstreams to try, best first."""
    if not allowed(model, key):
        raise Refused(model_not_allowed(model), UsageStatus.REJECTED)
    return await candidates(model)
