"""Failing a connection (1002, 1007, 1009, a write timeout) sends our Close,
then reads and drops the peer's bytes until its Close or EOF before closing
the socket: a socket closed with bytes unread resets the connection, and a
peer that gets the reset drops our Close unread."""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.abc import SocketAttribute
from wsproto.connection import ConnectionType

from ocpp_rpc import RPCServer
from ocpp_rpc._transport.websocket import WebSocket, WebSocketClosed

pytestmark = pytest.mark.anyio

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE = 0x0, 0x1, 0x2, 0x8


# -- a websockets (the PyPI library) client, as the user ran it ------------


def send_too_big_with_websockets(url: str) -> int | None:
    """Send a fragmented message over the server's limit from a `websockets`
    asyncio client (in this worker thread); the code of the Close it got."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async def run() -> int | None:
        async with connect(url, open_timeout=5, close_timeout=5) as ws:
            try:
                await ws.send(["x" * 1000 for _ in range(200)])  # 200 kB in 200 frames
                await ws.recv()
            except ConnectionClosed as exc:
                return exc.rcvd.code if exc.rcvd is not None else None
        return -1  # no close at all

    return asyncio.run(run())


async def test_a_websockets_client_over_the_size_limit_always_gets_1009() -> None:
    pytest.importorskip("websockets")
    async with RPCServer(ping_interval=None, max_message_size=10_000) as server:
        port = (await server.listen(host="127.0.0.1")).port
        url = f"ws://127.0.0.1:{port}/ocpp/CP1"
        with anyio.fail_after(30):
            codes = [await anyio.to_thread.run_sync(send_too_big_with_websockets, url)
                     for _ in range(20)]
    assert codes == [1009] * 20


# -- raw peers --------------------------------------------------------------------


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bool = True) -> bytes:
    n = len(payload)
    head = bytearray([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head.append(bit | n)
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    mask_int = int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return bytes(head) + key + (int.from_bytes(payload, "big") ^ mask_int).to_bytes(n, "big")


class Reader:
    """Unmasked frames from our server side, parsed by hand."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def _need(self, n: int) -> None:
        while len(self.buf) < n:
            self.buf += await self.stream.receive()

    async def frame(self) -> tuple[int, bytes]:
        await self._need(2)
        n, start = self.buf[1] & 0x7F, 2
        if n >= 126:
            size = 2 if n == 126 else 8
            await self._need(2 + size)
            n, start = int.from_bytes(self.buf[2 : 2 + size], "big"), 2 + size
        await self._need(start + n)
        opcode, payload = self.buf[0] & 0x0F, bytes(self.buf[start : start + n])
        del self.buf[: start + n]
        return opcode, payload

    async def close(self) -> tuple[int, str]:
        """Skip data frames up to a Close."""
        while True:
            opcode, payload = await self.frame()
            if opcode == OP_CLOSE:
                return struct.unpack("!H", payload[:2])[0], payload[2:].decode()

    async def clean_eof(self) -> None:
        """The connection ends with a FIN: a reset would raise BrokenResourceError."""
        with pytest.raises(anyio.EndOfStream):
            while True:
                await self.stream.receive()


@asynccontextmanager
async def ws_and_peer(
    make: Callable[[anyio.abc.SocketStream], WebSocket] | None = None,
) -> AsyncIterator[tuple[WebSocket, anyio.abc.SocketStream]]:
    """Our server-side WebSocket (upgrade skipped) and the raw TCP peer facing it."""
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as multi:
        listener = multi.listeners[0]
        assert isinstance(listener, anyio.abc.SocketListener)
        port = listener.extra(SocketAttribute.local_port)
        peer = await anyio.connect_tcp("127.0.0.1", port)
        stream = await listener.accept()
        ws = make(stream) if make else WebSocket(stream, ConnectionType.SERVER,
                                                 max_message_size=1000)
        async with peer, stream:
            yield ws, peer


TRAILING = frame(OP_BINARY, b"t" * 60_000) * 16  # ~1 MB the peer still sends after the fault
FAULTS = {
    "1002": (1002, frame(OP_TEXT, b"unmasked", mask=False)),
    "1007": (1007, frame(OP_TEXT, b"\xff\xfe")),
    "1009": (1009, frame(OP_TEXT, b"x" * 600, fin=False) + frame(OP_CONT, b"x" * 600, fin=False)),
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_the_peer_gets_our_close_after_all_it_sent(fault: str) -> None:
    code, bad = FAULTS[fault]
    results: list[WebSocketClosed] = []
    with anyio.fail_after(10):
        async with ws_and_peer() as (ws, peer), anyio.create_task_group() as tg:

            async def ours() -> None:
                with pytest.raises(WebSocketClosed) as info:
                    await ws.receive()
                results.append(info.value)

            tg.start_soon(ours)
            await peer.send(bad + TRAILING)  # all of it is read: nothing blocks
            reader = Reader(peer)
            assert (await reader.close())[0] == code
            await peer.send(frame(OP_CLOSE, struct.pack("!H", 1000)))
            await reader.clean_eof()
    assert results[0].code == code


async def test_a_peer_that_never_answers_is_dropped_after_fail_timeout() -> None:
    with anyio.fail_after(10):
        async with ws_and_peer() as (ws, peer):
            ws.fail_timeout = 0.1
            await peer.send(FAULTS["1009"][1])
            started = anyio.current_time()
            with pytest.raises(WebSocketClosed):
                await ws.receive()
            assert anyio.current_time() - started < 2
            reader = Reader(peer)
            assert (await reader.close())[0] == 1009
            await reader.clean_eof()  # it sent nothing after the fault: nothing unread


async def test_a_peer_closing_tcp_ends_the_drain() -> None:
    with anyio.fail_after(10):
        async with ws_and_peer() as (ws, peer), anyio.create_task_group() as tg:

            async def hang_up_after_the_close() -> None:
                assert (await Reader(peer).close())[0] == 1007
                await peer.send_eof()

            tg.start_soon(hang_up_after_the_close)
            await peer.send(FAULTS["1007"][1])
            with pytest.raises(WebSocketClosed):
                await ws.receive()
            assert ws.close_code == 1007


class Observed(WebSocket):
    """Tells when it starts failing the connection (nothing else changes)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failing = anyio.Event()

    async def _fail(self, *args: Any, **kwargs: Any) -> None:
        self.failing.set()
        await super()._fail(*args, **kwargs)


async def receive_until_closed(ws: WebSocket) -> None:
    with pytest.raises(WebSocketClosed):
        while True:
            await ws.receive()


@pytest.mark.parametrize("writer_is_reader", [False, True], ids=["receive-idle", "receiving"])
async def test_a_write_timeout_sends_a_close_when_the_stream_allows_and_drains(
    anyio_backend: str, writer_is_reader: bool
) -> None:
    """The peer stops reading; our write times out.  A Close follows when our
    stream ended the write at a frame boundary (asyncio: always; trio: unless the
    socket took part of the frame), the peer's bytes are drained, and the
    WebSocket ends with 1006 "write timeout"."""
    big = b"x" * 2**20  # the kernel's buffers take a few of these, then writes wait
    with anyio.fail_after(10):
        async with ws_and_peer(lambda s: Observed(s, ConnectionType.SERVER)) as (ws, peer):
            assert isinstance(ws, Observed)
            ws.write_timeout = 0.3  # also the bound on failing after it: time to read it all
            frames: list[tuple[int, bytes]] = []

            async def peer_reads_once_we_fail() -> None:
                await ws.failing.wait()
                reader = Reader(peer)
                try:
                    while True:
                        frames.append(await reader.frame())
                        if frames[-1][0] == OP_CLOSE:
                            await peer.send(frame(OP_CLOSE, struct.pack("!H", 1000)))
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    pass

            async with anyio.create_task_group() as tg:
                tg.start_soon(peer_reads_once_we_fail)
                if writer_is_reader:  # a task in receive(): it does the draining
                    tg.start_soon(receive_until_closed, ws)
                with pytest.raises(WebSocketClosed) as info:
                    for _ in range(1000):
                        await ws.send(big)
                assert (info.value.code, info.value.reason) == (1006, "write timeout")
            assert (ws.close_code, ws.close_reason) == (1006, "write timeout")
    closes = [payload for opcode, payload in frames if opcode == OP_CLOSE]
    broken = getattr(ws._bounded, "_broken", False)  # trio: a frame was cut short
    if anyio_backend == "asyncio" or not broken:
        assert closes == [struct.pack("!H", 1008) + b"write timeout"]
    else:
        assert closes == []
