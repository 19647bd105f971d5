"""Key limits as operators type them, on the command line or in the admin.

Each reader raises ValueError with a message fit to show the operator as it is.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from datetime import UTC, datetime

from accounts.models import BudgetPeriod


def split_names(raw: str) -> tuple[str, ...]:
    """`"a, b,,c"` -> `("a", "b", "c")`; blank input is the empty tuple (no restriction)."""
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def normalize_networks(entries: Iterable[str]) -> tuple[str, ...]:
    """Each address or CIDR in its canonical network form; `10.0.0.7/24` -> `10.0.0.0/24`."""
    networks: list[str] = []
    for entry in entries:
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
        networks.append(str(network))
    return tuple(networks)


def parse_expiry(raw: str) -> datetime:
    """`YYYY-MM-DD` is 00:00 UTC that day; an ISO datetime without a zone is UTC."""
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise ValueError(f"{raw!r} is not a date (YYYY-MM-DD) or an ISO datetime") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def budget_of(*, tokens: int | None, period: str | None) -> tuple[int | None, str]:
    """(token_budget, budget_period): a budget without a period lasts the key's lifetime."""
    if period is not None and period not in BudgetPeriod.values:
        raise ValueError(f"the budget period must be one of {', '.join(BudgetPeriod.values)}")
    if tokens is None:
        if period not in (None, BudgetPeriod.NONE):
            raise ValueError("a budget period needs a token budget")
        return None, BudgetPeriod.NONE
    return tokens, period or BudgetPeriod.NONE
