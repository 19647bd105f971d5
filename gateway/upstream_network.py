"""httpcore's network layer on the event loop's own transports, for the upstream client.

httpcore's default backend goes through anyio: every read and write of every upstream call
opens a cancel scope for its timeout and awaits a socket call through the loop, asking the
socket again whether an idle connection was closed, and its TLS is anyio's own, in Python,
over memory buffers. Here a connection is a transport and a protocol: bytes arrive in
`data_received` whether or not anyone waits for them, a read takes what is buffered, a timeout
is one timer, and TLS is the loop's (uvloop's when the server runs on uvloop).

A request's writes are held until it reads: httpcore writes a request's head and its body
separately, and sent together they reach the upstream in one packet, which it parses at once
instead of waking twice.
"""

# httpcore's interface takes each call's deadline as a `timeout` argument.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import select
import socket
import ssl
from collections import deque
from collections.abc import Iterable
from contextlib import suppress
from typing import Any, cast

import httpcore

# httpcore's own alias (httpcore._backends.base.SOCKET_OPTION)
SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)

READ_PAUSE = 1024 * 1024  # buffered and unread: stop reading from the socket until it drains
HOLD_LIMIT = 64 * 1024  # writes held for the read that follows them; a larger body goes now


class _Connection(asyncio.Protocol):
    """What a transport delivers, kept until it is read."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.ended = False  # the peer closed its side, or the connection is gone
        self.lost: Exception | None = None
        self.reading_paused = False
        self._data_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._writing_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > READ_PAUSE and not self.reading_paused and self.transport is not None:
            self.transport.pause_reading()
            self.reading_paused = True
        self._wake_reader()

    def eof_received(self) -> bool:
        self.ended = True
        self._wake_reader()
        return False  # close the transport: an HTTP/1.1 client has nothing left to send

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        self.lost = exc
        self._wake_reader()
        self._wake_writer()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writer()

    async def wait_for_data(self, timeout: float | None) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._data_waiter = waiter
        try:
            await _within(waiter, timeout, httpcore.ReadTimeout)
        finally:
            self._data_waiter = None

    async def drain(self, timeout: float | None) -> None:
        if not self._writing_paused or self.ended:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._drain_waiter = waiter
        try:
            await _within(waiter, timeout, httpcore.WriteTimeout)
        finally:
            self._drain_waiter = None

    def take(self, max_bytes: int) -> bytes:
        first = self.chunks.popleft()
        if len(first) > max_bytes:
            self.chunks.appendleft(first[max_bytes:])
            first = first[:max_bytes]
        elif self.chunks and len(first) < max_bytes:
            parts = [first]
            size = len(first)
            while self.chunks and size + len(self.chunks[0]) <= max_bytes:
                part = self.chunks.popleft()
                parts.append(part)
                size += len(part)
            first = b"".join(parts)
        self.buffered -= len(first)
        if self.reading_paused and self.buffered <= READ_PAUSE // 2 and self.transport:
            self.transport.resume_reading()
            self.reading_paused = False
        return first

    def _wake_reader(self) -> None:
        if self._data_waiter is not None and not self._data_waiter.done():
            self._data_waiter.set_result(None)

    def _wake_writer(self) -> None:
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)


async def _within(
    waiter: asyncio.Future[None], timeout: float | None, error: type[Exception]
) -> None:
    """Wait for `waiter`; past `timeout` seconds raise `error` (one timer, no task)."""
    if timeout is None:
        await waiter
        return
    timer = asyncio.get_running_loop().call_later(timeout, _expire, waiter)
    try:
        await waiter
    except _Expired:
        raise error("timed out") from None
    finally:
        timer.cancel()


class _Expired(Exception):
    pass


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(_Expired())


class LoopStream(httpcore.AsyncNetworkStream):
    def __init__(self, transport: asyncio.Transport, connection: _Connection) -> None:
        self._transport = transport
        self._connection = connection
        self._held: list[bytes] = []
        self._held_size = 0
        self._answered = False  # a reply was read since the last request's first write

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        # As httpcore does: what the server answered before it closed is still read.
        with suppress(httpcore.WriteError):
            await self._send_held(timeout)
        self._answered = True
        connection = self._connection
        if not connection.chunks and not connection.ended:
            await connection.wait_for_data(timeout)
        if connection.chunks:
            return connection.take(max_bytes)
        if connection.lost is not None:
            raise httpcore.ReadError(str(connection.lost) or "the connection was lost")
        return b""  # the peer closed the connection

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._answered:  # a request's first bytes, on a connection that was idle
            self._answered = False
            if self._closed_while_idle():
                # Nothing of the request was sent: httpcore's pool sends it on another
                # connection (a 502 otherwise, and the upstream marked as failing).
                raise httpcore.ConnectionNotAvailable()
        if self._connection.ended or self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        self._held.append(buffer)
        self._held_size += len(buffer)
        if self._held_size >= HOLD_LIMIT:
            await self._send_held(timeout)

    async def _send_held(self, timeout: float | None) -> None:
        if not self._held:
            return
        data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        self._held.clear()
        self._held_size = 0
        if self._connection.ended or self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        self._transport.write(data)
        await self._connection.drain(timeout)

    def _closed_while_idle(self) -> bool:
        """Whether the server closed the idle connection (its keep-alive timeout, say), or
        wrote on it unasked. The socket itself is asked too: a busy loop may not yet have
        read a close that is already there."""
        connection = self._connection
        if connection.ended or connection.chunks or self._transport.is_closing():
            return True
        sock = self._transport.get_extra_info("socket")
        if sock is None:
            return False
        poller = select.poll()
        try:
            poller.register(sock.fileno(), select.POLLIN)
        except ValueError:  # no longer a socket
            return True
        return bool(poller.poll(0))

    async def aclose(self) -> None:
        self._held.clear()
        self._transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(
                    self._transport, self._connection, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError:
            self._transport.close()
            raise httpcore.ConnectTimeout("the TLS handshake timed out") from None
        except (OSError, ssl.SSLError) as exc:
            self._transport.close()
            raise httpcore.ConnectError(str(exc)) from exc
        if transport is None:  # the connection closed during the handshake
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        self._connection.transport = transport
        return LoopStream(transport, self._connection)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # Asked of an idle connection: anything buffered, or a close, means it is spent.
            return bool(self._connection.chunks) or self._connection.ended
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        return None


class LoopBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        return await _connect(
            loop.create_connection(_Connection, host, port, local_addr=local),
            timeout,
            socket_options,
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        return await _connect(
            loop.create_unix_connection(_Connection, path), timeout, socket_options
        )

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _connect(
    opening: Any, timeout: float | None, socket_options: Iterable[SocketOption] | None
) -> LoopStream:
    try:
        async with asyncio.timeout(timeout):
            transport, connection = await opening
    except TimeoutError:
        raise httpcore.ConnectTimeout("the connection timed out") from None
    except OSError as exc:
        raise httpcore.ConnectError(str(exc)) from exc
    sock: socket.socket | None = transport.get_extra_info("socket")
    for option in socket_options or ():
        if sock is not None:
            sock.setsockopt(*option)
    return LoopStream(transport, connection)
