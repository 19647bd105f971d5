"""The upstream client's network layer (gateway/upstream_network.py), against small servers on
127.0.0.1: plain and TLS, on asyncio's loop and on uvloop's (the server's)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.upstream_client import POOL_LIMITS, PoolSet, upstream_transport
from gateway.upstream_network import LoopBackend, LoopStream
from tests.conftest import OpenAIFake

Run = Callable[[Coroutine[Any, Any, Any]], Any]  # asyncio.run or uvloop.run
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
LOOPS = [pytest.param(asyncio.run, id="asyncio"), pytest.param(uvloop.run, id="uvloop")]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's head and its Content-Length body; b"" when the client has gone."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b""
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


def answer(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def serving(handler: Handler, tls: ssl.SSLContext | None = None) -> asyncio.Server:
    return await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls)


def port_of(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


def url_of(server: asyncio.Server, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{port_of(server)}/"


class Echo:
    """A server's handler: answers each request with `prefix` and the request's body, on
    as many requests as the connection carries; counts its connections."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self.connections = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while request := await read_request(reader):
            writer.write(answer(self.prefix + request.rsplit(b"\r\n\r\n", 1)[1]))
        writer.close()


def client_with(tls: ssl.SSLContext | None = None, **timeouts: float) -> httpx.AsyncClient:
    transport = upstream_transport(tls or httpx.create_ssl_context(), POOL_LIMITS)
    return httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5.0, **timeouts))


def stream_of(response: httpx.Response) -> Any:
    stream = response.extensions["network_stream"]
    return getattr(stream, "_stream", stream)  # httpcore wraps it for connection upgrades


def test_the_upstream_clients_connections_are_the_loops_own(fake_openai: OpenAIFake) -> None:
    async def main() -> Any:
        async with httpx.AsyncClient(transport=PoolSet(2, POOL_LIMITS)) as client:
            response = await client.get(fake_openai.base_url + "/models")
            return stream_of(response)

    assert isinstance(asyncio.run(main()), LoopStream)


class Recording(asyncio.Protocol):
    """Keeps what arrives, piece by piece; answers once a whole request is in."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.WriteTransport, transport)

    def data_received(self, data: bytes) -> None:
        self.pieces.append(data)
        if b"".join(self.pieces).endswith(b"\r\n\r\nbody"):
            self.transport.write(answer(b"done"))


@pytest.mark.parametrize("run", LOOPS)
def test_a_requests_writes_are_held_until_its_reply_is_read(run: Run) -> None:
    """httpcore writes a request's head and body apart; they leave together."""

    async def main() -> tuple[list[bytes], list[bytes], bytes]:
        pieces: list[bytes] = []
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Recording(pieces), "127.0.0.1", 0)
        async with server:
            stream = await LoopBackend().connect_tcp("127.0.0.1", port_of(server), timeout=5)
            await stream.write(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n")
            await stream.write(b"body")
            await asyncio.sleep(0.1)
            before_reading = list(pieces)
            reply = await stream.read(65536, timeout=5)
            await stream.aclose()
            return before_reading, pieces, reply

    before_reading, pieces, reply = run(main())
    assert before_reading == []
    assert pieces == [b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody"]
    assert reply.endswith(b"\r\n\r\ndone")


class AnswersAtOnce(asyncio.Protocol):
    """Answers before any request arrives, then closes: a server turning callers away."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        writer = cast(asyncio.WriteTransport, transport)
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
        writer.close()


@pytest.mark.parametrize("run", LOOPS)
def test_an_answer_sent_before_the_server_closed_is_read(run: Run) -> None:
    """The request, still held when the connection closed, cannot go: the answer is read."""

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(AnswersAtOnce, "127.0.0.1", 0)
        async with server:
            stream = await LoopBackend().connect_tcp("127.0.0.1", port_of(server), timeout=5)
            await stream.write(b"GET / HTTP/1.1\r\n\r\n")
            await asyncio.sleep(0.1)  # the answer and the close arrive
            reply = await stream.read(65536, timeout=5)
            assert await stream.read(65536, timeout=5) == b""
            await stream.aclose()
            return reply

    assert run(main()).endswith(b"\r\n\r\nbusy")


@pytest.mark.parametrize("run", LOOPS)
def test_calls_one_after_another_reuse_one_connection(run: Run) -> None:
    echo = Echo(b"ok:")

    async def main() -> list[str]:
        server = await serving(echo)
        async with server, client_with() as client:
            return [
                (await client.post(url_of(server), content=b"call %d" % n)).text for n in range(3)
            ]

    assert run(main()) == ["ok:call 0", "ok:call 1", "ok:call 2"]
    assert echo.connections == 1


@pytest.mark.parametrize("run", LOOPS)
def test_a_connection_past_the_keep_alive_limit_is_closed_when_its_call_ends(run: Run) -> None:
    opened: list[int] = []
    ended: list[int] = []  # the connections whose client closed them
    both_open = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        opened.append(len(opened))
        number = opened[-1]
        if len(opened) == 2:
            both_open.set()
        while await read_request(reader):
            await both_open.wait()  # the two calls are in flight at once, on two connections
            writer.write(answer(b"ok"))
        ended.append(number)
        writer.close()

    limits = httpx.Limits(max_connections=4, max_keepalive_connections=1)

    async def main() -> tuple[list[str], int]:
        server = await serving(handler)
        transport = upstream_transport(httpx.create_ssl_context(), limits)
        async with server, httpx.AsyncClient(transport=transport) as client:
            replies = await asyncio.gather(*(client.get(url_of(server)) for _ in range(2)))
            for _ in range(20):  # the close reaches the server a moment later
                await asyncio.sleep(0.01)
            # Before the client's own close: one kept for the next call, the other closed.
            return [reply.text for reply in replies], len(ended)

    assert run(main()) == (["ok", "ok"], 1)
    assert len(opened) == 2


@pytest.mark.parametrize("run", LOOPS)
def test_large_bodies_both_ways(run: Run) -> None:
    """A body past what is held for one write goes out at once; a reply larger than the
    read buffer pauses the socket and resumes it as it is read."""
    big = bytes(range(256)) * 12_000  # 3 MB

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        body = request.split(b"\r\n\r\n", 1)[1]
        writer.write(answer(body[::-1]))
        await writer.drain()
        writer.close()

    async def main() -> bytes:
        server = await serving(handler)
        async with (
            server,
            client_with() as client,
            client.stream("POST", url_of(server), content=big) as response,
        ):
            return b"".join([part async for part in response.aiter_raw()])

    assert run(main()) == big[::-1]


@pytest.mark.parametrize("run", LOOPS)
def test_a_connection_the_server_closed_while_idle_is_not_reused(
    run: Run,
) -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(answer(b"once"))  # keep-alive by default, then closed all the same
        await writer.drain()
        writer.close()

    async def main() -> list[str]:
        server = await serving(handler)
        async with server, client_with() as client:
            first = (await client.get(url_of(server))).text
            await asyncio.sleep(0.1)  # the close arrives while the connection is idle
            return [first, (await client.get(url_of(server))).text]

    assert run(main()) == ["once", "once"]
    assert connections == 2


def read_blocking(connection: socket.socket) -> bytes:
    """One request's body from a blocking socket (the request carries a Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += connection.recv(65536)
    return body


@pytest.mark.parametrize("run", LOOPS)
def test_a_close_the_busy_loop_has_not_yet_read_sends_the_call_on_another_connection(
    run: Run,
) -> None:
    """The server closed the idle connection (its keep-alive timeout, say) and its close is
    in the socket, but the loop, busy, has not read it: the call goes on a new connection
    instead of failing. Nothing of it was sent on the closed one."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    close_now = threading.Event()
    bodies: list[bytes] = []

    def serve() -> None:  # in a thread of its own: it closes while the client's loop is busy
        for _ in range(2):
            connection, _address = listener.accept()
            with connection:
                bodies.append(read_blocking(connection))
                connection.sendall(answer(b"once"))  # keep-alive by default
                close_now.wait(5)

    server = threading.Thread(target=serve, daemon=True)
    server.start()

    async def main() -> list[str]:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        async with client_with() as client:
            first = (await client.post(url, content=b"first")).text
            close_now.set()
            time.sleep(0.1)  # noqa: ASYNC251  # the loop is busy: the close arrives, unread
            return [first, (await client.post(url, content=b"second")).text]

    try:
        assert run(main()) == ["once", "once"]
    finally:
        close_now.set()
        server.join(5)
        listener.close()
    assert bodies == [b"first", b"second"]


@pytest.mark.parametrize("run", LOOPS)
def test_silence_is_a_read_timeout_and_a_cut_reply_an_error(
    run: Run,
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(2)
        writer.close()

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await writer.drain()
        writer.close()

    async def main() -> float:
        quiet, cutting = await serving(silent), await serving(cut)
        async with quiet, cutting, client_with(read=0.3) as client:
            started = time.monotonic()
            with pytest.raises(httpx.ReadTimeout):
                await client.get(url_of(quiet))
            waited = time.monotonic() - started
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(url_of(cutting))
            return waited

    assert 0.25 < run(main()) < 1.5


@pytest.mark.parametrize("run", LOOPS)
def test_a_refused_connection_is_a_connect_error(
    run: Run,
) -> None:
    async def main() -> None:
        server = await serving(lambda reader, writer: asyncio.sleep(0))
        url = url_of(server)
        server.close()
        await server.wait_closed()
        async with client_with() as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(url)

    run(main())


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: (certificate file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway test upstream")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture(scope="module")
def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """The TLS context of a server holding that certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.mark.parametrize("run", LOOPS)
def test_tls_through_the_loops_own_handshake(
    run: Run, certificate: tuple[Path, Path], server_tls: ssl.SSLContext
) -> None:
    trusting = ssl.create_default_context(cafile=str(certificate[0]))
    echo = Echo(b"secret:")

    async def main() -> tuple[list[str], bool]:
        server = await serving(echo, server_tls)
        async with server, client_with(trusting) as client:
            texts = []
            for n in range(2):
                response = await client.post(url_of(server, "https"), content=b"%d" % n)
                texts.append(response.text)
            encrypted = stream_of(response).get_extra_info("ssl_object") is not None
            return texts, encrypted

    assert run(main()) == (["secret:0", "secret:1"], True)
    assert echo.connections == 1


@pytest.mark.parametrize("run", LOOPS)
def test_a_certificate_not_trusted_is_a_connect_error(run: Run, server_tls: ssl.SSLContext) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    async def main() -> str:
        server = await serving(handler, server_tls)
        async with server, client_with() as client:  # the system's CAs only
            with pytest.raises(httpx.ConnectError) as refused:
                await client.get(url_of(server, "https"))
            return str(refused.value)

    assert "CERTIFICATE_VERIFY_FAILED" in run(main())
