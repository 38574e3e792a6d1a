"""Tests for the WebSocket layer against independent peers (trio-websocket, raw sockets)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSAttribute, TLSStream
from harness import tls_contexts
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage

from ocpp_rpc._transport.websocket import (
    HandshakeAborted,
    HandshakeError,
    HandshakeRefused,
    UpgradeRequest,
    WebSocket,
    WebSocketClosed,
    accept_upgrade,
    connect,
    read_upgrade_request,
    reject_upgrade,
)

pytestmark = pytest.mark.anyio
trio_only = pytest.mark.parametrize("anyio_backend", ["trio"])

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
STREAM_GONE = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError)

Handler = Callable[[anyio.abc.SocketStream], Awaitable[None]]


# -- raw peer helpers -------------------------------------------------------


def frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bool = True, length: int = -1
) -> bytes:
    """Build one frame by hand (``length`` overrides the announced payload length)."""
    n = len(payload) if length < 0 else length
    head = bytearray([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head.append(bit | n)
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if mask:
        key = os.urandom(4)
        size = len(payload)
        keys = (key * (size // 4 + 1))[:size]
        payload = (int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")).to_bytes(
            size, "big"
        )
        head += key
    return bytes(head) + payload


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


def accept_token(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


async def read_head(stream: anyio.abc.ByteStream, buf: bytearray) -> bytes:
    """Read an HTTP head; what follows it stays in ``buf``."""
    while b"\r\n\r\n" not in buf:
        buf += await stream.receive()
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    buf[:] = rest
    return head


def header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


class RawPeer:
    """A hand-driven WebSocket peer: frames built by hand, parsed with wsproto."""

    def __init__(self, stream: anyio.abc.ByteStream, *, client: bool, buffered: bytes = b""):
        self.stream = stream
        self.client = client
        kind = ConnectionType.CLIENT if client else ConnectionType.SERVER
        self.proto = Connection(kind, trailing_data=buffered)

    async def send_frame(
        self, opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bool | None = None
    ) -> None:
        masked = self.client if mask is None else mask
        await self.stream.send(frame(opcode, payload, fin=fin, mask=masked))

    async def event(self) -> Event:
        while True:
            for event in self.proto.events():
                return event
            self.proto.receive_data(await self.stream.receive())

    async def message(self) -> str | bytes:
        parts: list[Any] = []
        while True:
            event = await self.event()
            assert isinstance(event, (TextMessage, BytesMessage)), event
            parts.append(event.data)
            if event.message_finished:
                empty: Any = "" if isinstance(event.data, str) else b""
                return empty.join(parts)  # type: ignore[no-any-return]

    async def expect_close(self) -> CloseConnection:
        event = await self.event()
        assert isinstance(event, CloseConnection), event
        return event

    async def expect_eof(self) -> None:
        while True:
            try:
                await self.stream.receive()
            except STREAM_GONE:
                return


@asynccontextmanager
async def one_shot_server(handler: Handler, host: str = "127.0.0.1") -> AsyncIterator[int]:
    """Accept one TCP connection, run ``handler`` on it (then close it); yield the port."""
    async with await anyio.create_tcp_listener(local_host=host) as listener:

        async def serve() -> None:
            socket_listener = listener.listeners[0]
            assert isinstance(socket_listener, anyio.abc.SocketListener)
            stream = await socket_listener.accept()
            async with stream:
                await handler(stream)

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            yield listener.extra(SocketAttribute.local_port)


def ws_handler(
    session: Callable[[WebSocket], Awaitable[None]],
    *,
    pick: Callable[[UpgradeRequest], str | None] = lambda r: None,
    max_message_size: int = 2**24,
) -> Handler:
    """A server handler running our upgrade + ``session(ws)``."""

    async def handler(stream: anyio.abc.SocketStream) -> None:
        request = await read_upgrade_request(stream)
        ws = await accept_upgrade(
            stream, request, subprotocol=pick(request), max_message_size=max_message_size
        )
        await session(ws)

    return handler


def upgrade_request(
    port: int, key: bytes, extra: bytes = b"", target: bytes = b"/ocpp/CP1"
) -> bytes:
    return (
        b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " % port + key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n" + extra + b"\r\n"
    )


@asynccontextmanager
async def raw_client(
    port: int, *, first: bytes = b"", extra: bytes = b""
) -> AsyncIterator[RawPeer]:
    """A raw client that upgrades (``first`` is pipelined right after the request)."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        key = base64.b64encode(os.urandom(16))
        await stream.send(upgrade_request(port, key, extra) + first)
        buf = bytearray()
        head = await read_head(stream, buf)
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert header(head, b"sec-websocket-accept") == accept_token(key)
        assert header(head, b"sec-websocket-extensions") is None
        yield RawPeer(stream, client=True, buffered=bytes(buf))


async def raw_accept(
    stream: anyio.abc.ByteStream, *, extra: bytes = b"", after: bytes = b""
) -> tuple[bytes, RawPeer]:
    """Server side of a raw handshake: read the request, answer 101 (+ ``after``)."""
    buf = bytearray()
    head = await read_head(stream, buf)
    key = header(head, b"sec-websocket-key")
    assert key is not None
    await stream.send(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_token(key) + b"\r\n" + extra + b"\r\n" + after
    )
    return head, RawPeer(stream, client=False, buffered=bytes(buf))


async def http_exchange(port: int, request: bytes) -> tuple[bytes, bytes]:
    """Send raw bytes, read one whole response (head, body)."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(request)
        buf = bytearray()
        head = await read_head(stream, buf)
        length = int(header(head, b"content-length") or b"0")
        while len(buf) < length:
            buf += await stream.receive()
        return head, bytes(buf)


def refusing_handler(results: list[HandshakeRefused], max_header_size: int = 16384) -> Handler:
    async def handler(stream: anyio.abc.SocketStream) -> None:
        try:
            await read_upgrade_request(stream, max_header_size=max_header_size)
        except HandshakeRefused as exc:
            results.append(exc)
        with anyio.move_on_after(2):  # drain so that closing does not reset the connection
            while True:
                try:
                    await stream.receive()
                except STREAM_GONE:
                    break

    return handler


# -- interop with trio-websocket -------------------------------------------


@trio_only
async def test_client_echo_against_trio_websocket() -> None:
    import trio
    import trio_websocket

    closed: list[trio_websocket.ConnectionClosed] = []

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept(subprotocol=request.proposed_subprotocols[-1])
        try:
            while True:
                await ws.send_message(await ws.get_message())
        except trio_websocket.ConnectionClosed as exc:
            closed.append(exc)

    with anyio.fail_after(5):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None
            )
            ws = await connect(
                f"ws://127.0.0.1:{server.port}/ocpp/CP1", subprotocols=["ocpp1.6", "ocpp2.0.1"]
            )
            assert ws.subprotocol == "ocpp2.0.1"
            messages: list[str | bytes] = ["hi", b"\x00\x01\xff", "é" * 70000, os.urandom(200_000)]
            for message in messages:
                await ws.send(message)
                assert await ws.receive() == message
            await ws.close(4000, "bye")
            assert (ws.close_code, ws.close_reason) == (4000, "bye")
            nursery.cancel_scope.cancel()
    assert closed[0].reason is not None
    assert (closed[0].reason.code, closed[0].reason.reason) == (4000, "bye")


@trio_only
async def test_client_against_trio_websocket_ping_and_server_close() -> None:
    import trio
    import trio_websocket

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()  # no subprotocol although we offered one
        await ws.ping(b"from-server")  # answered by our receive() loop
        await ws.send_message("pinged")
        await ws.get_message()
        await ws.aclose(4001, "server says bye")

    with anyio.fail_after(5):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None
            )
            ws = await connect(f"ws://127.0.0.1:{server.port}/", subprotocols=["ocpp1.6"])
            assert ws.subprotocol is None
            async with anyio.create_task_group() as tg:
                tg.start_soon(ws.ping, b"from-client")
                assert await ws.receive() == "pinged"
            await ws.send("go on")
            with pytest.raises(WebSocketClosed) as info:
                await ws.receive()
            assert (info.value.code, info.value.reason) == (4001, "server says bye")
            assert ws.close_code == 4001
            nursery.cancel_scope.cancel()


@trio_only
async def test_server_against_trio_websocket_client() -> None:
    import trio_websocket

    results: list[WebSocketClosed] = []

    async def session(ws: WebSocket) -> None:
        assert ws.remote_address is not None
        assert ws.remote_address[0] == "127.0.0.1"
        try:
            while True:
                await ws.send(await ws.receive())
        except WebSocketClosed as exc:
            results.append(exc)

    def pick(request: UpgradeRequest) -> str | None:
        assert request.subprotocols == ("ocpp1.6", "ocpp2.0.1")
        assert request.path == "/ocpp/CP%2F1"
        assert request.query_string == "a=1"
        return "ocpp2.0.1"

    with anyio.fail_after(5):
        async with one_shot_server(ws_handler(session, pick=pick)) as port:
            async with trio_websocket.open_websocket_url(
                f"ws://127.0.0.1:{port}/ocpp/CP%2F1?a=1", subprotocols=["ocpp1.6", "ocpp2.0.1"]
            ) as client:
                assert client.subprotocol == "ocpp2.0.1"
                messages: list[str | bytes] = ["hi", b"\x00bin", "x" * 100_000]
                for message in messages:
                    await client.send_message(message)
                    assert await client.get_message() == message
                await client.ping(b"p1")
                await client.aclose(4002, "client says bye")
    assert (results[0].code, results[0].reason) == (4002, "client says bye")


@trio_only
async def test_server_close_seen_by_trio_websocket_client() -> None:
    import trio_websocket

    async def session(ws: WebSocket) -> None:
        await ws.send("welcome")
        await ws.close(4003, "maintenance")  # nobody receiving: close() reads itself
        assert (ws.close_code, ws.close_reason) == (4003, "maintenance")

    with anyio.fail_after(5):
        async with one_shot_server(ws_handler(session)) as port:
            async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/") as client:
                assert await client.get_message() == "welcome"
                with pytest.raises(trio_websocket.ConnectionClosed) as info:
                    await client.get_message()
                reason = info.value.reason
                assert reason is not None
                assert (reason.code, reason.reason) == (4003, "maintenance")


# -- server handshake ----------------------------------------------------------


async def test_plain_get_gets_404() -> None:
    results: list[HandshakeRefused] = []
    with anyio.fail_after(5):
        async with one_shot_server(refusing_handler(results)) as port:
            head, body = await http_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert header(head, b"connection") == b"close"
    assert body
    assert results[0].status == 404


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        pytest.param(
            b"Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n", 400, id="key"
        ),
        pytest.param(b"Sec-WebSocket-Version: 13\r\n", 400, id="no-key"),
        pytest.param(b"Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n", 400, id="no-version"),
        pytest.param(
            b"Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nSec-WebSocket-Version: 8\r\n",
            400,
            id="version",
        ),
    ],
)
async def test_malformed_upgrade_gets_400(extra: bytes, status: int) -> None:
    results: list[HandshakeRefused] = []
    request = (
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n"
    )
    with anyio.fail_after(5):
        async with one_shot_server(refusing_handler(results)) as port:
            head, _ = await http_exchange(port, request + extra + b"\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert results[0].status == 400
    if (b"Key" in extra and b"Version" not in extra) or b"Version: 8" in extra:
        assert header(head, b"sec-websocket-version") == b"13"


async def test_non_get_upgrade_and_garbage_get_400() -> None:
    results: list[HandshakeRefused] = []
    key = b"AAAAAAAAAAAAAAAAAAAAAA=="
    with anyio.fail_after(5):
        async with one_shot_server(refusing_handler(results)) as port:
            head, _ = await http_exchange(port, upgrade_request(port, key).replace(b"GET", b"PUT"))
        async with one_shot_server(refusing_handler(results)) as port:
            head2, _ = await http_exchange(port, b"NOT HTTP AT ALL\r\n\r\n")
        async with one_shot_server(refusing_handler(results)) as port:
            request = upgrade_request(port, key).replace(b"HTTP/1.1", b"HTTP/1.0")
            head3, _ = await http_exchange(port, request)
    assert head.startswith(b"HTTP/1.1 400 ")
    assert head2.startswith(b"HTTP/1.1 400 ")
    assert head3.startswith(b"HTTP/1.1 400 ")
    assert [r.status for r in results] == [400, 400, 400]


@pytest.mark.parametrize("target", [b"*", b"example.com:80", b"CP1", b"ftp://x/CP1"])
async def test_a_target_neither_a_path_nor_an_absolute_uri_gets_400(target: bytes) -> None:
    results: list[HandshakeRefused] = []
    key = b"AAAAAAAAAAAAAAAAAAAAAA=="
    with anyio.fail_after(5):
        async with one_shot_server(refusing_handler(results)) as port:
            head, _ = await http_exchange(port, upgrade_request(port, key, target=target))
    assert head.startswith(b"HTTP/1.1 400 ")
    assert [r.status for r in results] == [400]


@pytest.mark.parametrize("size", [5000, 100_000])  # arrives whole / exceeds one read
async def test_oversized_headers_get_431(size: int) -> None:
    results: list[HandshakeRefused] = []
    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n"
    with anyio.fail_after(5):
        async with one_shot_server(refusing_handler(results, max_header_size=4096)) as port:
            head, _ = await http_exchange(port, request)
    assert head.startswith(b"HTTP/1.1 431 ")
    assert results[0].status == 431


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        (b"/ocpp/CP%2F1?a=1", "/ocpp/CP%2F1", "a=1"),
        (b"http://127.0.0.1:9/ocpp/CP%2F1?a=1", "/ocpp/CP%2F1", "a=1"),
        (b"WSS://example.com/CP1", "/CP1", ""),
        (b"http://127.0.0.1:9", "/", ""),
    ],
)
async def test_the_path_of_an_origin_or_absolute_form_target(
    target: bytes, path: str, query: str
) -> None:
    requests: list[UpgradeRequest] = []

    async def handler(stream: anyio.abc.SocketStream) -> None:
        requests.append(await read_upgrade_request(stream))

    with anyio.fail_after(5):
        async with one_shot_server(handler) as port:
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                key = base64.b64encode(os.urandom(16))
                await stream.send(upgrade_request(port, key, target=target))
                with contextlib.suppress(*STREAM_GONE):
                    await stream.receive()  # the server's end
    (request,) = requests
    assert (request.target, request.path, request.query_string) == (target.decode(), path, query)


async def test_eof_before_request_is_aborted() -> None:
    results: list[HandshakeRefused] = []
    with anyio.fail_after(5):
        async with one_shot_server(refusing_handler(results)) as port:
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(b"GET / HTTP/1.1\r\nHo")
    assert isinstance(results[0], HandshakeAborted)


async def test_reject_upgrade() -> None:
    async def handler(stream: anyio.abc.SocketStream) -> None:
        request = await read_upgrade_request(stream)
        assert request.header("authorization") is None
        await reject_upgrade(stream, 401, "who are you?", headers=[("WWW-Authenticate", "Basic")])

    with anyio.fail_after(5):
        async with one_shot_server(handler) as port:
            key = base64.b64encode(os.urandom(16))
            head, body = await http_exchange(port, upgrade_request(port, key))
    assert head.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    assert header(head, b"www-authenticate") == b"Basic"
    assert header(head, b"connection") == b"close"
    assert (header(head, b"content-type") or b"").startswith(b"text/plain")
    assert body == b"who are you?"


async def test_reject_upgrade_peer_gone_does_not_raise() -> None:
    class Gone(anyio.abc.ByteStream):
        async def send(self, item: bytes) -> None:
            raise anyio.BrokenResourceError

        async def receive(self, max_bytes: int = 65536) -> bytes:
            raise anyio.EndOfStream

        async def send_eof(self) -> None:
            pass

        async def aclose(self) -> None:
            pass

    await reject_upgrade(Gone(), 503)


def sending_session(results: list[object], *, receive_first: bool) -> Callable[
    [WebSocket], Awaitable[None]
]:
    """A session that (after one receive, if `receive_first`) sends "reply",
    notes whether it went out, then reads until the WebSocket closes."""

    async def session(ws: WebSocket) -> None:
        if receive_first:
            results.append(await ws.receive())
        try:
            await ws.send("reply")
            results.append("sent")
        except WebSocketClosed as exc:
            results.append(("refused", exc.code))
        with pytest.raises(WebSocketClosed):
            await ws.receive()

    return session


async def test_a_message_pipelined_with_the_peers_close_can_still_be_answered() -> None:
    """A CALL and the peer's Close in one read: the reply goes out before our
    echoed Close (the state is still open until the Close is taken)."""
    results: list[object] = []
    session = sending_session(results, receive_first=True)
    with anyio.fail_after(5):
        async with one_shot_server(ws_handler(session)) as port, raw_client(port) as peer:
            await peer.stream.send(frame(OP_TEXT, b"call") + frame(OP_CLOSE, close_payload(1000)))
            events: list[Event] = []
            while not events or not isinstance(events[-1], CloseConnection):
                events.append(await peer.event())
    assert results == ["call", "sent"]
    assert isinstance(events[0], TextMessage) and events[0].data == "reply"


async def test_a_close_pipelined_with_the_upgrade_lets_a_first_send_out() -> None:
    results: list[object] = []
    session = sending_session(results, receive_first=False)
    with anyio.fail_after(5):
        first = frame(OP_CLOSE, close_payload(1000))
        async with one_shot_server(ws_handler(session)) as port, raw_client(
            port, first=first
        ) as peer:
            events: list[Event] = []
            while not events or not isinstance(events[-1], CloseConnection):
                events.append(await peer.event())
    assert results == ["sent"]
    assert isinstance(events[0], TextMessage) and events[0].data == "reply"


async def test_pipelined_first_frame_is_not_lost() -> None:
    got: list[str | bytes] = []

    async def session(ws: WebSocket) -> None:
        got.append(await ws.receive())
        got.append(await ws.receive())

    with anyio.fail_after(5):
        async with one_shot_server(ws_handler(session)) as port:
            first = frame(OP_TEXT, b"first") + frame(OP_BINARY, b"second")
            async with raw_client(port, first=first) as peer:
                await peer.expect_eof()
    assert got == ["first", b"second"]


# -- server side against a raw client ---------------------------------------


async def test_server_auto_pong_and_fragments() -> None:
    got: list[str | bytes] = []

    async def session(ws: WebSocket) -> None:
        got.append(await ws.receive())
        got.append(await ws.receive())
        await ws.send("done")
        with pytest.raises(WebSocketClosed):
            await ws.receive()

    with anyio.fail_after(5):
        async with one_shot_server(ws_handler(session)) as port, raw_client(port) as peer:
            text = "héllo wörld".encode()
            await peer.send_frame(OP_TEXT, text[:2], fin=False)  # splits the "é"
            await peer.send_frame(OP_PING, b"ping!")
            await peer.send_frame(OP_CONT, text[2:7], fin=False)
            await peer.send_frame(OP_CONT, b"", fin=False)
            await peer.send_frame(OP_CONT, text[7:])
            pong = await peer.event()
            assert isinstance(pong, Pong)
            assert pong.payload == b"ping!"
            await peer.send_frame(OP_BINARY, b"\x00\x01", fin=False)
            await peer.send_frame(OP_CONT, b"\x02")
            assert await peer.message() == "done"
            await peer.send_frame(OP_CLOSE, close_payload(1000))
            await peer.expect_close()
            await peer.expect_eof()
    assert got == ["héllo wörld", b"\x00\x01\x02"]


async def test_peer_initiated_close_is_echoed() -> None:
    results: list[WebSocketClosed] = []

    async def session(ws: WebSocket) -> None:
        with pytest.raises(WebSocketClosed) as info:
            await ws.receive()
        results.append(info.value)
        with pytest.raises(WebSocketClosed):  # every time
            await ws.receive()
        with pytest.raises(WebSocketClosed):
            await ws.send("too late")
        await ws.close()  # no-op
        assert (ws.close_code, ws.close_reason) == (4010, "client bye")

    with anyio.fail_after(5):
        async with one_shot_server(ws_handler(session)) as port, raw_client(port) as peer:
            await peer.send_frame(OP_CLOSE, close_payload(4010, "client bye"))
            echo = await peer.expect_close()
            assert (echo.code, echo.reason) == (4010, "client bye")
            await peer.expect_eof()
    assert (results[0].code, results[0].reason) == (4010, "client bye")


async def test_peer_close_without_code_is_1005() -> None:
    async def session(ws: WebSocket) -> None:
        with pytest.raises(WebSocketClosed) as info:
            await ws.receive()
        assert info.value.code == 1005
        assert ws.close_code == 1005

    with anyio.fail_after(5):
        async with one_shot_server(ws_handler(session)) as port, raw_client(port) as peer:
            await peer.send_frame(OP_CLOSE)
            echo = await peer.expect_close()
            assert echo.code == 1005  # i.e. an empty close frame
            await peer.expect_eof()


async def test_server_close_while_another_task_receives() -> None:
    results: list[WebSocketClosed] = []

    async def session(ws: WebSocket) -> None:
        async def reader() -> None:
            try:
                while True:
                    await ws.receive()
            except WebSocketClosed as exc:
                results.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await ws.send("hello")
            await ws.close(4020, "server bye")
        assert (ws.close_code, ws.close_reason) == (4020, "server bye")

    with anyio.fail_after(5):
        async with one_shot_server(ws_handler(session)) as port, raw_client(port) as peer:
            assert await peer.message() == "hello"
            close = await peer.expect_close()
            assert (close.code, close.reason) == (4020, "server bye")
            await peer.send_frame(OP_TEXT, b"late message")  # allowed before our Close
            await peer.send_frame(OP_CLOSE)  # empty reply: our code stands
            await peer.expect_eof()
    assert (results[0].code, results[0].reason) == (4020, "server bye")


async def test_close_when_nobody_receives() -> None:
    async def session(ws: WebSocket) -> None:
        await ws.close(reason="x" * 200)  # reason gets truncated to fit
        assert ws.close_code == 1000
        with pytest.raises(WebSocketClosed) as info:
            await ws.receive()
        assert info.value.code == 1000

    with anyio.fail_after(5):
        async with one_shot_server(ws_handler(session)) as port, raw_client(port) as peer:
            close = await peer.expect_close()
            assert close.code == 1000
            assert close.reason == "x" * 123
            await peer.send_frame(OP_TEXT, b"discarded")
            await peer.send_frame(OP_PING, b"p")
            await peer.send_frame(OP_CLOSE, close_payload(1000))
            await peer.expect_eof()


async def test_receive_while_close_drains_gets_closed() -> None:
    results: list[WebSocketClosed] = []

    async def session(ws: WebSocket) -> None:
        async def late_reader() -> None:
            try:
                await ws.receive()
            except WebSocketClosed as exc:
                results.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(ws.close, 4040, "drain")
            await anyio.wait_all_tasks_blocked()  # close() is now reading
            tg.start_soon(late_reader)
        assert ws.close_code == 4040

    with anyio.fail_after(5):
        async with one_shot_server(ws_handler(session)) as port, raw_client(port) as peer:
            assert (await peer.expect_close()).code == 4040
            await peer.send_frame(OP_CLOSE, close_payload(4040, "drain"))
            await peer.expect_eof()
    assert (results[0].code, results[0].reason) == (4040, "drain")


async def test_accept_upgrade_refuses_unoffered_subprotocol() -> None:
    async def handler(stream: anyio.abc.SocketStream) -> None:
        request = await read_upgrade_request(stream)
        assert request.subprotocols == ()
        with pytest.raises(ValueError, match="not offered"):
            await accept_upgrade(stream, request, subprotocol="ocpp1.6")

    with anyio.fail_after(5):
        async with one_shot_server(handler) as port:
            key = base64.b64encode(os.urandom(16))
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(upgrade_request(port, key))
                with pytest.raises(STREAM_GONE):
                    await stream.receive()


async def test_tcp_drop_is_1006() -> None:
    async def session(ws: WebSocket) -> None:
        assert await ws.receive() == "bye"
        with pytest.raises(WebSocketClosed) as info:
            await ws.receive()
        assert (info.value.code, info.value.reason) == (1006, "")
        assert ws.close_code == 1006
        with pytest.raises(WebSocketClosed) as info:
            await ws.send("x")
        assert info.value.code == 1006
        await ws.close()  # never raises on a broken connection

    with anyio.fail_after(5):
        async with one_shot_server(ws_handler(session)) as port, raw_client(port) as peer:
            await peer.send_frame(OP_TEXT, b"bye")
            await peer.stream.aclose()


@pytest.mark.parametrize("fragmented", [False, True])
async def test_message_too_big_is_1009(fragmented: bool) -> None:
    async def session(ws: WebSocket) -> None:
        assert await ws.receive() == b"a" * 1000  # exactly the limit is fine
        with pytest.raises(WebSocketClosed) as info:
            await ws.receive()
        assert info.value.code == 1009
        assert ws.close_code == 1009

    with anyio.fail_after(5):
        async with (
            one_shot_server(ws_handler(session, max_message_size=1000)) as port,
            raw_client(port) as peer,
        ):
            await peer.send_frame(OP_BINARY, b"a" * 1000)
            if fragmented:
                fragments = [frame(OP_CONT, b"b" * 100, fin=False) for _ in range(20)]
                await peer.stream.send(frame(OP_TEXT, b"b" * 100, fin=False) + b"".join(fragments))
            else:  # announces 1 GB, the limit trips long before it is buffered
                await peer.stream.send(frame(OP_BINARY, b"c" * 2000, length=10**9))
            close = await peer.expect_close()
            assert close.code == 1009
            if fragmented:  # its Close ends our drain at once
                await peer.send_frame(OP_CLOSE, close_payload(1000))
            else:  # inside a frame that never ends, it can only hang up
                await peer.stream.send_eof()
            await peer.expect_eof()


async def test_non_ascii_text_size_counts_utf8_bytes() -> None:
    async def session(ws: WebSocket) -> None:
        assert await ws.receive() == "é" * 50  # 100 bytes
        with pytest.raises(WebSocketClosed) as info:
            await ws.receive()
        assert info.value.code == 1009

    with anyio.fail_after(5):
        async with (
            one_shot_server(ws_handler(session, max_message_size=100)) as port,
            raw_client(port) as peer,
        ):
            await peer.send_frame(OP_TEXT, ("é" * 50).encode())
            await peer.send_frame(OP_TEXT, ("é" * 51).encode())  # 51 chars but 102 bytes
            assert (await peer.expect_close()).code == 1009
            await peer.send_frame(OP_CLOSE, close_payload(1000))


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        pytest.param([frame(OP_TEXT, b"ok \xff\xfe")], 1007, id="bad-utf8"),
        pytest.param(
            [frame(OP_TEXT, b"ok \xc3", fin=False), frame(OP_CONT, b"(")], 1007, id="bad-utf8-split"
        ),
        pytest.param([frame(OP_TEXT, b"unmasked", mask=False)], 1002, id="unmasked"),
        pytest.param([frame(0x3, b"opcode 3")], 1002, id="bad-opcode"),
        pytest.param([frame(OP_CONT, b"orphan")], 1002, id="orphan-continuation"),
        pytest.param([frame(OP_PING, b"p", fin=False)], 1002, id="fragmented-ping"),
    ],
)
async def test_protocol_errors(frames: list[bytes], code: int) -> None:
    async def session(ws: WebSocket) -> None:
        with pytest.raises(WebSocketClosed) as info:
            await ws.receive()
        assert info.value.code == code
        assert ws.close_code == code

    with anyio.fail_after(5):
        async with one_shot_server(ws_handler(session)) as port, raw_client(port) as peer:
            await peer.stream.send(b"".join(frames))
            assert (await peer.expect_close()).code == code
            await peer.send_frame(OP_CLOSE, close_payload(1000))  # ends our drain at once
            await peer.expect_eof()


async def test_concurrent_sends_do_not_interleave() -> None:
    messages: list[str | bytes] = [
        (chr(65 + i % 26) * (30_000 + i) if i % 2 else bytes([i]) * (30_000 + i)) for i in range(40)
    ]

    async def session(ws: WebSocket) -> None:
        async with anyio.create_task_group() as tg:
            for message in messages:
                tg.start_soon(ws.send, message)
        await ws.close()

    with anyio.fail_after(5):
        async with one_shot_server(ws_handler(session)) as port, raw_client(port) as peer:
            received = [await peer.message() for _ in messages]
            await peer.expect_close()
            await peer.send_frame(OP_CLOSE, close_payload(1000))
            await peer.expect_eof()
    assert sorted(received, key=len) == messages


async def test_server_tcp_nodelay_and_addresses() -> None:
    async def session(ws: WebSocket) -> None:
        sock = ws.stream.extra(SocketAttribute.raw_socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert ws.local_address is not None
        assert ws.remote_address is not None
        assert ws.local_address[0] == "127.0.0.1"
        assert ws.subprotocol is None
        await ws.abort()
        assert ws.close_code == 1006

    with anyio.fail_after(5):
        async with one_shot_server(ws_handler(session)) as port, raw_client(port) as peer:
            await peer.expect_eof()


async def test_concurrent_receive_is_refused() -> None:
    async def session(ws: WebSocket) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ws.receive)
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(RuntimeError):
                await ws.receive()
            await ws.send("go")
        await ws.abort()

    with anyio.fail_after(5):
        async with one_shot_server(ws_handler(session)) as port, raw_client(port) as peer:
            assert await peer.message() == "go"
            await peer.send_frame(OP_TEXT, b"for the first receiver")
            await peer.expect_eof()


# -- client side against a raw server ---------------------------------------


async def test_client_request_and_trailing_bytes() -> None:
    heads: list[bytes] = []

    async def handler(stream: anyio.abc.SocketStream) -> None:
        extra = b"Sec-WebSocket-Protocol: ocpp2.0.1\r\n"
        head, peer = await raw_accept(
            stream, extra=extra, after=frame(OP_TEXT, b"early", mask=False)
        )
        heads.append(head)
        assert await peer.message() == "reply"
        await peer.send_frame(OP_CLOSE, close_payload(1000))
        await peer.expect_close()

    with anyio.fail_after(5):
        async with one_shot_server(handler) as port:
            ws = await connect(
                f"ws://127.0.0.1:{port}/ocpp/CP%2F1?x=1",
                subprotocols=["ocpp1.6", "ocpp2.0.1"],
                headers=[("Authorization", "Basic Zm9vOmJhcg==")],
            )
            assert ws.subprotocol == "ocpp2.0.1"
            sock = ws.stream.extra(SocketAttribute.raw_socket)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert ws.remote_address == ("127.0.0.1", port)
            assert await ws.receive() == "early"
            await ws.send("reply")
            with pytest.raises(WebSocketClosed) as info:
                await ws.receive()
            assert info.value.code == 1000
    head = heads[0]
    assert head.startswith(b"GET /ocpp/CP%2F1?x=1 HTTP/1.1\r\n")
    assert header(head, b"host") == b"127.0.0.1:%d" % port
    assert header(head, b"upgrade") == b"websocket"
    assert header(head, b"connection") == b"Upgrade"
    assert header(head, b"sec-websocket-version") == b"13"
    assert header(head, b"sec-websocket-protocol") == b"ocpp1.6, ocpp2.0.1"
    assert header(head, b"authorization") == b"Basic Zm9vOmJhcg=="
    assert header(head, b"sec-websocket-extensions") is None


async def test_client_ipv6_literal() -> None:
    try:
        listener = await anyio.create_tcp_listener(local_host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback")
    await listener.aclose()
    heads: list[bytes] = []

    async def handler(stream: anyio.abc.SocketStream) -> None:
        head, peer = await raw_accept(stream)
        heads.append(head)
        await peer.send_frame(OP_CLOSE, close_payload(1001))
        await peer.expect_close()

    with anyio.fail_after(5):
        async with one_shot_server(handler, host="::1") as port:
            ws = await connect(f"ws://[::1]:{port}")
            with pytest.raises(WebSocketClosed) as info:
                await ws.receive()
            assert info.value.code == 1001
    assert heads[0].startswith(b"GET / HTTP/1.1\r\n")
    assert header(heads[0], b"host") == b"[::1]:%d" % port


async def test_client_handshake_error_401() -> None:
    async def handler(stream: anyio.abc.SocketStream) -> None:
        await read_head(stream, bytearray())
        await stream.send(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic\r\n"
            b"Content-Length: 13\r\n\r\nbad password!"
        )

    with anyio.fail_after(5):
        async with one_shot_server(handler) as port:
            with pytest.raises(HandshakeError) as info:
                await connect(f"ws://127.0.0.1:{port}/")
    assert info.value.status == 401
    assert info.value.body == b"bad password!"


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(b"Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n", id="bad-accept"),
        pytest.param(b"", id="no-accept"),
    ],
)
async def test_client_rejects_bad_accept(response: bytes) -> None:
    async def handler(stream: anyio.abc.SocketStream) -> None:
        await read_head(stream, bytearray())
        await stream.send(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + response
            + b"\r\n"
        )

    with anyio.fail_after(5):
        async with one_shot_server(handler) as port:
            with pytest.raises(HandshakeError, match="Accept") as info:
                await connect(f"ws://127.0.0.1:{port}/")
    assert info.value.status is None


async def test_client_rejects_unoffered_subprotocol() -> None:
    async def handler(stream: anyio.abc.SocketStream) -> None:
        await raw_accept(stream, extra=b"Sec-WebSocket-Protocol: ocpp2.0.1\r\n")

    with anyio.fail_after(5):
        async with one_shot_server(handler) as port:
            with pytest.raises(HandshakeError, match="subprotocol") as info:
                await connect(f"ws://127.0.0.1:{port}/", subprotocols=["ocpp1.6"])
    assert info.value.status is None


async def test_client_handshake_timeout_and_refused() -> None:
    done = anyio.Event()

    async def handler(stream: anyio.abc.SocketStream) -> None:
        await done.wait()  # never answers

    with anyio.fail_after(5):
        async with one_shot_server(handler) as port:
            with pytest.raises(TimeoutError):
                await connect(f"ws://127.0.0.1:{port}/", handshake_timeout=0.2)
            done.set()
    with pytest.raises(OSError):  # nobody listens there anymore
        await connect(f"ws://127.0.0.1:{port}/")
    with pytest.raises(ValueError):
        await connect(f"http://127.0.0.1:{port}/")


async def test_client_eof_during_handshake_is_connection_error() -> None:
    async def handler(stream: anyio.abc.SocketStream) -> None:
        await read_head(stream, bytearray())
        await stream.send(b"HTTP/1.1 101 Switching")

    with anyio.fail_after(5):
        async with one_shot_server(handler) as port:
            with pytest.raises(ConnectionError):
                await connect(f"ws://127.0.0.1:{port}/")


async def test_client_ping_pong() -> None:
    async def handler(stream: anyio.abc.SocketStream) -> None:
        _, peer = await raw_accept(stream)
        ping = await peer.event()
        assert isinstance(ping, Ping)
        assert ping.payload == b"one"
        ping2 = await peer.event()
        assert isinstance(ping2, Ping)
        await peer.send_frame(OP_PONG, b"unknown")  # ignored
        await peer.send_frame(OP_PONG, ping2.payload)  # resolves both pings
        await peer.send_frame(OP_PING, b"server ping")
        pong = await peer.event()
        assert isinstance(pong, Pong)
        assert pong.payload == b"server ping"
        await peer.send_frame(OP_TEXT, b"end")
        assert (await peer.expect_close()).code == 1000
        await peer.send_frame(OP_CLOSE, close_payload(1000))

    with anyio.fail_after(5):
        async with one_shot_server(handler) as port:
            ws = await connect(f"ws://127.0.0.1:{port}/")
            got: list[str | bytes] = []

            async def reader() -> None:
                got.append(await ws.receive())

            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                tg.start_soon(ws.ping, b"one")
                await anyio.wait_all_tasks_blocked()
                with pytest.raises(ValueError):
                    await ws.ping(b"one")
                await ws.ping()
            assert got == ["end"]
            await ws.close()
            assert ws.close_code == 1000


async def test_ping_fails_when_connection_closes() -> None:
    async def handler(stream: anyio.abc.SocketStream) -> None:
        _, peer = await raw_accept(stream)
        assert isinstance(await peer.event(), Ping)
        await peer.send_frame(OP_CLOSE, close_payload(1001, "going away"))
        await peer.expect_close()

    with anyio.fail_after(5):
        async with one_shot_server(handler) as port:
            ws = await connect(f"ws://127.0.0.1:{port}/")
            results: list[WebSocketClosed] = []

            async def reader() -> None:
                with pytest.raises(WebSocketClosed):
                    await ws.receive()

            async def pinger() -> None:
                try:
                    await ws.ping()
                except WebSocketClosed as exc:
                    results.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                tg.start_soon(pinger)
            assert (results[0].code, results[0].reason) == (1001, "going away")
            with pytest.raises(WebSocketClosed):
                await ws.ping()


async def test_client_close_handshake() -> None:
    async def handler(stream: anyio.abc.SocketStream) -> None:
        _, peer = await raw_accept(stream)
        close = await peer.expect_close()
        assert (close.code, close.reason) == (4030, "client bye")
        await peer.send_frame(OP_CLOSE, close_payload(4031, "other"))
        await peer.expect_eof()

    with anyio.fail_after(5):
        async with one_shot_server(handler) as port:
            ws = await connect(f"ws://127.0.0.1:{port}/")
            await ws.close(4030, "client bye")
            assert (ws.close_code, ws.close_reason) == (4031, "other")  # the peer said otherwise
            with pytest.raises(ValueError):
                await ws.close(1006)


async def test_ping_is_cancellable() -> None:
    async def handler(stream: anyio.abc.SocketStream) -> None:
        _, peer = await raw_accept(stream)
        assert isinstance(await peer.event(), Ping)  # never answered
        ping = await peer.event()
        assert isinstance(ping, Ping)
        await peer.send_frame(OP_PONG, ping.payload)
        await peer.expect_close()
        await peer.send_frame(OP_CLOSE)

    with anyio.fail_after(5):
        async with one_shot_server(handler) as port:
            ws = await connect(f"ws://127.0.0.1:{port}/")

            async def reader() -> None:
                with pytest.raises(WebSocketClosed):
                    await ws.receive()

            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                async with anyio.create_task_group() as pings:
                    pings.start_soon(ws.ping, b"x")
                    await anyio.wait_all_tasks_blocked()
                    pings.cancel_scope.cancel()
                await ws.ping(b"x")  # the cancelled waiter was removed
                await ws.close()
            assert ws.close_code == 1000


async def test_peer_drops_tcp_after_our_close() -> None:
    async def handler(stream: anyio.abc.SocketStream) -> None:
        _, peer = await raw_accept(stream)
        await peer.expect_close()  # then closes TCP without answering

    with anyio.fail_after(5):
        async with one_shot_server(handler) as port:
            ws = await connect(f"ws://127.0.0.1:{port}/")
            await ws.close(4050, "bye")
            assert (ws.close_code, ws.close_reason) == (4050, "bye")


async def test_client_close_timeout() -> None:
    done = anyio.Event()

    async def handler(stream: anyio.abc.SocketStream) -> None:
        _, peer = await raw_accept(stream)
        assert (await peer.expect_close()).code == 1000
        await peer.expect_eof()  # never answers; the client gives up and drops TCP
        done.set()

    with anyio.fail_after(5):
        async with one_shot_server(handler) as port:
            ws = await connect(f"ws://127.0.0.1:{port}/")
            await ws.close(timeout=0.2)
            assert ws.close_code == 1000
            await done.wait()


async def test_a_cancelled_close_drops_tcp() -> None:
    """Cancelled while it waits for the peer's Close, close() still lets the
    connection go: the peer sees EOF, nothing is left open."""
    done = anyio.Event()

    async def handler(stream: anyio.abc.SocketStream) -> None:
        _, peer = await raw_accept(stream)
        assert (await peer.expect_close()).code == 1002
        await peer.expect_eof()  # never answers
        done.set()

    with anyio.fail_after(5):
        async with one_shot_server(handler) as port:
            ws = await connect(f"ws://127.0.0.1:{port}/")
            with anyio.move_on_after(0.2) as scope:
                await ws.close(1002, "no subprotocol agreed", timeout=30)
            assert scope.cancelled_caught
            await done.wait()
            assert ws.close_code == 1006


async def test_abort() -> None:
    async def handler(stream: anyio.abc.SocketStream) -> None:
        _, peer = await raw_accept(stream)
        await peer.expect_eof()

    with anyio.fail_after(5):
        async with one_shot_server(handler) as port:
            ws = await connect(f"ws://127.0.0.1:{port}/")
            await ws.abort()
            assert ws.close_code == 1006
            with pytest.raises(WebSocketClosed) as info:
                await ws.receive()
            assert info.value.code == 1006


# -- TLS (our client and server; plumbing only) ----------------------------


async def test_wss_roundtrip() -> None:
    server_context, client_context = tls_contexts("localhost")

    async def handler(stream: anyio.abc.SocketStream) -> None:
        tls = await TLSStream.wrap(stream, server_side=True, ssl_context=server_context)
        request = await read_upgrade_request(tls)
        ws = await accept_upgrade(tls, request, subprotocol="ocpp1.6")
        with pytest.raises(WebSocketClosed) as info:
            while True:
                await ws.send(await ws.receive())
        assert info.value.code == 1000

    with anyio.fail_after(5):
        async with one_shot_server(handler) as port:
            ws = await connect(
                f"wss://localhost:{port}/", subprotocols=["ocpp1.6"], ssl_context=client_context
            )
            assert ws.stream.extra(TLSAttribute.peer_certificate) is not None
            await ws.send("secure")
            assert await ws.receive() == "secure"
            await ws.close()
            assert ws.close_code == 1000


async def test_wss_to_plain_server_is_oserror() -> None:
    async def handler(stream: anyio.abc.SocketStream) -> None:
        await stream.receive()  # the TLS ClientHello; then hang up

    with anyio.fail_after(5):
        async with one_shot_server(handler) as port:
            with pytest.raises(OSError):
                await connect(f"wss://127.0.0.1:{port}/")
