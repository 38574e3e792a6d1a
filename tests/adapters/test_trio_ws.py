"""`ocpp_rpc.trio_ws`: OCPP-J over trio-websocket connections (Trio only)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

trio = pytest.importorskip("trio")
trio_websocket = pytest.importorskip("trio_websocket")

from ocpp_rpc import (  # noqa: E402
    Call,
    CloseResult,
    ConnectError,
    Handshake,
    Reject,
    RPCClient,
    RPCServer,
    ServerClient,
)
from ocpp_rpc.trio_ws import attach_client, serve_request  # noqa: E402

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["trio"])]


@asynccontextmanager
async def trio_websocket_server(server: RPCServer) -> AsyncIterator[str]:
    """trio-websocket's own server, handing every request to `server`."""
    async with trio.open_nursery() as nursery:
        ws_server = await nursery.start(
            functools.partial(
                trio_websocket.serve_websocket,
                functools.partial(serve_request, server),
                "127.0.0.1",
                0,
                None,
            )
        )
        try:
            yield f"ws://127.0.0.1:{ws_server.port}/ocpp"
        finally:
            nursery.cancel_scope.cancel()


async def test_serve_request_runs_the_servers_auth_and_clients() -> None:
    seen: list[Handshake] = []
    called: list[Any] = []
    with anyio.fail_after(5):
        async with RPCServer(protocols=["ocpp2.0.1"], ping_interval=None) as server:

            @server.auth
            async def auth(handshake: Handshake) -> None:
                seen.append(handshake)
                if handshake.password != b"pw":
                    raise Reject(401, "who are you")

            server.handle("Heartbeat", lambda call: {"currentTime": "now"})

            @server.on_client
            async def on_client(client: ServerClient) -> None:
                called.append(await client.call("Reset", {"type": "Immediate"}))

            async with trio_websocket_server(server) as url:
                with pytest.raises(ConnectError) as info:
                    async with RPCClient(url, "CP1", protocols=["ocpp2.0.1"], reconnect=False):
                        pytest.fail("connected without the password")
                assert info.value.status == 401
                client = RPCClient(url, "CP 1", protocols=["ocpp2.0.1"], password="pw",
                                   query={"v": "1"}, reconnect=False)
                client.handle("Reset", lambda call: {"status": "Accepted"})
                async with client:
                    assert client.protocol == "ocpp2.0.1"
                    assert await client.call("Heartbeat") == {"currentTime": "now"}
                    assert list(server.clients) == ["CP 1"]
                    await client.close(code=4000, reason="bye")
                assert called == [{"status": "Accepted"}]
    handshake = seen[-1]
    assert (handshake.identity, handshake.endpoint) == ("CP 1", "/ocpp")
    assert dict(handshake.query) == {"v": "1"} and handshake.protocols == ("ocpp2.0.1",)
    assert handshake.remote_address is not None and "authorization" in handshake.headers


async def test_attach_client_over_an_open_trio_websocket() -> None:
    with anyio.fail_after(5):
        async with RPCServer(protocols=["ocpp1.6"], ping_interval=None) as server:
            server.handle("Echo", lambda call: call.params)
            accepted: list[ServerClient] = []
            server.on("client", accepted.append)
            listening = await server.listen()
            url = f"ws://127.0.0.1:{listening.port}/ocpp/CP1"
            async with trio_websocket.open_websocket_url(url, subprotocols=["ocpp1.6"]) as ws:
                async with attach_client(ws, "CP1", protocols=["ocpp1.6"]) as client:
                    client.handle("Ping", lambda call: {"pong": call.params})
                    assert client.protocol == "ocpp1.6"
                    assert await client.call("Echo", {"a": 1}) == {"a": 1}
                    assert await accepted[0].call("Ping", {"b": 2}) == {"pong": {"b": 2}}
                    await server.close(code=4001, reason="maintenance")
                    assert await client.wait_closed() == CloseResult(4001, "maintenance")


async def test_attach_client_needs_an_offered_protocol_and_refuses_reconnect_options() -> None:
    with anyio.fail_after(5):
        async with RPCServer(ping_interval=None) as server:
            listening = await server.listen()
            url = f"ws://127.0.0.1:{listening.port}/ocpp/CP1"
            async with trio_websocket.open_websocket_url(url) as ws:
                with pytest.raises(ConnectError):
                    async with attach_client(ws, "CP1", protocols=["ocpp2.0.1"]):
                        pytest.fail("ran without the required subprotocol")
                with pytest.raises(TypeError):
                    async with attach_client(ws, "CP1", reconnect=True):
                        pass


async def test_both_ends_on_trio_websocket() -> None:
    with anyio.fail_after(5):
        async with RPCServer(ping_interval=0.05) as server:  # pings work through trio-websocket
            pinged = anyio.Event()
            server.on("client", lambda client: client.on("ping", lambda e: pinged.set()))

            @server.handler("Add")
            def add(call: Call) -> int:
                return int(call.params["a"]) + int(call.params["b"])

            async with trio_websocket_server(server) as url:
                async with trio_websocket.open_websocket_url(url + "/CP9") as ws:
                    async with attach_client(ws, "CP9", ping_interval=None) as client:
                        assert await client.call("Add", {"a": 2, "b": 3}) == 5
                        await pinged.wait()


async def test_attached_client_force_close_drops_the_connection() -> None:
    with anyio.fail_after(5):
        async with RPCServer(ping_interval=None) as server:
            closed: list[CloseResult] = []
            server.on("client", lambda client: client.on("close", closed.append))
            listening = await server.listen()
            url = f"ws://127.0.0.1:{listening.port}/ocpp/CP1"
            async with trio_websocket.open_websocket_url(url) as ws:
                async with attach_client(ws, "CP1") as client:
                    server_side = server.clients["CP1"]
                    assert await client.close(force=True) == CloseResult(1006, "")
                await server_side.wait_closed()
    assert closed == [CloseResult(1006, "")]
