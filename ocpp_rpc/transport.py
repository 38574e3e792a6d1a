"""The transport interface: what an RPC connection needs from a WebSocket.

Every way ocpp_rpc carries OCPP-J meets these protocols: its own WebSocket over
TCP/TLS, the ASGI adapter (`ocpp_rpc.asgi`), the trio-websocket adapter
(`ocpp_rpc.trio_ws`) and the in-memory transport of `ocpp_rpc.testing`.

- `Transport`: one open WebSocket carrying whole text and binary messages.
- `Upgrade`: one upgrade request awaiting its answer, however it arrived; an
  adapter hands it to `RPCServer.serve_upgrade`, the one path through the
  server's limits, auth hook and subprotocol selection to a `ServerClient`.
- `Dialer`: how an `RPCClient` opens its connection (``RPCClient(...,
  dialer=...)``); the default dials ``ws://`` and ``wss://`` URLs over TCP.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._wire.handshake import Handshake

__all__ = ("Dialer", "Transport", "Upgrade", "UpgradeServer", "WebSocketClosed")


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

    `receive`, `send` and `send_many` raise `WebSocketClosed` once the
    connection is gone. A write that the peer does not take within
    `write_timeout` seconds (None: no bound) ends the connection with 1006
    "write timeout". After the connection ended, `close_code` and
    `close_reason` tell how (None and "" while open).
    """

    write_timeout: float | None
    close_code: int | None
    close_reason: str

    @property
    def subprotocol(self) -> str | None: ...

    async def receive(self) -> str | bytes: ...

    async def send(self, message: str | bytes) -> None: ...

    async def send_many(self, messages: Sequence[str | bytes]) -> None:
        """Send several messages in order (as one write where the transport can)."""
        ...

    async def ping(self, payload: bytes | None = None) -> None:
        """Ping and wait for the pong (WebSocketClosed if the connection ends first)."""
        ...

    async def close(self, code: int = 1000, reason: str = "", *, timeout: float = 5.0) -> None:
        """Close with a close handshake of at most `timeout` seconds."""
        ...

    async def abort(self) -> None:
        """Drop the connection now, without a close handshake (1006)."""
        ...


class Upgrade(Protocol):
    """One WebSocket upgrade request awaiting its answer, however it arrived."""

    #: Whether the server's keep-alive pings apply (False where the host pings).
    keepalive: bool

    def handshake(self) -> Handshake:
        """The request as a Handshake; ValueError if its identity is malformed."""
        ...

    async def accept(self, subprotocol: str | None, *, max_message_size: int) -> Transport:
        """Complete the upgrade; WebSocketClosed if the peer went away."""
        ...

    async def reject(self, status: int, message: str) -> None:
        """Refuse the upgrade with an HTTP `status` (never raises)."""
        ...


class UpgradeServer(Protocol):
    """What an adapter needs of an `RPCServer`."""

    async def serve_upgrade(self, upgrade: Upgrade) -> None:
        """Admit (or refuse) `upgrade`, then serve its client until it ends."""
        ...


class Dialer(Protocol):
    """Opens a client connection to `url` and completes its upgrade.

    Raises `ocpp_rpc.ConnectError` (with ``.status``) when the server answers
    without upgrading, `OSError` when it cannot be reached and `TimeoutError`
    after `handshake_timeout` seconds.
    """

    async def __call__(
        self,
        url: str,
        *,
        subprotocols: Sequence[str],
        headers: Sequence[tuple[str, str]],
        ssl_context: ssl.SSLContext | None,
        max_message_size: int,
        handshake_timeout: float,
    ) -> Transport: ...
