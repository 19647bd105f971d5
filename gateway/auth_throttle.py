"""A limit on failed authentication per client address: guessing keys stops quickly.

After AUTH_FAILURES_PER_MINUTE failures from one address, every call from it gets 429 until
its window passes, a valid key included, so a guesser learns nothing from a lucky hit.
With REDIS_URL the count lives in Redis (INCR, EXPIRE on the first failure: one fixed window
shared by every worker and machine). Without it, or while Redis does not answer, it is a
sliding window in this process's memory: per worker, and it spares the database a write for
every bad guess.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from collections import deque

import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import RedisError

from gateway.errors import OpenAIError
from gateway.redis_clients import redis_client

logger = logging.getLogger("gateway.auth")

WINDOW = 60  # seconds
_MEMORY_ADDRESSES = 100_000  # addresses remembered at most, so a spray cannot exhaust memory

# Expire on the first failure, and on any key that somehow lost its expiry: never block for ever.
_NOTE = """
local count = redis.call('INCR', KEYS[1])
if count == 1 or redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return count
"""

_failures: dict[str, deque[float]] = {}
_clients: dict[asyncio.AbstractEventLoop, aioredis.Redis] = {}


def client_scope(ip: str) -> str:
    """An IPv4 address, or an IPv6 address's /64: one host usually holds a whole /64."""
    if ":" not in ip:
        return ip
    try:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    except ValueError:
        return ip


def throttled(wait: float) -> OpenAIError:
    seconds = max(math.ceil(wait), 1)
    return OpenAIError(
        429,
        f"Too many failed authentication attempts from this address; retry in {seconds} s.",
        type="rate_limit_error",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(seconds)},
    )


async def refuse_if_throttled(ip: str) -> None:
    """Raise the OpenAI-shaped 429 while `ip` has spent its failures for this window."""
    limit = settings.AUTH_FAILURES_PER_MINUTE
    if not limit:
        return
    scope = client_scope(ip)
    now = time.monotonic()
    wait = _memory_wait(scope, limit, now)
    if settings.REDIS_URL and not wait:
        try:
            wait = await _shared_wait(scope, limit, now)
        except (RedisError, OSError):
            logger.warning("auth throttle: Redis did not answer; counting in memory")
    if wait:
        raise throttled(wait)


# An address's count in Redis is read at most once a second per process: reading it before
# every call cost a round trip per request. Failures counted here are seen at once (they
# drop the copy); those counted by other workers, within the second. Calls that arrive
# together once the copy is stale (a burst of streams) wait for one read, not one each.
SHARED_FRESH = 1.0
_shared_seen: dict[str, tuple[float, float]] = {}  # scope -> (read at, wait then)
_shared_reads: dict[str, asyncio.Task[float]] = {}  # scope -> the read under way


async def _shared_wait(scope: str, limit: int, now: float) -> float:
    seen = _shared_seen.get(scope)
    if seen is not None and now - seen[0] < SHARED_FRESH:
        return max(seen[1] - (now - seen[0]), 0.0)
    loop = asyncio.get_running_loop()
    read = _shared_reads.get(scope)
    if read is None or read.get_loop() is not loop:
        read = _shared_reads[scope] = loop.create_task(_read_shared(scope, limit, now))
        read.add_done_callback(_retrieve)
    # Shielded: a caller that goes away does not cancel the read the others wait for.
    return await asyncio.shield(read)


async def _read_shared(scope: str, limit: int, now: float) -> float:
    try:
        wait = await _redis_wait(scope, limit)
    finally:
        # A failure noted meanwhile dropped this read: its count may predate that failure.
        kept = _shared_reads.get(scope) is asyncio.current_task()
        if kept:
            del _shared_reads[scope]
    if kept:
        if len(_shared_seen) >= _MEMORY_ADDRESSES:
            _shared_seen.clear()
        _shared_seen[scope] = (now, wait)
    return wait


def _retrieve(read: asyncio.Task[float]) -> None:
    """Mark a failed read's error as seen when every caller has gone (each logs its own)."""
    if not read.cancelled():
        read.exception()


async def note_auth_failure(ip: str) -> None:
    """Count one failed authentication from `ip`."""
    limit = settings.AUTH_FAILURES_PER_MINUTE
    if not limit:
        return
    scope = client_scope(ip)
    _shared_seen.pop(scope, None)
    _shared_reads.pop(scope, None)
    if settings.REDIS_URL:
        try:
            await _redis_client().eval(_NOTE, 1, _redis_key(scope), WINDOW)
            return
        except (RedisError, OSError):
            logger.warning("auth throttle: Redis did not answer; counting in memory")
    _memory_note(scope, limit, time.monotonic())


def _memory_note(scope: str, limit: int, now: float) -> None:
    if scope not in _failures and len(_failures) >= _MEMORY_ADDRESSES:
        _forget_expired(now)
    # Only the newest `limit` failures can decide when the address is free again.
    _failures.setdefault(scope, deque(maxlen=limit)).append(now)


def _memory_wait(scope: str, limit: int, now: float) -> float:
    """Seconds until `scope` may try again (0: it may now), by the sliding window."""
    times = _failures.get(scope)
    if times is None:
        return 0.0
    while times and times[0] <= now - WINDOW:
        times.popleft()
    if not times:
        del _failures[scope]
        return 0.0
    if len(times) < limit:
        return 0.0
    return times[-limit] + WINDOW - now


def _forget_expired(now: float) -> None:
    for scope in [s for s, times in _failures.items() if times[-1] <= now - WINDOW]:
        del _failures[scope]
    # Still full: drop the oldest addresses rather than grow without bound.
    while len(_failures) >= _MEMORY_ADDRESSES:
        del _failures[next(iter(_failures))]


async def _redis_wait(scope: str, limit: int) -> float:
    key = _redis_key(scope)
    async with _redis_client().pipeline(transaction=False) as pipe:
        pipe.get(key)
        pipe.ttl(key)
        count, ttl = await pipe.execute()
    if count is None or int(count) < limit:
        return 0.0
    return float(max(int(ttl), 1))


def _redis_key(scope: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}:authfail:{scope}"


def _redis_client() -> aioredis.Redis:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = redis_client(settings.REDIS_URL, timeout=1.0)
        _clients[loop] = client
    return client


def forget_failures() -> None:
    """Start every in-memory window afresh (tests)."""
    _failures.clear()
    _shared_seen.clear()
    _shared_reads.clear()
