"""`Latch`: a one-shot event that costs next to nothing until a task waits on it."""

from __future__ import annotations

import anyio


class Latch:
    """Like `anyio.Event` (set once, never reset), but its `anyio.Event` is made
    only when a task waits: an idle connection holds several of these, and an
    `anyio.Event` is much bigger (its waiter deque) than this object."""

    __slots__ = ("_event", "_set")

    def __init__(self) -> None:
        self._set = False
        self._event: anyio.Event | None = None

    def set(self) -> None:
        self._set = True
        if self._event is not None:
            self._event.set()

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> None:
        if self._event is None:
            self._event = anyio.Event()
            if self._set:
                self._event.set()
        await self._event.wait()
