"""Call deadlines: a connection keeps its calls' timeouts in one `TimerHeap`
(one task instead of a cancel scope per call): order, re-arming, lazy
clean-up, and real calls on time."""

from __future__ import annotations

import anyio
import pytest
from harness import ENDS, facing

from ocpp_rpc._rpc.timers import TimerHeap

pytestmark = pytest.mark.anyio


async def test_keys_expire_in_deadline_order_and_answered_ones_never() -> None:
    live: dict[str, None] = {"late": None, "answered": None, "early": None}
    expired: list[str] = []
    deadlines: TimerHeap[str] = TimerHeap(
        live, lambda key: expired.append(key) or live.pop(key)
    )
    now = anyio.current_time()
    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            assert deadlines.push(now + 0.15, "late")  # the first one asks for the task
            tg.start_soon(deadlines.run)
            deadlines.started(True)
            assert not deadlines.push(now + 0.05, "answered")
            await anyio.sleep(0.01)
            assert not deadlines.push(now + 0.03, "early")  # earlier: re-arms the sleeping task
            del live["answered"]
    assert expired == ["early", "late"]
    assert len(deadlines) == 0  # run() returned once nothing was left


async def test_an_earlier_deadline_wakes_a_task_sleeping_for_a_later_one() -> None:
    live: dict[str, None] = {"far": None, "near": None}
    expired: list[tuple[str, float]] = []
    deadlines: TimerHeap[str] = TimerHeap(
        live, lambda key: expired.append((key, anyio.current_time()))
    )
    start = anyio.current_time()
    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            deadlines.push(start + 60, "far")
            tg.start_soon(deadlines.run)
            deadlines.started(True)
            await anyio.sleep(0.01)  # run() now sleeps until start + 60
            deadlines.push(start + 0.05, "near")
            while not expired:  # noqa: ASYNC110
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert expired[0][0] == "near" and expired[0][1] - start < 1


def test_answered_calls_behind_a_slow_one_do_not_pile_up() -> None:
    live: dict[str, None] = {"slow": None}
    deadlines: TimerHeap[str] = TimerHeap(live, lambda key: None)
    deadlines.push(1000.0, "slow")  # stays at the top of the heap, never answered
    deadlines.started(True)
    for i in range(10_000):
        key = f"call{i}"
        live[key] = None
        deadlines.push(2000.0 + i, key)
        del live[key]  # answered at once
    assert len(deadlines) <= 2 * len(live) + 65


def test_a_task_that_could_not_start_is_asked_for_again() -> None:
    deadlines: TimerHeap[str] = TimerHeap({"a": None, "b": None}, lambda key: None)
    assert deadlines.push(1.0, "a")
    deadlines.started(False)
    assert deadlines.push(2.0, "b")


@pytest.mark.parametrize("end", ENDS)
async def test_a_short_call_timeout_ends_on_time_behind_a_long_one(end: str) -> None:
    with anyio.fail_after(5):
        async with facing(end, call_concurrency=2) as pair:  # the raw peer never answers
            outcome: list[BaseException] = []

            async def long_call() -> None:
                try:
                    await pair.ours.call("Slow", {}, timeout=30)
                except BaseException as exc:
                    outcome.append(exc)
                    raise

            async with anyio.create_task_group() as tg:
                tg.start_soon(long_call)
                await anyio.sleep(0.02)
                started = anyio.current_time()
                with pytest.raises(TimeoutError):
                    await pair.ours.call("Fast", {}, timeout=0.1)
                assert 0.09 <= anyio.current_time() - started < 1.5
                tg.cancel_scope.cancel()
