"""Faults a CSMS meets in the field, on both backends: peers that drop TCP
mid-call, half-open connections, peers that stop reading, call floods, a
handler calling back into its own peer, reconnect storms, and connect/
disconnect churn. Nothing may hang, leak a task or lose a call."""

from __future__ import annotations

import functools
import gc
import json
import logging
import math
import socket
import sys
import warnings
from contextlib import AsyncExitStack
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import SocketAttribute, TaskStatus
from harness import (
    ENDS,
    Blocker,
    Outcome,
    echo,
    facing,
    free_port,
    leaves,
    rss_bytes,
    served,
    task_count,
    wait_until,
)
from wsproto import events as ev

from ocpp_rpc import (
    Backoff,
    Call,
    CloseResult,
    ConnectionClosed,
    RPCClient,
    RPCServer,
    State,
)
from ocpp_rpc._transport import websocket
from ocpp_rpc.transport import Transport

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

pytestmark = pytest.mark.anyio

#: The default bound on inbound calls being handled at once (CALL and SEND).
MAX_INBOUND_CALLS = 100


def busy_reply(message_id: str) -> list[Any]:
    return [4, message_id, "GenericError",
            f"Too many inbound calls in progress ({MAX_INBOUND_CALLS}); try again later", {}]


# -- the peer drops TCP mid-call --------------------------------------------------------


@pytest.mark.parametrize("end", ENDS)
async def test_peer_dropping_tcp_mid_call_fails_our_call_with_1006(end: str) -> None:
    with anyio.fail_after(5):
        async with facing(end) as pair:
            outcome = Outcome()
            async with anyio.create_task_group() as tg:
                tg.start_soon(outcome.run, pair.ours.call, "Slow", {"n": 1})
                frame = await pair.peer.receive_json()
                assert frame[0] == 2 and frame[2:] == ["Slow", {"n": 1}]
                await pair.peer.drop()
            assert isinstance(outcome.error, ConnectionClosed)
            assert (outcome.error.code, outcome.error.reason) == (1006, "")
            assert await pair.ours.wait_closed() == CloseResult(1006, "")
            with pytest.raises(ConnectionClosed):
                await pair.ours.call("After")


@pytest.mark.parametrize("end", ENDS)
async def test_peer_dropping_tcp_mid_call_cancels_our_handler(end: str) -> None:
    with anyio.fail_after(5):
        async with facing(end) as pair:
            block = Blocker()
            pair.ours.handle("Block", block)
            await pair.peer.send_json([2, "b1", "Block", {}])
            await block.started.wait()
            await pair.peer.drop()
            await block.cancelled.wait()
            assert await pair.ours.wait_closed() == CloseResult(1006, "")
            assert block.running == 0


# -- half-open: the peer vanishes without a FIN -----------------------------------------


@pytest.mark.parametrize("end", ENDS)
async def test_half_open_peer_is_detected_by_keep_alive_and_fails_pending_calls(
    end: str,
) -> None:
    # The raw peer neither reads nor writes after the upgrade: to us it looks
    # exactly like a charger whose cellular link died without a FIN.
    with anyio.fail_after(5):
        async with facing(end, ping_interval=0.1) as pair:
            opened = anyio.current_time()
            outcome = Outcome()
            async with anyio.create_task_group() as tg:
                tg.start_soon(outcome.run, pair.ours.call, "Never")
                result = await pair.ours.wait_closed()
            elapsed = anyio.current_time() - opened
            assert result == CloseResult(1006, "ping timeout")
            assert isinstance(outcome.error, ConnectionClosed)
            assert (outcome.error.code, outcome.error.reason) == (1006, "ping timeout")
            assert 0.1 <= elapsed < 1.0


# -- the peer stops reading -------------------------------------------------------------


async def test_peer_that_stops_reading_is_dropped_after_write_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Keep-alive is off, so only the write timeout can notice the stuck peer;
    # meanwhile our writes must wait (backpressure), never pile up in memory.
    big = json.dumps([2, "big", "Big", {"data": "x" * 65536}])
    with anyio.fail_after(10), caplog.at_level(logging.WARNING, "ocpp_rpc"):
        async with facing("client", write_timeout=0.3) as pair:
            baseline = rss_bytes()
            sent = 0
            with pytest.raises(ConnectionClosed) as info:
                while True:  # without backpressure, memory would grow until the end
                    await pair.ours.send_raw(big)
                    sent += 1
            assert (info.value.code, info.value.reason) == (1006, "write timeout")
            assert sent > 10  # the kernel's buffers took some first
            assert rss_bytes() - baseline < 64 * 2**20
            assert await pair.ours.wait_closed() == CloseResult(1006, "write timeout")
    assert any("took no frame for 0.3s" in r.getMessage() for r in caplog.records)


async def test_calls_to_a_peer_that_stops_reading_end_instead_of_hanging() -> None:
    # 200 calls of 256 KiB in flight: more than the kernel's socket buffers hold.
    big = {"data": "x" * 2**18}
    with anyio.fail_after(10):
        async with facing(
            "client", write_timeout=0.5, call_concurrency=200, call_timeout=5
        ) as pair:
            outcomes = [Outcome() for _ in range(200)]
            async with anyio.create_task_group() as tg:
                for outcome in outcomes:
                    tg.start_soon(outcome.run, pair.ours.call, "Big", big)
            kinds = {type(outcome.error) for outcome in outcomes}
            assert kinds <= {ConnectionClosed, TimeoutError}, kinds
            assert ConnectionClosed in kinds
            assert (await pair.ours.wait_closed()).code == 1006


@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_a_call_stuck_behind_a_peer_that_stops_reading_still_ends_on_time(
    how: str,
) -> None:
    # One 16 MiB frame fills every kernel buffer between us and a peer that does
    # not read: writing it blocks. The call's own timeout (or cancel scope) must
    # still end it on time, long before the write timeout drops the peer.
    huge = {"data": "x" * 2**24}
    with anyio.fail_after(10):
        async with facing("client", write_timeout=1, max_message_size=2**25) as pair:
            started = anyio.current_time()
            if how == "timeout":
                with pytest.raises(TimeoutError):
                    await pair.ours.call("Huge", huge, timeout=0.2)
            else:
                with anyio.move_on_after(0.2) as scope:
                    await pair.ours.call("Huge", huge)
                assert scope.cancelled_caught
            assert anyio.current_time() - started < 0.8
            assert (await pair.ours.wait_closed()).code == 1006  # after the write timeout


@pytest.mark.parametrize("configured", ["constructor", "reconfigure"])
async def test_peer_flooding_pings_without_reading_is_dropped_after_write_timeout(
    configured: str,
) -> None:
    # Keep-alive is off: only write_timeout can end this. Small socket buffers on
    # both sides make our Pongs back up after a few KiB instead of megabytes.
    options = {"write_timeout": 0.3 if configured == "constructor" else 60}
    with anyio.fail_after(10):
        async with facing("client", **options) as pair:
            if configured == "reconfigure":
                pair.ours.reconfigure(write_timeout=0.3)
            ours = pair.ours._connection.transport.stream.extra(SocketAttribute.raw_socket)
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            peer = pair.peer.stream.extra(SocketAttribute.raw_socket)
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            pings = pair.peer.ws.send(ev.Ping(payload=b"p" * 125)) * 100
            with anyio.move_on_after(5):  # the peer never reads a Pong
                while pair.ours.state is State.OPEN:
                    with anyio.move_on_after(0.05):
                        try:
                            await pair.peer.stream.send(pings)
                        except anyio.BrokenResourceError:  # we dropped it already
                            break
            assert await pair.ours.wait_closed() == CloseResult(1006, "write timeout")
            assert pair.ours.state is State.CLOSED


async def test_server_drops_a_client_that_stops_reading_by_keep_alive() -> None:
    big = {"data": "x" * 65536}
    with anyio.fail_after(10):
        async with served(ping_interval=0.2, call_concurrency=50) as pair:
            outcomes = [Outcome() for _ in range(200)]
            async with anyio.create_task_group() as tg:
                for outcome in outcomes:
                    tg.start_soon(outcome.run, pair.ours.call, "Big", big)
            assert {type(outcome.error) for outcome in outcomes} <= {ConnectionClosed}
            assert (await pair.ours.wait_closed()).code == 1006


async def test_writer_applies_backpressure_to_a_slow_reader() -> None:
    # The peer reads, slowly: nothing is lost and memory stays bounded.
    with anyio.fail_after(10):
        async with facing("client", write_timeout=5) as pair:
            frame = json.dumps([2, "f", "F", {"data": "y" * 8192}])
            received = 0

            async def read_slowly() -> None:
                nonlocal received
                while received < 500:
                    await pair.peer.receive()
                    received += 1
                    if received % 50 == 0:
                        await anyio.sleep(0.02)

            async with anyio.create_task_group() as tg:
                tg.start_soon(read_slowly)
                for _ in range(500):
                    await pair.ours.send_raw(frame)
            assert received == 500
            assert pair.ours.state is State.OPEN


# -- the peer floods calls ---------------------------------------------------------------


@pytest.mark.parametrize("end", ENDS)
async def test_call_flood_is_bounded_and_the_excess_answered_busy_at_once(
    end: str, caplog: pytest.LogCaptureFixture
) -> None:
    flood = 3 * MAX_INBOUND_CALLS
    with anyio.fail_after(10):
        async with facing(end) as pair:
            block = Blocker(result={"ok": True})
            pair.ours.handle("Block", block)
            outcome = Outcome()
            async with anyio.create_task_group() as tg:
                # One call of ours is in flight: its answer must get through the flood.
                tg.start_soon(outcome.run, pair.ours.call, "Ours", {})
                ours = await pair.peer.receive_json()
                with caplog.at_level(logging.WARNING, "ocpp_rpc"):
                    for n in range(flood):
                        await pair.peer.send_json([2, f"c{n}", "Block", {}])
                    busy = [
                        await pair.peer.receive_json() for _ in range(flood - MAX_INBOUND_CALLS)
                    ]
                assert busy == [busy_reply(f"c{n}") for n in range(MAX_INBOUND_CALLS, flood)]
                assert block.running == block.most_running == MAX_INBOUND_CALLS
                assert any("inbound calls" in r.getMessage() for r in caplog.records)
                await pair.peer.send_json([3, ours[1], {"answer": 1}])  # the reader still reads
            assert outcome.value == {"answer": 1}
            block.release.set()
            answers = [await pair.peer.receive_json() for _ in range(MAX_INBOUND_CALLS)]
            assert sorted(a[1] for a in answers) == sorted(
                f"c{n}" for n in range(MAX_INBOUND_CALLS)
            )
            assert all(a[0] == 3 and a[2] == {"ok": True} for a in answers)
            # Capacity is back.
            pair.ours.handle("Echo", echo)
            await pair.peer.send_json([2, "after", "Echo", {"x": 1}])
            assert await pair.peer.receive_json() == [3, "after", {"x": 1}]


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_inbound_calls"):
        RPCClient("ws://localhost", "cp", max_inbound_calls=0)
    with pytest.raises(ValueError, match="write_timeout"):
        RPCClient("ws://localhost", "cp", write_timeout=0)
    RPCClient("ws://localhost", "cp", max_inbound_calls=math.inf, write_timeout=None)


async def test_max_inbound_calls_is_an_option() -> None:
    with anyio.fail_after(5):
        async with facing("client", max_inbound_calls=2) as pair:
            block = Blocker()
            pair.ours.handle("Block", block)
            for n in range(3):
                await pair.peer.send_json([2, f"c{n}", "Block", {}])
            reply = await pair.peer.receive_json()
            assert reply[:3] == [4, "c2", "GenericError"]
            assert "(2)" in reply[3]
            assert block.running == 2


async def test_send_flood_beyond_the_bound_is_dropped() -> None:
    with anyio.fail_after(5):
        async with facing("client", "ocpp2.1", max_inbound_calls=3) as pair:
            block = Blocker()
            pair.ours.handle("Block", block)
            for n in range(10):
                await pair.peer.send_json([6, f"s{n}", "Block", {}])
            # The peer's own probe comes back first: the 7 dropped SENDs sent nothing.
            pair.ours.handle("Echo", echo)
            await pair.peer.send_json([2, "p", "Echo", {}])
            assert await pair.peer.receive_json() == [4, "p", "GenericError",
                                                      "Too many inbound calls in progress (3);"
                                                      " try again later", {}]
            assert block.running == 3
            block.release.set()
            await wait_until(lambda: block.running == 0)
            await pair.peer.send_json([2, "q", "Echo", {}])
            assert await pair.peer.receive_json() == [3, "q", {}]


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_handler_calling_back_into_the_same_peer_never_deadlocks(concurrency: int) -> None:
    # mobilityhouse/ocpp reads one message at a time, so a handler that awaits a
    # call to its own peer waits for an answer nobody reads. Here the reader
    # never waits for handlers.
    with anyio.fail_after(10):
        async with RPCServer(call_concurrency=concurrency, ping_interval=None) as server:

            @server.handler("Outer")
            async def outer(call: Call) -> Any:
                inner = await call.client.call("Inner", call.params, timeout=5)
                return {"inner": inner}

            listening = await server.listen()
            client = RPCClient(
                f"ws://{listening.host}:{listening.port}", "cp1",
                call_concurrency=concurrency, ping_interval=None,
            )

            @client.handler("Inner")
            async def inner(call: Call) -> Any:
                await anyio.lowlevel.checkpoint()
                return {"n": call.params["n"] * 2}

            async with client:
                results: dict[int, Any] = {}

                async def one(n: int) -> None:
                    results[n] = await client.call("Outer", {"n": n}, timeout=5)

                async with anyio.create_task_group() as tg:
                    for n in range(20):
                        tg.start_soon(one, n)
            assert results == {n: {"inner": {"n": 2 * n}} for n in range(20)}


# -- reconnect storms ------------------------------------------------------------------------


async def run_server(
    port: int, stop: anyio.Event, *, task_status: TaskStatus[RPCServer] = anyio.TASK_STATUS_IGNORED
) -> None:
    async with RPCServer(ping_interval=None) as server:
        server.handle("Echo", echo)
        await server.listen(port)
        task_status.started(server)
        await stop.wait()


def all_connected(server: RPCServer, fleet: list[RPCClient]) -> bool:
    return len(server.clients) == len(fleet) and all(c.state is State.OPEN for c in fleet)


async def reconnect_storm(clients: int, deadline: float) -> None:
    """`clients` clients connect, the server goes away and comes back on the same
    port, and every client reconnects (jittered backoff) and is served."""
    port = await free_port()
    url = f"ws://127.0.0.1:{port}/ocpp"
    backoff = Backoff(initial=0.05, maximum=0.5, jitter=1.0)
    fleet = [
        RPCClient(url, f"cp{n}", backoff=backoff, ping_interval=None, call_timeout=10)
        for n in range(clients)
    ]
    tasks_before = task_count()
    with anyio.fail_after(deadline):
        async with anyio.create_task_group() as tg, AsyncExitStack() as stack:
            for server_round in range(2):
                stop = anyio.Event()
                server = await tg.start(run_server, port, stop)
                if server_round == 0:
                    for client in fleet:
                        await stack.enter_async_context(client)
                await wait_until(functools.partial(all_connected, server, fleet))
                outcomes = [Outcome() for _ in fleet]
                async with anyio.create_task_group() as calls:
                    for client, outcome in zip(fleet, outcomes, strict=True):
                        calls.start_soon(outcome.run, client.call, "Echo", {"id": client.identity})
                assert [o.value for o in outcomes] == [{"id": c.identity} for c in fleet]
                stop.set()  # the server goes away: every client starts reconnecting
                await wait_until(lambda: all(c.state is not State.OPEN for c in fleet))
    assert task_count() == tasks_before


async def test_reconnect_storm_of_200_clients_after_a_server_restart() -> None:
    await reconnect_storm(200, deadline=10)


@pytest.mark.soak
async def test_reconnect_storm_of_1000_clients_after_a_server_restart() -> None:
    await reconnect_storm(1000, deadline=60)


# -- closing while a reconnect completes -----------------------------------------------------


async def test_close_racing_a_finished_reconnect_releases_the_unused_connection() -> None:
    # close() can land after a reconnect's TCP connect and upgrade are done but
    # before the client serves the new connection; that connection is closed
    # unused, and must release what it holds (found with python -X dev).
    with anyio.fail_after(5):
        async with RPCServer(ping_interval=None) as server:
            listening = await server.listen()
            connects = 0
            closing = anyio.Event()

            async def dial_and_race_close(url: str, **options: Any) -> Transport:
                nonlocal connects
                transport = await websocket.connect(url, **options)
                connects += 1
                if connects == 2:  # the reconnect: close() comes now
                    tg.start_soon(client.close)
                    with anyio.CancelScope(shield=True):
                        await closing.wait()
                return transport

            client = RPCClient(f"ws://{listening.host}:{listening.port}", "cp1",
                               ping_interval=None, backoff=Backoff(initial=0.01, maximum=0.01),
                               dialer=dial_and_race_close)
            client.on("closing", lambda _: closing.set())
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                async with anyio.create_task_group() as tg, client:
                    await wait_until(lambda: "cp1" in server.clients)
                    await server.clients["cp1"].close(force=True)
                    assert await client.wait_closed() == CloseResult(1000, "")
                assert connects == 2
                gc.collect()
            assert [str(w.message) for w in caught if w.category is ResourceWarning] == []


# -- cancelling the scope around an endpoint ------------------------------------------------


async def test_cancelling_the_scope_around_a_client_closes_it_cleanly() -> None:
    # The client's close() (on leaving the block) meets a connection whose task
    # group the same cancellation is tearing down; on trio it no longer takes new
    # tasks (found by benchmarks/soak.py).
    with anyio.fail_after(10), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "coroutine ... was never awaited"
        async with RPCServer(ping_interval=None) as server:
            server.handle("Echo", echo)
            listening = await server.listen()
            url = f"ws://{listening.host}:{listening.port}"
            tasks: list[int] = []
            for n in range(5):
                client = RPCClient(url, f"cp{n}", ping_interval=None)
                with anyio.CancelScope() as scope:
                    async with client:
                        assert await client.call("Echo", {"n": n}) == {"n": n}
                        scope.cancel()
                        await anyio.sleep_forever()
                assert client.state is State.CLOSED
                await wait_until(lambda: not server.clients)  # its socket was closed
                tasks.append(task_count())
            assert len(set(tasks)) == 1, tasks


async def test_cancelling_the_scope_around_a_server_closes_it_cleanly() -> None:
    with anyio.fail_after(10), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for n in range(5):
            tasks = task_count()
            with anyio.CancelScope() as scope:
                async with RPCServer(ping_interval=None) as server:
                    server.handle("Echo", echo)
                    listening = await server.listen()
                    client = RPCClient(f"ws://{listening.host}:{listening.port}", f"cp{n}",
                                       ping_interval=None, reconnect=False)
                    async with client:
                        assert await client.call("Echo", {"n": n}) == {"n": n}
                        scope.cancel()
                        await anyio.sleep_forever()
            assert (await client.wait_closed()).code in (1000, 1006)
            assert task_count() == tasks


async def test_what_a_connection_task_lets_through_ends_the_server_at_once() -> None:
    """A handler's BaseException (not an Exception: no CALLERROR can answer it)
    leaves the connection's task, as a child task's error leaves a task group:
    the other connections and the `async with server:` body are cancelled at
    once, and the server raises it."""

    class Fatal(BaseException):
        pass

    async def fatal(call: Call) -> Any:
        await anyio.lowlevel.checkpoint()
        raise Fatal

    body_cancelled = False
    with anyio.fail_after(10), pytest.raises(BaseExceptionGroup) as caught:
        async with RPCServer(ping_interval=None) as server:
            server.handle("Fatal", fatal)
            listening = await server.listen()
            url = f"ws://{listening.host}:{listening.port}"
            idle = RPCClient(url, "idle", ping_interval=None, reconnect=False)
            doomed = RPCClient(url, "doomed", ping_interval=None, reconnect=False)
            async with idle, doomed, anyio.create_task_group() as tg:
                tg.start_soon(functools.partial(doomed.call, "Fatal", {}, timeout=5))
                try:
                    await anyio.sleep_forever()
                except anyio.get_cancelled_exc_class():
                    body_cancelled = True
                    raise
    assert body_cancelled
    assert [type(error) for error in leaves(caught.value)] == [Fatal]


# -- connect/disconnect churn ------------------------------------------------------------------


async def churn(cycles: int, workers: int) -> tuple[int, int]:
    """`cycles` connect/call/disconnect cycles, `workers` at a time; returns the
    RSS growth (bytes) after a warm-up, and the task-count difference."""
    async with RPCServer(ping_interval=None) as server:
        server.handle("Echo", echo)
        listening = await server.listen()
        url = f"ws://{listening.host}:{listening.port}/ocpp"

        async def worker(n: int, count: int) -> None:
            for i in range(count):
                async with RPCClient(url, f"cp{n}", ping_interval=None, reconnect=False) as client:
                    assert await client.call("Echo", {"i": i}) == {"i": i}

        async def run(total: int) -> None:
            async with anyio.create_task_group() as tg:
                for n in range(workers):
                    tg.start_soon(worker, n, total // workers)

        await run(max(workers, cycles // 10))  # warm-up: caches, free lists, arenas
        await wait_until(lambda: not server.clients)
        tasks, rss = task_count(), rss_bytes()
        await run(cycles)
        await wait_until(lambda: not server.clients)
        return rss_bytes() - rss, task_count() - tasks


async def test_500_connect_disconnect_cycles_leave_tasks_and_rss_flat() -> None:
    # 2,000 cycles take 5-7 s per backend on two shared cores: they run in the soak.
    with anyio.fail_after(20):
        growth, tasks = await churn(500, workers=20)
    assert tasks == 0
    assert growth < 16 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB"


@pytest.mark.soak
@pytest.mark.parametrize("cycles", [2000, 10_000])
async def test_many_connect_disconnect_cycles_leave_tasks_and_rss_flat(cycles: int) -> None:
    with anyio.fail_after(300):
        growth, tasks = await churn(cycles, workers=50)
    assert tasks == 0
    assert growth < 16 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB"

