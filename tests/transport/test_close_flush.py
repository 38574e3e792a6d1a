"""Our last frames reach a slow peer when the connection closes: the Close we
echo and the Close of a failure (1009) are flushed, not dropped with TCP."""

from __future__ import annotations

import socket

import anyio
import pytest
from anyio.abc import SocketAttribute
from harness import served
from rawpeer import PeerClosed
from wsproto import events as ev

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "anyio_backend",
    ["asyncio", pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"), "trio"],
)
async def test_close_echo_reaches_a_slow_peer_after_a_backlog() -> None:
    big = "x" * 50_000  # under the stream's 64 KiB write high-water mark
    with anyio.fail_after(10):
        async with served() as pair:
            ours = pair.ours._connection.transport.stream.extra(SocketAttribute.raw_socket)
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            peer_sock = pair.peer.stream.extra(SocketAttribute.raw_socket)
            peer_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await pair.ours.send_raw(big)
            await anyio.sleep(0.1)  # the writer handed it over; the peer has not read
            await pair.peer._send(ev.CloseConnection(code=1000, reason="bye"))
            await anyio.sleep(0.2)  # our side answers the close and ends
            received = await pair.peer.receive()  # now the peer reads everything
            assert received == big
            with pytest.raises(PeerClosed) as closed:
                await pair.peer.receive()
            assert (closed.value.code, closed.value.reason) == (1000, "bye")


@pytest.mark.parametrize(
    "anyio_backend",
    ["asyncio", pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"), "trio"],
)
async def test_failure_close_reaches_a_slow_peer_after_a_backlog() -> None:
    big = "x" * 50_000
    with anyio.fail_after(10):
        async with served(max_message_size=60_000) as pair:
            ours = pair.ours._connection.transport.stream.extra(SocketAttribute.raw_socket)
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            peer_sock = pair.peer.stream.extra(SocketAttribute.raw_socket)
            peer_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await pair.ours.send_raw(big)
            await anyio.sleep(0.1)
            await pair.peer.send_text("y" * 70_000)  # too big: we fail with 1009
            await anyio.sleep(0.3)
            assert await pair.peer.receive() == big
            with pytest.raises(PeerClosed) as closed:
                await pair.peer.receive()
            assert closed.value.code == 1009
