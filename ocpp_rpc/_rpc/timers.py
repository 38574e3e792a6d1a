"""Timers kept in one heap and fired by one task, instead of a cancel scope or
a sleeping task per timer (both cost more per call, and per idle connection).

`TimerHeap` is the one implementation. A connection keeps its outbound calls'
deadlines in one (`Connection`: keys are message ids, live while pending);
a server's connections share one `TimerService` for their keep-alive pings
(an idle connection then has no task of its own, only a `Timer` here).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

import anyio

from .._concurrency.events import EventLike, new_event

logger = logging.getLogger("ocpp_rpc")

K = TypeVar("K")
K_contra = TypeVar("K_contra", contravariant=True)


class Live(Protocol[K_contra]):
    """Which keys of a `TimerHeap` still count, and how many do."""

    def __contains__(self, key: K_contra, /) -> bool: ...

    def __len__(self) -> int: ...


class TimerHeap(Generic[K]):
    """Due times of keys, fired in time order by the one task in `run`.

    A key counts only while it is in `live` (e.g. a call still pending): keys
    that left it are dropped without firing, lazily, from the top of the heap
    as new keys arrive, and all at once when they outnumber the live ones.
    `fire(key)` is called at the key's time; one that raises is logged.
    """

    __slots__ = ("_fire", "_heap", "_live", "_order", "_running", "_target", "_wakeup")

    def __init__(self, live: Live[K], fire: Callable[[K], object]) -> None:
        self._live = live
        self._fire = fire
        self._heap: list[tuple[float, int, K]] = []
        self._order = itertools.count()  # ties fire in push order; keys are never compared
        self._running = False  # a task is in run(), or was asked for
        self._target = math.inf  # when run() wakes up next
        self._wakeup: EventLike | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, when: float, key: K) -> bool:
        """Fire `key` at `when` (anyio clock) if it is still live then.

        True when no task runs `run()`: the caller must start one (and report
        with `started` whether it could).
        """
        heap, live = self._heap, self._live
        while heap and heap[0][2] not in live:
            heapq.heappop(heap)
        if len(heap) > 2 * len(live) + 64:  # dead keys piled up behind a live one
            heap[:] = [entry for entry in heap if entry[2] in live]
            heapq.heapify(heap)
        heapq.heappush(heap, (when, next(self._order), key))
        if not self._running:
            self._running = True
            return True
        if when < self._target and self._wakeup is not None:
            self._wakeup.set()  # run() sleeps too long: re-arm it
        return False

    def started(self, ok: bool) -> None:
        """Tell whether the task asked for by `push` could be started."""
        if not ok:
            self._running = False

    async def run(self, *, forever: bool = False) -> None:
        """Fire keys as their times come; returns once none is left, unless
        `forever` (then only cancelling ends it)."""
        heap, live, fire = self._heap, self._live, self._fire
        self._running = True
        try:
            while True:
                now = anyio.current_time()
                while heap and (heap[0][0] <= now or heap[0][2] not in live):
                    key = heapq.heappop(heap)[2]
                    if key in live:
                        try:
                            fire(key)
                        except Exception:
                            logger.exception("timer callback for %r raised", key)
                if not heap and not forever:
                    return
                self._target = when = heap[0][0] if heap else math.inf
                self._wakeup = wakeup = new_event()
                with anyio.CancelScope(deadline=when):
                    await wakeup.wait()
                self._target, self._wakeup = math.inf, None
        finally:
            self._running, self._target, self._wakeup = False, math.inf, None


class Timer:
    """One scheduled callback of a `TimerService`; `TimerService.cancel` drops it."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback: Callable[[], object] | None = callback


class TimerService:
    """Callbacks at given times, from one task (`run`, for as long as the
    owner runs): the keep-alive ping times of every connection of a server."""

    __slots__ = ("_heap", "_scheduled")

    def __init__(self) -> None:
        self._scheduled = 0  # timers neither fired nor cancelled
        self._heap: TimerHeap[Timer] = TimerHeap(self, self._fire)

    # The heap's `Live`: the timers still scheduled.
    def __contains__(self, timer: Timer, /) -> bool:
        return timer.callback is not None

    def __len__(self) -> int:
        return self._scheduled

    def schedule(self, when: float, callback: Callable[[], object]) -> Timer:
        """Call `callback()` at `when` (`anyio.current_time()` clock)."""
        timer = Timer(callback)
        self._scheduled += 1
        self._heap.push(when, timer)
        return timer

    def cancel(self, timer: Timer) -> None:
        """Drop `timer` (no effect once it fired or was cancelled)."""
        if timer.callback is not None:
            timer.callback = None
            self._scheduled -= 1

    def _fire(self, timer: Timer) -> None:
        callback = timer.callback
        self.cancel(timer)
        if callback is not None:
            callback()

    async def run(self) -> None:
        """Call the callbacks as they fall due (until cancelled)."""
        await self._heap.run(forever=True)
