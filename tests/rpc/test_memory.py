"""The in-memory WebSocket (`ocpp_rpc._transport.memory`): the behaviour of
`WebSocket` that the RPC layer relies on, without sockets, on both backends."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from ocpp_rpc import CloseResult, ConnectionClosed, RPCClient
from ocpp_rpc._transport.memory import MemoryWebSocket, memory_pair
from ocpp_rpc.transport import Transport, WebSocketClosed

pytestmark = pytest.mark.anyio


class Reader:
    """Receives from one end in a task until it closes, keeping what came."""

    def __init__(self, ws: MemoryWebSocket) -> None:
        self.ws = ws
        self.messages: list[str | bytes] = []
        self.closed: WebSocketClosed | None = None
        self.done = anyio.Event()

    async def run(self) -> None:
        try:
            while True:
                self.messages.append(await self.ws.receive())
        except WebSocketClosed as exc:
            self.closed = exc
        finally:
            self.done.set()


@asynccontextmanager
async def reading(*ends: MemoryWebSocket) -> AsyncIterator[list[Reader]]:
    readers = [Reader(ws) for ws in ends]
    async with anyio.create_task_group() as tg:
        for reader in readers:
            tg.start_soon(reader.run)
        yield readers


def test_it_is_a_transport() -> None:
    a, b = memory_pair(subprotocol="ocpp2.0.1")
    transport: Transport = a  # mypy checks the protocol
    assert transport.subprotocol == b.subprotocol == "ocpp2.0.1"
    assert (a.close_code, a.close_reason, a.write_timeout) == (None, "", None)
    with pytest.raises(ValueError):
        memory_pair(buffer_size=0)
    for end in (a, b):
        end._finish(1006, "")  # no unclosed-stream warnings


async def test_whole_text_and_binary_messages_arrive_in_order() -> None:
    a, b = memory_pair()
    with anyio.fail_after(5):
        await a.send("text")
        await a.send_many(["é", b"\x00\x01", bytearray(b"ba")])  # type: ignore[list-item]
        assert [await b.receive() for _ in range(4)] == ["text", "é", b"\x00\x01", b"ba"]
        await b.send("back")
        assert await a.receive() == "back"
        await a.abort()


async def test_a_message_that_is_neither_text_nor_utf8_is_refused() -> None:
    a, _ = memory_pair()
    with pytest.raises(TypeError):
        await a.send(42)  # type: ignore[arg-type]
    with pytest.raises(UnicodeEncodeError):
        await a.send("\ud800")
    await a.abort()


async def test_close_reaches_the_peer_which_echoes_it() -> None:
    a, b = memory_pair()
    with anyio.fail_after(5):
        async with reading(b) as (reader,):
            await a.send("last")
            await a.close(4001, "maintenance")
            await reader.done.wait()
    assert reader.messages == ["last"]
    assert reader.closed is not None
    assert (reader.closed.code, reader.closed.reason) == (4001, "maintenance")
    assert (a.close_code, a.close_reason) == (b.close_code, b.close_reason) == (4001, "maintenance")
    with pytest.raises(WebSocketClosed) as info:
        await a.send("more")
    assert info.value.code == 4001
    with pytest.raises(WebSocketClosed):
        await b.receive()


async def test_close_while_another_task_reads_lets_that_task_see_the_echo() -> None:
    a, b = memory_pair()
    with anyio.fail_after(5):
        async with reading(a, b) as (reader_a, reader_b):
            await b.send("to a")
            await a.close(1000, "bye")
            await reader_a.done.wait()
            await reader_b.done.wait()
    assert reader_a.messages == ["to a"]
    assert reader_a.closed is not None and reader_a.closed.code == 1000
    assert reader_b.closed is not None and reader_b.closed.reason == "bye"


async def test_close_reason_is_truncated_to_fit_a_close_frame() -> None:
    a, b = memory_pair()
    with anyio.fail_after(5):
        async with reading(b) as (reader,):
            await a.close(1000, "é" * 100)
            await reader.done.wait()
    assert b.close_reason == "é" * 61  # 122 of the 123 bytes a Close frame has room for
    assert a.close_reason == b.close_reason  # the echo


async def test_close_without_an_answer_keeps_our_code_after_the_timeout() -> None:
    a, b = memory_pair()
    with anyio.fail_after(5):
        await a.close(4002, "gone", timeout=0.01)  # b never reads
    assert (a.close_code, a.close_reason) == (4002, "gone")
    with pytest.raises(WebSocketClosed) as info:  # b reads the Close, its echo goes nowhere
        await b.receive()
    assert (info.value.code, info.value.reason) == (4002, "gone")


async def test_a_cancelled_close_drops_the_connection_as_a_socket_would() -> None:
    a, b = memory_pair()
    with anyio.move_on_after(0.05) as scope:
        await a.close(4002, "gone", timeout=30)  # b never answers
    assert scope.cancelled_caught
    assert a.close_code == 1006
    with anyio.fail_after(5), pytest.raises(WebSocketClosed):
        while True:  # b reads our Close, or finds the connection dropped
            await b.receive()


async def test_close_rejects_a_code_no_close_frame_carries() -> None:
    a, _ = memory_pair()
    for code in (1005, 1006, 1015, 5000):
        with pytest.raises(ValueError):
            await a.close(code)
    assert a.close_code is None
    await a.abort()


async def test_abort_drops_both_ends_with_1006() -> None:
    a, b = memory_pair()
    with anyio.fail_after(5):
        async with reading(a, b) as (reader_a, reader_b):
            await a.abort()
            await reader_a.done.wait()
            await reader_b.done.wait()
    assert reader_a.closed is not None and reader_b.closed is not None
    assert (reader_a.closed.code, reader_b.closed.code) == (1006, 1006)
    assert a.close_code == b.close_code == 1006
    with pytest.raises(WebSocketClosed):
        await b.send("x")


async def test_ping_is_answered_by_the_peers_reader() -> None:
    a, b = memory_pair()
    with anyio.fail_after(5):
        async with reading(a, b):
            await a.ping()
            await b.ping(b"abc")
            await a.close()


async def test_ping_fails_when_the_connection_ends_first() -> None:
    a, b = memory_pair()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            failure: list[WebSocketClosed] = []

            async def ping() -> None:
                try:
                    await a.ping(b"1")
                except WebSocketClosed as exc:
                    failure.append(exc)

            tg.start_soon(ping)
            await anyio.wait_all_tasks_blocked()  # b does not read: no pong
            with pytest.raises(ValueError):
                await a.ping(b"1")  # the same payload is still pending
            await b.abort()
            await a.abort()  # wakes the ping
    assert [f.code for f in failure] == [1006]


async def test_too_big_a_message_closes_with_1009_on_both_ends() -> None:
    a, b = memory_pair(max_message_size=1000, peer_max_message_size=10)
    with anyio.fail_after(5):
        async with reading(a, b) as (reader_a, reader_b):
            await a.send("0123456789")  # just fits
            await a.send("é" * 6)  # 12 bytes
            await reader_a.done.wait()
            await reader_b.done.wait()
    assert reader_b.messages == ["0123456789"]
    assert reader_a.closed is not None and reader_b.closed is not None
    assert (reader_a.closed.code, reader_a.closed.reason) == (1009, "message too big")
    assert (reader_b.closed.code, reader_b.closed.reason) == (1009, "message too big")


async def test_a_writer_blocked_by_the_peer_learns_of_its_1009() -> None:
    a, b = memory_pair(peer_max_message_size=3, buffer_size=1)
    with anyio.fail_after(5):
        async with reading(b) as (reader,):
            with pytest.raises(WebSocketClosed) as info:
                for _ in range(10):  # no reader on a: the Close waits in its buffer
                    await a.send("too big")
            await reader.done.wait()
    assert (info.value.code, info.value.reason) == (1009, "message too big")


async def test_a_peer_that_stops_reading_blocks_writes_until_the_write_timeout() -> None:
    a, b = memory_pair(buffer_size=4)
    a.write_timeout = 0.01
    with anyio.fail_after(5):
        for n in range(4):
            await a.send(str(n))  # the buffer takes these
        with pytest.raises(WebSocketClosed) as info:
            await a.send("blocked")
    assert (info.value.code, info.value.reason) == (1006, "write timeout")
    assert (a.close_code, a.close_reason) == (1006, "write timeout")
    # The peer reads what was buffered, then finds the connection dropped.
    assert [await b.receive() for _ in range(4)] == ["0", "1", "2", "3"]
    with pytest.raises(WebSocketClosed) as dropped:
        await b.receive()
    assert (dropped.value.code, dropped.value.reason) == (1006, "")


async def test_writes_wait_for_a_slow_reader_without_a_write_timeout() -> None:
    a, b = memory_pair(buffer_size=1)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.send_many, [str(n) for n in range(20)])
            assert [await b.receive() for _ in range(20)] == [str(n) for n in range(20)]
        await a.abort()


async def test_only_one_task_receives() -> None:
    a, b = memory_pair()
    with anyio.fail_after(5):
        async with reading(a):
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(RuntimeError):
                await a.receive()
            await b.abort()
        await a.abort()


# -- under an RPC connection ------------------------------------------------------------------


async def test_an_rpc_client_whose_peer_stops_reading_is_dropped_after_the_write_timeout() -> None:
    silent: list[MemoryWebSocket] = []

    async def dial(url: str, **options: Any) -> Transport:
        ours, theirs = memory_pair(buffer_size=4)
        silent.append(theirs)  # never read
        return ours

    async def flood(client: RPCClient) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await client.send_raw('[2,"1","Noise",{}]')

    with anyio.fail_after(5):
        async with RPCClient("ws://silent/ocpp", "CP1", dialer=dial, reconnect=False,
                             ping_interval=None, write_timeout=0.01) as client:
            async with anyio.create_task_group() as tg:
                tg.start_soon(flood, client)
                assert await client.wait_closed() == CloseResult(1006, "write timeout")
        await silent[0].abort()
