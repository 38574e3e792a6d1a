"""The interface every WebSocket transport satisfies (our wsproto transport,
the ASGI and trio-websocket adapters), and the exception they raise when closed."""

from __future__ import annotations

from typing import Protocol


class WebSocketClosed(Exception):
    """Raised by every transport once the WebSocket is closed (or closing).

    ``.code`` and ``.reason`` of the close; 1006 = the TCP connection dropped
    without a close frame.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code, self.reason = code, reason

    def __str__(self) -> str:
        return f"WebSocket closed ({self.code}{': ' + self.reason if self.reason else ''})"


class Transport(Protocol):
    """One open WebSocket carrying whole text/binary messages.

    `receive`/`send` raise `WebSocketClosed` once the connection is gone.
    """

    @property
    def subprotocol(self) -> str | None: ...

    async def receive(self) -> str | bytes: ...

    async def send(self, message: str | bytes) -> None: ...

    async def ping(self, payload: bytes | None = None) -> None: ...

    async def close(self, code: int = 1000, reason: str = "", *, timeout: float = 5.0) -> None: ...

    async def abort(self) -> None: ...
