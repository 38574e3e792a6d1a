"""Keepalive: one task calling many connections' ping callbacks at their times."""

from __future__ import annotations

import anyio
import pytest

from ocpp_rpc._keepalive import Keepalive

pytestmark = pytest.mark.anyio


async def test_callbacks_run_in_time_order_and_a_cancelled_one_never_runs() -> None:
    keepalive = Keepalive()
    calls: list[str] = []
    now = anyio.current_time()
    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(keepalive.run)
            keepalive.schedule(now + 0.06, lambda: calls.append("late"))
            dropped = keepalive.schedule(now + 0.03, lambda: calls.append("dropped"))
            await anyio.sleep(0.01)
            keepalive.schedule(now + 0.02, lambda: calls.append("early"))  # wakes the task
            dropped.cancel()
            await anyio.sleep(0.1)
            tg.cancel_scope.cancel()
    assert calls == ["early", "late"]
