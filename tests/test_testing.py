"""`ocpp_rpc.testing.connect` (API.md "Testing"): an RPCClient connected to a
running RPCServer through memory streams, as a network client would be."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.abc
import pytest
from harness import Accepted, Blocker, Outcome, echo, task_count

from ocpp_rpc import (
    Accept,
    Backoff,
    Call,
    CloseResult,
    ConnectError,
    ConnectionClosed,
    Handshake,
    Reject,
    RPCNotImplementedError,
    RPCServer,
    ServerClient,
    State,
)
from ocpp_rpc.testing import connect

pytestmark = pytest.mark.anyio

FAST = Backoff(initial=0.01, maximum=0.05, jitter=0)


def make_server(**options: Any) -> RPCServer:
    options.setdefault("ping_interval", None)
    return RPCServer(**options)


# -- the upgrade ---------------------------------------------------------------------------


async def test_the_handshake_carries_what_a_network_client_sends() -> None:
    handshakes: list[Handshake] = []
    with anyio.fail_after(5):
        async with make_server(protocols=["ocpp2.0.1"]) as server:

            @server.auth
            async def auth(handshake: Handshake) -> Accept:
                handshakes.append(handshake)
                return Accept(session={"user": handshake.identity})

            async with connect(
                server, "CP/1 é", protocols=["ocpp2.0.1"], password="pa:ss",
                headers={"X-Station": "7"}, query={"token": "a b"},
            ) as client:
                assert client.protocol == "ocpp2.0.1"
                assert client.state is State.OPEN
                assert server.clients["CP/1 é"].session == {"user": "CP/1 é"}
            async with connect(
                server, "CP2", protocols=["ocpp2.0.1"], endpoint="wss://csms.example/ocpp/v201",
                remote_address=("203.0.113.9", 50000),
            ):
                pass
    first, second = handshakes
    assert first.identity == "CP/1 é"
    assert first.endpoint == "/ocpp"
    assert first.protocols == ("ocpp2.0.1",)
    assert first.password == b"pa:ss"
    assert first.headers["x-station"] == "7"
    assert first.headers["Sec-WebSocket-Protocol"] == "ocpp2.0.1"
    assert first.headers["host"] == "testserver"
    assert dict(first.query) == {"token": "a b"}
    assert first.remote_address is None and first.peer_certificate is None
    assert second.endpoint == "/ocpp/v201"
    assert second.password is None
    assert second.remote_address == ("203.0.113.9", 50000)


async def test_a_rejected_upgrade_raises_connect_error_with_the_status() -> None:
    aborted: list[Any] = []
    with anyio.fail_after(5):
        async with make_server() as server:
            server.on("upgrade_aborted", aborted.append)

            @server.auth
            async def auth(handshake: Handshake) -> None:
                if handshake.password != b"secret":
                    raise Reject(401, "wrong password")

            with pytest.raises(ConnectError) as info:
                async with connect(server, "CP1", password="guess"):
                    pytest.fail("connected")
            assert info.value.status == 401
            assert "wrong password" in str(info.value)
            async with connect(server, "CP1", password="secret") as client:
                assert client.state is State.OPEN
    assert [(a.identity, a.status, a.reason) for a in aborted] == [
        ("CP1", 401, "wrong password")
    ]


async def test_an_identity_the_server_refuses_gets_400() -> None:
    async with make_server() as server:
        with pytest.raises(ConnectError) as info:
            async with connect(server, ""):
                pass
        assert info.value.status == 400


async def test_a_server_that_is_not_running_refuses_with_500() -> None:
    server = make_server()
    with pytest.raises(ConnectError) as info:
        async with connect(server, "CP1"):
            pass
    assert info.value.status == 500


@pytest.mark.parametrize(
    ("server_protocols", "offered", "agreed"),
    [
        (["ocpp2.0.1", "ocpp1.6"], ["ocpp1.6", "ocpp2.0.1"], "ocpp2.0.1"),  # server's order
        (["ocpp1.6"], ["ocpp2.0.1", "ocpp1.6"], "ocpp1.6"),
        ([], [], None),
    ],
)
async def test_the_subprotocol_is_negotiated_by_the_server(
    server_protocols: list[str], offered: list[str], agreed: str | None
) -> None:
    async with (
        make_server(protocols=server_protocols) as server,
        connect(server, "CP1", protocols=offered, reconnect=False) as client,
    ):
        assert client.protocol == agreed
        assert server.clients["CP1"].protocol == agreed


@pytest.mark.parametrize("offered", [["ocpp1.6"], []])
async def test_no_mutual_subprotocol_is_refused_with_400(offered: list[str]) -> None:
    async with make_server(protocols=["ocpp2.0.1"]) as server:
        with pytest.raises(ConnectError) as info:
            async with connect(server, "CP1", protocols=offered):
                pass
        assert info.value.status == 400


async def test_the_auth_hook_can_choose_the_subprotocol() -> None:
    async with make_server(protocols=["ocpp2.0.1", "ocpp1.6"]) as server:

        @server.auth
        async def auth(handshake: Handshake) -> Accept:
            return Accept(protocol="ocpp1.6")

        async with connect(server, "CP1", protocols=["ocpp2.0.1", "ocpp1.6"]) as client:
            assert client.protocol == "ocpp1.6"


async def test_a_server_that_agrees_no_subprotocol_to_an_offering_client_fails_to_connect() -> None:
    async with make_server() as server:

        @server.auth
        async def auth(handshake: Handshake) -> None:
            return None  # accepts, agreeing none of the offered subprotocols

        with pytest.raises(ConnectError) as info:
            async with connect(server, "CP1", protocols=["ocpp1.6"]):
                pass
        assert info.value.status is None


# -- calls both ways -------------------------------------------------------------------------


async def test_calls_both_ways_run_the_handlers() -> None:
    with anyio.fail_after(5):
        async with make_server(protocols=["ocpp1.6"]) as server:
            accepted = Accepted(server)
            seen: list[Call] = []

            @server.handler("BootNotification")
            def boot(call: Call) -> dict[str, Any]:
                seen.append(call)
                return {"status": "Accepted"}

            @server.on_client
            async def on_client(client: ServerClient) -> None:
                client.handle("Own", lambda call: "the client's own handler")

            async with connect(server, "CP1", protocols=["ocpp1.6"]) as client:
                client.handle("Reset", lambda call: {"status": call.params["type"]})
                assert await client.call("BootNotification", {"v": 1}) == {"status": "Accepted"}
                assert await client.call("Own") == "the client's own handler"
                with pytest.raises(RPCNotImplementedError):
                    await client.call("Unknown")
                server_client = await accepted.nth(1)
                assert await server_client.call("Reset", {"type": "Soft"}) == {"status": "Soft"}
                with pytest.raises(RPCNotImplementedError):
                    await server_client.call("Unknown")
    assert [(c.method, c.params, c.protocol) for c in seen] == [
        ("BootNotification", {"v": 1}, "ocpp1.6")
    ]
    assert isinstance(seen[0].client, ServerClient)


# -- closing -------------------------------------------------------------------------------------


async def test_a_client_close_reaches_the_server_with_its_code() -> None:
    with anyio.fail_after(5):
        async with make_server() as server:
            accepted = Accepted(server)
            async with connect(server, "CP1") as client:
                server_client = await accepted.nth(1)
                assert await client.close(code=4001, reason="maintenance") == (4001, "maintenance")
                assert await server_client.wait_closed() == (4001, "maintenance")
            assert "CP1" not in server.clients


async def test_a_server_close_reaches_the_client_with_its_code() -> None:
    with anyio.fail_after(5):
        async with make_server() as server:
            accepted = Accepted(server)
            async with connect(server, "CP1", reconnect=False) as client:
                await (await accepted.nth(1)).close(code=4002, reason="go away")
                assert await client.wait_closed() == CloseResult(4002, "go away")
                with pytest.raises(ConnectionClosed) as info:
                    await client.call("Echo")
                assert (info.value.code, info.value.reason) == (4002, "go away")


async def test_a_forced_close_is_a_1006_drop_for_the_peer() -> None:
    with anyio.fail_after(5):
        async with make_server() as server:
            accepted = Accepted(server)
            async with connect(server, "CP1") as client:
                server_client = await accepted.nth(1)
                await client.close(force=True)
                assert await server_client.wait_closed() == CloseResult(1006, "")


async def test_server_close_closes_every_memory_client() -> None:
    with anyio.fail_after(5):
        async with make_server() as server:
            async with (
                connect(server, "CP1", reconnect=False) as one,
                connect(server, "CP2", reconnect=False) as two,
            ):
                await server.close(code=1001, reason="shutdown")
                assert await one.wait_closed() == CloseResult(1001, "shutdown")
                assert await two.wait_closed() == CloseResult(1001, "shutdown")
                assert server.clients == {}


async def test_leaving_the_servers_block_closes_a_memory_client_still_open() -> None:
    closed = Outcome()

    async def charger(server: RPCServer, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with connect(server, "CP1", reconnect=False) as client:
            task_status.started()
            await closed.run(client.wait_closed)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            async with make_server() as server:
                await tg.start(charger, server)  # its connect block outlives the server's
    assert closed.value == CloseResult(1000, "")


async def test_leaving_the_connect_block_closes_the_client_and_leaks_no_task() -> None:
    with anyio.fail_after(5):
        async with make_server() as server:
            accepted = Accepted(server)
            block = Blocker()
            server.handle("Block", block)
            before = task_count()
            outbound = Outcome()
            async with connect(server, "CP1") as client:
                client.handle("Block", block)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(outbound.run, client.call, "Block")
                    await block.started.wait()
                    await client.close()
                server_client = await accepted.nth(1)
            assert client.state is State.CLOSED
            assert server_client.state is State.CLOSED
            assert isinstance(outbound.error, ConnectionClosed)
            assert block.cancelled.is_set()
            assert task_count() == before


async def test_an_exception_in_the_block_propagates_as_it_is_and_closes_the_client() -> None:
    with anyio.fail_after(5):
        async with make_server() as server:
            accepted = Accepted(server)
            with pytest.raises(KeyError):
                async with connect(server, "CP1") as client:
                    server_client = await accepted.nth(1)
                    raise KeyError("boom")
            assert client.state is State.CLOSED
            assert await server_client.wait_closed() == CloseResult(1000, "")


# -- reconnecting -------------------------------------------------------------------------------


@pytest.mark.parametrize("force", [True, False])
async def test_reconnects_go_through_the_server_again(force: bool) -> None:
    with anyio.fail_after(5):
        async with make_server(protocols=["ocpp2.0.1", "ocpp1.6"]) as server:
            accepted = Accepted(server)
            server.handle("Echo", echo)
            offered: list[tuple[str, ...]] = []

            @server.auth
            async def auth(handshake: Handshake) -> None:
                offered.append(handshake.protocols)

            async with connect(server, "CP1", protocols=["ocpp1.6", "ocpp2.0.1"],
                               backoff=FAST) as client:
                await (await accepted.nth(1)).close(force=force, code=4000)
                second = await accepted.nth(2)
                assert server.clients["CP1"] is second
                assert await client.call("Echo", {"n": 1}) == {"n": 1}
    # The reconnect offers only the agreed subprotocol, as over the network.
    assert offered == [("ocpp1.6", "ocpp2.0.1"), ("ocpp2.0.1",)]


async def test_a_refused_reconnect_is_retried_then_given_up() -> None:
    with anyio.fail_after(5):
        async with make_server() as server:
            accepted = Accepted(server)
            statuses: list[int | None] = []

            @server.auth
            async def auth(handshake: Handshake) -> None:
                if accepted.clients:
                    raise Reject(503, "busy")

            async with connect(server, "CP1", backoff=FAST, max_reconnects=3) as client:
                client.on("close", lambda result: statuses.append(result.code))
                await (await accepted.nth(1)).close(force=True)
                assert await client.wait_closed() == CloseResult(1001, "Giving up")
    assert statuses == [1001]


# -- limits -----------------------------------------------------------------------------------


async def test_a_message_over_the_clients_max_message_size_closes_with_1009() -> None:
    with anyio.fail_after(5):
        async with make_server() as server:
            accepted = Accepted(server)
            server.handle("Big", lambda call: "x" * 100)
            async with connect(server, "CP1", max_message_size=50, reconnect=False) as client:
                with pytest.raises(ConnectionClosed) as info:
                    await client.call("Big")
                assert (info.value.code, info.value.reason) == (1009, "message too big")
                server_client = await accepted.nth(1)
                assert await server_client.wait_closed() == CloseResult(1009, "message too big")


async def test_a_message_over_the_servers_max_message_size_closes_with_1009() -> None:
    with anyio.fail_after(5):
        async with make_server(max_message_size=50) as server:
            server.handle("Echo", echo)
            async with connect(server, "CP1", reconnect=False) as client:
                assert await client.call("Echo", {"s": "x" * 10}) == {"s": "x" * 10}
                with pytest.raises(ConnectionClosed) as info:
                    await client.call("Echo", {"s": "x" * 100})
                assert info.value.code == 1009
                assert await client.wait_closed() == CloseResult(1009, "message too big")
