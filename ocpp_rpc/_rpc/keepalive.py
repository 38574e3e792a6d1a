"""`Keepalive`: the keep-alive ping times of many connections, kept by one task."""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Callable

import anyio

logger = logging.getLogger("ocpp_rpc")


class Timer:
    """One scheduled call of a `Keepalive`; `cancel` drops it."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback: Callable[[], object] | None = callback

    def cancel(self) -> None:
        self.callback = None


class Keepalive:
    """Calls each scheduled callback at its time, from the one task in `run`.

    A server's connections share one: an idle connection then has no task of
    its own for its keep-alive, only a `Timer` here (its ping gets a task only
    while in flight).
    """

    __slots__ = ("_heap", "_order", "_wakeup")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._wakeup: anyio.Event | None = None  # set when an earlier time is scheduled

    def schedule(self, when: float, callback: Callable[[], object]) -> Timer:
        """Call `callback()` at `when` (`anyio.current_time()` clock)."""
        timer = Timer(callback)
        heap = self._heap
        heapq.heappush(heap, (when, next(self._order), timer))
        if heap[0][2] is timer and self._wakeup is not None:
            self._wakeup.set()
        return timer

    async def run(self) -> None:
        """Call the callbacks as they fall due (until cancelled)."""
        heap = self._heap
        while True:
            now = anyio.current_time()
            while heap and heap[0][0] <= now:
                callback = heapq.heappop(heap)[2].callback
                if callback is not None:
                    try:
                        callback()
                    except Exception:
                        logger.exception("keep-alive callback %r raised", callback)
            self._wakeup = wakeup = anyio.Event()
            with anyio.move_on_after(heap[0][0] - now if heap else math.inf):
                await wakeup.wait()
