"""Keepalive: one task calling many connections' ping callbacks at their times."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from harness import served

from ocpp_rpc._rpc.keepalive import Keepalive

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


def live_timers(server_client: Any) -> int:
    return sum(
        1 for _, _, timer in server_client._keepalive._heap if timer.callback is not None
    )


async def test_reconfigure_while_a_pong_is_being_delivered_keeps_one_ping_chain() -> None:
    async with served(ping_interval=0.1) as pair:
        client = pair.ours
        connection = client._connection
        ws = connection.transport
        original = ws._resolve_pings
        fired = []

        def resolve_then_reconfigure(payload: bytes) -> None:
            original(payload)  # the ping task is now runnable, not yet run
            if not fired:
                fired.append(1)
                client.reconfigure(ping_interval=0.1)  # e.g. from a handler

        ws._resolve_pings = resolve_then_reconfigure

        async def peer_reads() -> None:
            try:
                while True:
                    await pair.peer.receive(timeout=10)
            except Exception:
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(peer_reads)  # answers our pings
            with anyio.fail_after(5):
                while not fired:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            await anyio.sleep(0.05)
            counted = live_timers(client) + (connection._pinger_scope is not None)
            assert counted == 1, (
                live_timers(client), connection._pinger_scope,
            )
            # And it does not heal: two ping chains from now on.
            pings: list[object] = []
            client.on("ping", pings.append)
            await anyio.sleep(1.0)
            assert len(pings) <= 12, len(pings)  # one ping per 0.1 s
            tg.cancel_scope.cancel()
