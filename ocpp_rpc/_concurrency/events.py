"""Events of the running backend itself, for the per-call hot path.

`anyio.Event()` builds a wrapper around the backend's event (in anyio 4 its
`__new__` and `__init__` each make one), several times the cost of the
backend's own event, paid several times per call. The backend's own event
behaves the same under anyio's cancel scopes.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Protocol

import anyio

# Private asyncio (None outside a loop; the public one raises): the cheapest backend test per call.
_running_asyncio_loop = asyncio._get_running_loop


class EventLike(Protocol):
    def set(self) -> Any: ...

    def is_set(self) -> bool: ...

    async def wait(self) -> Any: ...


def on_asyncio() -> bool:
    """Whether the running backend is asyncio (uvloop included); else trio."""
    return _running_asyncio_loop() is not None


def current_task_id() -> int:
    """The running task's `anyio.get_current_task().id` (the id of the
    backend's task object), at a fifth of its cost."""
    if _running_asyncio_loop() is not None:
        return id(asyncio.current_task())
    trio = sys.modules.get("trio")
    if trio is not None:
        return id(trio.lowlevel.current_task())
    return anyio.get_current_task().id


def new_event() -> EventLike:
    """An `asyncio.Event` on asyncio, a `trio.Event` on trio (anyio's only other
    backend), else an `anyio.Event`."""
    if _running_asyncio_loop() is not None:
        return asyncio.Event()
    trio = sys.modules.get("trio")
    if trio is not None:
        event: EventLike = trio.Event()
        return event
    return anyio.Event()
