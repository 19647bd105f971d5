"""How `/v1` reads a JSON body: orjson, with bounds that keep every accepted body forwardable.

Python's `json` reads integers of any size and nests until RecursionError. A body the gateway
accepts must still serialize for the upstream, where orjson refuses integers beyond 64 bits
and nesting deeper than 254 levels, and where the client's values sit a few levels deeper
than they came. Such bodies were 500s (found by schemathesis); now they are clear 400s.
"""

from __future__ import annotations

from typing import Any, cast

import orjson
from django.http import HttpRequest
from ninja.parser import Parser

MAX_DEPTH = 64  # far beyond any real request, far below orjson's 254
_ORJSON_DEPTH = 254


class UnreadableBody(ValueError):
    """The body is not JSON the gateway can take; the message says why, for the client."""


class BodyParser(Parser):
    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        try:
            # Integers past 64 bits come back as floats; NaN and Infinity are refused.
            body = request.body
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            if "depth limit" in str(exc):
                raise _too_deep() from None
            raise UnreadableBody("The request body is not valid JSON.") from None
        if body.count(b"[") + body.count(b"{") > MAX_DEPTH:  # else it cannot nest that deep
            check_depth(data)
        return cast(dict[str, Any], data)


def check_depth(data: object) -> None:
    """Refuse nesting past MAX_DEPTH, at C speed: orjson fails on the data wrapped deeper."""
    wrapped = data
    for _level in range(_ORJSON_DEPTH - MAX_DEPTH):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except orjson.JSONEncodeError:
        raise _too_deep() from None


def _too_deep() -> UnreadableBody:
    return UnreadableBody(f"The request body nests JSON deeper than {MAX_DEPTH} levels.")
