"""`KeepAlive`: one connection's keep-alive pings.

A ping every `ping_interval` (with `defer_pings_on_activity`, that long after
the last inbound frame: the reader moves `last_activity`); a ping without its
pong within the interval drops the connection. With a shared `TimerService`
(a server's connections) the ping times wait there and a ping gets a task only
while in flight; without one (a client) a pinger task sleeps between pings.
"""

from __future__ import annotations

import logging
import math

import anyio
from anyio.abc import TaskGroup

from ..transport import Transport, WebSocketClosed
from .events import CloseResult, Observers, PingEvent
from .timers import Timer, TimerService
from .writer import Owner, Writer

logger = logging.getLogger("ocpp_rpc.connection")


class KeepAlive:
    """The keep-alive of one connection, from `start` until `stop`.

    Once per ping interval it retires the connection's `writer` if it is idle;
    `owner.ended` records how the connection ended before the missing pong
    makes it drop the transport.
    """

    __slots__ = ("_events", "_interval", "_owner", "_scope", "_task_group", "_timer",
                 "_timers", "_transport", "_writer", "last_activity")

    def __init__(
        self,
        transport: Transport,
        events: Observers,
        timers: TimerService | None,
        *,
        writer: Writer,
        owner: Owner,
    ) -> None:
        self._transport = transport
        self._events = events
        self._timers = timers
        self._writer = writer
        self._owner = owner
        self._task_group: TaskGroup | None = None  # set while the connection runs
        self._scope: anyio.CancelScope | None = None  # the pinger task, or a ping in flight
        self._timer: Timer | None = None  # the next ping, in the shared TimerService
        self._interval = math.inf  # of the pings the TimerService times (see __call__)
        self.last_activity = 0.0

    def start(self, task_group: TaskGroup, interval: float | None) -> None:
        self._task_group = task_group
        self.restart(interval)

    def stop(self) -> None:
        """The connection ended: no more pings."""
        self._task_group = None
        self._cancel()

    def _cancel(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None
        if self._timer is not None:
            assert self._timers is not None
            self._timers.cancel(self._timer)
            self._timer = None

    def restart(self, interval: float | None) -> None:
        """(Re)start the pings every `interval` seconds (None, 0 or inf: none)."""
        self._cancel()
        if self._task_group is None or not interval or interval <= 0 or math.isinf(interval):
            return
        self.last_activity = anyio.current_time()
        if self._timers is not None:
            self._schedule(interval)
            return
        scope = anyio.CancelScope()
        self._scope = scope
        self._task_group.start_soon(self._pinger, scope, interval)

    async def _pinger(self, scope: anyio.CancelScope, interval: float) -> None:
        with scope:
            while True:
                while (delay := self.last_activity + interval - anyio.current_time()) > 0:
                    await anyio.sleep(delay)
                    self._writer.retire_if_idle()
                if not await self._ping(interval):
                    return

    def _schedule(self, interval: float) -> None:
        assert self._timers is not None
        # The interval waits here, not in a partial, and the timer calls this
        # object, not a bound method: each is one object less per connection.
        self._interval = interval
        self._timer = self._timers.schedule(self.last_activity + interval, self)

    def __call__(self) -> None:
        """The TimerService says it is time: ping in a task of its own, unless
        activity (defer_pings_on_activity) moved the ping later."""
        self._timer = None
        interval = self._interval
        if self._task_group is None:
            return
        self._writer.retire_if_idle()
        if self.last_activity + interval > anyio.current_time():
            self._schedule(interval)
            return
        scope = anyio.CancelScope()
        self._scope = scope
        try:
            self._task_group.start_soon(self._scheduled_ping, scope, interval)
        except RuntimeError:  # the task group is done: the connection has ended
            self._scope = None

    async def _scheduled_ping(self, scope: anyio.CancelScope, interval: float) -> None:
        with scope:
            # A restart() while the pong was being delivered cancelled this scope
            # and scheduled the next ping itself: do not schedule a second.
            if await self._ping(interval) and not scope.cancel_called:
                self._scope = None
                self._schedule(interval)

    async def _ping(self, interval: float) -> bool:
        """One ping; False if the connection ended (no pong within `interval` drops it)."""
        started = anyio.current_time()
        self.last_activity = started
        with anyio.move_on_after(interval) as timeout:
            try:
                await self._transport.ping()
            except WebSocketClosed:
                return False
        if timeout.cancelled_caught:
            logger.warning("no pong within %ss: dropping the connection", interval)
            # Recorded before the abort, which the reader would report as a plain 1006.
            self._owner.ended(CloseResult(1006, "ping timeout"))
            with anyio.CancelScope(shield=True):
                await self._transport.abort()
            return False
        self._events.emit("ping", PingEvent(anyio.current_time() - started))
        return True
