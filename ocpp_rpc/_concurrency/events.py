"""Events of the running backend itself, for the per-call hot path.

`anyio.Event()` builds a wrapper around the backend's event (in anyio 4 its
`__new__` and `__init__` each make one), several times the cost of the
backend's own event, paid several times per call. The backend's own event
behaves the same under anyio's cancel scopes.
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import Awaitable
from typing import Any, Protocol

import anyio
import anyio.lowlevel

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


def checkpoint_if_cancelled() -> Awaitable[None]:
    """`anyio.lowlevel.checkpoint_if_cancelled()`, to await: raises the
    cancellation of an enclosing scope that is cancelled already, else returns
    without yielding. On trio, trio's own, a third of the cost (asyncio has no
    cheaper public one); not a coroutine itself, which would cost one frame more."""
    if _running_asyncio_loop() is None:
        trio = sys.modules.get("trio")
        if trio is not None:
            awaitable: Awaitable[None] = trio.lowlevel.checkpoint_if_cancelled()
            return awaitable
    return anyio.lowlevel.checkpoint_if_cancelled()


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


def stray_cancellation(exc: BaseException) -> Exception | None:
    """The error to answer for `exc`, a BaseException that escaped a handler
    or hook, if it is a cancellation that no cancellation of the running task
    explains: an asyncio `CancelledError` from a future something else
    cancelled (on trio never a cancellation), or a trio `Cancelled` re-raised
    outside the scope that raised it (e.g. from `outcome.acapture`). A bug
    of the handler's, as any other exception. None: a real cancellation (or
    none at all), to go on."""
    if _running_asyncio_loop() is not None:
        if not isinstance(exc, asyncio.CancelledError):
            return None
        if anyio.current_effective_deadline() == -math.inf:  # an anyio scope was cancelled
            return None
        task = asyncio.current_task()
        if task is not None and sys.version_info >= (3, 11) and task.cancelling():
            return None  # Task.cancel(), from outside anyio
    elif not isinstance(exc, asyncio.CancelledError):
        trio = sys.modules.get("trio")
        if trio is None or not isinstance(exc, trio.Cancelled):
            return None
        # Trio delivers Cancelled only while an enclosing scope is cancelled.
        if anyio.current_effective_deadline() == -math.inf:
            return None
    error = RuntimeError(f"the handler raised {exc!r} without being cancelled")
    error.__cause__ = exc
    return error
