"""Close codes: one rule (`close_codes`) for the codes we send and the ones we
accept from a peer, end to end.  The raw peers here build and parse frames by
hand: wsproto, which our WebSocket runs on, would itself refuse 1014."""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import pytest
from anyio.abc import SocketAttribute
from wsproto.connection import ConnectionType

from ocpp_rpc import CloseResult, RPCClient, RPCServer, ServerClient
from ocpp_rpc._transport.websocket import WebSocket, WebSocketClosed, accept_upgrade, connect
from ocpp_rpc._transport.websocket import read_upgrade_request as read_request

pytestmark = pytest.mark.anyio

# Registered with IANA after RFC 6455: Service Restart, Try Again Later, Bad Gateway.
REGISTERED = [1012, 1013, 1014]
ACCEPTED = [1000, 1003, 1007, 1011, *REGISTERED, 3000, 4999]
REFUSED = [999, 1004, 1005, 1006, 1015, 1016, 2999, 5000]


def close_frame(code: int, reason: bytes = b"", *, mask: bool) -> bytes:
    payload = struct.pack("!H", code) + reason
    if not mask:
        return bytes([0x88, len(payload)]) + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes([0x88, 0x80 | len(payload)]) + key + masked


async def read_frame(stream: anyio.abc.ByteStream, buf: bytearray) -> tuple[int, bytes]:
    """One short frame (payload under 126 bytes), unmasked: (opcode, payload)."""
    while len(buf) < 2 or len(buf) < 2 + (buf[1] & 0x7F) + (4 if buf[1] & 0x80 else 0):
        buf += await stream.receive()
    opcode, masked, n = buf[0] & 0x0F, buf[1] & 0x80, buf[1] & 0x7F
    assert n < 126
    start = 2 + (4 if masked else 0)
    payload = bytes(buf[start : start + n])
    if masked:
        key = buf[2:6]
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    del buf[: start + n]
    return opcode, payload


async def read_close(stream: anyio.abc.ByteStream, buf: bytearray) -> tuple[int, bytes]:
    opcode, payload = await read_frame(stream, buf)
    assert opcode == 0x8, (opcode, payload)
    return struct.unpack("!H", payload[:2])[0], payload[2:]


async def expect_eof(stream: anyio.abc.ByteStream) -> None:
    with pytest.raises(anyio.EndOfStream):
        while True:
            await stream.receive()


@asynccontextmanager
async def listening(
    serve: object,
) -> AsyncIterator[int]:
    """A TCP listener on 127.0.0.1 that runs `serve(stream)` for one connection."""
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        socket_listener = listener.listeners[0]
        assert isinstance(socket_listener, anyio.abc.SocketListener)

        async def accept_one() -> None:
            async with await socket_listener.accept() as stream:
                await serve(stream)  # type: ignore[operator]

        async with anyio.create_task_group() as tg:
            tg.start_soon(accept_one)
            yield listener.extra(SocketAttribute.local_port)


# -- RPCClient and RPCServer over real sockets --------------------------------


@asynccontextmanager
async def rpc_pair() -> AsyncIterator[tuple[RPCClient, ServerClient]]:
    async with RPCServer(ping_interval=None) as server:
        accepted: list[ServerClient] = []
        ready = anyio.Event()

        @server.on_client
        async def on_client(client: ServerClient) -> None:
            accepted.append(client)
            ready.set()

        port = (await server.listen(host="127.0.0.1")).port
        url = f"ws://127.0.0.1:{port}/ocpp"
        async with RPCClient(url, "CP1", reconnect=False, ping_interval=None) as client:
            await ready.wait()
            yield client, accepted[0]


@pytest.mark.parametrize("code", REGISTERED)
async def test_a_client_closes_with_a_registered_code_and_the_server_sees_it(code: int) -> None:
    with anyio.fail_after(5):
        async with rpc_pair() as (client, served):
            assert await client.close(code=code, reason="bye") == CloseResult(code, "bye")
            assert await served.wait_closed() == CloseResult(code, "bye")


@pytest.mark.parametrize("code", REGISTERED)
async def test_the_server_closes_a_client_with_a_registered_code_and_it_sees_it(code: int) -> None:
    with anyio.fail_after(5):
        async with rpc_pair() as (client, served):
            assert await served.close(code=code, reason="later") == CloseResult(code, "later")
            assert await client.wait_closed() == CloseResult(code, "later")


# -- a raw peer's Close ---------------------------------------------------------


@pytest.mark.parametrize("code", ACCEPTED)
async def test_the_server_takes_a_peers_close_with_any_code_the_rule_allows(code: int) -> None:
    results: list[WebSocketClosed] = []

    async def serve(stream: anyio.abc.SocketStream) -> None:
        ws = await accept_upgrade(stream, await read_request(stream))
        with pytest.raises(WebSocketClosed) as info:
            await ws.receive()
        results.append(info.value)

    with anyio.fail_after(5):
        async with listening(serve) as port:
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                key = base64.b64encode(os.urandom(16))
                await stream.send(
                    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
                    + close_frame(code, b"why", mask=True)
                )
                buf = bytearray()
                while b"\r\n\r\n" not in buf:
                    buf += await stream.receive()
                assert buf.startswith(b"HTTP/1.1 101 ")
                del buf[: buf.index(b"\r\n\r\n") + 4]
                assert await read_close(stream, buf) == (code, b"why")  # echoed as it came
                await expect_eof(stream)
    assert (results[0].code, results[0].reason) == (code, "why")


@pytest.mark.parametrize("code", REGISTERED)
async def test_the_client_takes_a_servers_close_with_a_registered_code(code: int) -> None:
    async def serve(stream: anyio.abc.SocketStream) -> None:
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            buf += await stream.receive()
        key = next(line.split(b":", 1)[1].strip() for line in buf.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        from wsproto.utilities import generate_accept_token

        await stream.send(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + generate_accept_token(key) + b"\r\n\r\n"
            + close_frame(code, b"restart", mask=False)
        )
        rest = bytearray()
        assert await read_close(stream, rest) == (code, b"restart")
        await expect_eof(stream)

    with anyio.fail_after(5):
        async with listening(serve) as port:
            ws = await connect(f"ws://127.0.0.1:{port}/")
            with pytest.raises(WebSocketClosed) as info:
                await ws.receive()
            assert (info.value.code, info.value.reason) == (code, "restart")
            assert ws.close_code == code


@pytest.mark.parametrize("code", REFUSED)
async def test_a_peers_close_with_a_code_the_rule_refuses_fails_with_1002(code: int) -> None:
    async def serve(stream: anyio.abc.SocketStream) -> None:
        ws = WebSocket(stream, ConnectionType.SERVER)
        with pytest.raises(WebSocketClosed) as info:
            await ws.receive()
        assert info.value.code == 1002

    with anyio.fail_after(5):
        async with listening(serve) as port:
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(close_frame(code, mask=True))
                buf = bytearray()
                assert (await read_close(stream, buf))[0] == 1002
                await expect_eof(stream)
