"""Admission: may this key make this call, and which upstreams may serve it."""

from __future__ import annotations

from dataclasses import dataclass

from accounts.keys import KeyFacts
from accounts.models import UsageStatus
from gateway.aliases import models_to_try
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


@dataclass(frozen=True, slots=True)
class Route:
    """One upstream model and the upstreams that may serve it, best first."""

    model: str
    targets: list[UpstreamTarget]


async def admit_request(*, key: KeyFacts, model: str) -> list[Route]:
    """Check the key's allow-lists; the routes to try: the model, or an alias's chain."""
    if not allowed(model, key):
        raise Refused(model_not_allowed(model), UsageStatus.REJECTED)
    return [Route(name, await candidates(name)) for name in await models_to_try(model)]
