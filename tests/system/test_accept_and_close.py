"""The server's own accept loop and single upgrade scope (issue 15), on real
sockets and both backends: what arrives before a stream exists, resets,
running out of descriptors, the handshake timer racing the read, close()
with connections still in the backlog."""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from harness import serving, wait_until

pytestmark = pytest.mark.anyio


def upgrade_request(port: int, identity: str = "CP1") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ocpp/{identity} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: ocpp1.6\r\n\r\n"
    ).encode()


async def read_until(sock: socket.socket, done: Any, data: bytes = b"") -> bytes:
    """What the server sends on `sock` until `done(data)` or EOF."""
    with anyio.fail_after(5):
        while not done(data):
            await anyio.wait_readable(sock)
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    return data


PING = bytes([0x89, 0x82, 1, 2, 3, 4, ord("h") ^ 1, ord("i") ^ 2])  # masked, "hi"
PONG = b"\x8a\x02hi"


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


async def test_a_request_read_as_the_handshake_timer_fires_is_answered(
    anyio_backend: Any,
) -> None:
    """The request is all in the socket before the handshake timeout falls due,
    and the server's reader and its timer service wake in the same loop turn:
    before, the connection got a 101 or a 408; it must never be dropped with
    no answer at all (the timer cancels the one scope that also covers the
    admission, after `reading` became False)."""
    timeout = 0.1
    answers = []
    async with serving(protocols=["ocpp1.6"], handshake_timeout=timeout) as (server, url):
        @server.auth
        async def auth(handshake: Any) -> None:
            await anyio.lowlevel.checkpoint()  # an auth hook that awaits anything

        port = port_of(url)
        for _ in range(6):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.setblocking(False)
                await wait_until(lambda: len(server._upgrade_scopes) == 1)
                await anyio.sleep(0.02)  # the server's reader waits for bytes
                sock.sendall(upgrade_request(port))
                time.sleep(timeout + 0.05)  # noqa: ASYNC251 (the loop then wakes with both due)
                head = await read_until(sock, lambda d: b"\r\n\r\n" in d)
                status = head.split(b"\r\n", 1)[0]
                if status.startswith(b"HTTP/1.1 101"):  # then the WebSocket is open
                    sock.sendall(PING)
                    after = head.partition(b"\r\n\r\n")[2]
                    after = await read_until(sock, lambda d: len(d) >= 4, after)
                    status += b" then " + after[:4]
            answers.append(status)
            await wait_until(lambda: not server._upgrade_scopes)
    good = (b"HTTP/1.1 101 Switching Protocols then " + PONG, b"HTTP/1.1 408")
    assert all(a.startswith(good) for a in answers), answers


async def test_a_request_and_eof_before_the_stream_exists_is_still_answered(
    anyio_backend: Any,
) -> None:
    """The request and the peer's FIN are both in the socket before the server
    makes its stream (`_Accepting` holds them on asyncio): the 101 still goes
    out on the half-closed connection, and the connection then ends quietly."""
    async with serving(protocols=["ocpp1.6"]) as (server, url):
        port = port_of(url)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(upgrade_request(port))
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
            head = await read_until(sock, lambda d: b"\r\n\r\n" in d)
            assert head.startswith(b"HTTP/1.1 101"), head
            rest = await read_until(sock, lambda d: False, head.partition(b"\r\n\r\n")[2])
            assert rest == b"", rest  # no frame after the 101: the peer sent EOF
        with anyio.fail_after(5):
            await wait_until(lambda: not server._all_clients and not server._upgrade_scopes)
        assert server._connection_count == 0


async def test_a_reset_before_the_stream_exists_logs_no_error(
    anyio_backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer that connects and resets at once (a port scan, a load balancer's
    check): nothing for the operator, and the server goes on serving."""
    async with serving(protocols=["ocpp1.6"]) as (server, url):
        port = port_of(url)
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(upgrade_request(port))
            sock.setblocking(False)
            head = await read_until(sock, lambda d: b"\r\n\r\n" in d)
            assert head.startswith(b"HTTP/1.1 101"), head
        with anyio.fail_after(5):
            await wait_until(lambda: not server._all_clients and not server._upgrade_scopes)
    errors = [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")]
    assert not errors, [r.getMessage() for r in errors]


async def test_out_of_descriptors_the_server_retries_and_serves_the_waiting_connection(
    anyio_backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """accept() failing with EMFILE leaves the connection in the backlog: the
    accept loop logs it, goes on, and serves it once descriptors are free."""
    import resource

    async with serving(protocols=["ocpp1.6"]) as (server, url):
        port = port_of(url)
        sock = socket.socket()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            in_use = len(os.listdir("/proc/self/fd")) - 1  # not the listing's own
            resource.setrlimit(resource.RLIMIT_NOFILE, (in_use, hard))
            sock.connect(("127.0.0.1", port))
            with anyio.fail_after(5):
                await wait_until(lambda: "accept() failed" in caplog.text)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        with sock:
            sock.sendall(upgrade_request(port))
            sock.setblocking(False)
            head = await read_until(sock, lambda d: b"\r\n\r\n" in d)
        assert head.startswith(b"HTTP/1.1 101"), head
        with anyio.fail_after(5):
            await wait_until(lambda: not server._all_clients)



async def test_close_with_silent_connections_in_the_backlog_ends_the_server(
    anyio_backend: Any,
) -> None:
    """Connections still in the backlog when close() is called: the server
    stops listening and its `async with` ends (at the latest when their
    handshake timeout would), with every accepted socket closed. The accept
    loop goes on accepting after its scope is cancelled (no checkpoint until
    EAGAIN or 64 accepts), those upgrades start after close() cancelled the
    rest, and their handshake timer is in the TimerService that the server
    stops right after close(): they wait for the peer forever."""
    before = len(os.listdir("/proc/self/fd"))
    socks = []
    try:
        with anyio.fail_after(4):
            async with serving(protocols=["ocpp1.6"], handshake_timeout=1) as (server, url):
                port = port_of(url)
                for _ in range(20):  # silent: a port scan, a stuck charger
                    socks.append(socket.create_connection(("127.0.0.1", port)))
                await server.close()
    finally:
        for sock in socks:
            sock.close()
    await wait_until(lambda: len(os.listdir("/proc/self/fd")) <= before)


async def test_connections_still_in_the_backlog_at_close_are_not_accepted(
    anyio_backend: Any,
) -> None:
    """close() stops listening: requests still in the backlog are never
    accepted (as before: anyio's accept loop stopped at its next accept), not
    accepted by the cancelled accept loop up to its next checkpoint and
    answered 503 after close() returned."""
    socks = []
    try:
        with anyio.fail_after(4):
            async with serving(protocols=["ocpp1.6"]) as (server, url):
                port = port_of(url)
                for i in range(20):
                    sock = socket.create_connection(("127.0.0.1", port))
                    sock.sendall(upgrade_request(port, f"CP{i}"))
                    sock.setblocking(False)
                    socks.append(sock)
                await server.close()
            heads = [await read_until(sock, lambda d: b"\r\n\r\n" in d) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    assert heads == [b""] * len(socks), {h.split(b"\r\n")[0] for h in heads}
