"""Our last frames reach a slow peer when the connection closes: the Close we
echo and the Close of a failure (1009) are flushed, not dropped with TCP."""

from __future__ import annotations

import fcntl
import socket
import sys
import termios
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute
from harness import Pair, served, wait_until
from rawpeer import PeerClosed
from wsproto import events as ev

pytestmark = pytest.mark.anyio

EVERY_LOOP = pytest.mark.parametrize(
    "anyio_backend",
    ["asyncio", pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"), "trio"],
)
BIG = "x" * 50_000  # under the stream's 64 KiB write high-water mark


def unread(sock: socket.socket) -> int:
    """Bytes waiting in `sock`, not yet read."""
    return int.from_bytes(fcntl.ioctl(sock.fileno(), termios.FIONREAD, bytes(4)), sys.byteorder)


@asynccontextmanager
async def backlogged(**options: Any) -> AsyncIterator[Pair]:
    """A served pair with small socket buffers, where our side has sent BIG and
    the peer has read none of it yet."""
    async with served(**options) as pair:
        ours = pair.ours._connection.transport
        ours.stream.extra(SocketAttribute.raw_socket).setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        peer_sock = pair.peer.stream.extra(SocketAttribute.raw_socket)
        peer_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await pair.ours.send_raw(BIG)
        with anyio.fail_after(2):  # the writer handed it over; the peer has not read
            await wait_until(lambda: unread(peer_sock) > 0 and not ours._write_lock.locked())
        yield pair


async def our_close_is_on_its_way(pair: Pair) -> None:
    """Our side has sent (or queued behind the backlog) its Close: asyncio's
    transport then holds it while the stream closes, trio's send waits."""
    with anyio.fail_after(2):
        await wait_until(lambda: pair.ours._connection.transport._close_sent is not None)


@EVERY_LOOP
async def test_close_echo_reaches_a_slow_peer_after_a_backlog() -> None:
    with anyio.fail_after(10):
        async with backlogged() as pair:
            await pair.peer._send(ev.CloseConnection(code=1000, reason="bye"))
            await our_close_is_on_its_way(pair)  # our side answers the close and ends
            received = await pair.peer.receive()  # now the peer reads everything
            assert received == BIG
            with pytest.raises(PeerClosed) as closed:
                await pair.peer.receive()
            assert (closed.value.code, closed.value.reason) == (1000, "bye")


@EVERY_LOOP
async def test_failure_close_reaches_a_slow_peer_after_a_backlog() -> None:
    with anyio.fail_after(10):
        async with backlogged(max_message_size=60_000) as pair:
            await pair.peer.send_text("y" * 70_000)  # too big: we fail with 1009
            await our_close_is_on_its_way(pair)
            assert await pair.peer.receive() == BIG
            with pytest.raises(PeerClosed) as closed:
                await pair.peer.receive()
            assert closed.value.code == 1009
