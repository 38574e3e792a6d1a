"""RPCClient against our RPCServer over real loopback sockets (API.md: RPCClient, Errors)."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import harness
import pytest
from anyio.abc import SocketAttribute
from harness import Accepted, Blocker, Outcome, echo, free_port, recording, serving
from rawpeer import RawPeer, raw_server
from wsproto.utilities import generate_accept_token

from ocpp_rpc import (
    NOREPLY,
    Accept,
    Backoff,
    Call,
    CloseResult,
    ConnectError,
    ConnectionClosed,
    Handshake,
    Reject,
    RPCClient,
    RPCError,
    RPCFormatViolationError,
    RPCFrameworkError,
    RPCGenericError,
    RPCInternalError,
    RPCMessageTypeNotSupportedError,
    RPCNotImplementedError,
    RPCNotSupportedError,
    RPCOccurrenceConstraintViolationError,
    RPCPropertyConstraintViolationError,
    RPCProtocolError,
    RPCSecurityError,
    RPCServer,
    RPCTypeConstraintViolationError,
    ServerClient,
    State,
    create_rpc_error,
)

pytestmark = pytest.mark.anyio

FAST = Backoff(initial=0.01, maximum=0.05)


# -- helpers -------------------------------------------------------------------------


#: The clients of this file keep RPCClient's default of reconnecting unless told otherwise.
make_client = functools.partial(harness.make_client, reconnect=True)


class Recorder:
    """Records the payloads of some events of a client, in order."""

    def __init__(self, target: RPCClient | RPCServer, *events: str) -> None:
        self.events: list[tuple[str, Any]] = []
        self._changed = anyio.Event()
        for name in events:
            target.on(name, functools.partial(self._record, name))

    def _record(self, name: str, payload: Any) -> None:
        self.events.append((name, payload))
        self._changed.set()
        self._changed = anyio.Event()

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def of(self, name: str) -> list[Any]:
        return [payload for event, payload in self.events if event == name]

    async def wait_for(self, name: str, count: int = 1) -> list[Any]:
        while len(self.of(name)) < count:
            await self._changed.wait()
        return self.of(name)

class SilentPeer:
    """A raw TCP server that completes the WebSocket upgrade by hand, sends the
    `greeting` text frames, and then never reads again (so it never answers
    pings, calls or a Close)."""

    def __init__(self, greeting: tuple[str, ...] = ()) -> None:
        self.url = ""
        self.greeting = greeting
        self._scope = anyio.CancelScope()

    async def _serve(self, stream: anyio.abc.ByteStream) -> None:
        async with stream:
            request = b""
            while b"\r\n\r\n" not in request:
                request += await stream.receive()
            match = re.search(rb"(?i)sec-websocket-key:\s*(\S+)", request)
            assert match is not None
            await stream.send(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                + generate_accept_token(match.group(1))
                + b"\r\n\r\n"
            )
            for text in self.greeting:
                payload = text.encode()
                assert len(payload) < 126
                await stream.send(bytes([0x81, len(payload)]) + payload)  # FIN, text, unmasked
            await anyio.sleep_forever()

    def drop(self) -> None:
        """Close every connection (and the listener)."""
        self._scope.cancel()

    @classmethod
    @asynccontextmanager
    async def running(cls, *greeting: str) -> AsyncIterator[SilentPeer]:
        peer = cls(greeting)
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        peer.url = f"ws://127.0.0.1:{listener.extra(SocketAttribute.local_port)}"
        async with anyio.create_task_group() as tg:

            async def serve() -> None:
                with peer._scope:
                    await listener.serve(peer._serve)

            tg.start_soon(serve)
            yield peer
            peer.drop()


# -- connecting ------------------------------------------------------------------------


async def test_async_with_connects_and_closes_on_exit() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            client = make_client(url)
            assert client.state is State.CLOSED
            async with client as entered:
                assert entered is client
                assert client.state is State.OPEN
                server_client = await accepted.nth(1)
                assert server.clients["cp1"] is server_client
            assert client.state is State.CLOSED
            assert await server_client.wait_closed() == CloseResult(1000, "")


async def test_connect_refused_raises_connect_error() -> None:
    port = await free_port()
    client = make_client(f"ws://127.0.0.1:{port}")
    with anyio.fail_after(5):
        with pytest.raises(ConnectError) as info:
            async with client:
                pytest.fail("connected to a closed port")
    assert isinstance(info.value, OSError)
    assert info.value.status is None
    assert client.state is State.CLOSED


async def test_connect_refused_by_auth_raises_connect_error_with_status() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):

            @server.auth
            async def auth(handshake: Handshake) -> None:
                raise Reject(401, "who are you")

            client = make_client(url)
            with pytest.raises(ConnectError) as info:
                async with client:
                    pytest.fail("connected although refused")
            assert info.value.status == 401
            assert client.state is State.CLOSED


async def test_connect_without_mutual_subprotocol_raises_connect_error() -> None:
    with anyio.fail_after(5):
        async with serving(protocols=["ocpp2.0.1"]) as (_, url):
            with pytest.raises(ConnectError) as info:
                async with make_client(url, protocols=["ocpp1.6"]):
                    pytest.fail("connected without a mutual subprotocol")
            assert info.value.status == 400


async def test_connect_when_server_agrees_no_subprotocol_raises_connect_error() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            client = make_client(url, protocols=["ocpp1.6"])
            with pytest.raises(ConnectError):
                async with client:
                    pytest.fail("connected although no subprotocol was agreed")
            assert client.state is State.CLOSED
            # The server did accept; the client hung up.
            server_client = await accepted.nth(1)
            await server_client.wait_closed()


@pytest.mark.parametrize(
    "identity", ["cp 1", "a/b", "ünï©ødé", "x%41?#&=+", "cp:1", "..", "a\\b;c"]
)
async def test_identity_is_percent_encoded_and_arrives_decoded(identity: str) -> None:
    with anyio.fail_after(5):
        async with recording() as (url, handshakes):
            async with make_client(url + "/ocpp", identity) as client:
                assert client.identity == identity
            assert [h.identity for h in handshakes] == [identity]
            assert handshakes[0].endpoint == "/ocpp"


async def test_query_and_headers_reach_the_server() -> None:
    with anyio.fail_after(5):
        async with recording() as (url, handshakes):
            query = {"token": "a b&c=d", "lang": "ü"}
            headers = {"X-Station-Model": "Model 7", "X-Other": "1"}
            async with make_client(url, query=query, headers=headers):
                pass
            (handshake,) = handshakes
            assert dict(handshake.query) == query
            assert handshake.headers["x-station-model"] == "Model 7"
            assert handshake.headers["X-OTHER"] == "1"


@pytest.mark.parametrize("query", [None, {"y": "2"}])
async def test_identity_is_a_path_segment_when_the_endpoint_has_a_query(
    query: dict[str, str] | None,
) -> None:
    with anyio.fail_after(5):
        async with recording() as (url, handshakes):
            async with make_client(url + "/ocpp/?token=1", "CP 1", query=query):
                pass
            (handshake,) = handshakes
            assert (handshake.identity, handshake.endpoint) == ("CP 1", "/ocpp")
            assert dict(handshake.query) == {"token": "1", **(query or {})}


@pytest.mark.parametrize(
    ("identity", "password", "expected"),
    [
        ("cp1", "secret", b"secret"),
        ("cp:1", "pa:ss:word", b"pa:ss:word"),
        ("cp 1", "pässwörd", "pässwörd".encode()),
        ("cp1", b"\x00\xffbin:ary", b"\x00\xffbin:ary"),
        ("cp1", None, None),
    ],
)
async def test_password_arrives_as_bytes(
    identity: str, password: str | bytes | None, expected: bytes | None
) -> None:
    with anyio.fail_after(5):
        async with recording() as (url, handshakes):
            async with make_client(url, identity, password=password):
                pass
            assert [(h.identity, h.password) for h in handshakes] == [(identity, expected)]


def test_state_is_an_int_enum_numbered_like_websocket() -> None:
    assert [int(s) for s in (State.CONNECTING, State.OPEN, State.CLOSING, State.CLOSED)] == [
        0,
        1,
        2,
        3,
    ]
    assert State(1) is State.OPEN
    assert State.CLOSED == 3


async def test_protocol_is_the_agreed_subprotocol() -> None:
    with anyio.fail_after(5):
        async with serving(protocols=["ocpp2.1", "ocpp1.6", "ocpp2.0.1"]) as (_, url):
            client = make_client(url, protocols=["ocpp2.0.1", "ocpp1.6"])
            assert client.protocol is None
            async with client:
                # The server's preference among those offered.
                assert client.protocol == "ocpp1.6"
            assert client.protocol == "ocpp1.6"
        async with serving() as (_, url), make_client(url) as plain:
            assert plain.protocol is None


# -- calls ---------------------------------------------------------------------------


async def test_call_returns_the_peer_handlers_result() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            seen: list[Any] = []

            @server.handler("Echo")
            def handle_echo(call: Call) -> Any:
                seen.append(call.params)
                return {"echo": call.params}

            async with make_client(url) as client:
                assert await client.call("Echo", {"a": [1, 2]}) == {"echo": {"a": [1, 2]}}
                assert await client.call("Echo") == {"echo": {}}
            assert seen == [{"a": [1, 2]}, {}]


ERRORS_RAISED = [
    RPCGenericError("generic", {"x": 1}),
    RPCNotImplementedError("not here"),
    RPCNotSupportedError("nope", {"why": "because"}),
    RPCInternalError("broken"),
    RPCProtocolError("incomplete"),
    RPCSecurityError("forbidden", {"level": 3}),
    RPCFormatViolationError("bad format"),
    RPCPropertyConstraintViolationError("bad value"),
    RPCOccurrenceConstraintViolationError("missing"),
    RPCTypeConstraintViolationError("bad type"),
    RPCFrameworkError("framework"),
    RPCMessageTypeNotSupportedError("type"),
    create_rpc_error("NotSupported", "made", {"k": "v"}),
]


@pytest.mark.parametrize("error", ERRORS_RAISED, ids=lambda e: type(e).__name__)
async def test_call_raises_the_rpc_error_subclass_of_the_peers_callerror(error: RPCError) -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):

            @server.handler("Fail")
            def fail(call: Call) -> None:
                raise error

            async with make_client(url) as client:
                with pytest.raises(RPCError) as info:
                    await client.call("Fail")
            assert type(info.value) is type(error)
            assert info.value.code == error.code
            assert info.value.message == error.message
            assert info.value.details == error.details


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (RPCFormatViolationError("f", {"a": 1}), "FormationViolation"),
        (RPCOccurrenceConstraintViolationError("o"), "OccurenceConstraintViolation"),
    ],
)
async def test_call_maps_ocpp16_error_spellings_to_the_same_subclass(
    error: RPCError, code: str
) -> None:
    with anyio.fail_after(5):
        async with serving(protocols=["ocpp1.6"]) as (server, url):
            server.handle("Fail", functools.partial(_raise, error))
            async with make_client(url, protocols=["ocpp1.6"]) as client:
                with pytest.raises(type(error)) as info:
                    await client.call("Fail")
            assert info.value.code == code
            assert info.value.message == error.message
            assert info.value.details == error.details


def _raise(error: BaseException, call: Call) -> None:
    raise error


async def test_handler_exception_answers_internal_error_without_details() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            server.handle("Boom", functools.partial(_raise, ValueError("secret text")))
            async with make_client(url) as client:
                with pytest.raises(RPCInternalError) as info:
                    await client.call("Boom")
            assert "secret text" not in info.value.message
            assert "secret text" not in json.dumps(info.value.details)


async def test_handler_exception_answers_detailed_internal_error_when_asked() -> None:
    with anyio.fail_after(5):
        async with serving(respond_with_detailed_errors=True) as (server, url):
            server.handle("Boom", functools.partial(_raise, ValueError("secret text")))
            async with make_client(url) as client:
                with pytest.raises(RPCInternalError) as info:
                    await client.call("Boom")
            assert "secret text" in info.value.message
            assert "ValueError" in json.dumps(info.value.details)
            assert "Traceback" in json.dumps(info.value.details)


async def test_call_after_close_raises_connection_closed() -> None:
    with anyio.fail_after(5):
        async with serving() as (_, url):
            async with make_client(url) as client:
                await client.close(code=4001, reason="done")
                with pytest.raises(ConnectionClosed) as info:
                    await client.call("Echo")
                assert (info.value.code, info.value.reason) == (4001, "done")
            with pytest.raises(ConnectionClosed):
                await client.call("Echo")


@pytest.mark.parametrize(
    ("close_options", "expected"),
    [({"code": 4000, "reason": "bye"}, (4000, "bye")), ({"force": True}, (1006, ""))],
)
async def test_call_raises_connection_closed_when_dropped_mid_call(
    close_options: dict[str, Any], expected: tuple[int, str]
) -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            slow = Blocker()
            server.handle("Slow", slow)
            async with make_client(url, reconnect=False) as client:
                server_client = await accepted.nth(1)
                outcome = Outcome()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(outcome.run, client.call, "Slow")
                    await slow.started.wait()
                    await server_client.close(**close_options)
                assert isinstance(outcome.error, ConnectionClosed)
                assert (outcome.error.code, outcome.error.reason) == expected
                assert slow.cancelled.is_set()


async def test_cancelled_call_is_withdrawn_and_frees_its_slot() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            slow = Blocker(result={"late": True})
            server.handle("Slow", slow)
            server.handle("Echo", echo)
            client = make_client(url, call_concurrency=1)
            recorder = Recorder(client, "unexpected_response", "call_error")
            async with client:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(client.call, "Slow")
                    await slow.started.wait()
                    tg.cancel_scope.cancel()
                # The only slot is free again.
                assert await client.call("Echo", {"v": 2}) == {"v": 2}
                # The late answer of the withdrawn call is unexpected now.
                slow.release.set()
                (payload,) = await recorder.wait_for("unexpected_response")
                assert payload[0] == 3
                assert payload[2] == {"late": True}
                assert payload[1] == slow.calls[0].message_id
                assert await client.call("Echo", {"v": 3}) == {"v": 3}


class ConcurrencyProbe:
    """A server handler counting how many calls run at once, plus a marker
    showing how many CALL frames arrived before it."""

    def __init__(self) -> None:
        self.active = 0
        self.max_active = 0
        self.target = 0
        self.at_target = anyio.Event()
        self.release = anyio.Event()
        self.received = 0
        self.received_before_marker: int | None = None
        self.marker_seen = anyio.Event()

    def reset(self, target: int) -> None:
        self.max_active = 0
        self.target = target
        self.at_target = anyio.Event()
        self.release = anyio.Event()
        self.received = 0
        self.received_before_marker = None
        self.marker_seen = anyio.Event()

    async def work(self, call: Call) -> Any:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        if self.active == self.target:
            self.at_target.set()
        try:
            await self.release.wait()
        finally:
            self.active -= 1
        return {}

    def on_call(self, event: Any) -> None:
        if event.outbound:
            return
        if event.payload[2] == "Work":
            self.received += 1
        elif event.payload[2] == "Marker":
            self.received_before_marker = self.received
            self.marker_seen.set()

    async def run(self, client: RPCClient, calls: int) -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(calls):
                tg.start_soon(client.call, "Work")
            await self.at_target.wait()
            # A raw frame skips the concurrency limit: every CALL the client
            # let through so far was written before it.
            await client.send_raw(json.dumps([2, f"marker-{self.target}", "Marker", {}]))
            await self.marker_seen.wait()
            assert self.received_before_marker == self.target
            self.release.set()
        assert self.max_active == self.target


async def test_call_concurrency_limits_calls_in_flight_and_can_be_raised() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            probe = ConcurrencyProbe()
            server.handle("Work", probe.work)
            server.handle("Marker", lambda call: NOREPLY)

            @server.on_client
            async def observe(client: ServerClient) -> None:
                client.on("call", probe.on_call)

            async with make_client(url, call_concurrency=2) as client:
                probe.reset(2)
                await probe.run(client, 5)
                client.reconfigure(call_concurrency=4)
                probe.reset(4)
                await probe.run(client, 7)


async def test_calls_beyond_the_concurrency_limit_queue_in_order() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            first = Blocker(result={})
            server.handle("First", first)
            order: list[int] = []
            server.handle("Queued", lambda call: order.append(call.params["n"]) or {})
            async with make_client(url, call_concurrency=1) as client:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(client.call, "First")
                    await first.started.wait()
                    for n in range(5):
                        tg.start_soon(client.call, "Queued", {"n": n})
                        await anyio.wait_all_tasks_blocked()  # queued before the next
                    assert order == []
                    first.release.set()
            assert order == [0, 1, 2, 3, 4]


async def test_calls_while_reconnecting_are_queued_until_open() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            attempts = 0
            second_attempt = anyio.Event()
            let_in = anyio.Event()

            @server.auth
            async def auth(handshake: Handshake) -> None:
                nonlocal attempts
                attempts += 1
                if attempts == 2:
                    second_attempt.set()
                    await let_in.wait()

            server.handle("Echo", echo)
            client = make_client(url, backoff=FAST)
            recorder = Recorder(client, "open", "call", "disconnect")
            async with client:
                first = await accepted.nth(1)
                await first.close(force=True)
                await second_attempt.wait()
                assert client.state is State.CONNECTING
                outcomes = [Outcome(), Outcome()]
                states: list[State] = []

                async def call(outcome: Outcome, n: int) -> None:
                    states.append(client.state)
                    await outcome.run(client.call, "Echo", {"n": n})

                async with anyio.create_task_group() as tg:
                    tg.start_soon(call, outcomes[0], 1)
                    tg.start_soon(call, outcomes[1], 2)
                    await anyio.wait_all_tasks_blocked()
                    assert states == [State.CONNECTING, State.CONNECTING]
                    let_in.set()
                assert [o.value for o in outcomes] == [{"n": 1}, {"n": 2}]
                second = await accepted.nth(2)
                assert second is not first
                # Both calls went out only after the second "open".
                names = [n for n in recorder.names() if n != "disconnect"]
                assert names == ["open", "open", "call", "call"]


async def test_send_raw_sends_the_frame_as_given() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            server.handle("Echo", echo)
            client = make_client(url)
            recorder = Recorder(client, "unexpected_response")
            async with client:
                await client.send_raw('[2,"raw-1","Echo",{"r":1}]')
                assert await recorder.wait_for("unexpected_response") == [[3, "raw-1", {"r": 1}]]


async def test_larger_inbound_message_than_max_message_size_closes_with_1009() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            server.handle("Big", lambda call: {"data": "x" * 2000})
            server.handle("Echo", echo)
            async with make_client(url, max_message_size=1000, reconnect=False) as client:
                assert await client.call("Echo", {"data": "y" * 900}) == {"data": "y" * 900}
                with pytest.raises(ConnectionClosed) as info:
                    await client.call("Big")
                assert info.value.code == 1009
                assert (await client.wait_closed()).code == 1009


# -- handlers ----------------------------------------------------------------------


async def test_handlers_by_method_wildcard_decorators_and_removal() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            async with make_client(url) as client:
                client.handle("A", lambda call: "a")
                client.handle(lambda call: f"wildcard {call.method}")

                @client.handler("B")
                async def handle_b(call: Call) -> str:
                    return "b"

                assert callable(handle_b) and handle_b.__name__ == "handle_b"
                server_client = await accepted.nth(1)
                assert await server_client.call("A") == "a"
                assert await server_client.call("B") == "b"
                assert await server_client.call("C") == "wildcard C"

                @client.handler()
                def wildcard(call: Call) -> str:
                    return f"new wildcard {call.method}"

                assert await server_client.call("C") == "new wildcard C"
                client.remove_handler("A")
                assert await server_client.call("A") == "new wildcard A"
                client.remove_handler()
                with pytest.raises(RPCNotImplementedError):
                    await server_client.call("A")
                assert await server_client.call("B") == "b"
                client.handle(lambda call: "back")
                client.remove_all_handlers()
                with pytest.raises(RPCNotImplementedError):
                    await server_client.call("B")
                with pytest.raises(RPCNotImplementedError):
                    await server_client.call("Z")


async def test_handler_receives_call_with_its_fields() -> None:
    with anyio.fail_after(5):
        async with serving(protocols=["ocpp2.0.1"]) as (server, url):
            accepted = Accepted(server)
            client = make_client(url, protocols=["ocpp2.0.1"])
            calls: list[Call] = []

            def sync_handler(call: Call) -> dict[str, Any]:
                calls.append(call)
                return {"sync": True}

            async def async_handler(call: Call) -> dict[str, Any]:
                calls.append(call)
                await anyio.lowlevel.checkpoint()
                return {"async": True}

            client.handle("Sync", sync_handler)
            client.handle("Async", async_handler)
            async with client:
                server_client = await accepted.nth(1)
                sent = Recorder(server_client, "call")
                assert await server_client.call("Sync", {"x": 1}) == {"sync": True}
                assert await server_client.call("Async") == {"async": True}
            assert [(c.method, c.params) for c in calls] == [("Sync", {"x": 1}), ("Async", {})]
            assert [c.message_id for c in calls] == [e.payload[1] for e in sent.of("call")]
            assert all(c.protocol == "ocpp2.0.1" and c.client is client for c in calls)


async def test_handler_is_cancelled_when_the_connection_drops() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            client = make_client(url, reconnect=False)
            block = Blocker()
            client.handle("Block", block)
            async with client:
                server_client = await accepted.nth(1)
                outcome = Outcome()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(outcome.run, server_client.call, "Block")
                    await block.started.wait()
                    await server_client.close(force=True)
                await block.cancelled.wait()
                assert await client.wait_closed() == CloseResult(1006, "")
                assert isinstance(outcome.error, ConnectionClosed)


# -- reconnecting ----------------------------------------------------------------------


@pytest.mark.parametrize("force", [True, False])
async def test_reconnects_after_the_server_drops_the_client(force: bool) -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            server.handle("Echo", echo)
            client = make_client(url, backoff=FAST)
            recorder = Recorder(client, "disconnect", "open")
            async with client:
                first = await accepted.nth(1)
                await first.close(force=force, code=4000, reason="again")
                second = await accepted.nth(2)
                assert server.clients["cp1"] is second
                assert await client.call("Echo", {"n": 1}) == {"n": 1}
                assert client.state is State.OPEN
                (disconnect,) = recorder.of("disconnect")
                assert (disconnect.code, disconnect.reason) == (
                    (1006, "") if force else (4000, "again")
                )
                assert len(recorder.of("open")) == 2


async def test_reconnect_offers_only_the_agreed_protocol() -> None:
    with anyio.fail_after(5):
        async with serving(protocols=["ocpp2.0.1", "ocpp1.6"]) as (server, url):
            accepted = Accepted(server)
            handshakes: list[Handshake] = []

            @server.auth
            async def auth(handshake: Handshake) -> None:
                handshakes.append(handshake)

            async with make_client(url, protocols=["ocpp1.6", "ocpp2.0.1"], backoff=FAST) as c:
                assert c.protocol == "ocpp2.0.1"
                await (await accepted.nth(1)).close(force=True)
                second = await accepted.nth(2)
                assert second.protocol == "ocpp2.0.1"
                assert c.protocol == "ocpp2.0.1"
            assert [h.protocols for h in handshakes] == [
                ("ocpp1.6", "ocpp2.0.1"),
                ("ocpp2.0.1",),
            ]


async def test_reconnect_gives_up_when_the_server_no_longer_agrees_the_protocol() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            attempts = 0

            @server.auth
            async def auth(handshake: Handshake) -> Accept:
                nonlocal attempts
                attempts += 1
                return Accept(protocol="ocpp2.0.1" if attempts == 1 else None)

            async with make_client(url, protocols=["ocpp2.0.1"], backoff=FAST) as client:
                assert client.protocol == "ocpp2.0.1"
                await (await accepted.nth(1)).close(force=True)
                await client.wait_closed()
                assert client.state is State.CLOSED
                assert attempts == 2
                with pytest.raises(ConnectionClosed):
                    await client.call("Echo")


async def test_max_reconnects_exhausted_closes_the_client() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            attempts = 0

            second_attempt = anyio.Event()
            let_go = anyio.Event()

            @server.auth
            async def auth(handshake: Handshake) -> None:
                nonlocal attempts
                attempts += 1
                if attempts == 2:
                    second_attempt.set()
                    await let_go.wait()
                if attempts > 1:
                    raise Reject(503, "busy")

            client = make_client(url, backoff=FAST, max_reconnects=2)
            recorder = Recorder(client, "connecting", "close")
            async with client:
                await (await accepted.nth(1)).close(force=True)
                queued = Outcome()
                async with anyio.create_task_group() as tg:
                    await second_attempt.wait()
                    tg.start_soon(queued.run, client.call, "Echo")
                    await anyio.wait_all_tasks_blocked()
                    let_go.set()
                    result = await client.wait_closed()
                assert isinstance(result, CloseResult)
                assert isinstance(queued.error, ConnectionClosed)
                assert client.state is State.CLOSED
                assert attempts == 3
                assert len(recorder.of("connecting")) == 3
                assert len(recorder.of("close")) == 1
                with pytest.raises(ConnectionClosed):
                    await client.call("Echo")
            assert client.state is State.CLOSED


async def test_without_reconnect_the_client_is_closed_after_a_drop() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            async with make_client(url, reconnect=False, backoff=FAST) as client:
                await (await accepted.nth(1)).close(code=4001, reason="go")
                assert await client.wait_closed() == CloseResult(4001, "go")
                assert client.state is State.CLOSED
                with pytest.raises(ConnectionClosed) as info:
                    await client.call("Echo")
                assert (info.value.code, info.value.reason) == (4001, "go")
            assert len(accepted.clients) == 1


async def test_close_while_reconnecting_stops_and_fails_queued_calls() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            attempts = 0
            second_attempt = anyio.Event()

            @server.auth
            async def auth(handshake: Handshake) -> None:
                nonlocal attempts
                attempts += 1
                if attempts == 2:
                    second_attempt.set()
                    await anyio.sleep_forever()

            async with make_client(url, backoff=FAST) as client:
                await (await accepted.nth(1)).close(force=True)
                await second_attempt.wait()
                queued = Outcome()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(queued.run, client.call, "Echo")
                    await anyio.wait_all_tasks_blocked()
                    assert not queued.done.is_set()
                    result = await client.close(code=4000, reason="stop")
                assert result == CloseResult(4000, "stop")
                assert client.state is State.CLOSED
                assert isinstance(queued.error, ConnectionClosed)
            assert attempts == 2


# -- keep-alive --------------------------------------------------------------------------


# -- closing ---------------------------------------------------------------------------


async def test_close_fails_outbound_calls_at_once_and_cancels_inbound_handlers() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            slow = Blocker()
            server.handle("Slow", slow)
            client = make_client(url)
            block = Blocker()
            client.handle("Block", block)
            async with client:
                server_client = await accepted.nth(1)
                outbound, inbound = Outcome(), Outcome()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(outbound.run, client.call, "Slow")
                    tg.start_soon(inbound.run, server_client.call, "Block")
                    await slow.started.wait()
                    await block.started.wait()
                    assert await client.close(code=4000, reason="bye") == (4000, "bye")
                assert client.state is State.CLOSED
                assert isinstance(outbound.error, ConnectionClosed)
                assert (outbound.error.code, outbound.error.reason) == (4000, "bye")
                assert block.cancelled.is_set()
                assert isinstance(inbound.error, ConnectionClosed)
                assert (inbound.error.code, inbound.error.reason) == (4000, "bye")


async def test_close_fails_calls_and_cancels_handlers_before_the_close_handshake_ends() -> None:
    with anyio.fail_after(5):
        async with SilentPeer.running('[2,"in-1","Block",{}]') as peer:
            client = make_client(peer.url, reconnect=False)
            block = Blocker()
            client.handle("Block", block)
            async with client:
                outbound, closing = Outcome(), Outcome()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(outbound.run, client.call, "Never")
                    await block.started.wait()
                    await anyio.wait_all_tasks_blocked()
                    tg.start_soon(closing.run, client.close)
                    await outbound.done.wait()
                    assert isinstance(outbound.error, ConnectionClosed)
                    await block.cancelled.wait()
                    # The silent peer never answers our Close.
                    assert not closing.done.is_set()
                    assert client.state is State.CLOSING
                    peer.drop()
                assert client.state is State.CLOSED


async def test_close_await_pending_refuses_new_calls_and_lets_pending_ones_finish() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            slow = Blocker(result={"out": 1})
            server.handle("Slow", slow)
            server.handle("Echo", echo)
            client = make_client(url)
            block = Blocker(result={"in": 1})
            client.handle("Block", block)
            recorder = Recorder(client, "closing")
            async with client:
                server_client = await accepted.nth(1)
                outbound, inbound, closing = Outcome(), Outcome(), Outcome()
                queued = Outcome()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(outbound.run, client.call, "Slow")
                    tg.start_soon(inbound.run, server_client.call, "Block")
                    await slow.started.wait()
                    await block.started.wait()
                    tg.start_soon(queued.run, client.call, "Echo")  # behind call_concurrency=1
                    await anyio.wait_all_tasks_blocked()
                    tg.start_soon(
                        functools.partial(
                            closing.run,
                            client.close,
                            code=4002,
                            reason="later",
                            await_pending=True,
                        )
                    )
                    await recorder.wait_for("closing")
                    assert client.state is State.CLOSING
                    with pytest.raises(ConnectionClosed) as refused:
                        await client.call("Echo")
                    # refused with the close's code and reason (the connection is not gone)
                    assert (refused.value.code, refused.value.reason) == (4002, "later")
                    slow.release.set()
                    await outbound.done.wait()
                    assert outbound.value == {"out": 1}
                    await queued.done.wait()  # it was never sent: refused alike
                    assert isinstance(queued.error, ConnectionClosed)
                    assert (queued.error.code, queued.error.reason) == (4002, "later")
                    assert not closing.done.is_set()  # the inbound handler still runs
                    block.release.set()
                assert inbound.value == {"in": 1}
                assert closing.value == CloseResult(4002, "later")
                assert not block.cancelled.is_set()
                assert await server_client.wait_closed() == CloseResult(4002, "later")


async def test_a_handler_closing_its_own_connection_awaiting_pending_waits_for_the_rest() -> None:
    """close(await_pending=True) made by a handler waits for the other calls
    in flight, not for the handler that made it (which would wait for itself);
    the close then cancels that handler, as any close does."""
    with anyio.fail_after(5):
        async with serving() as (server, url):
            slow = Blocker(result={"slow": 1})
            reached_after_close = anyio.Event()

            async def bye(call: Call) -> dict[str, Any]:
                await call.client.close(code=4000, reason="bye", await_pending=True)
                reached_after_close.set()
                return {}

            server.handle("Slow", slow)
            server.handle("Bye", bye)
            async with make_client(url, call_concurrency=2, reconnect=False) as client:
                slow_call, bye_call = Outcome(), Outcome()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(slow_call.run, client.call, "Slow")
                    await slow.started.wait()
                    tg.start_soon(bye_call.run, client.call, "Bye")
                    await anyio.wait_all_tasks_blocked()
                    assert client.state is State.OPEN  # the close waits for Slow
                    slow.release.set()
                assert slow_call.value == {"slow": 1}
                assert isinstance(bye_call.error, ConnectionClosed)
                assert (bye_call.error.code, bye_call.error.reason) == (4000, "bye")
                assert await client.wait_closed() == CloseResult(4000, "bye")
                assert not reached_after_close.is_set()


async def test_a_close_awaiting_pending_that_a_handler_started_in_another_task_waits_for_it(
) -> None:
    """A handler that has a close started elsewhere (answer Reset, then go)
    is waited for: its answer goes out before the close."""
    with anyio.fail_after(5):
        async with serving() as (server, url), anyio.create_task_group() as app:
            closing = anyio.Event()
            server.on("client", lambda c: c.on("closing", lambda _: closing.set()))

            async def reset(call: Call) -> dict[str, Any]:
                app.start_soon(functools.partial(
                    call.client.close, code=4000, reason="reset", await_pending=True
                ))
                await closing.wait()  # the close has begun, and waits for this handler
                await anyio.wait_all_tasks_blocked()  # (one that did not would close now)
                return {"status": "Accepted"}

            server.handle("Reset", reset)
            async with make_client(url, reconnect=False) as client:
                assert await client.call("Reset") == {"status": "Accepted"}
                assert await client.wait_closed() == CloseResult(4000, "reset")


async def test_a_handler_closing_while_a_close_awaits_it_does_not_wait_for_itself() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            started, release = anyio.Event(), anyio.Event()

            async def busy(call: Call) -> dict[str, Any]:
                started.set()
                await release.wait()
                await call.client.close(code=4002, reason="from the handler")
                return {}

            server.handle("Busy", busy)
            async with make_client(url, reconnect=False) as client:
                server_client = await accepted.nth(1)
                outside, busy_call = Outcome(), Outcome()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(busy_call.run, client.call, "Busy")
                    await started.wait()
                    tg.start_soon(functools.partial(
                        outside.run, server_client.close, code=4001, reason="outside",
                        await_pending=True,
                    ))
                    await anyio.wait_all_tasks_blocked()
                    assert not outside.done.is_set()  # it waits for Busy
                    release.set()
                assert outside.value == CloseResult(4001, "outside")  # the first close wins
                assert isinstance(busy_call.error, ConnectionClosed)
                assert await client.wait_closed() == CloseResult(4001, "outside")


async def _peer_closes_with_a_call_queued(
    tg: anyio.abc.TaskGroup, client: RPCClient, peer: RawPeer
) -> tuple[Outcome, Outcome]:
    """Call "A" in flight and "B" queued behind it (call_concurrency=1), then
    the peer closes with 4005: the outcomes of both, once they end."""
    first, queued = Outcome(), Outcome()
    tg.start_soon(first.run, client.call, "A")
    assert (await peer.receive_json())[2] == "A"
    tg.start_soon(queued.run, client.call, "B")
    await anyio.wait_all_tasks_blocked()
    await peer.close(4005, "peer")
    return first, queued


async def test_a_call_queued_as_the_connection_drops_is_sent_on_the_next_one() -> None:
    """A call waiting for its `call_concurrency` slot has not gone out: when
    the connection drops it waits for the reconnect, as a call made while
    reconnecting does (on either backend, whichever task runs first)."""
    with anyio.fail_after(5):
        async with raw_server(subprotocol="ocpp2.0.1") as srv:
            client = RPCClient(srv.url, "CP1", protocols=["ocpp2.0.1"], ping_interval=None,
                               backoff=FAST)
            async with client:
                peer = await srv.accept()
                async with anyio.create_task_group() as tg:
                    first, queued = await _peer_closes_with_a_call_queued(tg, client, peer)
                    again = await srv.accept()
                    frame = await again.receive_json()
                    assert frame[2] == "B"
                    await again.send_json([3, frame[1], {"ok": True}])
                assert isinstance(first.error, ConnectionClosed)
                assert (first.error.code, first.error.reason) == (4005, "peer")
                assert queued.value == {"ok": True}
                async with anyio.create_task_group() as tg:
                    tg.start_soon(client.close)
                    assert await again.expect_close() == (1000, "")


async def test_a_call_queued_as_the_connection_drops_for_good_gets_the_final_close() -> None:
    with anyio.fail_after(5):
        async with harness.connected(reconnect=True, max_reconnects=0) as pair:
            client = pair.ours
            async with anyio.create_task_group() as tg:
                first, queued = await _peer_closes_with_a_call_queued(tg, client, pair.peer)
            assert isinstance(first.error, ConnectionClosed)
            assert (first.error.code, first.error.reason) == (4005, "peer")
            assert isinstance(queued.error, ConnectionClosed)  # ocpp-rpc's word for giving up
            assert (queued.error.code, queued.error.reason) == (1001, "Giving up")
            assert await client.wait_closed() == CloseResult(1001, "Giving up")


async def test_close_while_connecting_drops_the_attempt_at_once() -> None:
    """close() during the first connection attempt aborts it (as a reconnect),
    with ocpp-rpc's result for it; the `async with` body then finds the
    client CLOSED."""
    with anyio.fail_after(5):
        async with serving() as (server, url):
            in_auth, release = anyio.Event(), anyio.Event()

            async def auth(handshake: Handshake) -> None:
                in_auth.set()
                await release.wait()

            server.auth(auth)
            client = make_client(url, reconnect=False)
            inside = Outcome()

            async def use() -> None:
                async with client:
                    inside.value = client.state

            async with anyio.create_task_group() as tg:
                tg.start_soon(use)
                await in_auth.wait()  # the upgrade request is in; no answer yet
                result = await client.close(code=4000, reason="abort")
                assert result == CloseResult(1001, "Connection aborted")
                assert client.state is State.CLOSED
                release.set()
            assert inside.value is State.CLOSED
            assert await client.wait_closed() == CloseResult(1001, "Connection aborted")


async def test_close_force_drops_tcp_and_the_peer_sees_1006() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            async with make_client(url) as client:
                server_client = await accepted.nth(1)
                recorder = Recorder(server_client, "close")
                await client.close(force=True, code=4000, reason="ignored")
                assert client.state is State.CLOSED
                assert await server_client.wait_closed() == CloseResult(1006, "")
                assert [(c.code, c.reason) for c in recorder.of("close")] == [(1006, "")]


async def test_close_code_and_reason_reach_the_peer() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            async with make_client(url) as client:
                server_client = await accepted.nth(1)
                assert await client.close(code=4001, reason="maintenance") == (4001, "maintenance")
                assert await server_client.wait_closed() == (4001, "maintenance")


async def test_second_close_returns_the_first_ones_result() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            slow = Blocker()
            server.handle("Slow", slow)
            async with make_client(url) as client:
                outbound, first, second = Outcome(), Outcome(), Outcome()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(outbound.run, client.call, "Slow")
                    await slow.started.wait()
                    tg.start_soon(
                        functools.partial(
                            first.run, client.close, code=4001, reason="first", await_pending=True
                        )
                    )
                    await anyio.wait_all_tasks_blocked()
                    tg.start_soon(
                        functools.partial(second.run, client.close, code=4002, reason="second")
                    )
                    await anyio.wait_all_tasks_blocked()
                    assert not second.done.is_set()
                    slow.release.set()
                assert first.value == second.value == CloseResult(4001, "first")
                assert await client.close(code=4003) == CloseResult(4001, "first")
                assert await client.wait_closed() == CloseResult(4001, "first")


async def test_a_close_after_a_graceful_close_given_up_on_stops_waiting_for_pending_work(
) -> None:
    """close(await_pending=True) bounded in time, then the close leaving the
    block (shielded: no outer timeout could end it): that one no longer
    waits for the pending work, which ends as a close without await_pending
    ends it, with the first close's code and reason."""
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            slow = Blocker()
            server.handle("Slow", slow)
            client = make_client(url, reconnect=False)
            block = Blocker()
            client.handle("Block", block)
            outbound, inbound = Outcome(), Outcome()
            async with anyio.create_task_group() as tg:
                try:
                    async with client:
                        server_client = await accepted.nth(1)
                        tg.start_soon(outbound.run, client.call, "Slow")
                        tg.start_soon(inbound.run, server_client.call, "Block")
                        await slow.started.wait()
                        await block.started.wait()
                        with anyio.move_on_after(0.05) as waited:
                            await client.close(code=4000, reason="first", await_pending=True)
                        assert waited.cancelled_caught
                        assert client.state is State.CLOSING
                        with anyio.fail_after(2):  # the wait ends here, not when handlers do
                            assert await client.close(code=4001) == CloseResult(4000, "first")
                finally:
                    block.release.set()  # only if the close waited for the handler after all
                    slow.release.set()
            assert block.cancelled.is_set()
            assert isinstance(outbound.error, ConnectionClosed)
            assert (outbound.error.code, outbound.error.reason) == (4000, "first")
            assert isinstance(inbound.error, ConnectionClosed)
            assert await client.wait_closed() == CloseResult(4000, "first")
            assert await server_client.wait_closed() == CloseResult(4000, "first")


async def test_leaving_the_block_after_a_graceful_close_given_up_on_ends_at_once() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            client = make_client(url, reconnect=False)
            block = Blocker()
            client.handle("Block", block)
            exited = anyio.Event()
            async with anyio.create_task_group() as tg:

                async def charger() -> None:
                    async with client:
                        tg.start_soon(Outcome().run, (await accepted.nth(1)).call, "Block")
                        await block.started.wait()
                        with anyio.move_on_after(0.05):
                            await client.close(code=4000, reason="first", await_pending=True)
                    exited.set()

                tg.start_soon(charger)
                with anyio.move_on_after(2):
                    await exited.wait()
                hung = not exited.is_set()
                block.release.set()  # lets a block that waits for the handler end
            assert not hung, "leaving the block waited for the handler"
            assert block.cancelled.is_set()
            assert await client.wait_closed() == CloseResult(4000, "first")


async def test_a_graceful_close_still_waited_for_is_not_cut_short_by_another_close() -> None:
    """Only a wait that every caller asking for it gave up on ends early: a
    close(await_pending=True) still waiting in another task (the first, or a
    later one) keeps a plain close() waiting with it."""
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            async with make_client(url, reconnect=False) as client:
                block = Blocker(result={"in": 1})
                client.handle("Block", block)
                server_client = await accepted.nth(1)
                inbound, graceful, plain = Outcome(), Outcome(), Outcome()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(inbound.run, server_client.call, "Block")
                    await block.started.wait()
                    with anyio.move_on_after(0.05):  # the first one is given up on...
                        await client.close(code=4000, reason="first", await_pending=True)
                    tg.start_soon(functools.partial(  # ...but this one still waits
                        graceful.run, client.close, await_pending=True
                    ))
                    await anyio.wait_all_tasks_blocked()
                    tg.start_soon(plain.run, client.close)
                    await anyio.wait_all_tasks_blocked()
                    assert not plain.done.is_set() and not graceful.done.is_set()
                    block.release.set()
                assert inbound.value == {"in": 1}
                assert not block.cancelled.is_set()
                assert graceful.value == plain.value == CloseResult(4000, "first")


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 2999, 5000])
async def test_close_with_a_code_no_close_frame_can_carry_raises_value_error(code: int) -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            server.handle("Echo", echo)
            async with make_client(url) as client:
                with pytest.raises(ValueError):
                    await client.close(code=code)
                assert client.state is State.OPEN
                assert await client.call("Echo", {"v": 1}) == {"v": 1}
                assert await client.close(code=4999) == CloseResult(4999, "")


async def test_wait_closed_returns_once_the_client_is_closed() -> None:
    with anyio.fail_after(5):
        async with serving() as (_, url):
            waiter = Outcome()
            async with anyio.create_task_group() as tg:
                async with make_client(url) as client:
                    tg.start_soon(waiter.run, client.wait_closed)
                    await anyio.wait_all_tasks_blocked()
                    assert not waiter.done.is_set()
                    await client.close(code=4005, reason="x")
            assert waiter.value == CloseResult(4005, "x")


# -- reconfigure -------------------------------------------------------------------------


async def test_reconfigure_rejects_unknown_options_and_bad_values() -> None:
    # That a new call_timeout applies is tested under MockClock in test_clock.py.
    with anyio.fail_after(5):
        async with serving() as (_, url):
            async with make_client(url) as client:
                with pytest.raises(TypeError):
                    client.reconfigure(no_such_option=1)
                with pytest.raises(ValueError):
                    client.reconfigure(call_concurrency=0)


# -- events -------------------------------------------------------------------------------


async def test_lifecycle_events_in_order() -> None:
    with anyio.fail_after(5):
        async with serving(protocols=["ocpp1.6"]) as (_, url):
            client = make_client(url, protocols=["ocpp1.6"])
            names = ["connecting", "protocol", "open", "closing", "disconnect", "close"]
            recorder = Recorder(client, *names)
            async with client:
                assert recorder.names() == ["connecting", "protocol", "open"]
                await client.close(code=4000, reason="end")
            assert recorder.names() == names
            assert recorder.of("protocol") == ["ocpp1.6"]
            (disconnect,) = recorder.of("disconnect")
            (close,) = recorder.of("close")
            assert (disconnect.code, disconnect.reason) == (4000, "end")
            assert (close.code, close.reason) == (4000, "end")


async def test_message_call_response_and_call_result_events() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            server.handle("Echo", lambda call: {"echo": call.params})
            client = make_client(url)
            client.handle("Hi", lambda call: {"hello": call.params["name"]})
            recorder = Recorder(client, "message", "call", "response", "call_result")
            async with client:
                assert await client.call("Echo", {"a": 1}) == {"echo": {"a": 1}}
                outbound = list(recorder.events)
                recorder.events.clear()
                server_client = await accepted.nth(1)
                assert await server_client.call("Hi", {"name": "x"}) == {"hello": "x"}
                await recorder.wait_for("message", 2)
                inbound = list(recorder.events)

            (call,) = [p for n, p in outbound if n == "call"]
            message_id = call.payload[1]
            assert (call.outbound, call.payload) == (True, [2, message_id, "Echo", {"a": 1}])
            messages = [p for n, p in outbound if n == "message"]
            assert [(m.outbound, json.loads(m.message)) for m in messages] == [
                (True, [2, message_id, "Echo", {"a": 1}]),
                (False, [3, message_id, {"echo": {"a": 1}}]),
            ]
            (response,) = [p for n, p in outbound if n == "response"]
            assert (response.outbound, response.payload) == (
                False,
                [3, message_id, {"echo": {"a": 1}}],
            )
            (result,) = [p for n, p in outbound if n == "call_result"]
            assert (
                result.outbound,
                result.message_id,
                result.method,
                result.params,
                result.result,
            ) == (True, message_id, "Echo", {"a": 1}, {"echo": {"a": 1}})

            (call,) = [p for n, p in inbound if n == "call"]
            message_id = call.payload[1]
            assert (call.outbound, call.payload) == (False, [2, message_id, "Hi", {"name": "x"}])
            (result,) = [p for n, p in inbound if n == "call_result"]
            assert (
                result.outbound,
                result.message_id,
                result.method,
                result.params,
                result.result,
            ) == (False, message_id, "Hi", {"name": "x"}, {"hello": "x"})
            (response,) = [p for n, p in inbound if n == "response"]
            assert (response.outbound, response.payload) == (True, [3, message_id, {"hello": "x"}])
            messages = [p for n, p in inbound if n == "message"]
            assert [(m.outbound, json.loads(m.message)) for m in messages] == [
                (False, [2, message_id, "Hi", {"name": "x"}]),
                (True, [3, message_id, {"hello": "x"}]),
            ]


async def test_call_error_events_for_outbound_and_inbound_calls() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            server.handle("Fail", functools.partial(_raise, RPCNotSupportedError("no")))
            client = make_client(url)
            client.handle("Deny", functools.partial(_raise, RPCSecurityError("denied")))
            recorder = Recorder(client, "call_error", "response")
            async with client:
                with pytest.raises(RPCNotSupportedError):
                    await client.call("Fail", {"p": 1})
                with pytest.raises(RPCSecurityError):
                    await (await accepted.nth(1)).call("Deny", {"q": 2})
                await recorder.wait_for("response", 2)
            outbound, inbound = recorder.of("call_error")
            assert (outbound.outbound, outbound.method, outbound.params) == (True, "Fail", {"p": 1})
            assert isinstance(outbound.error, RPCNotSupportedError)
            assert (inbound.outbound, inbound.method, inbound.params) == (False, "Deny", {"q": 2})
            assert isinstance(inbound.error, RPCSecurityError)
            answer, reply = recorder.of("response")
            assert answer.outbound is False and answer.payload[:3] == [
                4,
                outbound.message_id,
                "NotSupported",
            ]
            assert reply.outbound is True and reply.payload[:4] == [
                4,
                inbound.message_id,
                "SecurityError",
                "denied",
            ]


@pytest.mark.parametrize("bug", [RuntimeError, asyncio.CancelledError])
async def test_observers_run_in_order_and_a_raising_one_is_logged(
    caplog: pytest.LogCaptureFixture, bug: type[BaseException]
) -> None:
    """An observer's CancelledError (it read a cancelled future's result) is
    its bug too: a plain callback is never cancelled."""
    with anyio.fail_after(5):
        async with serving() as (server, url):
            server.handle("Echo", echo)
            client = make_client(url)
            order: list[str] = []

            def first(payload: Any) -> None:
                order.append("first")
                raise bug("observer bug")

            client.on("call_result", first)
            client.on("message", first)
            client.on("call_result", lambda payload: order.append("second"))
            with caplog.at_level(logging.ERROR, logger="ocpp_rpc"):
                async with client:
                    assert await client.call("Echo", {"v": 1}) == {"v": 1}
                    assert await client.call("Echo", {"v": 2}) == {"v": 2}
                    assert client.state is State.OPEN
            assert order == ["first"] * 3 + ["second"] + ["first"] * 3 + ["second"]
            assert any(r.exc_info and isinstance(r.exc_info[1], bug) for r in caplog.records)


async def test_off_stops_an_observer() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            server.handle("Echo", echo)
            client = make_client(url)
            seen: list[Any] = []
            client.on("call_result", seen.append)
            client.off("call_result", print)  # never registered: no error
            async with client:
                await client.call("Echo")
                client.off("call_result", seen.append)
                await client.call("Echo")
            assert len(seen) == 1


# -- lifetime -----------------------------------------------------------------------------


async def test_nothing_outlives_the_async_with_block() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            client = make_client(url)
            block = Blocker()
            client.handle("Block", block)
            inbound = Outcome()
            async with anyio.create_task_group() as tg:
                async with client:
                    tg.start_soon(inbound.run, (await accepted.nth(1)).call, "Block")
                    await block.started.wait()
                assert client.state is State.CLOSED
                assert block.cancelled.is_set()
            assert isinstance(inbound.error, ConnectionClosed)


async def test_exception_in_the_block_propagates_and_closes_the_client() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            accepted = Accepted(server)
            client = make_client(url)
            with pytest.raises(KeyError):
                async with client:
                    server_client = await accepted.nth(1)
                    raise KeyError("body")
            assert client.state is State.CLOSED
            assert await server_client.wait_closed() == CloseResult(1000, "")


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("GenericError", RPCGenericError),
        ("NotImplemented", RPCNotImplementedError),
        ("NotSupported", RPCNotSupportedError),
        ("InternalError", RPCInternalError),
        ("ProtocolError", RPCProtocolError),
        ("SecurityError", RPCSecurityError),
        ("FormatViolation", RPCFormatViolationError),
        ("FormationViolation", RPCFormatViolationError),
        ("PropertyConstraintViolation", RPCPropertyConstraintViolationError),
        ("OccurrenceConstraintViolation", RPCOccurrenceConstraintViolationError),
        ("OccurenceConstraintViolation", RPCOccurrenceConstraintViolationError),
        ("TypeConstraintViolation", RPCTypeConstraintViolationError),
        ("MessageTypeNotSupported", RPCMessageTypeNotSupportedError),
        ("RpcFrameworkError", RPCFrameworkError),
    ],
)
def test_create_rpc_error_maps_every_code_and_spelling(code: str, cls: type[RPCError]) -> None:
    error = create_rpc_error(code, "message", {"k": 1})
    assert type(error) is cls
    assert isinstance(error, RPCError) and isinstance(error, Exception)
    assert (error.code, error.message, error.details) == (code, "message", {"k": 1})
    assert create_rpc_error(code).details == {}


def test_create_rpc_error_keeps_an_unknown_code_in_a_generic_error() -> None:
    error = create_rpc_error("VendorSpecificError", "odd")
    assert type(error) is RPCGenericError
    assert (error.code, error.message, error.details) == ("VendorSpecificError", "odd", {})


def test_rpc_error_subclasses_have_their_codes() -> None:
    assert RPCSecurityError().code == "SecurityError"
    assert RPCFormatViolationError().code == "FormatViolation"
    assert RPCOccurrenceConstraintViolationError().code == "OccurrenceConstraintViolation"
    assert RPCError("m", {"a": 1}).details == {"a": 1}


def test_connect_error_is_an_os_error_with_status() -> None:
    error = ConnectError("refused", status=401)
    assert isinstance(error, OSError)
    assert error.status == 401
    assert ConnectError("refused").status is None


def test_connection_closed_has_code_and_reason() -> None:
    error = ConnectionClosed(4000, "bye")
    assert isinstance(error, Exception)
    assert (error.code, error.reason) == (4000, "bye")
    assert (ConnectionClosed().code, ConnectionClosed().reason) == (1006, "")
