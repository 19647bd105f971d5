"""Counters in Redis: each operation is one atomic Lua script."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.counters import SLOT_TTL, CountersUnavailable, Window

# KEYS[1] slot set; ARGV: now, limit, holder, expires_at
_TAKE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(ARGV[4] - ARGV[1]) + 60)
return 1
"""

# KEYS[1] window set; ARGV: now, limit, window, member
_HIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1] - ARGV[3])
local count = redis.call('ZCARD', KEYS[1])
local admitted = 0
if count < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
  redis.call('EXPIRE', KEYS[1], math.ceil(ARGV[3]) + 1)
  count = count + 1
  admitted = 1
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local reset = 0
if oldest[2] then reset = oldest[2] + ARGV[3] - ARGV[1] end
return {admitted, count, tostring(reset)}
"""


class RedisStore:
    def __init__(self, url: str, prefix: str) -> None:
        self._url = url
        self._prefix = prefix + ":c:"
        self._clients: dict[asyncio.AbstractEventLoop, aioredis.Redis] = {}
        self._counter = 0

    def _client(self) -> aioredis.Redis:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = aioredis.Redis.from_url(
                self._url, socket_timeout=1.0, socket_connect_timeout=1.0
            )
            self._clients[loop] = client
        return client

    async def _eval(self, script: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._client().eval(script, len(keys), *keys, *args)
        except (RedisError, OSError) as exc:
            raise CountersUnavailable(str(exc)) from None

    async def take_slot(self, scope: str, limit: int, holder: str, now: float) -> bool:
        args = [now, limit, holder, now + SLOT_TTL]
        return bool(await self._eval(_TAKE_SLOT, [self._prefix + "slot:" + scope], args))

    async def release_slot(self, scope: str, holder: str) -> None:
        try:
            await self._client().zrem(self._prefix + "slot:" + scope, holder)
        except (RedisError, OSError) as exc:
            raise CountersUnavailable(str(exc)) from None

    async def renew_slots(self, holders: dict[str, str], until: float) -> None:
        try:
            async with self._client().pipeline(transaction=False) as pipe:
                for holder, scope in holders.items():
                    pipe.zadd(self._prefix + "slot:" + scope, {holder: until}, xx=True)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise CountersUnavailable(str(exc)) from None

    async def count_slots(self, scope: str, now: float) -> int:
        try:
            return int(await self._client().zcount(self._prefix + "slot:" + scope, now, "+inf"))
        except (RedisError, OSError) as exc:
            raise CountersUnavailable(str(exc)) from None

    async def hit(self, scope: str, limit: int, window: float, now: float) -> Window:
        self._counter += 1
        member = f"{now:.6f}:{id(self)}:{self._counter}"
        admitted, count, reset = await self._eval(
            _HIT, [self._prefix + "win:" + scope], [now, limit, window, member]
        )
        return Window(bool(admitted), int(count), max(float(reset), 0.0))

    async def peek(self, scope: str, window: float, now: float) -> Window:
        # A limit of zero never admits: the script only prunes and counts.
        _admitted, count, reset = await self._eval(
            _HIT, [self._prefix + "win:" + scope], [now, 0, window, "peek"]
        )
        return Window(False, int(count), max(float(reset), 0.0))
