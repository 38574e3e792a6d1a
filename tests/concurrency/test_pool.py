"""TaskPool: a task group's semantics (wait, cancel, shields, errors) for bare tasks."""

from __future__ import annotations

import contextvars
import functools
import socket
import sys
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from anyio.abc import SocketAttribute, TaskGroup
from harness import leaves

from ocpp_rpc._concurrency.pool import TaskPool
from ocpp_rpc._transport.streams import open_accepted, serve_listener

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

pytestmark = pytest.mark.anyio


async def test_run_returns_after_close_once_every_task_has_ended(anyio_backend: str) -> None:
    pool = TaskPool()
    release = anyio.Event()
    ended: list[int] = []

    async def task(n: int) -> None:
        await release.wait()
        ended.append(n)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(pool.run)
            for n in range(3):
                pool.start_soon(task, n)
            await anyio.wait_all_tasks_blocked()
            pool.close()
            await anyio.wait_all_tasks_blocked()
            assert ended == []  # run() is still waiting for them: so is the group
            with pytest.raises(RuntimeError, match="closed"):
                pool.start_soon(task, 9)
            release.set()
    assert sorted(ended) == [0, 1, 2]


async def test_run_with_no_task_returns_at_close(anyio_backend: str) -> None:
    pool = TaskPool()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(pool.run)
            pool.close()


async def test_cancelling_the_group_cancels_the_tasks_and_their_shields_hold(
    anyio_backend: str,
) -> None:
    """anyio's cancel-scope semantics, not a bare `Task.cancel()`: a task in a
    shielded scope when the group is cancelled finishes what is shielded, and
    the group waits for that."""
    pool = TaskPool()
    events: list[str] = []
    started = anyio.Event()

    async def task() -> None:
        with anyio.CancelScope(shield=True):
            started.set()
            await anyio.sleep(0.02)
            events.append("shielded work done")
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            events.append("cancelled")
            raise

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(pool.run)
            pool.start_soon(task)
            await started.wait()
            tg.cancel_scope.cancel()
    assert events == ["shielded work done", "cancelled"]


async def test_a_task_started_as_the_group_is_cancelled_is_cancelled_too(
    anyio_backend: str,
) -> None:
    """Started after the cancel, before the pool's task has seen it: the task
    has not entered its scope when the pool cancels the others."""
    pool = TaskPool()
    reached: list[str] = []

    async def task() -> None:
        reached.append("started")
        await anyio.sleep(1)  # not sleep_forever: the group waits for it, shielded
        reached.append("not cancelled")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(pool.run)
            tg.cancel_scope.cancel()
            pool.start_soon(task)
    assert reached in ([], ["started"])


async def test_a_task_error_cancels_the_others_and_reaches_the_group(anyio_backend: str) -> None:
    pool = TaskPool()
    cancelled: list[bool] = []
    failing = anyio.Event()

    async def sleeper() -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append(True)
            raise

    async def failer() -> None:
        await failing.wait()
        raise KeyError("boom")

    with anyio.fail_after(5), pytest.raises(BaseExceptionGroup) as caught:
        async with anyio.create_task_group() as tg:
            await tg.start(pool.run)
            pool.start_soon(sleeper)
            pool.start_soon(failer)
            await anyio.wait_all_tasks_blocked()
            failing.set()
            await anyio.sleep_forever()
    assert [type(e) for e in leaves(caught.value)] == [KeyError]
    assert cancelled == [True]


async def test_start_soon_needs_run(anyio_backend: str) -> None:
    async def task() -> None:
        pass

    with pytest.raises(RuntimeError, match="run"):
        TaskPool().start_soon(task)


async def test_tasks_run_in_their_starters_context(anyio_backend: str) -> None:
    """As with a task group: a task sees the context variables of the code that started it."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[str] = []

    async def task() -> None:
        seen.append(var.get())

    pool = TaskPool()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(pool.run)
            var.set("starter's")
            pool.start_soon(task)
            pool.close()
    assert seen == ["starter's"]


# -- errors: as anyio's own task group, compared side by side ------------------------------

Spawn = Callable[..., None]


async def outcome(kind: str, body: Callable[[TaskGroup, Spawn], Awaitable[None]]) -> list[type]:
    """Run `body(tg, spawn)` in a task group, `spawn` being the pool's `start_soon`
    ("pool") or the group's own ("taskgroup"); the types of what the group raised."""
    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                if kind == "pool":
                    pool = TaskPool()
                    await tg.start(pool.run, tg.cancel_scope)
                    await body(tg, pool.start_soon)
                    pool.close()
                else:
                    await body(tg, tg.start_soon)
    except BaseException as exc:
        return [type(leaf) for leaf in leaves(exc)]
    return []


BOTH = pytest.mark.parametrize("kind", ["taskgroup", "pool"])


async def fail() -> None:
    raise KeyError("boom")


async def idle_then_close(seconds: float) -> None:
    """A connection's way: idle until cancelled, then a graceful close, shielded."""
    try:
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.sleep(seconds)


@BOTH
async def test_an_error_raised_while_cancelled_reaches_the_group(
    anyio_backend: str, kind: str
) -> None:
    async def task() -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            raise KeyError("cleanup failed") from None

    async def body(tg: TaskGroup, spawn: Spawn) -> None:
        spawn(task)
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()

    assert await outcome(kind, body) == [KeyError]


@BOTH
async def test_an_error_then_a_cancel_of_the_group_reaches_it(
    anyio_backend: str, kind: str
) -> None:
    async def body(tg: TaskGroup, spawn: Spawn) -> None:
        spawn(idle_then_close, 0.05)
        await anyio.wait_all_tasks_blocked()
        spawn(fail)
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.01)  # one failed; the other is in its shield
        tg.cancel_scope.cancel()

    assert await outcome(kind, body) == [KeyError]


@BOTH
async def test_an_error_cancels_the_group_at_once(anyio_backend: str, kind: str) -> None:
    """The task group's other tasks (the listener, the `async with server:` body)
    are cancelled while the pool's other tasks still close, shielded: not after."""
    host_cancelled = anyio.Event()
    saw_it: list[bool] = []

    async def slow_closer() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await host_cancelled.wait()
            saw_it.append(host_cancelled.is_set())

    async def body(tg: TaskGroup, spawn: Spawn) -> None:
        spawn(slow_closer)
        await anyio.wait_all_tasks_blocked()
        spawn(fail)
        try:
            await anyio.sleep_forever()
        finally:
            host_cancelled.set()

    assert await outcome(kind, body) == [KeyError]
    assert saw_it == [True]


@BOTH
async def test_a_spawner_goes_on_after_an_error_until_it_is_cancelled(
    anyio_backend: str, kind: str
) -> None:
    """The accept loop's way: a check for cancellation, then `start_soon`. After a
    task's error that start must not fail: the task starts cancelled."""

    async def body(tg: TaskGroup, spawn: Spawn) -> None:
        async def acceptor() -> None:
            while True:
                await anyio.lowlevel.checkpoint_if_cancelled()
                spawn(idle_then_close, 0.02)
                await anyio.sleep(0.001)

        tg.start_soon(acceptor)
        await anyio.sleep(0.01)
        spawn(fail)
        await anyio.sleep_forever()

    assert await outcome(kind, body) == [KeyError]


@BOTH
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_task_cancelled_by_a_bare_task_cancel_cancels_the_group(
    anyio_backend: str, kind: str
) -> None:
    import asyncio

    ended: list[str] = []

    async def task() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(0)

    async def body(tg: TaskGroup, spawn: Spawn) -> None:
        spawn(task)
        with anyio.move_on_after(2):
            await anyio.sleep_forever()
        ended.append("not cancelled by the group: timed out")

    assert await outcome(kind, body) == []
    assert ended == []


async def test_close_before_run_lets_run_return(anyio_backend: str) -> None:
    pool = TaskPool()
    pool.close()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(pool.run)


async def test_the_accept_loop_after_a_connection_error(anyio_backend: str) -> None:
    """The real accept loop, connections still arriving: a connection's error
    (one `_handle_stream` lets through) reaches the group, and nothing else does."""

    class Fatal(BaseException):
        pass

    count = 0

    async def handler(accepted: anyio.abc.ByteStream | socket.socket) -> None:
        nonlocal count
        count += 1
        stream = await open_accepted(accepted)
        try:
            if count == 5:
                raise Fatal
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.02)  # a graceful close
                await stream.aclose()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    socks: list[socket.socket] = []
    try:
        with pytest.raises(BaseExceptionGroup) as caught, anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                pool = TaskPool()
                await tg.start(pool.run, tg.cancel_scope)
                tg.start_soon(serve_listener, listener, handler, pool)
                for _ in range(40):
                    socks.append(socket.create_connection(("127.0.0.1", port)))
                    await anyio.sleep(0.002)
                await anyio.sleep_forever()
    finally:
        for sock in socks:
            sock.close()
        await listener.aclose()
    assert [type(leaf) for leaf in leaves(caught.value)] == [Fatal]


@BOTH
async def test_a_task_error_is_grouped_once_as_by_the_task_group(
    anyio_backend: str, kind: str
) -> None:
    with pytest.raises(BaseExceptionGroup) as caught, anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            if kind == "pool":
                pool = TaskPool()
                await tg.start(pool.run, tg.cancel_scope)
                pool.start_soon(fail)
            else:
                tg.start_soon(fail)
            await anyio.sleep_forever()
    assert [type(e) for e in caught.value.exceptions] == [KeyError]


@BOTH
async def test_tasks_are_named_as_the_task_group_names_them(anyio_backend: str, kind: str) -> None:
    names: list[str] = []

    async def connection() -> None:
        names.append(anyio.get_current_task().name)

    async with anyio.create_task_group() as tg:
        if kind == "pool":
            pool = TaskPool()
            await tg.start(pool.run, tg.cancel_scope)
            pool.start_soon(connection)
            pool.start_soon(functools.partial(connection))  # named after its function
            pool.close()
        else:
            tg.start_soon(connection)
            tg.start_soon(connection)
    assert names == [f"{__name__}.{connection.__qualname__}"] * 2
