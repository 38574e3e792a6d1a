"""Limits that protect a server from hostile or broken peers: handshake timeout
(slow loris, plain and TLS), header size, message size, connection count. Each
refusal is an HTTP status or close code, fires `upgrade_aborted` and is logged,
and the server keeps serving everybody else."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest
from anyio.abc import ByteStream
from harness import echo, make_client, serving, tls_contexts

from ocpp_rpc import CloseResult, ConnectError, Handshake, RPCServer, ServerClient

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def limited(
    ssl_context: ssl.SSLContext | None = None, **options: Any
) -> AsyncIterator[tuple[RPCServer, str, int, list[Any]]]:
    """`harness.serving` with an Echo handler: the server, its ws(s):// URL,
    port, and its `upgrade_aborted` events."""
    async with serving(ssl_context, path="/ocpp", **options) as (server, url):
        aborted: list[Any] = []
        server.on("upgrade_aborted", aborted.append)
        server.handle("Echo", echo)
        port = urlsplit(url).port
        assert port is not None
        yield server, url, port, aborted


async def assert_serves_others(url: str, identity: str = "bystander", **options: Any) -> None:
    async with make_client(url, identity, **options) as client:
        assert await client.call("Echo", {"ok": identity}) == {"ok": identity}


async def assert_refused_while_held(
    url: str, held: str, refused: str, in_auth: anyio.Event, release: anyio.Event
) -> None:
    """While the upgrade of `held` waits in the auth hook (`in_auth` set, until
    `release`), the upgrade of `refused` gets 503; then `held` is served."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(assert_serves_others, url, held)
        await in_auth.wait()
        with pytest.raises(ConnectError) as info:
            async with make_client(url, refused):
                pytest.fail(f"{refused!r} connected while {held!r} held the last slot")
        assert info.value.status == 503
        release.set()


async def read_until_eof(stream: ByteStream) -> bytes:
    data = b""
    while True:
        try:
            data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            return data


def test_defaults_and_validation() -> None:
    server = RPCServer()
    assert server._handshake_timeout == 10.0
    assert server._max_header_size == 16384
    assert server._max_connections is None
    for bad in ({"handshake_timeout": 0}, {"max_header_size": 0}, {"max_connections": 0}):
        with pytest.raises(ValueError):
            RPCServer(**bad)


# -- handshake timeout ----------------------------------------------------------------------


async def test_slow_loris_upgrade_gets_408_and_is_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with anyio.fail_after(5), caplog.at_level(logging.INFO, logger="ocpp_rpc"):
        async with limited(handshake_timeout=0.2) as (_server, url, port, aborted):
            async with await anyio.connect_tcp("127.0.0.1", port) as loris:
                await loris.send(b"GET /ocpp/cp1 HTTP/1.1\r\nHost: x\r\nUpgrade: web")  # ...
                await assert_serves_others(url)  # while the loris hangs on
                response = await read_until_eof(loris)
            assert response.startswith(b"HTTP/1.1 408 ")
            assert [(a.identity, a.status, a.reason) for a in aborted] == [
                (None, 408, "handshake timeout")
            ]
            await assert_serves_others(url, "afterwards")
    assert any("408" in r.getMessage() for r in caplog.records)


async def test_silent_connection_is_dropped_after_the_handshake_timeout() -> None:
    with anyio.fail_after(5):
        async with limited(handshake_timeout=0.2) as (_server, url, port, aborted):
            async with await anyio.connect_tcp("127.0.0.1", port) as silent:
                assert (await read_until_eof(silent)).startswith(b"HTTP/1.1 408 ")
            assert [a.status for a in aborted] == [408]
            await assert_serves_others(url)


async def test_the_handshake_timeout_does_not_cut_a_slow_auth_hook() -> None:
    """The timeout bounds reading the upgrade request, not the auth hook."""
    with anyio.fail_after(5):
        async with limited(handshake_timeout=0.1) as (server, url, _port, aborted):
            hooked = anyio.Event()

            @server.auth
            async def slow(handshake: Handshake) -> None:
                hooked.set()
                await anyio.sleep(0.3)

            await assert_serves_others(url, "slow")
            assert hooked.is_set()
            assert aborted == []


async def test_slow_loris_tls_handshake_is_dropped() -> None:
    server_context, client_context = tls_contexts("127.0.0.1")
    with anyio.fail_after(5):
        async with limited(server_context, handshake_timeout=0.2) as (_, url, port, aborted):
            async with await anyio.connect_tcp("127.0.0.1", port) as loris:
                await loris.send(b"\x16\x03\x01")  # the start of a ClientHello, no more
                await assert_serves_others(url, ssl_context=client_context)
                assert await read_until_eof(loris) == b""  # no TLS, no HTTP: just dropped
            assert [(a.identity, a.status) for a in aborted] == [(None, 408)]


async def test_handshake_timeout_does_not_limit_the_auth_hook() -> None:
    with anyio.fail_after(5):
        async with limited(handshake_timeout=0.1) as (server, url, _port, aborted):

            @server.auth
            async def auth(handshake: Handshake) -> None:
                await anyio.sleep(0.3)  # a slow database, longer than the handshake timeout

            await assert_serves_others(url)
            assert aborted == []


# -- header size -------------------------------------------------------------------------------


async def test_oversized_headers_get_431(caplog: pytest.LogCaptureFixture) -> None:
    with anyio.fail_after(5), caplog.at_level(logging.INFO, logger="ocpp_rpc"):
        async with limited(max_header_size=1024) as (_server, url, port, aborted):
            # A head that never ends, and a complete one that is too big.
            incomplete = b"GET /ocpp/cp1 HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * 2000
            complete = incomplete + b"\r\n\r\n"
            for request in (incomplete, complete):
                async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                    await stream.send(request)
                    assert (await read_until_eof(stream)).startswith(b"HTTP/1.1 431 ")
            with pytest.raises(ConnectError) as info:
                async with make_client(url, headers={"X-Junk": "a" * 2000}):
                    pytest.fail("connected with oversized headers")
            assert info.value.status == 431
            assert [(a.identity, a.status) for a in aborted] == [(None, 431)] * 3
            await assert_serves_others(url, headers={"X-Small": "a" * 500})
    assert any("431" in r.getMessage() for r in caplog.records)


# -- message size ----------------------------------------------------------------------------------


async def test_oversized_message_closes_that_client_with_1009(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with anyio.fail_after(5), caplog.at_level(logging.INFO, logger="ocpp_rpc"):
        async with limited(max_message_size=1000) as (server, url, _port, _aborted):
            closed: list[CloseResult] = []
            server.on("client", lambda client: client.on("close", closed.append))
            async with make_client(url, "bystander") as bystander:
                async with make_client(url, "big") as big:
                    assert await big.call("Echo", {"x": "a" * 900}) == {"x": "a" * 900}
                    await big.send_raw('[2,"1","Echo",{"x":"' + "a" * 1000 + '"}]')
                    assert (await big.wait_closed()).code == 1009
                assert await bystander.call("Echo", {"still": "here"}) == {"still": "here"}
            assert CloseResult(1009, "message too big") in closed
    assert any("'big' disconnected (1009" in r.getMessage() for r in caplog.records)


# -- connection count ------------------------------------------------------------------------


async def test_connections_beyond_max_connections_get_503(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with anyio.fail_after(5), caplog.at_level(logging.INFO, logger="ocpp_rpc"):
        async with limited(max_connections=2) as (server, url, _port, aborted):
            async with make_client(url, "a"), make_client(url, "b") as b:
                with pytest.raises(ConnectError) as info:
                    async with make_client(url, "c"):
                        pytest.fail("connected beyond max_connections")
                assert info.value.status == 503
                assert [(x.identity, x.status, x.reason) for x in aborted] == [
                    ("c", 503, "too many connections")
                ]
                server_side_b = server.clients["b"]
                await b.close()
                await server_side_b.wait_closed()
                await assert_serves_others(url, "c")  # a slot is free again
    assert any("too many connections" in r.getMessage() for r in caplog.records)


async def test_a_reconnect_replacing_its_own_connection_is_let_in_at_the_limit() -> None:
    with anyio.fail_after(5):
        async with limited(max_connections=1) as (server, url, _port, aborted):
            async with make_client(url, "a") as first:
                async with make_client(url, "a") as second:
                    assert (await first.wait_closed()) == CloseResult(1000, "replaced")
                    assert server.clients["a"].state == 1
                    assert await second.call("Echo", {}) == {}
            assert aborted == []


async def test_one_upgrade_at_a_time_replaces_its_own_connection_at_the_limit() -> None:
    with anyio.fail_after(5):
        async with limited(max_connections=1) as (server, url, _port, aborted):
            in_auth, release = anyio.Event(), anyio.Event()

            @server.auth
            async def auth(handshake: Handshake) -> None:
                in_auth.set()
                await release.wait()

            release.set()
            async with make_client(url, "a") as first:
                release = anyio.Event()
                in_auth = anyio.Event()
                # While one upgrade replacing `first` is in the hook, another naming
                # the same identity is refused: it would hold a slot past the limit.
                await assert_refused_while_held(url, "a", "a", in_auth, release)
                assert (await first.wait_closed()) == CloseResult(1000, "replaced")
            assert [(x.identity, x.status) for x in aborted] == [("a", 503)]


async def test_upgrades_in_progress_count_towards_max_connections() -> None:
    with anyio.fail_after(5):
        async with limited(max_connections=1) as (server, url, _port, _aborted):
            in_auth, release = anyio.Event(), anyio.Event()

            @server.auth
            async def auth(handshake: Handshake) -> None:
                if handshake.identity == "first":
                    in_auth.set()
                    await release.wait()

            accepted: list[ServerClient] = []
            server.on("client", accepted.append)
            await assert_refused_while_held(url, "first", "second", in_auth, release)
            await accepted[0].wait_closed()  # the server has seen "first" go
            await assert_serves_others(url, "third")  # the slot was given back


async def test_refused_upgrades_give_their_slot_back() -> None:
    with anyio.fail_after(5):
        async with limited(max_connections=1, protocols=["ocpp2.0.1"]) as (
            server, url, _port, _aborted,
        ):
            for _ in range(3):
                with pytest.raises(ConnectError) as info:
                    async with make_client(url, protocols=["ocpp1.6"]):
                        pytest.fail("connected without a mutual subprotocol")
                assert info.value.status == 400
            accepted: list[ServerClient] = []
            server.on("client", accepted.append)
            await assert_serves_others(url, protocols=["ocpp2.0.1"])
            assert len(accepted) == 1
