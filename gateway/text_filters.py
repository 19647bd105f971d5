"""Filters on streamed answer text that the gateway applies itself (PUTER.md part A).

Each filter takes text as it arrives and returns what may be sent now; what it holds back
is released by `flush()` at the end. `stopped` means the answer is over.
"""

from __future__ import annotations

from typing import Any, Protocol

_FENCE = "```"


class TextFilter(Protocol):
    stopped: bool

    def feed(self, text: str) -> str: ...

    def flush(self) -> str: ...


class StopCutter:
    """Cut the answer at the first stop sequence, also when it spans two chunks."""

    def __init__(self, stops: list[str]) -> None:
        self._stops = [stop for stop in stops if stop]
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        self._held += text
        cut = min((i for i in (self._held.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self._held = self._held[:cut], ""
            return out
        # Hold back the longest tail that could still begin a stop sequence.
        keep = max((_overlap(self._held, stop) for stop in self._stops), default=0)
        out, self._held = self._held[: len(self._held) - keep], self._held[len(self._held) - keep :]
        return out

    def flush(self) -> str:
        out, self._held = self._held, ""
        return "" if self.stopped else out


def _overlap(text: str, stop: str) -> int:
    for size in range(min(len(text), len(stop) - 1), 0, -1):
        if stop.startswith(text[-size:]):
            return size
    return 0


class FenceStripper:
    """Remove a Markdown code fence around a JSON answer, holding back only the fence."""

    _TRAILER = " \t\r\n`"

    def __init__(self) -> None:
        self._start = ""  # text before it is known whether the answer opens with a fence
        self._opened: bool | None = None
        self._closed = False
        self._tail = ""  # whitespace and backticks that may begin the closing fence
        self.stopped = False

    def feed(self, text: str) -> str:
        if self._opened is None:
            self._start += text
            stripped = self._start.lstrip()
            if len(stripped) < len(_FENCE) and _FENCE.startswith(stripped):
                return ""
            if not stripped.startswith(_FENCE):
                self._opened = False
                return self._start
            if "\n" not in stripped:
                return ""  # the fence's language tag is still arriving
            self._opened = True
            text = stripped.split("\n", 1)[1]
        if not self._opened:
            return text
        if self._closed:
            return ""
        self._tail += text
        cut = self._tail.find(_FENCE)
        if cut >= 0:
            self._closed = True
            out, self._tail = self._tail[:cut].rstrip(), ""
            return out
        body = self._tail.rstrip(self._TRAILER)
        self._tail = self._tail[len(body) :]
        return body

    def flush(self) -> str:
        if self._opened is None:
            return self._start
        return "" if self._closed else self._tail.rstrip(self._TRAILER)


class FilterChain:
    def __init__(self, filters: list[TextFilter]) -> None:
        self._filters = filters

    @property
    def stopped(self) -> bool:
        return any(f.stopped for f in self._filters)

    def feed(self, text: str) -> str:
        for each in self._filters:
            text = each.feed(text)
        return text

    def flush(self) -> str:
        text = ""
        for each in self._filters:
            text = each.feed(text) + each.flush() if text else each.flush()
        return text

    def apply(self, text: str) -> str:
        return self.feed(text) + self.flush()


def filters_for(request: dict[str, Any]) -> FilterChain:
    filters: list[TextFilter] = []
    fmt = (request.get("response_format") or {}).get("type")
    if fmt in {"json_object", "json_schema"}:
        filters.append(FenceStripper())
    stop = request.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if stops:
        filters.append(StopCutter(stops))
    return FilterChain(filters)
