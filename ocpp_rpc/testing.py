"""Test your OCPP code without sockets: `connect` an `RPCClient` to a running
`RPCServer` through memory streams.

```python
async with RPCServer(protocols=["ocpp1.6"]) as server:
    async with connect(server, "CP-TEST", protocols=["ocpp1.6"]) as client:
        await client.call("BootNotification", {...})
```

The client goes through the server's limits, auth hook, subprotocol
negotiation and handlers exactly as a network client does; only the bytes
never touch a socket. So a test suite runs fast, and runs under Trio's
`MockClock` (``trio.testing.MockClock(autojump_threshold=0)``): keep-alive
pings, call timeouts and reconnect backoff then take no real time.
"""

from __future__ import annotations

import base64
import logging
import os
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from ._rpc.client import RPCClient
from ._transport.memory import MemoryWebSocket, memory_pair
from ._wire.handshake import Handshake, make_handshake
from .errors import ConnectError
from .transport import Transport, UpgradeServer, WebSocketClosed

__all__ = ("connect",)

logger = logging.getLogger("ocpp_rpc")

DEFAULT_ENDPOINT = "ws://testserver/ocpp"


@asynccontextmanager
async def connect(
    server: UpgradeServer,
    identity: str,
    *,
    protocols: Sequence[str] = (),
    endpoint: str = DEFAULT_ENDPOINT,
    remote_address: tuple[str, int] | None = None,
    **client_options: Any,
) -> AsyncIterator[RPCClient]:
    """Connect an `RPCClient` to `server` (a running `RPCServer`) in memory.

    ``async with connect(server, "CP1", protocols=["ocpp1.6"]) as client:``
    yields the open client and closes it on exit, like ``async with
    RPCClient(...)``. Every connection (reconnects too) is an upgrade request
    handed to ``server.serve_upgrade``: it passes the server's limits, auth
    hook and subprotocol selection, and the accepted `ServerClient` runs the
    server's handlers and keep-alive, as for a client on the network. A
    refusal raises `ConnectError` with the HTTP ``.status`` the server chose.

    Args:
        server: the server, inside its ``async with``.
        identity: the client's identity (the last path segment, percent-encoded
            on the way as a network client does).
        protocols: the offered subprotocols, in preference order.
        endpoint: the URL the client "dials"; the `Handshake` gets its path as
            ``endpoint`` (``"/ocpp"`` by default) and its host in the ``Host``
            header.
        remote_address: the `Handshake.remote_address` the server sees; None
            by default, as there is no socket (pass one to test an address
            check).
        **client_options: `RPCClient` options (``password``, ``headers``,
            ``query``, ``call_timeout``, ``ping_interval``, ``reconnect``...),
            with its defaults: pass ``reconnect=False`` for a client that stays
            closed once the server closes it. ``ssl_context`` is ignored.

    The server side of each connection runs in a task of this context manager;
    the server closes it like any other client (``server.close()``, leaving
    its ``async with``). Leaving this block closes the client, then waits for
    the server side to end: no task outlives it.
    """
    body_error: BaseException | None = None
    async with anyio.create_task_group() as tg:
        dialer = _MemoryDialer(server, tg, remote_address)
        client = RPCClient(endpoint, identity, protocols=protocols, dialer=dialer, **client_options)
        try:
            async with client:
                yield client
        except BaseException as exc:  # raised as it is, not in an exception group
            body_error = exc
        finally:
            with anyio.CancelScope(shield=True):
                await dialer.client_gone()
    if body_error is not None:
        raise body_error


class _MemoryDialer:
    """An `ocpp_rpc.transport.Dialer` that hands each connection attempt to
    ``server.serve_upgrade`` as a `_MemoryUpgrade`, in a task of `task_group`."""

    def __init__(
        self,
        server: UpgradeServer,
        task_group: TaskGroup,
        remote_address: tuple[str, int] | None,
    ) -> None:
        self._server = server
        self._task_group = task_group
        self._remote_address = remote_address
        # The upgrades being served, with the scopes of their tasks.
        self._serving: dict[_MemoryUpgrade, anyio.CancelScope] = {}

    async def __call__(
        self,
        url: str,
        *,
        subprotocols: Sequence[str],
        headers: Sequence[tuple[str, str]],
        ssl_context: ssl.SSLContext | None,
        max_message_size: int,
        handshake_timeout: float,
    ) -> Transport:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("ws", "wss") or not parts.netloc:
            raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
        upgrade = _MemoryUpgrade(
            path=parts.path or "/",
            query_string=parts.query,
            headers=_request_headers(parts.netloc, subprotocols, headers),
            protocols=tuple(subprotocols),
            remote_address=self._remote_address,
            max_message_size=max_message_size,
        )
        scope = anyio.CancelScope()
        self._serving[upgrade] = scope
        self._task_group.start_soon(self._serve, upgrade, scope)
        try:
            with anyio.fail_after(handshake_timeout):
                await upgrade.answered.wait()
        except BaseException:
            await upgrade.abandon()
            raise
        if upgrade.refusal is not None:
            status, message = upgrade.refusal
            raise ConnectError(
                f"server answered HTTP {status} instead of upgrading"
                + (f": {message}" if message else ""),
                status=status,
            )
        if upgrade.client_end is None:  # the server dropped it without an answer
            raise ConnectionError("connection closed during the WebSocket handshake")
        return upgrade.client_end

    async def _serve(self, upgrade: _MemoryUpgrade, scope: anyio.CancelScope) -> None:
        try:
            with scope:
                await self._server.serve_upgrade(upgrade)
        except Exception:  # one bad connection must not take the test's task group down
            logger.exception("error while serving an in-memory connection")
        finally:
            self._serving.pop(upgrade, None)
            upgrade.end()

    async def client_gone(self) -> None:
        """The client has closed for good: stop serving the upgrades still
        waiting for the server's answer (nothing would ever complete them),
        and drop any connection the client did not get to close (its
        server side would otherwise wait for it forever)."""
        for upgrade, scope in tuple(self._serving.items()):
            if upgrade.client_end is None:
                scope.cancel()
            elif upgrade.client_end.close_code is None:
                await upgrade.client_end.abort()


class _MemoryUpgrade:
    """An upgrade request of an in-memory client, as the server's `Upgrade`."""

    keepalive = True  # the server pings memory clients as it pings network ones

    def __init__(
        self,
        *,
        path: str,
        query_string: str,
        headers: list[tuple[str, str]],
        protocols: tuple[str, ...],
        remote_address: tuple[str, int] | None,
        max_message_size: int,
    ) -> None:
        self._path = path
        self._query_string = query_string
        self._headers = headers
        self._protocols = protocols
        self._remote_address = remote_address
        self._max_message_size = max_message_size
        self.answered = anyio.Event()  # accepted, refused, or dropped unanswered
        self.refusal: tuple[int, str] | None = None
        self.client_end: MemoryWebSocket | None = None
        self._abandoned = False  # the client stopped waiting

    def handshake(self) -> Handshake:
        return make_handshake(
            path=self._path,
            query_string=self._query_string,
            headers=self._headers,
            protocols=self._protocols,
            remote_address=self._remote_address,
        )

    async def accept(self, subprotocol: str | None, *, max_message_size: int) -> Transport:
        if subprotocol is not None and subprotocol not in self._protocols:
            raise ValueError(f"subprotocol {subprotocol!r} was not offered by the client")
        await anyio.lowlevel.checkpoint()
        if self._abandoned or self.answered.is_set():
            raise WebSocketClosed(1006, "")
        server_end, client_end = memory_pair(
            subprotocol=subprotocol,
            max_message_size=max_message_size,
            peer_max_message_size=self._max_message_size,
        )
        self.client_end = client_end
        self.answered.set()
        return server_end

    async def reject(self, status: int, message: str) -> None:
        await anyio.lowlevel.checkpoint()
        if not self.answered.is_set():
            self.refusal = (status, message)
            self.answered.set()

    def end(self) -> None:
        """The server is done with this upgrade (answered or not)."""
        self.answered.set()

    async def abandon(self) -> None:
        """The client stopped waiting (timeout, cancelled): a connection the
        server already accepted is dropped, a later answer goes nowhere."""
        self._abandoned = True
        if self.client_end is not None:
            with anyio.CancelScope(shield=True):
                await self.client_end.abort()


def _request_headers(
    host: str, subprotocols: Sequence[str], headers: Sequence[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The header lines a network client's upgrade request carries (names
    lower-cased, as the server's own reader gives them), then `headers`."""
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    lines = [
        ("host", host),
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", key),
        ("sec-websocket-version", "13"),
    ]
    if subprotocols:
        lines.append(("sec-websocket-protocol", ", ".join(subprotocols)))
    for name, value in headers:
        if not name or ":" in name or any(c in name + value for c in "\r\n\0"):
            raise ValueError(f"invalid HTTP header {name!r}: {value!r}")
        lines.append((name.lower(), value))
    return lines
