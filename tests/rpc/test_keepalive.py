"""Keep-alive: one `TimerService` task calling many connections' ping callbacks
at their times, and a connection's ping chain (`KeepAlive`)."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from ocpp_rpc._rpc.timers import TimerService

pytestmark = pytest.mark.anyio


async def test_callbacks_run_in_time_order_and_a_cancelled_one_never_runs() -> None:
    timers = TimerService()
    calls: list[str] = []
    now = anyio.current_time()
    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(timers.run)
            timers.schedule(now + 0.06, lambda: calls.append("late"))
            dropped = timers.schedule(now + 0.03, lambda: calls.append("dropped"))
            await anyio.sleep(0.01)
            timers.schedule(now + 0.02, lambda: calls.append("early"))  # wakes the task
            timers.cancel(dropped)
            assert len(timers) == 2
            await anyio.sleep(0.1)
            assert len(timers) == 0  # fired or cancelled: none left scheduled
            timers.schedule(anyio.current_time(), lambda: calls.append("again"))  # idle: wakes
            await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
    assert calls == ["early", "late", "again"]


async def test_a_callback_that_raises_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    timers = TimerService()
    calls: list[str] = []

    def broken() -> None:
        raise RuntimeError("boom")

    now = anyio.current_time()
    with anyio.fail_after(2), caplog.at_level(logging.ERROR, logger="ocpp_rpc"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(timers.run)
            timers.schedule(now + 0.01, broken)
            timers.schedule(now + 0.02, lambda: calls.append("after"))
            while not calls:  # noqa: ASYNC110
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert "boom" in caplog.text


def test_cancelled_timers_do_not_pile_up() -> None:
    timers = TimerService()  # never run: cancelled timers are dropped as new ones come
    keep = timers.schedule(1000.0, lambda: None)
    for i in range(10_000):
        timers.cancel(timers.schedule(2000.0 + i, lambda: None))
    timers.cancel(keep)
    timers.cancel(keep)  # a second cancel changes nothing
    assert len(timers) == 0
    assert len(timers._heap) <= 2 + 65


def live_timers(server_client: Any) -> int:
    return len(server_client._timers)

