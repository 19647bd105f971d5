"""Redis clients, made one way for every module that talks to Redis.

redis-py names itself to the server on each new connection (CLIENT SETINFO, seen in CLIENT
LIST) and, unless given its name and version, reads its version from the installed
package's metadata for every connection it opens: 0.8-1.0 ms of CPU each, on the event loop.
A burst of calls grows a pool by a connection for each call beyond those it holds (64 at
once on a cold pool: 64 reads, and 106 ms for the burst against 55 with the read made
once), so that read is made once per process here.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.driver_info import DriverInfo

_DRIVER_INFO = DriverInfo()  # redis-py's own name and version, read once


def redis_client(url: str, *, timeout: float, **options: Any) -> aioredis.Redis:
    """A client for `url` whose connections time out after `timeout` seconds."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        driver_info=_DRIVER_INFO,
        **options,
    )
