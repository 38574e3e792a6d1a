"""`Lock`: a mutex for a path taken once per message (a WebSocket's writes)."""

from __future__ import annotations

from collections import deque
from types import TracebackType

from .events import EventLike, new_event


class Lock:
    """A FIFO lock that a task takes without yielding when it is free.

    Unlike `anyio.Lock` (even with ``fast_acquire=True``) a free lock costs no
    checkpoint and no cancel-scope check, and the queue of waiters is made only
    once a task has to wait: an idle connection holds one of these per socket.
    A lock released while tasks wait goes to the first of them; a waiter
    cancelled as the lock was handed to it passes it on.
    """

    __slots__ = ("_locked", "_waiters")

    def __init__(self) -> None:
        self._locked = False
        self._waiters: deque[EventLike] | None = None

    def locked(self) -> bool:
        return self._locked

    async def acquire(self) -> None:
        if not self._locked and not self._waiters:
            self._locked = True
            return
        event = new_event()
        if self._waiters is None:
            self._waiters = deque()
        self._waiters.append(event)
        try:
            await event.wait()
        except BaseException:
            if event.is_set():  # handed over as we were cancelled: pass it on
                self.release()
            else:
                self._waiters.remove(event)
            raise

    def release(self) -> None:
        if not self._locked:
            raise RuntimeError("release of an unlocked Lock")
        if self._waiters:
            self._waiters.popleft().set()  # stays locked: it is the first waiter's now
        else:
            self._locked = False

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
