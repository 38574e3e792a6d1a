"""A durable call that gets no answer within `call_timeout` on a connection
that stays open: an outside review found it held the queue until some
unrelated disconnect (its late answer thrown away as unexpected). Now every
send of it keeps waiting for its answer, the first answer settles it, and it
goes out again on the same connection after the retry interval. A real
RPCServer on 127.0.0.1, an SQLite store in a temporary directory, both
backends."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import anyio
import pytest
from harness import serving

from ocpp_rpc import NOREPLY, Backoff, Call, ConnectionClosed, RPCClient, State
from ocpp_rpc.durable import SQLiteStore

pytestmark = pytest.mark.anyio


def charge_point(url: str, store: SQLiteStore, **options: Any) -> RPCClient:
    return RPCClient(url, "CP1", store=store, ping_interval=None, call_timeout=0.2, **options)


FAST = Backoff(initial=0.02, maximum=0.05, factor=2, jitter=0)


def on_timeout(client: RPCClient) -> anyio.Event:
    """Set when one of the client's calls times out (an attempt did)."""
    timed_out = anyio.Event()

    def call_error(event: Any) -> None:
        if isinstance(event.error, TimeoutError):
            timed_out.set()

    client.on("call_error", call_error)
    return timed_out


async def test_a_late_answer_on_the_same_connection_settles_the_call_and_the_queue_moves_on(
    tmp_path: Path,
) -> None:
    """The CSMS answers after `call_timeout`, before any resend (the retry
    interval is 30 s): the answer is the call's result, the call leaves the
    store, and the next durable call goes out, all on the one connection."""
    async with serving() as (server, url):
        connections: list[object] = []
        server.on("client", connections.append)
        release = anyio.Event()
        seen: list[str] = []

        @server.handler("StartTransaction")
        async def start_transaction(call: Call) -> Any:
            seen.append(call.method)
            await release.wait()
            return {"transactionId": 7}

        @server.handler("StopTransaction")
        def stop_transaction(call: Call) -> Any:
            seen.append(call.method)
            return {}

        with anyio.fail_after(10):
            async with charge_point(url, SQLiteStore(tmp_path / "cp.db")) as client:
                timed_out = on_timeout(client)
                results: list[Any] = []

                async def start() -> None:
                    results.append(await client.call(
                        "StartTransaction", {"connectorId": 1}, durable=True, timeout=3))

                async with anyio.create_task_group() as tg:
                    tg.start_soon(start)
                    await timed_out.wait()
                    release.set()
                assert results == [{"transactionId": 7}]
                assert await client.call("StopTransaction", {"transactionId": 7},
                                         durable=True, timeout=3) == {}
                assert await client.pending_durable() == 0
                assert client.state is State.OPEN
    assert seen == ["StartTransaction", "StopTransaction"]
    assert len(connections) == 1


async def test_a_call_never_answered_goes_out_again_on_the_next_connection_only(
    tmp_path: Path,
) -> None:
    """The CSMS never answers the first send: it is not sent again on that
    connection (a CSMS still busy with it could refuse a second send with a
    CALLERROR, and an attempt would be lost), however many retry intervals
    pass; once the connection is replaced it goes out there, under its
    stored id, and that answer settles it. With attempts=1: a timeout is no
    attempt."""
    async with serving() as (server, url):
        wire_ids: list[str] = []
        timed_out = anyio.Event()

        @server.handler("StopTransaction")
        def stop_transaction(call: Call) -> Any:
            wire_ids.append(call.message_id)
            return NOREPLY if len(wire_ids) == 1 else {}

        with anyio.fail_after(10):
            store = SQLiteStore(tmp_path / "cp.db", attempts=1, interval=0.01)
            async with charge_point(url, store, backoff=FAST) as client:
                timed_out = on_timeout(client)
                results: list[Any] = []
                client.on("durable_result", results.append)
                async with anyio.create_task_group() as tg:

                    async def stop() -> None:
                        assert await client.call("StopTransaction", {"transactionId": 1},
                                                 durable=True, timeout=5) == {}

                    tg.start_soon(stop)
                    await timed_out.wait()
                    await anyio.sleep(0.3)  # 30 retry intervals
                    assert len(wire_ids) == 1
                    await server.clients["CP1"].close()
                assert await client.pending_durable() == 0
    assert wire_ids == [results[0].message_id] * 2  # its stored id on each connection
    assert results[0].error is None


async def test_an_answer_taken_up_after_its_connection_dropped_still_settles_the_call(
    tmp_path: Path,
) -> None:
    """Found by an outside review: the answer to a timed-out send came while
    an ordinary call held the only call slot, and the connection dropped
    before the durable sender could take the answer up; the call went out
    again on the next connection and the CSMS started a second transaction."""
    async with serving() as (server, url):
        release, blocking = anyio.Event(), anyio.Event()
        transactions: list[int] = []

        @server.handler("StartTransaction")
        async def start_transaction(call: Call) -> Any:
            transactions.append(len(transactions) + 1)
            await release.wait()
            return {"transactionId": transactions[-1]}

        @server.handler("Block")
        async def block(call: Call) -> Any:
            blocking.set()
            await anyio.sleep_forever()

        with anyio.fail_after(10):
            store = SQLiteStore(tmp_path / "cp.db")
            async with charge_point(url, store, backoff=FAST, call_concurrency=1) as client:
                timed_out = on_timeout(client)
                answered = anyio.Event()  # the answer to StartTransaction reached the client
                client.on("response", lambda event: answered.set())
                results: list[Any] = []

                async def start() -> None:
                    results.append(await client.call(
                        "StartTransaction", {"connectorId": 1}, durable=True, timeout=5))

                async def ordinary() -> None:
                    with pytest.raises(ConnectionClosed):
                        await client.call("Block", {}, timeout=5)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(start)
                    await timed_out.wait()
                    tg.start_soon(ordinary)  # takes the only slot
                    await blocking.wait()
                    release.set()  # the answer comes while the durable sender waits
                    await answered.wait()
                    await server.clients["CP1"].close(force=True)
                assert results == [{"transactionId": 1}]
                assert await client.pending_durable() == 0
    assert transactions == [1]


async def test_a_late_answer_during_a_graceful_close_is_no_bad_message(tmp_path: Path) -> None:
    """Found by an outside review: the late answer to a timed-out send, coming
    while close(await_pending=True) waits for other work, was an unexpected
    response (a bad message toward max_bad_messages). It is the answer to a
    call this client made; the close does not wait for it, and the call stays
    stored for the next session (docs/durable.md)."""
    async with serving() as (server, url):
        release, slow_started, slow_release = anyio.Event(), anyio.Event(), anyio.Event()

        @server.handler("StopTransaction")
        async def stop_transaction(call: Call) -> Any:
            await release.wait()
            return {}

        with anyio.fail_after(10):
            async with charge_point(url, SQLiteStore(tmp_path / "cp.db")) as client:
                timed_out = on_timeout(client)

                @client.handler("Slow")
                async def slow(call: Call) -> Any:
                    slow_started.set()
                    await slow_release.wait()
                    return {}

                bad: list[Any] = []
                client.on("unexpected_response", bad.append)
                client.on("bad_message", bad.append)
                answered = anyio.Event()
                client.on("response", lambda event: answered.set())
                async with anyio.create_task_group() as tg:

                    async def stop() -> None:
                        with pytest.raises((TimeoutError, ConnectionClosed)):
                            await client.call("StopTransaction", {"transactionId": 1},
                                              durable=True, timeout=5)

                    tg.start_soon(stop)
                    await timed_out.wait()
                    tg.start_soon(server.clients["CP1"].call, "Slow")
                    await slow_started.wait()
                    tg.start_soon(functools.partial(client.close, await_pending=True))
                    release.set()  # the CSMS answers while the close waits for Slow
                    await answered.wait()
                    slow_release.set()
                assert bad == []
                assert await client.pending_durable() == 1
