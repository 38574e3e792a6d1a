"""The interface every WebSocket transport satisfies (our wsproto transport,
and later ASGI, trio-websocket and in-memory ones)."""

from __future__ import annotations

from typing import Protocol


class Transport(Protocol):
    """One open WebSocket carrying whole text/binary messages.

    `receive`/`send` raise the transport's closed exception, translated by the
    connection through `closed_info`.
    """

    @property
    def subprotocol(self) -> str | None: ...

    async def receive(self) -> str | bytes: ...

    async def send(self, message: str | bytes) -> None: ...

    async def ping(self, payload: bytes | None = None) -> None: ...

    async def close(self, code: int = 1000, reason: str = "", *, timeout: float = 5.0) -> None: ...

    async def abort(self) -> None: ...
