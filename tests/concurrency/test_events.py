"""new_event: the running backend's own event, usable under anyio's cancel scopes."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from ocpp_rpc._concurrency.events import new_event

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
