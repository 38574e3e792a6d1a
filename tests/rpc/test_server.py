"""RPCServer against our RPCClient over real loopback sockets (API.md: RPCServer)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import ssl
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from harness import (
    Accepted,
    Blocker,
    Outcome,
    leaves,
    make_client,
    recording,
    served,
    serving,
    task_count,
)
from rawpeer import raw_client

from ocpp_rpc import (
    Accept,
    Call,
    CloseResult,
    ConnectError,
    ConnectionClosed,
    Handshake,
    Reject,
    RPCClient,
    RPCInternalError,
    RPCNotImplementedError,
    RPCServer,
    ServerClient,
    State,
)

pytestmark = pytest.mark.anyio


# -- helpers -------------------------------------------------------------------------


async def http_exchange(port: int, request: bytes) -> bytes:
    """Send a raw HTTP request; return the response head (and what came with it)."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(request)
        response = b""
        try:
            while b"\r\n\r\n" not in response:
                response += await stream.receive()
        except anyio.EndOfStream:
            pass
    return response


# -- listening -------------------------------------------------------------------------


async def test_listen_returns_the_bound_host_and_port() -> None:
    with anyio.fail_after(5):
        async with RPCServer(ping_interval=None) as server:
            listening = await server.listen()
            assert listening.host == "127.0.0.1"
            assert isinstance(listening.port, int) and listening.port > 0
            async with make_client(f"ws://127.0.0.1:{listening.port}") as client:
                assert client.state is State.OPEN


async def test_several_listeners_serve_one_set_of_clients() -> None:
    with anyio.fail_after(5):
        async with RPCServer(ping_interval=None) as server:
            first = await server.listen()
            second = await server.listen(0, "127.0.0.1")
            assert first.port != second.port
            server.handle("Where", lambda call: call.client.identity)
            async with (
                make_client(f"ws://127.0.0.1:{first.port}", "a") as a,
                make_client(f"ws://127.0.0.1:{second.port}", "b") as b,
            ):
                assert await a.call("Where") == "a"
                assert await b.call("Where") == "b"
                assert sorted(server.clients) == ["a", "b"]


async def test_non_upgrade_request_gets_404_and_bad_upgrade_400() -> None:
    with anyio.fail_after(5):
        async with RPCServer(ping_interval=None) as server:
            port = (await server.listen()).port
            plain = await http_exchange(port, b"GET /cp1 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert plain.startswith(b"HTTP/1.1 404")
            no_key = await http_exchange(
                port,
                b"GET /cp1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
            )
            assert no_key.startswith(b"HTTP/1.1 400")
            no_identity = await http_exchange(
                port,
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            )
            assert no_identity.startswith(b"HTTP/1.1 400")


# -- auth --------------------------------------------------------------------------------


@pytest.mark.parametrize("decorator", [True, False])
async def test_auth_hook_sees_each_handshake_in_both_forms(decorator: bool) -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            handshakes: list[Handshake] = []

            async def auth(handshake: Handshake) -> None:
                handshakes.append(handshake)

            if decorator:
                assert server.auth(auth) is auth
            else:
                server.auth(auth)
            async with make_client(url, "cp1") as client:
                assert client.state is State.OPEN
                assert server.clients["cp1"].handshake is handshakes[0]
            assert [h.identity for h in handshakes] == ["cp1"]


async def test_auth_accept_keeps_the_session_and_chooses_the_protocol() -> None:
    with anyio.fail_after(5):
        async with serving(protocols=["ocpp2.0.1", "ocpp1.6"]) as (server, url):
            accepted = Accepted(server)
            session = {"tenant": 7}

            @server.auth
            async def auth(handshake: Handshake) -> Accept:
                return Accept(session=session, protocol="ocpp1.6")

            async with make_client(url, protocols=["ocpp2.0.1", "ocpp1.6"]) as client:
                server_client = await accepted.nth(1)
                assert server_client.session is session
                assert server_client.protocol == client.protocol == "ocpp1.6"


async def test_auth_accept_without_options_is_like_none() -> None:
    with anyio.fail_after(5):
        async with serving(protocols=["ocpp2.0.1", "ocpp1.6"]) as (server, url):
            accepted = Accepted(server)

            @server.auth
            async def auth(handshake: Handshake) -> Accept:
                return Accept()

            async with make_client(url, protocols=["ocpp1.6", "ocpp2.0.1"]) as client:
                server_client = await accepted.nth(1)
                assert server_client.session is None
                assert client.protocol == "ocpp2.0.1"  # the server's preference


@pytest.mark.parametrize(
    ("status", "message"), [(401, "who are you"), (403, ""), (404, "no such station"), (503, "x")]
)
async def test_auth_reject_refuses_with_that_status(status: int, message: str) -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            aborted: list[Any] = []
            server.on("upgrade_aborted", aborted.append)

            @server.auth
            async def auth(handshake: Handshake) -> None:
                raise Reject(status, message)

            with pytest.raises(ConnectError) as info:
                async with make_client(url, "cp 7"):
                    pytest.fail("connected although rejected")
            assert info.value.status == status
            assert [(a.identity, a.status, a.reason) for a in aborted] == [
                ("cp 7", status, message)
            ]
            assert dict(server.clients) == {}


def test_reject_defaults_to_400_and_needs_an_error_status() -> None:
    reject = Reject()
    assert (reject.status, reject.message) == (400, "")
    with pytest.raises(ValueError):
        Reject(200)


async def test_auth_hook_raising_refuses_the_client_and_reports_the_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            errors: list[BaseException] = []
            server.on("error", errors.append)
            failure = RuntimeError("auth bug")

            @server.auth
            async def auth(handshake: Handshake) -> None:
                raise failure

            with caplog.at_level(logging.ERROR, logger="ocpp_rpc"):
                with pytest.raises(ConnectError) as info:
                    async with make_client(url):
                        pytest.fail("connected although the auth hook failed")
            assert info.value.status is not None and info.value.status >= 500
            assert errors == [failure]
            assert any(r.exc_info and r.exc_info[1] is failure for r in caplog.records)


async def test_a_stray_cancelled_error_from_the_auth_hook_answers_500() -> None:
    """On asyncio an auth hook that awaits a future something else cancelled
    is refused like any failing hook, and the server serves on."""
    with anyio.fail_after(5):
        async with serving() as (server, url):
            errors: list[BaseException] = []
            server.on("error", errors.append)

            @server.auth
            async def auth(handshake: Handshake) -> None:
                if handshake.identity == "bad":
                    await stray_cancellation()

            with pytest.raises(ConnectError) as info:
                async with make_client(url, "bad"):
                    pytest.fail("connected although the auth hook failed")
            assert info.value.status == 500
            assert len(errors) == 1 and isinstance(
                errors[0].__cause__, anyio.get_cancelled_exc_class()
            )
            async with make_client(url, "good") as good:
                assert good.state is State.OPEN


async def test_auth_accept_of_a_protocol_not_offered_refuses_the_client() -> None:
    with anyio.fail_after(5):
        async with serving(protocols=["ocpp2.0.1", "ocpp1.6"]) as (server, url):

            @server.auth
            async def auth(handshake: Handshake) -> Accept:
                return Accept(protocol="ocpp2.0.1")

            with pytest.raises(ConnectError) as info:
                async with make_client(url, protocols=["ocpp1.6"]):
                    pytest.fail("connected with a protocol it did not offer")
            assert info.value.status == 400


async def test_without_auth_a_client_without_mutual_subprotocol_is_refused() -> None:
    with anyio.fail_after(5):
        async with serving(protocols=["ocpp2.0.1"]) as (server, url):
            aborted: list[Any] = []
            server.on("upgrade_aborted", aborted.append)
            for protocols in (["ocpp1.6"], []):
                with pytest.raises(ConnectError) as info:
                    async with make_client(url, protocols=protocols):
                        pytest.fail("connected without a mutual subprotocol")
                assert info.value.status == 400
            assert [(a.identity, a.status) for a in aborted] == [("cp1", 400), ("cp1", 400)]


async def test_with_empty_protocols_any_client_is_accepted() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            async with make_client(url, "plain") as client:
                assert client.protocol is None

            @server.auth
            async def auth(handshake: Handshake) -> Accept:
                return Accept(protocol=handshake.protocols[0])

            async with make_client(url, "offering", protocols=["ocpp2.1", "ocpp1.6"]) as client:
                assert client.protocol == "ocpp2.1"


# -- handshake ---------------------------------------------------------------------------


async def test_handshake_fields() -> None:
    with anyio.fail_after(5):
        async with serving(protocols=["ocpp1.6"]) as (server, url):
            handshakes: list[Handshake] = []

            @server.auth
            async def auth(handshake: Handshake) -> None:
                handshakes.append(handshake)

            client = make_client(
                url + "/ocpp/csms",
                "CP/1 ü",
                protocols=["ocpp2.1", "ocpp1.6", "ocpp2.0.1"],
                headers={"X-Vendor-Info": "ACME", "User-Agent": "test"},
                query={"a": "1", "b": "two words"},
                password="s3cr:et",
            )
            async with client:
                pass
            (handshake,) = handshakes
            assert handshake.identity == "CP/1 ü"
            assert handshake.endpoint == "/ocpp/csms"
            assert handshake.protocols == ("ocpp2.1", "ocpp1.6", "ocpp2.0.1")
            assert handshake.remote_address is not None
            host, port = handshake.remote_address
            assert host == "127.0.0.1" and isinstance(port, int) and port > 0
            for name in ("X-Vendor-Info", "x-vendor-info", "X-VENDOR-INFO"):
                assert handshake.headers[name] == "ACME"
                assert name in handshake.headers
            assert handshake.headers.get("user-agent") == "test"
            assert dict(handshake.query) == {"a": "1", "b": "two words"}
            assert handshake.password == b"s3cr:et"
            assert handshake.peer_certificate is None


async def test_handshake_endpoint_is_root_without_a_path_and_password_needs_the_identity() -> None:
    with anyio.fail_after(5):
        async with recording() as (url, handshakes):
            # Basic auth for another user: not this identity's password.
            other = "Basic b3RoZXI6cHc="  # other:pw
            async with make_client(url, "cp1", headers={"Authorization": other}):
                pass
            (handshake,) = handshakes
            assert handshake.endpoint == "/"
            assert handshake.password is None
            assert handshake.query == {}


# -- on_client -------------------------------------------------------------------------------


async def test_on_client_handlers_registered_before_its_first_await_see_every_call() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            seen: list[str] = []

            @server.on_client
            async def on_client(client: ServerClient) -> None:
                client.handle("Hello", lambda call: seen.append(call.method) or "hi")
                await anyio.sleep_forever()

            for n in range(5):
                async with make_client(url, f"cp{n}") as client:
                    assert await client.call("Hello") == "hi"
            assert seen == ["Hello"] * 5


@pytest.mark.parametrize("hook_awaits", [True, False])
async def test_on_client_handlers_see_calls_sent_with_the_upgrade_request(
    hook_awaits: bool,
) -> None:
    """Calls already buffered when the connection starts (in the upgrade
    request's own TCP write) wait for the hook's first await."""
    with anyio.fail_after(5):
        async with serving() as (server, url):

            @server.on_client
            async def on_client(client: ServerClient) -> None:
                client.handle("Hello", lambda call: "hi")
                if hook_awaits:
                    await anyio.sleep_forever()

            calls = [json.dumps([2, str(n), "Hello", {}]) for n in range(20)]
            async with raw_client(f"{url}/cp1", ["ocpp1.6"], early=calls) as peer:
                assert peer.status == 101
                answers = [await peer.receive_json() for _ in calls]
    assert answers == [[3, str(n), "hi"] for n in range(20)]


async def test_on_client_runs_in_the_clients_task_group() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            hook = Blocker()
            clients: list[ServerClient] = []

            @server.on_client
            async def on_client(client: ServerClient) -> None:
                clients.append(client)
                await hook(Call("", {}, "", None, client))

            async with make_client(url):
                await hook.started.wait()
                assert clients[0].state is State.OPEN
            # The client left: its task group, the hook included, is cancelled.
            await hook.cancelled.wait()
            assert await clients[0].wait_closed() == CloseResult(1000, "")


async def test_the_connection_stays_open_after_on_client_returns() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            returned = anyio.Event()

            @server.on_client
            async def on_client(client: ServerClient) -> None:
                client.handle("Ping", lambda call: "pong")
                returned.set()

            client = make_client(url)
            client.handle("Anything", lambda call: {"ok": 1})
            async with client:
                await returned.wait()
                assert await client.call("Ping") == "pong"
                assert await server.clients["cp1"].call("Anything") == {"ok": 1}


async def test_an_on_client_hook_that_returned_leaves_no_task_behind() -> None:
    """The reader is the connection's own task with a hook or without one: an
    idle connection holds the same tasks either way."""

    async def idle_tasks(hook: bool) -> int:
        async with serving() as (server, url):
            server.handle("Echo", lambda call: call.params)
            returned = anyio.Event()
            if hook:

                @server.on_client
                async def on_client(client: ServerClient) -> None:
                    await anyio.lowlevel.checkpoint()
                    returned.set()

            else:
                server.on("client", lambda client: returned.set())
            async with make_client(url) as client:
                await returned.wait()
                assert await client.call("Echo", {"a": 1}) == {"a": 1}
                await anyio.wait_all_tasks_blocked()
                return task_count()

    with anyio.fail_after(5):
        assert await idle_tasks(hook=True) == await idle_tasks(hook=False)


async def test_on_client_raising_closes_that_client_with_1011(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            errors: list[BaseException] = []
            server.on("error", errors.append)
            failure = RuntimeError("hook failed")

            @server.on_client
            async def on_client(client: ServerClient) -> None:
                if client.identity == "bad":
                    await anyio.lowlevel.checkpoint()
                    raise failure

            accepted = Accepted(server)
            with caplog.at_level(logging.ERROR, logger="ocpp_rpc"):
                async with make_client(url, "good") as good, make_client(url, "bad") as bad:
                    result = await bad.wait_closed()
                    assert result.code == 1011
                    assert (await (await accepted.nth(2)).wait_closed()).code == 1011
                    assert good.state is State.OPEN
                    assert list(server.clients) == ["good"]
            assert errors == [failure]
            assert any(r.exc_info and r.exc_info[1] is failure for r in caplog.records)


async def captured_cancellation() -> BaseException:
    """The backend's cancellation exception, caught in a scope that has ended
    since: re-raised now, no cancellation explains it."""
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class() as exc:
            return exc
    raise AssertionError("not cancelled")


async def stray_cancellation() -> None:
    """What a handler meets when it awaits a future that something else
    cancelled (asyncio), or re-raises a Cancelled it captured from a
    cancelled operation, as `outcome.acapture(...).unwrap()` does when Trio
    code hands results between tasks: a cancellation that cancels nothing here."""
    import sniffio

    if sniffio.current_async_library() == "asyncio":
        future = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(future.cancel)
        await future
    raise await captured_cancellation()


@pytest.mark.parametrize("sync", [False, True])
async def test_a_stray_cancelled_error_from_a_handler_answers_internal_error(
    caplog: pytest.LogCaptureFixture, sync: bool
) -> None:
    """API.md: any exception but an RPCError answers InternalError; a
    cancellation that no cancellation explains is a handler's bug like any
    other (logged), not the end of its connection; from a synchronous
    handler too, which runs as its call is read."""
    with anyio.fail_after(5):
        async with serving() as (server, url):
            cancellation = await captured_cancellation()

            async def stray(call: Call) -> dict[str, Any]:
                await stray_cancellation()
                return {}

            def stray_sync(call: Call) -> dict[str, Any]:
                raise cancellation

            server.handle("Stray", stray_sync if sync else stray)
            server.handle("Echo", lambda call: call.params)
            async with make_client(url) as client:
                with caplog.at_level(logging.ERROR, logger="ocpp_rpc"):
                    with pytest.raises(RPCInternalError):
                        await client.call("Stray")
                assert await client.call("Echo", {"a": 1}) == {"a": 1}
                assert client.state is State.OPEN
                assert any("no cancel scope explains" in r.getMessage() for r in caplog.records)


async def test_a_stray_cancelled_error_from_on_client_closes_with_1011(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            errors: list[BaseException] = []
            server.on("error", errors.append)

            @server.on_client
            async def on_client(client: ServerClient) -> None:
                await stray_cancellation()

            with caplog.at_level(logging.ERROR, logger="ocpp_rpc"):
                async with make_client(url) as client:
                    assert (await client.wait_closed()).code == 1011
            assert len(errors) == 1 and isinstance(
                errors[0].__cause__, anyio.get_cancelled_exc_class()
            )
            assert any("on_client" in r.getMessage() for r in caplog.records)


# -- handlers ----------------------------------------------------------------------------


async def test_server_default_handlers_with_the_clients_own_taking_precedence() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            server.handle("A", lambda call: "server A")

            @server.handler("B")
            async def handle_b(call: Call) -> str:
                return "server B"

            @server.handler()
            def wildcard(call: Call) -> str:
                return f"server wildcard {call.method}"

            assert handle_b.__name__ == "handle_b" and wildcard.__name__ == "wildcard"
            callers: list[Any] = []
            server.handle("Who", lambda call: callers.append(call.client) or "me")

            @server.on_client
            async def on_client(client: ServerClient) -> None:
                if client.identity == "own":
                    client.handle("B", lambda call: "own B")
                    client.handle("C", lambda call: "own C")

            async with make_client(url, "own") as own, make_client(url, "plain") as plain:
                assert await own.call("A") == "server A"
                assert await own.call("B") == "own B"
                assert await own.call("C") == "own C"
                assert await own.call("D") == "server wildcard D"
                assert await plain.call("B") == "server B"
                assert await plain.call("C") == "server wildcard C"
                assert await plain.call("Who") == "me"
                assert callers == [server.clients["plain"]]
                server.remove_handler("A")
                assert await plain.call("A") == "server wildcard A"
                server.remove_handler()
                with pytest.raises(RPCNotImplementedError):
                    await plain.call("A")
                server.remove_all_handlers()
                with pytest.raises(RPCNotImplementedError):
                    await plain.call("B")
                assert await own.call("B") == "own B"


async def test_server_options_apply_to_its_clients() -> None:
    with anyio.fail_after(5):
        async with serving(call_timeout=0.05) as (server, url):
            accepted = Accepted(server)
            client = make_client(url)
            never = Blocker()
            client.handle("Never", never)
            async with client:
                with pytest.raises(TimeoutError):
                    await (await accepted.nth(1)).call("Never")


async def test_server_max_message_size_closes_a_client_sending_more_with_1009() -> None:
    with anyio.fail_after(5):
        async with serving(max_message_size=1000) as (server, url):
            server.handle("Echo", lambda call: {})
            async with make_client(url) as client:
                assert await client.call("Echo", {"data": "y" * 900}) == {}
                with pytest.raises(ConnectionClosed) as info:
                    await client.call("Echo", {"data": "x" * 2000})
                assert info.value.code == 1009


# -- clients ---------------------------------------------------------------------------------


async def test_clients_is_a_read_only_mapping_by_identity() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            async with make_client(url, "a"), make_client(url, "b"):
                a, b = await accepted.nth(1), await accepted.nth(2)
                assert dict(server.clients) == {"a": a, "b": b}
                with pytest.raises(TypeError):
                    server.clients["c"] = a  # type: ignore[index]
                with pytest.raises(TypeError):
                    del server.clients["a"]  # type: ignore[attr-defined]
                assert dict(server.clients) == {"a": a, "b": b}


async def test_a_newer_connection_replaces_the_stale_one() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            async with make_client(url, "cp1") as old:
                stale = await accepted.nth(1)
                async with make_client(url, "cp1") as new:
                    fresh = await accepted.nth(2)
                    assert await old.wait_closed() == CloseResult(1000, "replaced")
                    assert await stale.wait_closed() == CloseResult(1000, "replaced")
                    assert server.clients["cp1"] is fresh
                    assert new.state is State.OPEN
                    assert fresh.state is State.OPEN
            assert dict(server.clients) == {}


async def test_a_client_is_removed_from_clients_on_disconnect() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            async with make_client(url, "a"), make_client(url, "b") as b:
                await accepted.nth(2)
                await b.close()
                server_b = accepted.clients[1]
                await server_b.wait_closed()
                assert list(server.clients) == ["a"]


# -- closing -------------------------------------------------------------------------------


async def test_close_refuses_new_clients_and_closes_every_client_with_its_options() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            events: list[str] = []
            server.on("closing", lambda payload: events.append("closing"))
            server.on("close", lambda payload: events.append("close"))
            async with make_client(url, "a") as a, make_client(url, "b") as b:
                server_clients = [await accepted.nth(1), await accepted.nth(2)]
                await server.close(code=4000, reason="maintenance")
                # close() really waited for every client.
                assert [c.state for c in server_clients] == [State.CLOSED, State.CLOSED]
                assert dict(server.clients) == {}
                assert events == ["closing", "close"]
                assert await a.wait_closed() == CloseResult(4000, "maintenance")
                assert await b.wait_closed() == CloseResult(4000, "maintenance")
                with pytest.raises(ConnectError):
                    async with make_client(url, "c"):
                        pytest.fail("connected to a closed server")
            await server.close()  # again: nothing more happens
            assert events == ["closing", "close"]


async def test_close_cancels_upgrades_in_progress() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            in_auth = anyio.Event()

            @server.auth
            async def auth(handshake: Handshake) -> None:
                in_auth.set()
                await anyio.sleep_forever()

            connecting = Outcome()
            async with anyio.create_task_group() as tg:
                tg.start_soon(connecting.run, make_client(url).__aenter__)
                await in_auth.wait()
                await server.close()
            assert isinstance(connecting.error, ConnectError)
            assert dict(server.clients) == {}


async def test_close_cancels_connections_still_in_their_tls_handshake() -> None:
    trustme = pytest.importorskip("trustme")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(server_context)
    with anyio.fail_after(5):
        async with RPCServer(ping_interval=None) as server:
            port = (await server.listen(ssl_context=server_context)).port
            async with await anyio.connect_tcp("127.0.0.1", port) as stalled:
                await anyio.wait_all_tasks_blocked()  # the server awaits the ClientHello
                with anyio.fail_after(1):
                    await server.close()
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await stalled.receive()


async def test_close_await_pending_lets_pending_calls_finish() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            slow = Blocker(result={"done": True})
            server.handle("Slow", slow)
            closing_event = anyio.Event()
            server.on("closing", lambda payload: closing_event.set())
            async with make_client(url) as client:
                call, closing = Outcome(), Outcome()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(call.run, client.call, "Slow")
                    await slow.started.wait()
                    tg.start_soon(functools.partial(closing.run, server.close, await_pending=True))
                    await closing_event.wait()
                    assert not closing.done.is_set()
                    slow.release.set()
                assert call.value == {"done": True}
                assert await client.wait_closed() == CloseResult(1000, "")


async def test_a_close_after_a_cancelled_one_finishes_it() -> None:
    """Found by an outside review: a close() cancelled while it waited for
    pending calls left the server "closing" for good, and every later close(),
    the one leaving `async with` included (shielded), waited forever."""
    with anyio.fail_after(5):
        async with serving() as (server, url):
            slow = Blocker(result={"done": True})
            server.handle("Slow", slow)
            closed: list[object] = []
            server.on("close", closed.append)
            async with make_client(url) as client:
                call = Outcome()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(call.run, client.call, "Slow")
                    await slow.started.wait()
                    with anyio.move_on_after(0.05) as waited:
                        await server.close(await_pending=True)
                    assert waited.cancelled_caught and closed == []
                    slow.release.set()
                    # Answered first: a later close() ends what is still pending.
                    await call.done.wait()
                    try:
                        with anyio.fail_after(2):
                            await server.close()
                    except TimeoutError:
                        server._close_done.set()  # else leaving the block waits forever
                        pytest.fail("a close() after a cancelled one never returned")
                assert call.value == {"done": True}
                assert await client.wait_closed() == CloseResult(1000, "")
            assert closed == [None]


async def test_a_server_clients_close_after_a_graceful_one_given_up_on_stops_waiting() -> None:
    """As RPCClient's: the close(await_pending=True) bounded in time leaves the
    handler to the next close(), which ends it with the first close's code."""
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            slow = Blocker()
            server.handle("Slow", slow)
            async with make_client(url) as client:
                server_client = await accepted.nth(1)
                call = Outcome()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(call.run, client.call, "Slow")
                    await slow.started.wait()
                    with anyio.move_on_after(0.05):
                        await server_client.close(code=4000, reason="first", await_pending=True)
                    try:
                        with anyio.fail_after(2):
                            assert await server_client.close() == CloseResult(4000, "first")
                    finally:
                        slow.release.set()  # only if the close waited for the handler after all
                assert slow.cancelled.is_set()
                assert isinstance(call.error, ConnectionClosed)
                assert await client.wait_closed() == CloseResult(4000, "first")


async def test_leaving_the_block_after_a_graceful_close_given_up_on_stops_waiting() -> None:
    """server.close(await_pending=True) bounded in time while a handler does
    not end: leaving `async with RPCServer` (a close of its own, shielded, so
    no outer timeout helps) ends it with the first close's code."""
    with anyio.fail_after(5):
        slow = Blocker()
        ready, exited = anyio.Event(), anyio.Event()
        urls: list[str] = []
        call = Outcome()
        closed: list[CloseResult] = []
        async with anyio.create_task_group() as tg:

            async def serve() -> None:
                async with serving() as (server, url):
                    server.handle("Slow", slow)
                    urls.append(url)
                    ready.set()
                    await slow.started.wait()
                    with anyio.move_on_after(0.05):
                        await server.close(code=4000, reason="first", await_pending=True)
                exited.set()

            async def charger() -> None:
                await ready.wait()
                async with make_client(urls[0]) as client:
                    await call.run(client.call, "Slow")
                    closed.append(await client.wait_closed())

            tg.start_soon(serve)
            tg.start_soon(charger)
            with anyio.move_on_after(2):
                await exited.wait()
            hung = not exited.is_set()
            slow.release.set()  # lets a block that waits for the handler end
        assert not hung, "leaving the server's block waited for the handler"
        assert slow.cancelled.is_set()
        assert isinstance(call.error, ConnectionClosed)
        assert (call.error.code, call.error.reason) == (4000, "first")
        assert closed == [CloseResult(4000, "first")]


async def test_a_handler_can_close_the_whole_server_gracefully() -> None:
    """Found by an outside review: `server.close(await_pending=True)` from a
    handler (an admin "shut down") waited for its own client's close, which
    waited for that very handler: nothing ended, not even leaving the block."""
    with anyio.fail_after(5):
        async with serving() as (server, url):
            closed = anyio.Event()
            server.on("close", lambda payload: closed.set())

            @server.handler("Shutdown")
            async def shutdown(call: Call) -> dict[str, Any]:
                await server.close(code=1001, reason="shutdown", await_pending=True)
                return {}

            async with make_client(url) as client:
                with anyio.fail_after(2):
                    with contextlib.suppress(ConnectionClosed):  # its answer may go out first
                        assert await client.call("Shutdown") == {}
                    await closed.wait()
                assert await client.wait_closed() == CloseResult(1001, "shutdown")


async def test_a_handler_can_bound_its_graceful_close_of_the_server() -> None:
    """Found by an outside review: `move_on_after` around a handler's
    `server.close(await_pending=True)` must end its wait for another
    client's pending handler, as it does anywhere else."""
    with anyio.fail_after(5):
        async with serving() as (server, url):
            slow = Blocker(result={})
            server.handle("Slow", slow)
            waited: list[float] = []
            gave_up = anyio.Event()

            @server.handler("Shutdown")
            async def shutdown(call: Call) -> dict[str, Any]:
                start = anyio.current_time()
                with anyio.move_on_after(0.2):
                    await server.close(await_pending=True)
                waited.append(anyio.current_time() - start)
                gave_up.set()
                return {}

            async with make_client(url, "a") as a, make_client(url, "b") as b:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(Outcome().run, b.call, "Slow")
                    await slow.started.wait()
                    tg.start_soon(Outcome().run, a.call, "Shutdown")
                    with anyio.move_on_after(2):
                        await gave_up.wait()
                    slow.release.set()
            assert waited and waited[0] < 1, waited


async def test_a_forced_close_after_a_graceful_one_given_up_on_drops_at_once() -> None:
    """Found by an outside review: `close(force=True)` after a graceful close
    cut short still waited for that close's handshake (5 s with a peer that
    never answers our Close): `force` drops TCP without one."""
    with anyio.fail_after(5):
        async with served("ocpp2.0.1") as pair:
            ours, peer = pair.ours, pair.peer
            slow = Blocker()
            ours.handle("Slow", slow)
            await peer.send_json([2, "s1", "Slow", {}])
            await slow.started.wait()
            with anyio.move_on_after(0.05):
                await ours.close(code=4000, await_pending=True)
            with anyio.fail_after(1):  # the peer never answers a Close
                assert (await ours.close(force=True)).code == 1006
            slow.release.set()


async def test_close_with_a_code_no_close_frame_can_carry_raises_value_error() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            async with make_client(url) as client:
                with pytest.raises(ValueError):
                    await server.close(code=1006)
                assert client.state is State.OPEN
                await server.close(code=1001, reason="bye")
                assert await client.wait_closed() == CloseResult(1001, "bye")


async def test_close_force_drops_every_client() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            async with make_client(url) as client:
                await server.close(force=True)
                assert await client.wait_closed() == CloseResult(1006, "")


async def test_leaving_async_with_closes_every_listener_and_client() -> None:
    with anyio.fail_after(5):
        hook = Blocker()
        server_clients: list[ServerClient] = []
        client_result = Outcome()
        connected = anyio.Event()
        async with anyio.create_task_group() as tg:
            async with RPCServer(ping_interval=None) as server:

                @server.on_client
                async def on_client(server_client: ServerClient) -> None:
                    server_clients.append(server_client)
                    await hook(Call("", {}, "", None, server_client))

                port = (await server.listen()).port
                client = make_client(f"ws://127.0.0.1:{port}", "cp1")

                async def run_client() -> None:
                    async with client:
                        connected.set()
                        await client_result.run(client.wait_closed)

                tg.start_soon(run_client)
                await connected.wait()
                await hook.started.wait()
            assert hook.cancelled.is_set()
            assert server_clients[0].state is State.CLOSED
            assert dict(server.clients) == {}
            with pytest.raises(OSError):
                await anyio.connect_tcp("127.0.0.1", port)
        assert client_result.value == CloseResult(1000, "")


# -- events and ServerClient ---------------------------------------------------------------


async def test_server_events() -> None:
    with anyio.fail_after(5):
        events: list[tuple[str, Any]] = []
        async with serving(protocols=["ocpp1.6"]) as (server, url):
            for name in ("client", "closing", "close", "error", "upgrade_aborted"):
                server.on(name, functools.partial(lambda n, p: events.append((n, p)), name))
            client_seen: list[tuple[State, str | None]] = []
            server.on("client", lambda client: client_seen.append((client.state, client.protocol)))

            @server.auth
            async def auth(handshake: Handshake) -> None:
                if handshake.identity == "intruder":
                    raise Reject(403, "forbidden")

            with pytest.raises(ConnectError):
                async with make_client(url, "intruder", protocols=["ocpp1.6"]):
                    pass
            async with make_client(url, "cp1", protocols=["ocpp1.6"]):
                pass
        names = [name for name, _ in events]
        assert names == ["upgrade_aborted", "client", "closing", "close"]
        aborted = events[0][1]
        assert (aborted.identity, aborted.status, aborted.reason) == ("intruder", 403, "forbidden")
        assert isinstance(events[1][1], ServerClient) and events[1][1].identity == "cp1"
        assert client_seen == [(State.OPEN, "ocpp1.6")]


async def test_server_client_is_an_rpc_client_that_can_call_its_peer() -> None:
    with anyio.fail_after(5):
        async with serving(protocols=["ocpp2.0.1"]) as (server, url):
            accepted = Accepted(server)

            @server.auth
            async def auth(handshake: Handshake) -> Accept:
                return Accept(session=handshake.identity.upper())

            client = make_client(url, "cp1", protocols=["ocpp2.0.1"])
            client.handle("GetConfiguration", lambda call: {"key": call.params["key"]})
            async with client:
                server_client = await accepted.nth(1)
                assert isinstance(server_client, RPCClient)
                assert server_client.identity == "cp1"
                assert server_client.session == "CP1"
                assert server_client.handshake.identity == "cp1"
                assert server_client.protocol == "ocpp2.0.1"
                assert server_client.state is State.OPEN
                result = await server_client.call("GetConfiguration", {"key": "x"})
                assert result == {"key": "x"}
                with pytest.raises(RPCNotImplementedError):
                    await server_client.call("Unknown")
                await client.close(code=4000)
                # A ServerClient never reconnects.
                assert await server_client.wait_closed() == CloseResult(4000, "")
                assert server_client.state is State.CLOSED
                with pytest.raises(ConnectionClosed):
                    await server_client.call("GetConfiguration", {"key": "x"})


async def test_a_base_exception_as_a_connection_opens_still_closes_its_client() -> None:
    """A BaseException from an `open` observer takes the server down, as any
    would; the client it was opening still ends CLOSED, with its `close` event."""

    class Boom(BaseException):
        pass

    accepted: list[ServerClient] = []
    closes: list[int] = []

    def on_client(client: ServerClient) -> None:
        accepted.append(client)
        client.on("close", lambda result: closes.append(result.code))

        def opened(_: object) -> None:
            raise Boom

        client.on("open", opened)

    with anyio.fail_after(10), pytest.raises(BaseException) as raised:
        async with serving(protocols=["ocpp1.6"]) as (server, url):
            server.on("client", on_client)
            async with make_client(
                url, "cp1", protocols=["ocpp1.6"], reconnect=False
            ) as client:
                await client.wait_closed()
    assert any(isinstance(leaf, Boom) for leaf in leaves(raised.value)), raised.value
    (server_side,) = accepted
    assert server_side.state is State.CLOSED
    assert closes == [1006]
    with anyio.fail_after(1):
        assert (await server_side.wait_closed()).code == 1006
