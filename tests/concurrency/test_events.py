"""new_event: the running backend's own event, usable under anyio's cancel scopes."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from ocpp_rpc._concurrency.events import current_task_id, new_event

pytestmark = pytest.mark.anyio


async def test_the_event_is_the_backends_own_and_works_with_cancel_scopes(
    anyio_backend: str,
) -> None:
    import trio

    event = new_event()
    assert type(event) is (asyncio.Event if anyio_backend == "asyncio" else trio.Event)
    with anyio.move_on_after(0.05) as scope:
        await event.wait()
    assert scope.cancelled_caught and not event.is_set()
    async with anyio.create_task_group() as tg:
        tg.start_soon(event.wait)
        await anyio.sleep(0.01)
        event.set()
    assert event.is_set()


async def test_asyncios_private_get_running_loop_still_means_what_new_event_needs(
    anyio_backend: str,
) -> None:
    """`new_event` relies on the private `asyncio._get_running_loop`: the running
    loop under asyncio, None (never an error) elsewhere. Fails loudly if a Python
    release removes it or changes what it returns."""
    from ocpp_rpc._concurrency import events

    private = getattr(asyncio, "_get_running_loop", None)
    assert callable(private), "asyncio._get_running_loop is gone: fix _concurrency/events.py"
    assert events._running_asyncio_loop is private
    if anyio_backend == "asyncio":
        assert private() is asyncio.get_running_loop()
    else:
        assert private() is None  # under trio: no asyncio loop, and no exception


def test_asyncios_private_get_running_loop_is_none_outside_any_loop() -> None:
    assert asyncio._get_running_loop() is None


async def test_on_asyncio_tells_the_running_backend(anyio_backend: str) -> None:
    from ocpp_rpc._concurrency.events import on_asyncio

    assert on_asyncio() is (anyio_backend == "asyncio")


async def test_current_task_id_is_anyios_task_id() -> None:
    ids: list[tuple[int, int]] = []

    async def child() -> None:
        ids.append((current_task_id(), anyio.get_current_task().id))

    ids.append((current_task_id(), anyio.get_current_task().id))
    async with anyio.create_task_group() as tg:
        tg.start_soon(child)
        tg.start_soon(child)
    assert all(ours == anyios for ours, anyios in ids)
    assert len({ours for ours, _ in ids}) == 3  # one per task
