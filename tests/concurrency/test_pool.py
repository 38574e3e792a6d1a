"""TaskPool: a task group's semantics (wait, cancel, shields, errors) for bare tasks."""

from __future__ import annotations

import contextvars
import sys

import anyio
import pytest

from ocpp_rpc._concurrency.pool import TaskPool

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

pytestmark = pytest.mark.anyio


def leaves(group: BaseException) -> list[BaseException]:
    """The exceptions in `group`, however deeply nested."""
    if isinstance(group, BaseExceptionGroup):
        return [leaf for inner in group.exceptions for leaf in leaves(inner)]
    return [group]


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
