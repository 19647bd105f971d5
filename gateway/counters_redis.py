"""Counters in Redis: an admission is one atomic Lua script."""

from __future__ import annotations

import asyncio
import functools
import hashlib
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from gateway.counters import SLOT_TTL, Answer, Ask, CountersUnavailable, OneStepStore, Window

# KEYS: the key's slots, its window, the account's slots.
# ARGV: now, slot limit (-1: none), slot holder, expires_at, window limit (-1: none), window,
#       window member, account limit (-1: none), account holder
# Returns {slot taken, admitted, count, reset, account slot taken}.
_ADMIT = """
local now = tonumber(ARGV[1])
local slot_limit = tonumber(ARGV[2])
if slot_limit >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= slot_limit then return {0, 0, 0, '0', 0} end
end
local admitted, count, reset = 1, 0, '0'
local window_limit = tonumber(ARGV[5])
if window_limit >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ARGV[6])
  count = redis.call('ZCARD', KEYS[2])
  admitted = 0
  if count < window_limit then
    redis.call('ZADD', KEYS[2], now, ARGV[7])
    redis.call('EXPIRE', KEYS[2], math.ceil(ARGV[6]) + 1)
    count = count + 1
    admitted = 1
  end
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if oldest[2] then reset = tostring(oldest[2] + ARGV[6] - now) end
  if admitted == 0 then return {1, 0, count, reset, 0} end
end
local ttl = math.ceil(ARGV[4] - now) + 60
if slot_limit >= 0 then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
  redis.call('EXPIRE', KEYS[1], ttl)
end
local extra = 0
local extra_limit = tonumber(ARGV[8])
if extra_limit >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) < extra_limit then
    redis.call('ZADD', KEYS[3], ARGV[4], ARGV[9])
    redis.call('EXPIRE', KEYS[3], ttl)
    extra = 1
  end
end
return {1, admitted, count, reset, extra}
"""


# KEYS: slot sets; ARGV: the holder to remove from each.
_RELEASE = """
for i, key in ipairs(KEYS) do
    redis.call('ZREM', key, ARGV[i])
end
return 0
"""


@functools.cache
def _digest(script: str) -> str:
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


class RedisStore(OneStepStore):
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
        """Run a script by its digest (Redis keeps it); its text only when Redis has not."""
        client = self._client()
        try:
            try:
                return await client.evalsha(_digest(script), len(keys), *keys, *args)
            except NoScriptError:  # a Redis that restarted since: send the text once more
                return await client.eval(script, len(keys), *keys, *args)
        except (RedisError, OSError) as exc:
            raise CountersUnavailable(str(exc)) from None

    async def admit(self, ask: Ask, now: float) -> Answer:
        slot, window, extra = ask.slot, ask.window, ask.extra
        self._counter += 1
        keys = [
            self._prefix + "slot:" + (slot.scope if slot else "-"),
            self._prefix + "win:" + (window.scope if window else "-"),
            self._prefix + "slot:" + (extra.scope if extra else "-"),
        ]
        args: list[Any] = [
            now,
            slot.limit if slot else -1,
            slot.holder if slot else "",
            now + SLOT_TTL,
            window.limit if window else -1,
            window.window if window else 0,
            f"{now:.6f}:{id(self)}:{self._counter}",
            extra.limit if extra else -1,
            extra.holder if extra else "",
        ]
        taken, admitted, count, reset, extra_taken = await self._eval(_ADMIT, keys, args)
        seen = Window(bool(admitted), int(count), max(float(reset), 0.0)) if window else None
        return Answer(bool(taken), seen, bool(extra_taken))

    async def release_slots(self, held: list[tuple[str, str]]) -> None:
        # One script call: a pipeline cost several times more in the client than this.
        keys = [self._prefix + "slot:" + scope for scope, _holder in held]
        await self._eval(_RELEASE, keys, [holder for _scope, holder in held])

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
