"""`CallSlots`: the `call_concurrency` bound on outbound calls (only that: a
WebSocket's write lock is `lock.Lock`)."""

from __future__ import annotations

from collections import deque
from types import TracebackType

from .events import EventLike, new_event


class CallSlots:
    """A FIFO semaphore whose size may change while in use.

    Unlike `anyio.CapacityLimiter`, taking a free slot does not yield to the
    event loop (the call that took it is about to wait for its answer anyway):
    that saves one scheduling round per call. Waiters are served in arrival
    order; a slot freed while others wait is handed to the first of them.
    """

    __slots__ = ("_total", "_used", "_waiters")

    def __init__(self, total: int) -> None:
        self._total = total
        self._used = 0
        self._waiters: deque[EventLike] | None = None  # made on first use: a deque is big

    @property
    def total(self) -> int:
        return self._total

    @total.setter
    def total(self, total: int) -> None:
        self._total = total
        while self._waiters and self._used < self._total:
            self._used += 1
            self._waiters.popleft().set()

    @property
    def used(self) -> int:
        return self._used

    async def acquire(self) -> None:
        if self._used < self._total and not self._waiters:
            self._used += 1
            return
        event = new_event()
        if self._waiters is None:
            self._waiters = deque()
        self._waiters.append(event)
        try:
            await event.wait()
        except BaseException:
            if event.is_set():  # the slot was handed over as we were cancelled
                self.release()
            else:
                self._waiters.remove(event)
            raise

    def release(self) -> None:
        if self._waiters and self._used <= self._total:
            self._waiters.popleft().set()  # hand our slot over
        else:
            self._used -= 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
