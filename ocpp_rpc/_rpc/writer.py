"""`Writer`: the one task that writes a connection's outbox to its transport.

It runs only while there is something to write: senders queue in the outbox
and start it when it is not running, and the keep-alive retires it once per
ping interval when nothing is queued, so an idle connection holds no writer.
"""

from __future__ import annotations

import logging
from typing import Protocol

import anyio
from anyio.abc import TaskGroup

from ..transport import Transport, WebSocketClosed
from .events import CloseResult
from .outbox import Outbox

logger = logging.getLogger("ocpp_rpc.connection")


class Owner(Protocol):
    """The connection a `Writer` or `KeepAlive` serves."""

    def ended(self, result: CloseResult) -> None:
        """The transport ended under us, as `result` says."""


class Writer:
    """Writes what senders queue in `outbox`, every frame queued meanwhile in
    one write; `owner.ended` hears how the transport closed if it did under it.

    A peer that stopped reading blocks a write (and, through the bounded
    outbox, every sender) until the transport's `write_timeout` drops it.
    """

    __slots__ = ("_done", "_identity", "_owner", "_task_group", "_transport", "outbox",
                 "running")

    def __init__(
        self,
        transport: Transport,
        outbox: Outbox,
        *,
        identity: str,
        owner: Owner,
    ) -> None:
        self.outbox = outbox
        self.running = False  # the writer task runs
        self._transport = transport
        self._identity = identity
        self._owner = owner
        self._task_group: TaskGroup | None = None
        self._done: anyio.Event | None = None  # made by a close waiting for the writer

    def attach(self, task_group: TaskGroup) -> None:
        """The connection runs: start writing what is queued already."""
        self._task_group = task_group
        if len(self.outbox):
            self.start()

    def start(self) -> None:
        """Start the writer task (call it when `running` is False)."""
        if self._task_group is None:  # not running yet: attach() starts it
            return
        self.running = True
        try:
            self._task_group.start_soon(self._write)
        except RuntimeError:  # the task group is done: the connection has ended
            self.running = False
            self.outbox.close()

    def retire_if_idle(self) -> None:
        """End the writer task if nothing is queued (the next frame starts it again)."""
        if self.running and not len(self.outbox):
            self.outbox.interrupt()

    async def finish(self, timeout: float) -> None:
        """Close the outbox and wait (at most `timeout`) until what is queued is written."""
        self.outbox.close()
        if self.running:
            self._done = anyio.Event()
            with anyio.move_on_after(timeout):
                await self._done.wait()

    async def write_now(self, frame: str | bytes) -> bool:
        """Write `frame` from the calling task if nothing is queued or being
        written (False: queue it instead). For answers, whose senders are
        the connection's own tasks: one the connection ends is the only
        cancellation, so a cut-off write costs nothing but a dead connection."""
        if self.running or len(self.outbox) or self.outbox.closed:
            return False
        try:
            await self._transport.send(frame)
        except WebSocketClosed as exc:
            self._closed_under(exc)
            return True
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("[%s] send %s", self._identity, frame)
        return True

    def _closed_under(self, exc: WebSocketClosed) -> None:
        if exc.reason == "write timeout":
            logger.warning(
                "[%s] the peer took no frame for %ss: dropping the connection",
                self._identity, self._transport.write_timeout,
            )
        self._owner.ended(CloseResult(exc.code, exc.reason))

    async def _write(self) -> None:
        send_many, outbox = self._transport.send_many, self.outbox
        done = False
        try:
            while frames := await outbox.take():
                try:
                    await send_many(frames)
                except WebSocketClosed as exc:
                    self._closed_under(exc)
                    return
                if logger.isEnabledFor(logging.DEBUG):  # one line per frame, at DEBUG only
                    for frame in frames:
                        logger.debug("[%s] send %s", self._identity, frame)
            done = True  # closed and flushed, or retired while idle
        finally:
            if not done:  # the connection ended (or the writer was cancelled)
                outbox.close()
            self.running = False
            if self._done is not None:
                self._done.set()
