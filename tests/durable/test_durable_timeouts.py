"""A durable call that gets no answer within `call_timeout` on a connection
that stays open: an outside review found it held the queue until some
unrelated disconnect (its late answer thrown away as unexpected). Now every
send of it keeps waiting for its answer, the first answer settles it, and it
goes out again on the same connection after the retry interval. A real
RPCServer on 127.0.0.1, an SQLite store in a temporary directory, both
backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from harness import serving

from ocpp_rpc import NOREPLY, Call, RPCClient, State
from ocpp_rpc.durable import SQLiteStore

pytestmark = pytest.mark.anyio


def charge_point(url: str, store: SQLiteStore, **options: Any) -> RPCClient:
    return RPCClient(url, "CP1", store=store, ping_interval=None, call_timeout=0.2, **options)


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


async def test_a_call_never_answered_is_sent_again_on_the_same_connection(
    tmp_path: Path,
) -> None:
    """The CSMS never answers the first send; after `call_timeout` and the
    retry interval the call goes out again on the same connection (under a
    new id: OCPP-J 1.6 forbids reusing one on a connection) and its answer
    settles the call."""
    async with serving() as (server, url):
        connections: list[object] = []
        server.on("client", connections.append)
        wire_ids: list[str] = []

        @server.handler("StopTransaction")
        def stop_transaction(call: Call) -> Any:
            wire_ids.append(call.message_id)
            return NOREPLY if len(wire_ids) == 1 else {}

        with anyio.fail_after(10):
            async with charge_point(url, SQLiteStore(tmp_path / "cp.db", interval=0.1)) as client:
                results: list[Any] = []
                client.on("durable_result", results.append)
                assert await client.call("StopTransaction", {"transactionId": 1},
                                         durable=True, timeout=3) == {}
                assert await client.pending_durable() == 0
    assert len(wire_ids) == 2 and wire_ids[0] != wire_ids[1], wire_ids
    assert wire_ids[0] == results[0].message_id  # the first send goes under the stored id
    assert len(connections) == 1


async def test_a_late_answer_to_the_first_send_after_the_resend_settles_the_call(
    tmp_path: Path,
) -> None:
    """Both sends are unanswered until the test lets the first one answer:
    that answer settles the call; the resend's answer, coming after it, is an
    unexpected response, and the connection and the queue carry on."""
    async with serving() as (server, url):
        release = [anyio.Event(), anyio.Event()]
        resent = anyio.Event()
        count = 0

        @server.handler("MeterValues")
        async def meter_values(call: Call) -> Any:
            nonlocal count
            count += 1
            send = count
            if send == 2:
                resent.set()
            if send <= 2:
                await release[send - 1].wait()
            return {"send": send}

        with anyio.fail_after(10):
            async with charge_point(url, SQLiteStore(tmp_path / "cp.db", interval=0.1)) as client:
                unexpected: list[Any] = []
                client.on("unexpected_response", unexpected.append)
                results: list[Any] = []

                async def meter() -> None:
                    results.append(await client.call(
                        "MeterValues", {"n": 1}, durable=True, timeout=3))

                async with anyio.create_task_group() as tg:
                    tg.start_soon(meter)
                    await resent.wait()
                    release[0].set()
                assert results == [{"send": 1}]
                release[1].set()
                assert await client.call("MeterValues", {"n": 2}, durable=True,
                                         timeout=3) == {"send": 3}
                assert unexpected and unexpected[0][2] == {"send": 2}
                assert client.state is State.OPEN


async def test_timeouts_do_not_count_as_attempts(tmp_path: Path) -> None:
    """`attempts=1`: a CSMS that fails to answer three sends in time and
    answers the fourth still gets the call delivered; a timeout is not an
    attempt, only a CALLERROR is."""
    async with serving() as (server, url):
        sends = 0

        @server.handler("StopTransaction")
        def stop_transaction(call: Call) -> Any:
            nonlocal sends
            sends += 1
            return NOREPLY if sends <= 3 else {"idTagInfo": {"status": "Accepted"}}

        with anyio.fail_after(10):
            store = SQLiteStore(tmp_path / "cp.db", attempts=1, interval=0.02)
            async with charge_point(url, store) as client:
                results: list[Any] = []
                client.on("durable_result", results.append)
                assert await client.call("StopTransaction", {"transactionId": 1}, durable=True,
                                         timeout=5) == {"idTagInfo": {"status": "Accepted"}}
                assert await client.pending_durable() == 0
    assert sends == 4
    assert [event.error for event in results] == [None]
