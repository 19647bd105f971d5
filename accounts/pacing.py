"""Chores done at most once per interval per name, in this process: housekeeping and hints."""

from __future__ import annotations

from collections.abc import Hashable

MAX_NAMES = 10_000  # forgetting them all only makes each chore due once more


class AtMostEvery:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last: dict[Hashable, float] = {}

    def due(self, name: Hashable, now: float) -> bool:
        """Whether the chore `name` is due at `now`; if so, it counts as done now."""
        if now - self._last.get(name, -self.seconds) < self.seconds:
            return False
        if len(self._last) >= MAX_NAMES:
            self._last.clear()
        self._last[name] = now
        return True
