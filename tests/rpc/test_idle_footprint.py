"""What an idle server connection keeps for the cyclic collector to walk.

Each tracked object an idle connection holds is walked by every full pass of
the collector, and a burst of connections meets several of them: that is most
of the cost of connection setup beyond the socket's own (benchmarks/README.md,
sixth and seventh parts). The budget below is today's count plus a little, on
the Pythons whose coroutines hold their frames (3.11 on); a change that adds
objects to every connection should be a deliberate one.

The peers are plain blocking sockets in a worker thread (one socket object
each, subtracted), so that only the server's side is counted.
"""

from __future__ import annotations

import base64
import gc
import os
import socket
import sys

import anyio
import pytest
from harness import serving, wait_until

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="3.10 keeps a frame object per suspended coroutine"
)

CONNECTIONS = 100
#: Tracked objects per idle server connection without keep-alive pings, as
#: measured with anyio 4.x: asyncio 53 on 3.11, 55 on 3.12 and 56 on 3.13 (its
#: own transports and tasks grew), Trio 48; pings add their timer's 2.
BUDGET = {"asyncio": {11: 53, 12: 55}.get(sys.version_info[1], 56), "trio": 48}
PINGS = 2
SLACK = 1


def _open(port: int, first: int, count: int) -> list[socket.socket]:
    """`count` upgraded WebSockets from blocking sockets (run in a thread)."""
    socks = []
    for i in range(first, first + count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)  # fail, never hang
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET /CP{i} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp1.6\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, "the server closed during the upgrade"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        socks.append(sock)
    return socks


def _tracked() -> int:
    gc.collect()
    return len(gc.get_objects())


@pytest.mark.parametrize("keepalive", [None, 60.0], ids=["no-pings", "pings"])
async def test_an_idle_connection_stays_within_its_object_budget(
    anyio_backend_name: str, keepalive: float | None
) -> None:
    if anyio_backend_name == "asyncio":
        import asyncio

        if asyncio.get_running_loop().get_debug():
            pytest.skip("asyncio's debug mode keeps a traceback per task and handle")
    socks: list[socket.socket] = []
    async with serving(protocols=["ocpp1.6"], ping_interval=keepalive) as (server, url):
        try:
            port = int(url.rsplit(":", 1)[1])
            # A first batch fills the caches that every later connection shares.
            socks += await anyio.to_thread.run_sync(_open, port, 0, 20)
            with anyio.fail_after(10):
                await wait_until(lambda: len(server.clients) == 20)
            await anyio.wait_all_tasks_blocked()
            before = _tracked()
            socks += await anyio.to_thread.run_sync(_open, port, 20, CONNECTIONS)
            with anyio.fail_after(10):
                await wait_until(lambda: len(server.clients) == 20 + CONNECTIONS)
            await anyio.wait_all_tasks_blocked()
            per_connection = (_tracked() - before) / CONNECTIONS - 1  # less the peer's socket
            budget = BUDGET[anyio_backend_name] + (PINGS if keepalive else 0) + SLACK
            assert round(per_connection) <= budget, per_connection
            # It counts what it should: the clients are there to be counted.
            assert per_connection >= 20, per_connection
        finally:  # before the server closes: it need not wait for their close handshakes
            for sock in socks:
                sock.close()
