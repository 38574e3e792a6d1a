"""`CloseDrain`: the part of `close()` that our two WebSockets share."""

from __future__ import annotations

import anyio

from ..transport import WebSocketClosed


class CloseDrain:
    """A WebSocket whose `close()`, once its Close is sent, reads on until the
    peer's Close: the task in `receive`, if there is one, reads it (this waits
    for that task to leave `receive`); otherwise this reads, discarding
    messages, with `_draining` set."""

    close_code: int | None
    _receiving: bool  # a task is in `receive`
    _draining: bool  # `_read_until_closed` itself is in `receive`
    _idle: anyio.Event | None  # made by a waiter; set when the task leaves `receive`

    async def receive(self) -> str | bytes:
        raise NotImplementedError

    def _stop_draining(self) -> bool:
        """True: stop reading, the WebSocket ends some other way."""
        return False

    async def _read_until_closed(self) -> None:
        while self.close_code is None and not self._stop_draining():
            if self._receiving:
                if self._idle is None:
                    self._idle = anyio.Event()
                await self._idle.wait()
                continue
            self._draining = True
            try:
                await self.receive()
            except WebSocketClosed:
                pass
            finally:
                self._draining = False
