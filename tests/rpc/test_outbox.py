"""Outbox: the bounded, batching queue between senders and a connection's writer."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest
from rawpeer import RawPeer, raw_server

from ocpp_rpc._rpc.outbox import Outbox, OutboxClosed
from ocpp_rpc._transport.websocket import connect

pytestmark = pytest.mark.anyio


async def test_put_with_room_does_not_wait_and_take_returns_the_whole_batch() -> None:
    outbox = Outbox(4)
    with anyio.fail_after(1):
        for frame in ("a", b"b", "c"):
            await outbox.put(frame)
    assert len(outbox) == 3
    assert await outbox.take() == ["a", b"b", "c"]
    assert len(outbox) == 0


async def test_a_full_outbox_makes_senders_wait_until_the_writer_takes() -> None:
    outbox = Outbox(2)
    await outbox.put("1")
    await outbox.put("2")
    put = anyio.Event()

    async def third() -> None:
        await outbox.put("3")
        put.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(third)
        with anyio.move_on_after(0.05):
            await put.wait()
        assert not put.is_set() and len(outbox) == 2  # bounded: still waiting
        assert await outbox.take() == ["1", "2"]
    assert put.is_set()
    assert await outbox.take() == ["3"]


async def test_take_waits_for_a_frame() -> None:
    outbox = Outbox(2)
    taken: list[list[str | bytes] | None] = []

    async def writer() -> None:
        taken.append(await outbox.take())

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer)
        await anyio.sleep(0.01)
        assert taken == []
        await outbox.put("x")
    assert taken == [["x"]]


async def test_close_flushes_what_is_queued_then_ends_and_refuses_senders() -> None:
    outbox = Outbox(1)
    await outbox.put("last")
    waiting: list[BaseException] = []

    async def blocked_sender() -> None:
        try:
            await outbox.put("never")
        except OutboxClosed as exc:
            waiting.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(blocked_sender)
        await anyio.sleep(0.01)
        outbox.close()
    assert len(waiting) == 1  # the sender waiting for room was released
    assert outbox.closed
    assert await outbox.take() == ["last"]
    assert await outbox.take() is None
    with pytest.raises(OutboxClosed):
        await outbox.put("late")


async def take_woken_by(outbox: Outbox, wake: Callable[[], None]) -> object:
    """What a `take` waiting in a task returns once `wake()` is called."""
    result: list[object] = ["unset"]

    async def writer() -> None:
        result[0] = await outbox.take()

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer)
        await anyio.sleep(0.01)
        wake()
    return result[0]


async def test_close_wakes_a_waiting_writer() -> None:
    outbox = Outbox(1)
    assert await take_woken_by(outbox, outbox.close) is None


async def test_interrupt_makes_a_waiting_take_return_nothing() -> None:
    outbox = Outbox(1)
    assert await take_woken_by(outbox, outbox.interrupt) == []
    await outbox.put("x")  # still open
    assert await outbox.take() == ["x"]


async def test_send_many_sends_every_message_in_order_in_one_write() -> None:
    async with raw_server() as server:
        ws = await connect(server.url)
        try:
            peer: RawPeer = await server.accept()
            writes: list[bytes] = []
            send = ws.stream.send

            async def recording_send(data: bytes) -> None:
                writes.append(data)
                await send(data)

            ws.stream.send = recording_send  # type: ignore[method-assign]
            await ws.send_many(["one", b"two", "three"])
            received = [await peer.receive() for _ in range(3)]
        finally:
            await ws.abort()
    assert received == ["one", b"two", "three"]
    assert len(writes) == 1
