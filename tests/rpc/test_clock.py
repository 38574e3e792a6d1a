"""Connection behaviour in time (keep-alive, call and close timeouts, reconnect
backoff, write timeouts) over the memory transport, under Trio's `MockClock`:
minutes of simulated time take milliseconds, and the times are exact.

With ``autojump_threshold=0`` the clock jumps to the next deadline as soon as
every task is blocked, so `anyio.sleep` here only lets simulated time pass.
Each test is bounded by a `fail_after` in simulated time: a deadlock jumps
straight to it and fails at once instead of hanging.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from harness import Accepted, Blocker, Outcome, echo
from trio.testing import MockClock

from ocpp_rpc import (
    NOREPLY,
    Backoff,
    Call,
    CloseResult,
    ConnectError,
    ConnectionClosed,
    Handshake,
    Reject,
    RPCClient,
    RPCServer,
    State,
)
from ocpp_rpc._transport.memory import MemoryWebSocket, memory_pair
from ocpp_rpc._wire.handshake import make_handshake
from ocpp_rpc.testing import connect
from ocpp_rpc.transport import Transport, WebSocketClosed

pytestmark = pytest.mark.anyio

LIMIT = 3600  # simulated seconds any test may take


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return "trio", {"clock": MockClock(autojump_threshold=0)}


class Times:
    """When (simulated time, from its creation) each event of a client fired."""

    def __init__(self, target: RPCClient | RPCServer, *events: str) -> None:
        self.start = anyio.current_time()
        self.times: dict[str, list[float]] = {event: [] for event in events}
        self._changed = anyio.Event()
        for event in events:
            target.on(event, functools.partial(self._record, event))

    def _record(self, event: str, payload: object) -> None:
        self.times[event].append(anyio.current_time() - self.start)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, event: str, count: int = 1) -> list[float]:
        while len(self.times[event]) < count:
            await self._changed.wait()
        return self.times[event]


def elapsed_since(start: float) -> float:
    return anyio.current_time() - start


class SilentPeer:
    """A dialer whose 'server' is one end of a memory pair that the test
    holds and never reads: no pong, no answer, no echo of a Close."""

    def __init__(self) -> None:
        self.ends: list[MemoryWebSocket] = []

    async def __call__(self, url: str, *, subprotocols: Sequence[str], **_: Any) -> Transport:
        ours, theirs = memory_pair(subprotocol=subprotocols[0] if subprotocols else None)
        self.ends.append(theirs)
        return ours

    async def drop(self) -> None:
        for end in self.ends:
            await end.abort()


@asynccontextmanager
async def silent_peer(**options: Any) -> AsyncIterator[tuple[RPCClient, SilentPeer]]:
    """An RPCClient (no reconnects) connected to a `SilentPeer`."""
    peer = SilentPeer()
    options.setdefault("reconnect", False)
    try:
        async with RPCClient("ws://silent/ocpp", "CP1", dialer=peer, **options) as client:
            yield client, peer
    finally:
        await peer.drop()


class SilentClientUpgrade:
    """An upgrade whose client (`peer`, held by the test) never reads."""

    keepalive = True

    def __init__(self, identity: str = "CP1") -> None:
        self.identity = identity
        self.peer: MemoryWebSocket | None = None

    def handshake(self) -> Handshake:
        return make_handshake(path=f"/ocpp/{self.identity}", query_string="", headers=[],
                              protocols=(), remote_address=None)

    async def accept(self, subprotocol: str | None, *, max_message_size: int) -> Transport:
        server_end, self.peer = memory_pair(subprotocol=subprotocol)
        return server_end

    async def reject(self, status: int, message: str) -> None:
        raise AssertionError(f"refused: {status} {message}")


class AnsweringClientUpgrade(SilentClientUpgrade):
    """An upgrade that keeps the server's end too; the test reads `peer`."""

    server_end: MemoryWebSocket | None = None

    async def accept(self, subprotocol: str | None, *, max_message_size: int) -> Transport:
        self.server_end, self.peer = memory_pair(subprotocol=subprotocol)
        return self.server_end


async def answer_pings(peer: MemoryWebSocket) -> None:
    """Read (and so answer pings) until the connection ends."""
    with contextlib.suppress(WebSocketClosed):
        while True:
            await peer.receive()


# -- keep-alive ----------------------------------------------------------------------------


async def test_the_client_pings_every_ping_interval() -> None:
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            async with connect(server, "CP1", ping_interval=30) as client:
                times = Times(client, "ping")
                rtts: list[float] = []
                client.on("ping", lambda event: rtts.append(event.rtt))
                assert await times.wait_for("ping", 3) == pytest.approx([30, 60, 90])
                assert rtts == [0, 0, 0]  # a memory round trip takes no (mock) time


async def test_the_server_pings_its_clients_every_ping_interval() -> None:
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=20) as server:
            accepted = Accepted(server)
            async with connect(server, "CP1", ping_interval=None):
                times = Times(await accepted.nth(1), "ping")
                assert await times.wait_for("ping", 2) == pytest.approx([20, 40])


async def test_a_client_whose_pings_go_unanswered_drops_with_1006_ping_timeout() -> None:
    with anyio.fail_after(LIMIT):
        async with silent_peer(ping_interval=30) as (client, _):
            start = anyio.current_time()
            assert await client.wait_closed() == CloseResult(1006, "ping timeout")
            assert elapsed_since(start) == pytest.approx(60)  # ping at 30, no pong by 60


async def test_the_server_drops_a_client_that_answers_no_ping_with_1006_ping_timeout() -> None:
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=30) as server:
            accepted = Accepted(server)
            upgrade = SilentClientUpgrade()
            async with anyio.create_task_group() as tg:
                start = anyio.current_time()
                tg.start_soon(server.serve_upgrade, upgrade)
                server_client = await accepted.nth(1)
                assert await server_client.wait_closed() == CloseResult(1006, "ping timeout")
                assert elapsed_since(start) == pytest.approx(60)
            assert upgrade.peer is not None
            await upgrade.peer.abort()


async def test_reconfigure_while_a_pong_is_being_delivered_keeps_one_ping_chain() -> None:
    """A reconfigure between a pong's arrival and its ping task resuming (the
    moment it would schedule the next ping) must not start a second chain."""
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=1) as server:
            accepted = Accepted(server)
            upgrade = AnsweringClientUpgrade()
            async with anyio.create_task_group() as tg:
                tg.start_soon(server.serve_upgrade, upgrade)
                server_client = await accepted.nth(1)
                assert upgrade.server_end is not None and upgrade.peer is not None
                ws = upgrade.server_end
                original = ws._resolve_pings
                reconfigured: list[float] = []

                def resolve_then_reconfigure(payload: bytes) -> None:
                    original(payload)  # the ping task is now runnable, not yet run
                    if not reconfigured:
                        reconfigured.append(anyio.current_time())
                        server_client.reconfigure(ping_interval=1)  # e.g. from a handler

                ws._resolve_pings = resolve_then_reconfigure  # type: ignore[method-assign]
                tg.start_soon(answer_pings, upgrade.peer)
                times = Times(server_client, "ping")
                await anyio.sleep(100)
                assert reconfigured
                assert 99 <= len(times.times["ping"]) <= 101  # one ping a second, not two
                await server_client.close()


@pytest.mark.parametrize("defer", [True, False])
async def test_defer_pings_on_activity_skips_pings_while_messages_flow(defer: bool) -> None:
    async def slow_echo(call: Call) -> Any:
        await anyio.sleep(10)  # an answer every 10 s
        return call.params

    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            server.handle("SlowEcho", slow_echo)
            async with connect(server, "CP1", ping_interval=30,
                               defer_pings_on_activity=defer) as client:
                times = Times(client, "ping")
                for _ in range(10):
                    await client.call("SlowEcho")
                assert elapsed_since(times.start) == pytest.approx(100)
                if defer:
                    assert times.times["ping"] == []
                    # Once the messages stop, pings resume an interval later.
                    assert await times.wait_for("ping") == pytest.approx([130])
                else:
                    assert times.times["ping"] == pytest.approx([30, 60, 90])


async def test_reconfigure_ping_interval_restarts_the_pings() -> None:
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            async with connect(server, "CP1", ping_interval=None) as client:
                times = Times(client, "ping")
                client.reconfigure(ping_interval=5)
                assert await times.wait_for("ping", 2) == pytest.approx([5, 10])
                client.reconfigure(ping_interval=None)
                await anyio.sleep(100)
                assert len(times.times["ping"]) == 2


# -- call timeouts --------------------------------------------------------------------------


async def test_calls_time_out_after_call_timeout_or_their_own_timeout() -> None:
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            server.handle("Never", Blocker())
            server.handle("Echo", echo)
            async with connect(server, "CP1") as client:  # call_timeout: 60 s by default
                errors: list[Any] = []
                client.on("call_error", errors.append)
                start = anyio.current_time()
                with pytest.raises(TimeoutError) as info:
                    await client.call("Never")
                assert type(info.value) is TimeoutError  # the builtin, not a subclass
                assert elapsed_since(start) == pytest.approx(60)
                start = anyio.current_time()
                with pytest.raises(TimeoutError):
                    await client.call("Never", {"n": 1}, timeout=2.5)
                assert elapsed_since(start) == pytest.approx(2.5)
                client.reconfigure(call_timeout=7)
                start = anyio.current_time()
                with pytest.raises(TimeoutError):
                    await client.call("Never")
                assert elapsed_since(start) == pytest.approx(7)
                assert await client.call("Echo", {"still": "open"}) == {"still": "open"}
            # Observers see the TimeoutError too, not the backend's cancellation.
            assert [(e.outbound, e.method, e.params, type(e.error)) for e in errors] == [
                (True, "Never", {}, TimeoutError),
                (True, "Never", {"n": 1}, TimeoutError),
                (True, "Never", {}, TimeoutError),
            ]


async def test_a_call_queued_behind_the_concurrency_limit_gets_its_whole_timeout() -> None:
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            server.handle("Never", Blocker())
            async with connect(server, "CP1", call_timeout=10) as client:
                first, second = Outcome(), Outcome()
                start = anyio.current_time()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(first.run, client.call, "Never")
                    tg.start_soon(second.run, client.call, "Never")
                assert isinstance(first.error, TimeoutError)
                assert isinstance(second.error, TimeoutError)
                # Its timeout runs from when it gets its slot (call_concurrency 1).
                assert elapsed_since(start) == pytest.approx(20)


async def test_a_server_call_that_goes_unanswered_times_out() -> None:
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None, call_timeout=45) as server:
            accepted = Accepted(server)
            async with connect(server, "CP1") as client:
                client.handle("Never", Blocker())
                server_client = await accepted.nth(1)
                start = anyio.current_time()
                with pytest.raises(TimeoutError):
                    await server_client.call("Never")
                assert elapsed_since(start) == pytest.approx(45)


async def test_a_noreply_handler_sends_nothing_and_the_caller_times_out() -> None:
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None, call_timeout=30) as server:
            accepted = Accepted(server)
            async with connect(server, "CP1", ping_interval=None) as client:
                client.handle("Quiet", lambda call: NOREPLY)
                sent: list[Any] = []
                client.on("message", lambda event: sent.append(event) if event.outbound else None)
                server_client = await accepted.nth(1)
                start = anyio.current_time()
                with pytest.raises(TimeoutError):
                    await server_client.call("Quiet")
                assert elapsed_since(start) == pytest.approx(30)
                assert sent == []


# -- closing -----------------------------------------------------------------------------------


async def test_close_with_await_pending_lets_pending_calls_finish_first() -> None:
    started = anyio.Event()

    async def slow(call: Call) -> str:
        started.set()
        await anyio.sleep(20)
        return "done"

    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            server.handle("Slow", slow)
            async with connect(server, "CP1") as client:
                closing_started = anyio.Event()
                client.on("closing", lambda _: closing_started.set())
                pending, closing = Outcome(), Outcome()
                start = anyio.current_time()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(pending.run, client.call, "Slow")
                    await started.wait()
                    tg.start_soon(
                        functools.partial(closing.run, client.close, code=4000, await_pending=True)
                    )
                    await closing_started.wait()
                    assert client.state is State.CLOSING
                    with pytest.raises(ConnectionClosed):
                        await client.call("Slow")  # refused while closing
                assert pending.value == "done"
                assert closing.value == CloseResult(4000, "")
                assert elapsed_since(start) == pytest.approx(20)


async def test_close_without_await_pending_fails_pending_calls_at_once() -> None:
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            block = Blocker()
            server.handle("Never", block)
            async with connect(server, "CP1") as client:
                pending = Outcome()
                start = anyio.current_time()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(pending.run, client.call, "Never")
                    await block.started.wait()
                    assert await client.close() == CloseResult(1000, "")
                assert isinstance(pending.error, ConnectionClosed)
                assert block.cancelled.is_set()
                assert elapsed_since(start) == 0


async def test_a_close_the_peer_never_answers_ends_after_the_close_timeout() -> None:
    with anyio.fail_after(LIMIT):
        async with silent_peer(ping_interval=None) as (client, _):
            start = anyio.current_time()
            assert await client.close(code=4001, reason="bye") == CloseResult(4001, "bye")
            assert elapsed_since(start) == pytest.approx(5)  # the close handshake's bound


async def test_a_peer_that_stops_reading_is_dropped_after_the_write_timeout() -> None:
    with anyio.fail_after(LIMIT):
        async with silent_peer(ping_interval=None) as (client, _):  # write_timeout: 60 s
            flooding = Outcome()

            async def flood() -> None:
                while True:
                    await client.send_raw('[2,"1","Noise",{}]')

            start = anyio.current_time()
            async with anyio.create_task_group() as tg:
                tg.start_soon(flooding.run, flood)
                assert await client.wait_closed() == CloseResult(1006, "write timeout")
            assert elapsed_since(start) == pytest.approx(60)
            assert isinstance(flooding.error, ConnectionClosed)


# -- connecting and reconnecting ------------------------------------------------------------


async def test_an_upgrade_the_server_never_answers_times_out_the_connect() -> None:
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            hung = anyio.Event()

            @server.auth
            async def auth(handshake: Handshake) -> None:
                hung.set()
                await anyio.sleep_forever()

            start = anyio.current_time()
            with pytest.raises(ConnectError) as info:
                async with connect(server, "CP1"):
                    pass
            assert info.value.status is None
            assert hung.is_set()
            assert elapsed_since(start) == pytest.approx(30)  # the client's handshake timeout


async def test_reconnects_wait_the_backoff_delays() -> None:
    backoff = Backoff(initial=1, maximum=10, factor=2, jitter=0)
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            accepted = Accepted(server)
            attempts: list[float] = []
            dropped = 0.0

            @server.auth
            async def auth(handshake: Handshake) -> None:
                if accepted.clients:
                    attempts.append(anyio.current_time() - dropped)
                    if len(attempts) < 6:
                        raise Reject(503, "busy")

            async with connect(server, "CP1", backoff=backoff) as client:
                times = Times(client, "open")
                dropped = anyio.current_time()
                await (await accepted.nth(1)).close(force=True)
                assert await times.wait_for("open") == pytest.approx([35])
    # 1 s, then 2, 4, 8 and the 10 s maximum after each refusal
    assert attempts == pytest.approx([1, 3, 7, 15, 25, 35])


async def test_backoff_jitter_stretches_each_delay_by_at_most_its_fraction() -> None:
    backoff = Backoff(initial=4, maximum=4, factor=1, jitter=0.5)
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            accepted = Accepted(server)
            attempts: list[float] = []

            @server.auth
            async def auth(handshake: Handshake) -> None:
                if accepted.clients:
                    attempts.append(anyio.current_time())
                    if len(attempts) < 20:
                        raise Reject(503, "busy")

            async with connect(server, "CP1", backoff=backoff):
                await (await accepted.nth(1)).close(force=True)
                await accepted.nth(2)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert all(4 <= gap <= 6 for gap in gaps), gaps
    assert len(set(gaps)) > 1  # jittered, not lockstep


async def test_reconfigure_backoff_applies_to_the_next_reconnect() -> None:
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            accepted = Accepted(server)
            async with connect(server, "CP1") as client:  # the default waits 1 to 1.25 s
                client.reconfigure(backoff=Backoff(initial=7, jitter=0))
                start = anyio.current_time()
                await (await accepted.nth(1)).close(force=True)
                await accepted.nth(2)
                assert elapsed_since(start) == pytest.approx(7)


async def test_max_reconnects_gives_up_after_its_attempts() -> None:
    backoff = Backoff(initial=2, maximum=2, jitter=0)
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            accepted = Accepted(server)

            @server.auth
            async def auth(handshake: Handshake) -> None:
                if accepted.clients:
                    raise Reject(503, "busy")

            async with connect(server, "CP1", backoff=backoff, max_reconnects=3) as client:
                times = Times(client, "connecting")
                await (await accepted.nth(1)).close(force=True)
                assert await client.wait_closed() == CloseResult(1001, "Giving up")
                assert times.times["connecting"] == pytest.approx([2, 4, 6])


async def test_the_server_replaces_a_stale_connection_of_the_same_identity() -> None:
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            accepted = Accepted(server)
            async with connect(server, "CP1", reconnect=False) as old:
                async with connect(server, "CP1") as new:
                    assert await old.wait_closed() == CloseResult(1000, "replaced")
                    assert server.clients["CP1"] is await accepted.nth(2)
                    assert new.state is State.OPEN
