"""Admission: may this key make this call now, and which upstreams may serve it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from accounts.keys import KeyFacts
from accounts.models import UsageStatus
from gateway.aliases import models_to_try
from gateway.catalogue import allowed
from gateway.errors import OpenAIError, model_not_allowed
from gateway.limits import Grant, LimitRefusal, check_limits
from gateway.pool import Lease, candidates, reserve_first, settle
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


@dataclass(frozen=True, slots=True)
class Admission:
    routes: list[Route]
    grant: Grant
    lease: Lease | None = None  # the first choice's account slot, when admission took it


async def admit_request(
    *, key: KeyFacts, model: str, client_ip: str, now: dt.datetime, reserve: bool = False
) -> Admission:
    """Check allow-lists and limits in one step; the routes to try, the slots held.

    With `reserve` the same step takes the account slot of the first upstream to try.
    """
    if not allowed(model, key):
        raise Refused(model_not_allowed(model), UsageStatus.REJECTED)
    routes = [Route(name, await candidates(name)) for name in await models_to_try(model)]
    reservation = None
    if reserve and routes and routes[0].targets:
        reservation = reserve_first(routes[0].targets)
    try:
        grant = await check_limits(key, client_ip=client_ip, now=now, reservation=reservation)
    except LimitRefusal as refusal:
        raise Refused(refusal.error, UsageStatus.REJECTED) from None
    finally:
        lease = settle(reservation) if reservation is not None else None
    return Admission(routes, grant, lease)
