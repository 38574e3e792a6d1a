"""CallSlots: the call_concurrency bound (FIFO, resizable, cancellation-safe)."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from ocpp_rpc._concurrency.slots import CallSlots

pytestmark = pytest.mark.anyio


async def test_slots_serve_waiters_in_arrival_order() -> None:
    slots = CallSlots(1)
    order: list[int] = []

    async def take(i: int) -> None:
        async with slots:
            order.append(i)
            await anyio.lowlevel.checkpoint()

    await slots.acquire()
    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(take, i)
            await anyio.sleep(0.01)  # each one queues before the next
        slots.release()
    assert order == [0, 1, 2, 3, 4]
    assert slots.used == 0


async def test_a_cancelled_waiter_gives_its_place_up() -> None:
    slots = CallSlots(1)
    await slots.acquire()
    with anyio.move_on_after(0.05):
        await slots.acquire()
    slots.release()
    assert slots.used == 0
    await slots.acquire()  # free again, without waiting
    assert slots.used == 1


async def test_growing_the_total_wakes_waiters_and_shrinking_takes_effect_on_release() -> None:
    slots = CallSlots(1)
    await slots.acquire()
    woken = 0

    async def take() -> None:
        nonlocal woken
        await slots.acquire()
        woken += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(take)
        tg.start_soon(take)
        await anyio.sleep(0.01)
        assert woken == 0
        slots.total = 3
    assert (woken, slots.used) == (2, 3)
    slots.total = 1
    slots.release()
    slots.release()
    assert slots.used == 1
