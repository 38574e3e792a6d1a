"""`_concurrency.lock.Lock`, the WebSocket's write lock: mutual exclusion in
arrival order, no yield when free, and cancellation that loses no turn."""

from __future__ import annotations

import anyio
import pytest

from ocpp_rpc._concurrency.lock import Lock

pytestmark = pytest.mark.anyio


async def test_a_free_lock_is_taken_without_a_checkpoint() -> None:
    lock = Lock()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await lock.acquire()  # a checkpoint would raise the cancellation here
    assert lock.locked()
    lock.release()
    assert not lock.locked()


async def test_waiters_get_the_lock_in_arrival_order() -> None:
    lock = Lock()
    order: list[int] = []

    async def take(i: int) -> None:
        async with lock:
            order.append(i)
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        await lock.acquire()
        for i in range(5):
            tg.start_soon(take, i)
            await anyio.wait_all_tasks_blocked()
        lock.release()
    assert order == [0, 1, 2, 3, 4]
    assert not lock.locked()


async def test_a_waiter_cancelled_while_waiting_leaves_the_queue() -> None:
    lock = Lock()
    got: list[str] = []

    async def take(name: str) -> None:
        async with lock:
            got.append(name)

    await lock.acquire()
    async with anyio.create_task_group() as tg:
        tg.start_soon(take, "first")
        await anyio.wait_all_tasks_blocked()
        async with anyio.create_task_group() as inner:
            inner.start_soon(take, "second")
            await anyio.wait_all_tasks_blocked()
            inner.cancel_scope.cancel()  # cancelled: never runs
        tg.start_soon(take, "third")
        await anyio.wait_all_tasks_blocked()
        lock.release()
    assert got == ["first", "third"]
    assert not lock.locked()


async def test_a_waiter_cancelled_as_the_lock_is_handed_to_it_loses_no_turn() -> None:
    """Whether the cancellation or the hand-over wins (the backends differ), the
    lock ends with the next waiter, and then free."""
    lock = Lock()
    got: list[str] = []

    async def take(name: str) -> None:
        async with lock:
            got.append(name)

    await lock.acquire()
    async with anyio.create_task_group() as tg:
        async with anyio.create_task_group() as waiting:
            waiting.start_soon(take, "cancelled")
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(take, "next")
            await anyio.wait_all_tasks_blocked()
            lock.release()  # handed to the first waiter...
            waiting.cancel_scope.cancel()  # ...which is cancelled before it runs
    assert got[-1] == "next" and set(got) <= {"cancelled", "next"}
    assert not lock.locked()


def test_releasing_an_unlocked_lock_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        Lock().release()
