"""`TaskPool`: a task group's semantics for the one task per connection of a
server, at the cost of a bare task.

Since anyio 4.14, `TaskGroup.start_soon` wraps every task in a `TaskHandle`
with a cancel scope, an event and a coroutine of its own, which live as
long as the task: for a connection's task, that is several more objects per
idle connection for the collector to walk (figures: benchmarks/README.md).
The pool starts the backend's own task instead:

- trio: in a nursery of the pool's own, which is what anyio's task group
  is on trio;
- asyncio: with `loop.create_task`, each task in a cancel scope of its own,
  which the pool cancels when its own task is cancelled (anyio's semantics:
  shields hold, which a bare `Task.cancel()` would break).

Either way the pool's own task (`run`) ends after every task it started, so
the task group `run` is a task of waits for them all. As in that task group,
a task's error cancels the other tasks and the group at once (given its
cancel scope), later tasks start cancelled, and `run` raises the error,
which the group then raises, grouped once.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc

from .events import on_asyncio

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup


class TaskPool:
    """Tasks that `run`, itself a task of a task group, waits for.

    Start `run` with `tg.start(pool.run, tg.cancel_scope)`; `start_soon` then
    starts tasks until `close`, after which `run` returns once they have all
    ended. Cancelling `run` cancels them all, and it returns when they have
    ended.
    """

    __slots__ = (
        "_cancelled", "_closed", "_context", "_errors", "_group", "_loop", "_nursery", "_on_done",
        "_scopes", "_wake",
    )

    def __init__(self) -> None:
        self._closed = False  # no more tasks
        self._cancelled = False  # asyncio: every task is to be cancelled, late starters too
        self._errors: list[BaseException] = []  # asyncio: what tasks raised
        self._group: anyio.CancelScope | None = None  # run's task group's: cancelled on an error
        self._loop: asyncio.AbstractEventLoop | None = None
        self._nursery: Any = None  # trio's, while `run` runs there
        # asyncio: the tasks not ended yet, each with its cancel scope once it entered it.
        self._scopes: dict[asyncio.Task[None], anyio.CancelScope | None] = {}
        self._wake: Any = None  # the backend's event that `run` waits on
        # asyncio: every task's done callback is this one bound method, run in this one
        # context (by default each task would hold a copy of the starter's context).
        self._on_done = self._done
        self._context = contextvars.Context()

    def start_soon(self, func: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Start `func(*args)` in a task of the pool (as `TaskGroup.start_soon`)."""
        if self._closed:
            raise RuntimeError("this task pool is closed")
        if self._nursery is not None:
            self._nursery.start_soon(func, *args)
        elif self._loop is not None:
            # Named as anyio names a function's task (module and qualname; a partial's
            # function's), without making the coroutine before the task runs; interned:
            # one string per callable, not one per connection.
            target = func.func if isinstance(func, functools.partial) else func
            parts = (getattr(target, "__module__", None), getattr(target, "__qualname__", None))
            name = sys.intern(".".join(part for part in parts if part))
            task = self._loop.create_task(self._guard(func, args), name=name)
            # setdefault: an eager task factory ran the guard already, which put its scope.
            self._scopes.setdefault(task, None)
            task.add_done_callback(self._on_done, context=self._context)
        else:
            raise RuntimeError("TaskPool.start_soon() needs TaskPool.run() started")

    def close(self) -> None:
        """Start no more tasks: `run` returns once those started have ended."""
        self._closed = True
        if self._wake is not None:
            self._wake.set()

    async def run(
        self,
        group: anyio.CancelScope | None = None,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """The pool's own task: until `close` and the end of every task it started.
        `group`: the cancel scope of the task group `run` is a task of, which a
        task's error cancels at once (as a task group's own task's error would)."""
        self._group = group
        if not on_asyncio():
            import trio  # anyio's only other backend

            self._wake = trio.Event()
            if self._closed:
                self._wake.set()
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    task_status.started()
                    try:
                        await self._wake.wait()
                    except trio.Cancelled:
                        if group is not None and nursery.cancel_scope.cancel_called:
                            group.cancel()  # a task failed: the nursery cancelled itself
                        raise
            except BaseExceptionGroup as exc:  # the task group raising it groups it again
                _, errors = exc.split(trio.Cancelled)  # the group is cancelled: it says so
                if errors is not None and len(errors.exceptions) == 1:
                    raise errors.exceptions[0] from None
                raise
            finally:
                self._closed = True
                self._nursery = None
            return
        self._loop = asyncio.get_running_loop()
        task_status.started()
        try:
            await self._until(ended=False)
        except BaseException:  # cancelled: so is every task, each ending before this one
            self._closed = self._cancelled = True
            self._cancel_all()
            with anyio.CancelScope(shield=True):
                await self._until(ended=True)
            if self._errors:  # a task's error, before or during the cancel
                self._raise_errors()
            raise
        finally:
            self._closed = True
        if self._errors:
            self._raise_errors()

    def _raise_errors(self) -> None:
        errors, self._errors = self._errors, []
        if len(errors) == 1:
            raise errors[0] from None
        raise BaseExceptionGroup("errors in connection tasks", errors) from None

    async def _until(self, ended: bool) -> None:
        """Wait until every task has ended and (unless `ended`) the pool is closed."""
        while self._scopes or not (ended or self._closed or self._errors):
            self._wake = asyncio.Event()
            try:
                await self._wake.wait()
            finally:
                self._wake = None

    async def _guard(self, func: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        # A `with` statement, spelled out: `with` would hold the bound `__exit__`
        # for as long as the task runs, one object more per connection.
        scope = anyio.CancelScope()
        scope.__enter__()
        try:
            task = asyncio.current_task()
            assert task is not None
            self._scopes[task] = scope
            if self._cancelled:
                scope.cancel()
            await func(*args)
        except BaseException as exc:
            if not scope.__exit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            scope.__exit__(None, None, None)

    def _done(self, task: asyncio.Task[None]) -> None:
        del self._scopes[task]
        # As in anyio's task group, a task that raised, or that a bare `Task.cancel()`
        # ended (its own scope absorbs anyio's cancellations), cancels all the rest.
        error = None if task.cancelled() else task.exception()
        if error is not None:
            self._errors.append(error)
        if (error is not None or task.cancelled()) and not self._cancelled:
            self._cancelled = True  # later tasks start cancelled, as in a task group
            self._cancel_all()
            if self._group is not None:
                self._group.cancel()
        if self._wake is not None and not self._scopes and (self._closed or self._errors):
            self._wake.set()

    def _cancel_all(self) -> None:
        for scope in self._scopes.values():
            if scope is not None:
                scope.cancel()
