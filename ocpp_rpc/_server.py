"""`RPCServer`: accepts OCPP-J clients after an auth hook; `ServerClient`."""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import math
import re
import ssl
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, unquote

import anyio
from anyio.abc import ByteStream, SocketAttribute, TaskGroup
from anyio.streams.tls import TLSAttribute, TLSStream

from . import _websocket
from ._client import (
    DEFAULT_MAX_MESSAGE_SIZE,
    HANDSHAKE_TIMEOUT,
    Options,
    RPCClient,
    State,
    check_close_code,
)
from ._events import CloseResult, ClosingEvent, Observer, Observers, UpgradeAbortedEvent
from ._handlers import H, Handler, Handlers
from ._transport import Transport
from ._validation import Validator

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover
    from typing_extensions import Self

logger = logging.getLogger("ocpp_rpc")

_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_BASIC = re.compile(r"^\s*basic\s+([A-Za-z0-9+/._~-]+=*)\s*$", re.IGNORECASE)


class Headers(Mapping[str, str]):
    """Request headers, looked up case-insensitively; repeated ones joined with ", "."""

    __slots__ = ("_items", "_map")

    def __init__(self, items: Sequence[tuple[str, str]]) -> None:
        self._items = tuple(items)
        merged: dict[str, str] = {}
        for name, value in self._items:
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        self._map = merged

    def __getitem__(self, name: str) -> str:
        return self._map[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._map

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def raw_items(self) -> tuple[tuple[str, str], ...]:
        """Every header line as received (lower-cased names), repeats included."""
        return self._items

    def __repr__(self) -> str:
        return f"Headers({self._map!r})"


@dataclass(frozen=True, slots=True)
class Handshake:
    """What the server knows of a client asking to connect (the auth hook's input)."""

    identity: str
    endpoint: str
    protocols: tuple[str, ...]
    remote_address: tuple[str, int] | None
    headers: Headers
    query: Mapping[str, str]
    password: bytes | None
    peer_certificate: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Accept:
    """Accept the client; `session` is kept on `ServerClient.session`, `protocol`
    (one the client offered) overrides the server's choice."""

    session: Any = None
    protocol: str | None = None


class Reject(Exception):
    """Raise from the auth hook to refuse the upgrade with an HTTP `status`."""

    def __init__(self, status: int = 400, message: str = "") -> None:
        if not 400 <= status <= 599:
            raise ValueError("Reject needs an HTTP error status (400-599)")
        super().__init__(status, message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Listening:
    """A listening socket of the server."""

    host: str
    port: int


class ServerClient(RPCClient):
    """A connected client as the server sees it: an `RPCClient` that never
    reconnects, with the `handshake` and the auth hook's `session`."""

    def __init__(
        self,
        server: RPCServer,
        handshake: Handshake,
        session: Any,
        options: Options,
        protocol: str | None,
    ) -> None:
        super().__init__("", handshake.identity, reconnect=False)
        self._options = options
        self._server_handlers = server._handlers
        self._server_observers = server._observers
        self._observers = Observers()
        self.handshake = handshake
        self.session = session
        # Already upgraded: the server's `client` event and `clients` see it open.
        self._protocol = protocol
        self._state = State.OPEN

    def _find_handler(self, method: str) -> Handler | None:
        return self._handlers.find(method) or self._server_handlers.find(method)

    async def _run_on_client(self, on_client: Callable[[ServerClient], Awaitable[None]]) -> None:
        try:
            await on_client(self)
        except Exception as exc:
            self._server_observers.emit("error", exc)  # the server's `error` event
            raise

    async def _serve_accepted(
        self, transport: Transport, on_client: Callable[[ServerClient], Awaitable[None]] | None
    ) -> None:
        self._init_primitives()
        first = None if on_client is None else functools.partial(self._run_on_client, on_client)
        result: CloseResult | None = None
        try:
            result = await self._serve(transport, first)
        finally:
            self._last_close = result or CloseResult(1006, "")
            if self._close_result is None:
                self._close_result = self._last_close
            self._set_state(State.CLOSED)
            self._observers.emit("close", self._close_result)
            assert self._closed is not None
            self._closed.set()


class RPCServer:
    """An OCPP-J RPC server (CSMS side).

    ``async with RPCServer(...) as server:`` owns every listener and client;
    leaving the block closes them all.
    """

    def __init__(
        self,
        *,
        protocols: Sequence[str] = (),
        call_timeout: float = 60.0,
        ping_interval: float | None = 30.0,
        defer_pings_on_activity: bool = False,
        call_concurrency: int = 1,
        respond_with_detailed_errors: bool = False,
        max_bad_messages: float = math.inf,
        strict_mode: bool | Sequence[str] = False,
        strict_mode_validators: Sequence[Validator] = (),
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        if isinstance(protocols, str):
            raise TypeError("protocols must be a sequence of str, not a str")
        self._options = Options(
            protocols=tuple(protocols),
            call_timeout=call_timeout,
            ping_interval=ping_interval,
            defer_pings_on_activity=defer_pings_on_activity,
            call_concurrency=call_concurrency,
            respond_with_detailed_errors=respond_with_detailed_errors,
            max_bad_messages=max_bad_messages,
            strict_mode=strict_mode if isinstance(strict_mode, bool) else tuple(strict_mode),
            strict_mode_validators=tuple(strict_mode_validators),
            max_message_size=max_message_size,
            reconnect=False,
        )
        self._handlers = Handlers()
        self._observers = Observers()
        self._auth: Callable[[Handshake], Awaitable[Accept | None]] | None = None
        self._on_client: Callable[[ServerClient], Awaitable[None]] | None = None
        self._clients: dict[str, ServerClient] = {}
        self._all_clients: set[ServerClient] = set()
        self._task_group: TaskGroup | None = None
        self._listener_scopes: list[anyio.CancelScope] = []
        self._upgrade_scopes: set[anyio.CancelScope] = set()
        self._closing = False
        self._close_done: anyio.Event | None = None

    # -- configuration -----------------------------------------------------------

    def auth(
        self, callback: Callable[[Handshake], Awaitable[Accept | None]]
    ) -> Callable[[Handshake], Awaitable[Accept | None]]:
        """Set the auth hook (usable as a decorator): return None or `Accept` to
        accept, raise `Reject` to refuse with an HTTP status."""
        self._auth = callback
        return callback

    def on_client(
        self, callback: Callable[[ServerClient], Awaitable[None]]
    ) -> Callable[[ServerClient], Awaitable[None]]:
        """Set the hook run in each accepted client's task group (usable as a decorator)."""
        self._on_client = callback
        return callback

    def handle(self, method: str | Handler, handler: Handler | None = None, /) -> None:
        """Default handler for every client (`handle(handler)`: the wildcard)."""
        self._handlers.handle(method, handler)  # type: ignore[arg-type]

    def handler(self, method: str | None = None) -> Callable[[H], H]:
        """Decorator form of `handle`."""
        return self._handlers.handler(method)

    def remove_handler(self, method: str | None = None) -> None:
        """Remove a default handler (None: the wildcard)."""
        self._handlers.remove_handler(method)

    def remove_all_handlers(self) -> None:
        """Remove every default handler."""
        self._handlers.remove_all_handlers()

    def on(self, event: str, callback: Observer) -> None:
        """Observe a server event: client, closing, close, error, upgrade_aborted."""
        self._observers.on(event, callback)

    def off(self, event: str, callback: Observer) -> None:
        """Stop observing `event` with `callback`."""
        self._observers.off(event, callback)

    @property
    def clients(self) -> Mapping[str, ServerClient]:
        """Connected clients by identity (read-only)."""
        return MappingProxyType(self._clients)

    # -- lifetime ------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._context = self._lifetime()
        return await self._context.__aenter__()

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self._context.__aexit__(*exc_info)

    @asynccontextmanager
    async def _lifetime(self) -> AsyncGenerator[Self, None]:
        if self._task_group is not None:
            raise RuntimeError("this server is already running")
        self._closing = False
        self._close_done = anyio.Event()
        body_error: BaseException | None = None
        try:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                try:
                    yield self
                except BaseException as exc:
                    body_error = exc
                finally:
                    with anyio.CancelScope(shield=True):
                        await self.close()
        finally:
            self._task_group = None
        if body_error is not None:
            raise body_error

    async def listen(
        self, port: int = 0, host: str = "127.0.0.1", *, ssl_context: ssl.SSLContext | None = None
    ) -> Listening:
        """Listen on `host:port` (0: any free port); returns the bound address.
        May be called more than once."""
        tg = self._task_group
        if tg is None or self._closing:
            raise RuntimeError("listen() needs a running, open server (async with RPCServer())")
        listener: Any = await anyio.create_tcp_listener(local_host=host, local_port=port)
        bound_host, bound_port = listener.extra(SocketAttribute.local_address)[:2]
        scope = anyio.CancelScope()
        self._listener_scopes.append(scope)
        tg.start_soon(self._serve_listener, listener, ssl_context, scope)
        return Listening(str(bound_host), int(bound_port))

    async def _serve_listener(
        self, listener: Any, ssl_context: ssl.SSLContext | None, scope: anyio.CancelScope
    ) -> None:
        handler = functools.partial(self._handle_stream, ssl_context=ssl_context)
        with scope:
            async with listener:
                # Connections run in the server's task group, so that they
                # outlive the listener when close() stops it.
                await listener.serve(handler, self._task_group)

    async def close(
        self,
        *,
        code: int = 1000,
        reason: str = "",
        await_pending: bool = False,
        force: bool = False,
    ) -> None:
        """Refuse new clients, stop listening, close every client with these options."""
        check_close_code(code)
        if self._close_done is None:
            return
        if self._closing:
            await self._close_done.wait()
            return
        self._closing = True
        self._observers.emit("closing", ClosingEvent())
        for scope in (*self._listener_scopes, *self._upgrade_scopes):
            scope.cancel()
        self._listener_scopes.clear()
        async with anyio.create_task_group() as tg:
            for client in tuple(self._all_clients):
                tg.start_soon(
                    functools.partial(
                        client.close, code=code, reason=reason,
                        await_pending=await_pending, force=force,
                    )
                )
        self._observers.emit("close", None)
        self._close_done.set()

    # -- accepting -------------------------------------------------------------------

    async def _handle_stream(
        self, stream: ByteStream, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        try:
            async with stream:
                accepted = None
                # close() cancels connections still in their TLS handshake,
                # upgrade or auth hook.
                with anyio.CancelScope() as upgrading:
                    self._upgrade_scopes.add(upgrading)
                    try:
                        if ssl_context is not None:
                            with anyio.fail_after(HANDSHAKE_TIMEOUT):
                                stream = await TLSStream.wrap(
                                    stream,
                                    server_side=True,
                                    ssl_context=ssl_context,
                                    standard_compatible=False,
                                )
                        accepted = await self._accept(stream)
                    finally:
                        self._upgrade_scopes.discard(upgrading)
                if accepted is not None:
                    await self._run_client(*accepted)
        except Exception:  # one bad connection must never take the server down
            logger.exception("error while serving a connection")

    def _refused(self, identity: str | None, status: int, reason: str) -> None:
        logger.info("upgrade refused (%s %s) for %r", status, reason, identity)
        self._observers.emit("upgrade_aborted", UpgradeAbortedEvent(identity, status, reason))

    async def _accept(self, stream: ByteStream) -> tuple[ServerClient, _websocket.WebSocket] | None:
        """Read and answer the upgrade request; the accepted client, else None."""
        if self._closing:
            return None
        request: _websocket.UpgradeRequest | None = None
        with anyio.move_on_after(HANDSHAKE_TIMEOUT):
            try:
                request = await _websocket.read_upgrade_request(stream)
            except _websocket.HandshakeRefused as exc:
                if not isinstance(exc, _websocket.HandshakeAborted):
                    self._refused(None, exc.status, exc.message)
                return None
        if request is None:
            self._refused(None, 408, "handshake timeout")
            return None
        try:
            handshake = _make_handshake(stream, request)
        except ValueError as exc:
            self._refused(None, 400, str(exc))
            await _websocket.reject_upgrade(stream, 400, f"{exc}\n")
            return None
        accept: Accept | None = None
        try:
            if self._auth is not None:
                accept = await self._auth(handshake)
        except Reject as exc:
            self._refused(handshake.identity, exc.status, exc.message)
            await _websocket.reject_upgrade(stream, exc.status, exc.message)
            return None
        except Exception as exc:
            logger.exception("auth callback raised for %r", handshake.identity)
            self._observers.emit("error", exc)
            self._refused(handshake.identity, 500, "auth callback failed")
            await _websocket.reject_upgrade(stream, 500, "Internal Server Error")
            return None
        if accept is None:
            accept = Accept()
        protocol = accept.protocol
        if protocol is None:
            protocol = next((p for p in self._options.protocols if p in handshake.protocols), None)
            if protocol is None and self._options.protocols and self._auth is None:
                reason = "no mutually agreed subprotocol"
                self._refused(handshake.identity, 400, reason)
                await _websocket.reject_upgrade(stream, 400, reason)
                return None
        elif protocol not in handshake.protocols:
            reason = f"client did not offer subprotocol {protocol!r}"
            self._refused(handshake.identity, 400, reason)
            await _websocket.reject_upgrade(stream, 400, reason)
            return None
        if self._closing:
            await _websocket.reject_upgrade(stream, 503, "server closing")
            return None
        ws = await _websocket.accept_upgrade(
            stream, request, subprotocol=protocol,
            max_message_size=self._options.max_message_size,
        )
        return ServerClient(self, handshake, accept.session, self._options, protocol), ws

    async def _run_client(self, client: ServerClient, ws: _websocket.WebSocket) -> None:
        identity = client.identity
        stale = self._clients.get(identity)
        self._clients[identity] = client
        self._all_clients.add(client)
        if stale is not None and self._task_group is not None:
            self._task_group.start_soon(
                functools.partial(stale.close, code=1000, reason="replaced")
            )
        try:
            self._observers.emit("client", client)
            await client._serve_accepted(ws, self._on_client)
        finally:
            self._all_clients.discard(client)
            if self._clients.get(identity) is client:
                del self._clients[identity]


def _make_handshake(stream: ByteStream, request: _websocket.UpgradeRequest) -> Handshake:
    """The Handshake of an upgrade request; ValueError for a malformed identity."""
    endpoint, _, raw_identity = request.path.rpartition("/")
    if not raw_identity:
        raise ValueError("missing identity (the last path segment)")
    if _BAD_PERCENT.search(raw_identity):
        raise ValueError("malformed percent-encoding in the identity")
    try:
        identity = unquote(raw_identity, errors="strict")
    except UnicodeDecodeError:
        raise ValueError("the identity is not UTF-8") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in identity):
        raise ValueError("control characters in the identity")
    headers = Headers(request.headers)
    password = None
    authorization = headers.get("authorization")
    if authorization:
        match = _BASIC.match(authorization)
        if match:
            try:
                user_pass = base64.b64decode(match.group(1), validate=False)
            except (binascii.Error, ValueError):
                user_pass = b""
            prefix = identity.encode() + b":"
            if user_pass.startswith(prefix):
                password = user_pass[len(prefix):]
    try:
        remote = stream.extra(SocketAttribute.remote_address)
        remote_address = (str(remote[0]), int(remote[1])) if isinstance(remote, tuple) else None
    except Exception:
        remote_address = None
    peer_certificate = stream.extra(TLSAttribute.peer_certificate, None)
    return Handshake(
        identity=identity,
        endpoint=endpoint or "/",
        protocols=request.subprotocols,
        remote_address=remote_address,
        headers=headers,
        query=MappingProxyType(dict(parse_qsl(request.query_string, keep_blank_values=True))),
        password=password,
        peer_certificate=peer_certificate,
    )
