"""OCPP-J over trio-websocket connections you already hold (Trio only).

- Server side: in a ``trio_websocket.serve_websocket`` handler, hand the
  request to an `RPCServer` with :func:`serve_request`; it goes through the
  server's limits, auth hook, subprotocol selection and `Handshake` like a
  connection to ``listen()``, and is served as a `ServerClient` until it ends.
- Client side: :func:`attach_client` runs an `RPCClient` over an open
  ``WebSocketConnection`` (no reconnects: the connection is yours).

What trio-websocket's request does not expose stays empty: the ``host``
header and ``Handshake.peer_certificate`` (use ``listen(ssl_context=...)`` for
mutual TLS). Note that trio-websocket 0.12 leaves a client's socket to the
garbage collector when the server closes first (its ``aclose()`` then returns
early): harmless, but visible as a ResourceWarning.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import trio
import trio_websocket

from ._rpc.client import DEFAULT_MAX_MESSAGE_SIZE, RPCClient
from ._rpc.reconnect import NotRetryable
from ._wire.handshake import Handshake, make_handshake
from .transport import Dialer, Transport, WebSocketClosed

if TYPE_CHECKING:
    from ._rpc.server import RPCServer

__all__ = ("TrioWebSocketTransport", "attach_client", "serve_request")

logger = logging.getLogger("ocpp_rpc")


class TrioWebSocketTransport:
    """A ``trio_websocket.WebSocketConnection`` as a transport.

    trio-websocket enforces its own ``max_message_size`` (1 MiB by default)
    before ours.
    """

    def __init__(
        self,
        websocket: trio_websocket.WebSocketConnection,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self.websocket = websocket
        self._max_message_size = max_message_size
        #: Seconds trio-websocket may take to write one message (None: no bound).
        self.write_timeout: float | None = None
        self.close_code: int | None = None
        self.close_reason = ""

    @property
    def subprotocol(self) -> str | None:
        return self.websocket.subprotocol

    async def receive(self) -> str | bytes:
        try:
            message = await self.websocket.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise self._closed(exc) from None
        size = len(message.encode("utf-8")) if isinstance(message, str) else len(message)
        if size > self._max_message_size:
            await self.close(1009, "message too big", timeout=2.0)
            raise WebSocketClosed(1009, "message too big")
        return message

    async def send(self, message: str | bytes) -> None:
        try:
            with anyio.fail_after(self.write_timeout):
                await self.websocket.send_message(message)
        except trio_websocket.ConnectionClosed as exc:
            raise self._closed(exc) from None
        except TimeoutError:
            if self.close_code is None:
                self.close_code, self.close_reason = 1006, "write timeout"
            with anyio.CancelScope(shield=True):
                await self.abort()
            raise WebSocketClosed(1006, "write timeout") from None

    async def send_many(self, messages: Sequence[str | bytes]) -> None:
        """Send `messages` in order."""
        for message in messages:
            await self.send(message)

    async def ping(self, payload: bytes | None = None) -> None:
        try:
            await self.websocket.ping(payload)
        except trio_websocket.ConnectionClosed as exc:
            raise self._closed(exc) from None

    async def close(self, code: int = 1000, reason: str = "", *, timeout: float = 5.0) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        with anyio.move_on_after(timeout) as waited:
            await self.websocket.aclose(code, reason or None)
        if waited.cancelled_caught:
            await self.abort()

    async def abort(self) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = 1006, ""
        # trio-websocket has no abort: an aclose() cancelled at once drops the
        # stream without waiting for the closing handshake.
        with trio.CancelScope() as scope:
            scope.cancel()
            await self.websocket.aclose()

    def _closed(self, exc: trio_websocket.ConnectionClosed) -> WebSocketClosed:
        if self.close_code is None:  # the peer closed (trio-websocket records ours as 1000)
            reason = exc.reason
            code = 1006 if reason is None else reason.code
            self.close_code, self.close_reason = code, (reason.reason or "") if reason else ""
        return WebSocketClosed(self.close_code, self.close_reason)


class _TrioWebSocketUpgrade:
    """A trio-websocket request, as the server's `Upgrade`."""

    keepalive = True

    def __init__(self, request: trio_websocket.WebSocketRequest) -> None:
        self._request = request

    def handshake(self) -> Handshake:
        request = self._request
        path, _, query = request.path.partition("?")
        remote = request.remote
        address = (
            (str(remote.address), int(remote.port))
            if isinstance(remote, trio_websocket.Endpoint)
            else None
        )
        return make_handshake(
            path=path,
            query_string=query,
            headers=[
                (name.decode("latin-1").lower(), value.decode("latin-1"))
                for name, value in request.headers
            ],
            protocols=request.proposed_subprotocols,
            remote_address=address,
        )

    async def accept(self, subprotocol: str | None, *, max_message_size: int) -> Transport:
        try:
            websocket = await self._request.accept(subprotocol=subprotocol)
        except (trio_websocket.ConnectionClosed, trio.BrokenResourceError):
            raise WebSocketClosed(1006, "") from None
        return TrioWebSocketTransport(websocket, max_message_size=max_message_size)

    async def reject(self, status: int, message: str) -> None:
        try:
            await self._request.reject(
                status,
                extra_headers=[(b"Content-Type", b"text/plain; charset=utf-8")],
                body=message.encode("utf-8"),
            )
        except Exception as exc:
            logger.debug("trio-websocket refusal could not be sent: %r", exc)


async def serve_request(server: RPCServer, request: trio_websocket.WebSocketRequest) -> None:
    """Serve one trio-websocket request as a client of `server` (until it ends).

    Call it from a ``serve_websocket`` handler while the server's ``async with``
    block runs. Refusals are answered with their HTTP status.
    """
    await server.serve_upgrade(_TrioWebSocketUpgrade(request))


def _dial_once(transport: Transport) -> Dialer:
    """A dialer that hands out `transport` once (the connection is the caller's,
    so there is no reconnecting), if its subprotocol is one the client offers."""
    remaining = [transport]

    async def dial(
        url: str,
        *,
        subprotocols: Sequence[str],
        headers: Sequence[tuple[str, str]],
        ssl_context: ssl.SSLContext | None,
        max_message_size: int,
        handshake_timeout: float,
    ) -> Transport:
        if not remaining:
            raise NotRetryable("an attached client cannot reconnect")
        transport = remaining.pop()
        if subprotocols and transport.subprotocol not in subprotocols:
            await transport.close(1002, "no subprotocol agreed")
            raise NotRetryable(
                f"the connection's subprotocol {transport.subprotocol!r} is not one of"
                f" {list(subprotocols)}"
            )
        return transport

    return dial


@asynccontextmanager
async def attach_client(
    websocket: trio_websocket.WebSocketConnection, identity: str, **options: Any
) -> AsyncIterator[RPCClient]:
    """Run an `RPCClient` over an open trio-websocket connection.

    `options` are `RPCClient`'s (``reconnect`` excepted); with ``protocols``,
    the connection's subprotocol must be one of them (else `ConnectError`).
    Leaving the block closes the connection.
    """
    if "reconnect" in options or "max_reconnects" in options:
        raise TypeError("an attached client never reconnects")
    max_message_size = options.get("max_message_size", DEFAULT_MAX_MESSAGE_SIZE)
    transport = TrioWebSocketTransport(websocket, max_message_size=max_message_size)
    client = RPCClient("", identity, reconnect=False, dialer=_dial_once(transport), **options)
    async with client:
        yield client
