"""Pings, Pongs and Closes of a server WebSocket against a raw client: Pings
and Pongs are framed without wsproto, whose connection is made only for what
needs it (here a Close, a fragmented message, a bad frame)."""

from __future__ import annotations

import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import pytest
from anyio.abc import SocketAttribute
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage

from ocpp_rpc._transport.frames import unmask
from ocpp_rpc._transport.websocket import WebSocket, WebSocketClosed

pytestmark = pytest.mark.anyio

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
STREAM_GONE = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError)


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """One masked frame, as a client sends it."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    else:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    key = os.urandom(4)
    return head + key + unmask(key, payload)


class RawClient:
    """Frames by hand out, the server's frames read by wsproto."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.proto = Connection(ConnectionType.CLIENT)

    async def send(self, *frames: bytes) -> None:
        await self.stream.send(b"".join(frames))  # one write: usually one read there

    async def event(self) -> Event:
        while True:
            for event in self.proto.events():
                return event
            self.proto.receive_data(await self.stream.receive())

    async def expect_eof(self) -> bytes:
        """Read to the end; what came meanwhile."""
        rest = b""
        while True:
            try:
                rest += await self.stream.receive()
            except STREAM_GONE:
                return rest


@asynccontextmanager
async def server_and_client() -> AsyncIterator[tuple[WebSocket, RawClient]]:
    """A server WebSocket on one end of a TCP connection, a raw client on the other."""
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        socket_listener = listener.listeners[0]
        assert isinstance(socket_listener, anyio.abc.SocketListener)
        port = listener.extra(SocketAttribute.local_port)
        async with await anyio.connect_tcp("127.0.0.1", port) as client_stream:
            ws = WebSocket(await socket_listener.accept(), ConnectionType.SERVER)
            try:
                yield ws, RawClient(client_stream)
            finally:
                await ws.abort()


async def echo(ws: WebSocket) -> None:
    """Answer every message with "re:" + it, until the WebSocket closes."""
    with pytest.raises(WebSocketClosed):
        while True:
            message = await ws.receive()
            await ws.send("re:" + message if isinstance(message, str) else b"re:" + message)


async def test_data_pings_and_pongs_both_ways_never_make_wsproto_a_close_does() -> None:
    with anyio.fail_after(5):
        async with server_and_client() as (ws, client), anyio.create_task_group() as tg:
            tg.start_soon(echo, ws)
            await client.send(frame(TEXT, b"one"), frame(PING, b"a"), frame(BINARY, b"\x00"),
                              frame(PONG, b"unasked"))
            assert await client.event() == TextMessage("re:one")
            assert await client.event() == Pong(b"a")
            assert await client.event() == BytesMessage(b"re:\x00")
            pinged = anyio.Event()

            async def ping() -> None:
                await ws.ping(b"ours")
                pinged.set()

            tg.start_soon(ping)
            assert await client.event() == Ping(b"ours")
            await client.send(frame(PONG, b"ours"))
            await pinged.wait()
            await client.send(frame(TEXT, b"two"))
            assert await client.event() == TextMessage("re:two")
            assert ws._splitter._conn is None

            await client.send(frame(CLOSE, struct.pack("!H", 4000) + b"bye"))
            echoed = await client.event()
            assert isinstance(echoed, CloseConnection)
            assert (echoed.code, echoed.reason) == (4000, "bye")
            await client.expect_eof()
        assert (ws.close_code, ws.close_reason) == (4000, "bye")
        assert ws._splitter._conn is not None


@pytest.mark.parametrize("payload", [b"", b"\x00\xff", b"x" * 125, bytes(range(125))])
async def test_ping_payloads_round_trip_both_ways(payload: bytes) -> None:
    with anyio.fail_after(5):
        async with server_and_client() as (ws, client), anyio.create_task_group() as tg:
            tg.start_soon(echo, ws)
            await client.send(frame(PING, payload))
            assert await client.event() == Pong(payload)
            tg.start_soon(ws.ping, payload)
            assert await client.event() == Ping(payload)
            await client.send(frame(PONG, payload))
            with pytest.raises(ValueError, match="payload too long"):  # wsproto's error
                await ws.ping(payload + b"x" * 126)
            await client.send(frame(TEXT, b"still open"))
            assert await client.event() == TextMessage("re:still open")  # after the Pong
            assert ws._splitter._conn is None
            tg.cancel_scope.cancel()


async def test_a_ping_in_one_read_with_data_frames_is_answered_in_order() -> None:
    with anyio.fail_after(5):
        async with server_and_client() as (ws, client), anyio.create_task_group() as tg:
            tg.start_soon(echo, ws)
            await client.send(frame(TEXT, b"1"), frame(PING, b"p"), frame(TEXT, b"2"))
            assert [await client.event() for _ in range(3)] == [
                TextMessage("re:1"), Pong(b"p"), TextMessage("re:2"),
            ]
            assert ws._splitter._conn is None
            tg.cancel_scope.cancel()


async def test_a_ping_between_fragments_is_answered_before_the_message() -> None:
    with anyio.fail_after(5):
        async with server_and_client() as (ws, client), anyio.create_task_group() as tg:
            tg.start_soon(echo, ws)
            await client.send(frame(TEXT, b"h\xc3", fin=False), frame(PING, b"q"),
                              frame(CONT, b"\xa9llo", fin=False), frame(PONG, b"r"),
                              frame(CONT, b"!"))
            assert await client.event() == Pong(b"q")
            assert await client.event() == TextMessage("re:héllo!")
            assert ws._splitter._conn is None  # made for the message, dropped after it
            tg.cancel_scope.cancel()


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(frame(PING, b"x" * 126), id="ping-126"),
        pytest.param(frame(PONG, b"x" * 126), id="pong-126"),
        pytest.param(frame(PING, b"p", fin=False), id="fragmented-ping"),
        pytest.param(frame(PONG, b"p", fin=False), id="fragmented-pong"),
    ],
)
async def test_a_bad_control_frame_still_fails_with_1002(bad: bytes) -> None:
    with anyio.fail_after(5):
        async with server_and_client() as (ws, client):
            await client.send(frame(PING, b"ok"), bad)
            with pytest.raises(WebSocketClosed) as info:
                await ws.receive()
            assert info.value.code == 1002
            assert await client.event() == Pong(b"ok")
            close = await client.event()
            assert isinstance(close, CloseConnection) and close.code == 1002
            await client.send(frame(CLOSE, struct.pack("!H", 1000)))  # ends the drain at once
            await client.expect_eof()
            assert ws.close_code == 1002


async def test_our_close_after_pings_does_the_closing_handshake() -> None:
    with anyio.fail_after(5):
        async with server_and_client() as (ws, client), anyio.create_task_group() as tg:
            tg.start_soon(echo, ws)
            await client.send(frame(PING, b"1"))
            assert await client.event() == Pong(b"1")
            tg.start_soon(ws.close, 4001, "done")
            close = await client.event()
            assert isinstance(close, CloseConnection)
            assert (close.code, close.reason) == (4001, "done")
            await client.send(frame(PING, b"late"), frame(CLOSE))  # no code: ours stands
            assert await client.expect_eof() == b""  # no Pong once our Close is out
        assert (ws.close_code, ws.close_reason) == (4001, "done")
