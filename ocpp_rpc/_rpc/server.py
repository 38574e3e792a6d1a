"""`RPCServer`: accepts OCPP-J clients after an auth hook; `ServerClient`.

Every way a WebSocket upgrade can reach the server (our own listener, an ASGI
host, a trio-websocket request) is an `Upgrade`; `RPCServer.serve_upgrade` is
the one path from there through the limits, the auth hook and subprotocol
selection to a running `ServerClient`.
"""

from __future__ import annotations

import functools
import logging
import math
import socket
import ssl
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from types import MappingProxyType
from typing import Any, TypeVar

import anyio
from anyio.abc import ByteStream, SocketAttribute, TaskGroup
from anyio.streams.tls import TLSStream

from .._concurrency.events import stray_cancellation
from .._concurrency.pool import TaskPool
from .._transport import websocket as _websocket
from .._transport.asgi import ASGIApp
from .._transport.close_codes import check_close_code
from .._transport.listener import Listening, StreamUpgrade, remote_address
from .._transport.streams import open_accepted, serve_listener
from .._wire.handshake import Accept as Accept
from .._wire.handshake import Handshake as Handshake
from .._wire.handshake import Headers as Headers
from .._wire.handshake import Reject as Reject
from .._wire.validation import Validator
from ..errors import NotConnected
from ..transport import Transport, Upgrade
from .client import RPCClient
from .cluster_link import ClusterLink, ClusterNode
from .events import CloseResult, ClosingEvent, Observer, Observers, State, UpgradeAbortedEvent
from .handlers import H, Handler, Handlers
from .options import (
    DEFAULT_MAX_INBOUND_CALLS,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_WRITE_TIMEOUT,
    Options,
)
from .timers import TimerService

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover
    from typing_extensions import Self

logger = logging.getLogger("ocpp_rpc")

T = TypeVar("T")

#: Default seconds a new connection gets for its TLS handshake and HTTP upgrade request.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: Default maximum size in bytes of an upgrade request's request line and headers.
DEFAULT_MAX_HEADER_SIZE = 16384
# Bound on answering a peer that is being dropped (it may not be reading).
_REFUSAL_SEND_TIMEOUT = 1.0


class ServerClient(RPCClient):
    """A connected client as the server sees it: an `RPCClient` that never
    reconnects, with the `handshake` and the auth hook's `session`.

    Made by its `RPCServer` once the upgrade is accepted: its handlers are
    looked up first, then the server's (`server_handlers`); `server_events`
    are the server's observers (its `error` event); `timers` the server's
    shared keep-alive times.
    """

    def __init__(
        self,
        handshake: Handshake,
        session: Any,
        options: Options,
        protocol: str | None,
        *,
        server_handlers: Handlers,
        server_events: Observers,
        timers: TimerService | None,
    ) -> None:
        # Already upgraded: the server's `client` event and `clients` see it open.
        self._setup(
            handshake.identity, options, handlers=Handlers(fallback=server_handlers),
            timers=timers, protocol=protocol, state=State.OPEN,
        )
        self._server_events = server_events
        self.handshake = handshake
        self.session = session

    async def _run_on_client(self, on_client: Callable[[ServerClient], Awaitable[None]]) -> None:
        try:
            await on_client(self)
        except Exception as exc:
            self._server_events.emit("error", exc)  # the server's `error` event
            raise
        except BaseException as exc:
            error = stray_cancellation(exc)
            if error is None:
                raise
            self._server_events.emit("error", error)
            raise error from exc



class RPCServer:
    """An OCPP-J RPC server (CSMS side).

    ``async with RPCServer(...) as server:`` owns every listener and client;
    leaving the block closes them all.

    Limits against hostile or broken peers (each refusal fires
    `upgrade_aborted` and is logged):

    - `handshake_timeout`: seconds a new connection has for its TLS handshake
      and its HTTP upgrade request (not the auth hook); then it gets 408 (if
      the TLS handshake is done) and is dropped.
    - `max_header_size`: bytes of request line + headers; beyond: 431.
    - `max_message_size`: bytes of one inbound message; beyond: close 1009.
    - `max_connections`: WebSocket connections at once, upgrades in progress
      included (None: no limit); beyond: 503. A client that replaces its own
      older connection (same identity) is not refused, one upgrade at a time
      per identity.

    With ``cluster=RedisCluster(...)`` (`ocpp_rpc.cluster`) the server is a
    node of a CSMS that spans processes and machines: entering ``async with``
    joins the cluster, each accepted client is registered under its identity
    before `on_client` runs (one live connection per identity across the
    cluster: the older one is closed 1000 "replaced"), and `call` reaches a
    charger connected to any node.
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
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
        max_connections: int | None = None,
        max_inbound_calls: float = DEFAULT_MAX_INBOUND_CALLS,
        write_timeout: float | None = DEFAULT_WRITE_TIMEOUT,
        cluster: ClusterNode | None = None,
    ) -> None:
        if isinstance(protocols, str):
            raise TypeError("protocols must be a sequence of str, not a str")
        if not handshake_timeout > 0:
            raise ValueError("handshake_timeout must be positive")
        if max_header_size < 1:
            raise ValueError("max_header_size must be positive")
        if max_connections is not None and max_connections < 1:
            raise ValueError("max_connections must be positive (or None: unlimited)")
        self._handshake_timeout = handshake_timeout
        self._cluster = cluster
        self._link: ClusterLink[ServerClient] | None = None
        self._max_header_size = max_header_size
        self._max_connections = max_connections
        self._connection_count = 0  # upgrades past the capacity check + running clients
        self._replacing: set[str] = set()  # identities upgrading past max_connections
        self._host_keepalive_options: Options | None = None
        self._asgi_app: ASGIApp | None = None
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
            max_inbound_calls=max_inbound_calls,
            write_timeout=write_timeout,
            reconnect=False,
        )
        self._handlers = Handlers()
        self._observers = Observers()
        self._auth: Callable[[Handshake], Awaitable[Accept | None]] | None = None
        self._on_client: Callable[[ServerClient], Awaitable[None]] | None = None
        self._clients: dict[str, ServerClient] = {}
        self._all_clients: set[ServerClient] = set()
        self._task_group: TaskGroup | None = None
        self._connection_tasks: TaskPool | None = None
        self._listener_scopes: list[anyio.CancelScope] = []
        self._upgrade_scopes: set[anyio.CancelScope] = set()
        self._closing = False
        self._close_done: anyio.Event | None = None
        self._closer: anyio.Event | None = None  # set once the close() under way ends
        # The ping times of every client: one task, not one per client.
        self._timers = TimerService()

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
    def running(self) -> bool:
        """True while the server's ``async with`` block runs."""
        return self._task_group is not None

    @property
    def clients(self) -> Mapping[str, ServerClient]:
        """Connected clients by identity (read-only)."""
        return MappingProxyType(self._clients)

    @property
    def asgi_app(self) -> ASGIApp:
        """An ASGI 3 application serving this server's endpoint inside another
        web server (see `ocpp_rpc.asgi`). The server's ``async with`` block must
        be running while it serves (e.g. in the host application's lifespan)."""
        if self._asgi_app is None:
            self._asgi_app = ASGIApp(self)
        return self._asgi_app

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
        async with AsyncExitStack() as stack:
            if self._cluster is not None:  # joined first, left after every client closed
                link = ClusterLink(self._cluster, self._clients, self._close_clients)
                self._link = await stack.enter_async_context(link)
            try:
                async with anyio.create_task_group() as tg:
                    self._task_group = tg
                    # Each connection's task: in the server's task group but without
                    # anyio's handle per task (see TaskPool), and so outliving the
                    # listener when close() stops it.
                    self._connection_tasks = pool = TaskPool()
                    await tg.start(pool.run, tg.cancel_scope)
                    keepalive = anyio.CancelScope()
                    tg.start_soon(self._run_keepalive, keepalive)
                    try:
                        yield self
                    except BaseException as exc:
                        body_error = exc
                    finally:
                        with anyio.CancelScope(shield=True):
                            await self.close()
                        keepalive.cancel()
                        pool.close()
            finally:
                self._task_group = None
                self._connection_tasks = None
                self._link = None
        if body_error is not None:
            raise body_error

    async def _run_keepalive(self, scope: anyio.CancelScope) -> None:
        with scope:
            await self._timers.run()

    async def listen(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> Listening:
        """Listen on `host:port` (0: any free port); returns the bound address.
        May be called more than once. `reuse_port` lets several processes
        listen on one port (Linux ``SO_REUSEPORT``; the kernel spreads new
        connections over them): with a cluster, they are one CSMS."""
        tg = self._task_group
        if tg is None or self._closing:
            raise RuntimeError("listen() needs a running, open server (async with RPCServer())")
        listener: Any = await anyio.create_tcp_listener(
            local_host=host, local_port=port, reuse_port=reuse_port
        )
        bound_host, bound_port = listener.extra(SocketAttribute.local_address)[:2]
        scope = anyio.CancelScope()
        self._listener_scopes.append(scope)
        tg.start_soon(self._serve_listener, listener, ssl_context, scope)
        return Listening(str(bound_host), int(bound_port))

    async def _serve_listener(
        self, listener: Any, ssl_context: ssl.SSLContext | None, scope: anyio.CancelScope
    ) -> None:
        handler = functools.partial(self._handle_stream, ssl_context=ssl_context)
        assert self._connection_tasks is not None
        with scope:
            async with listener:
                await serve_listener(listener, handler, self._connection_tasks)

    async def close(
        self,
        *,
        code: int = 1000,
        reason: str = "",
        await_pending: bool = False,
        force: bool = False,
    ) -> None:
        """Refuse new clients, stop listening, close every client with these
        options. A second close() waits for the first; if the first is
        cancelled before it is done, the second finishes the work (its
        clients' pending work included, see `RPCClient.close`)."""
        check_close_code(code)
        done = self._close_done
        if done is None:
            return
        while (closer := self._closer) is not None:  # another close() is under way
            await closer.wait()
        if done.is_set():
            return
        if not self._closing:
            self._closing = True
            self._observers.emit("closing", ClosingEvent())
            for scope in (*self._listener_scopes, *self._upgrade_scopes):
                scope.cancel()
            self._listener_scopes.clear()
        closer = self._closer = anyio.Event()
        try:
            await self._close_clients(code, reason, await_pending=await_pending, force=force)
        finally:
            # Cancelled (e.g. a close awaiting pending calls, given up on), the
            # work is left to the next close(), at the latest leaving the block.
            self._closer = None
            closer.set()
        self._observers.emit("close", None)
        done.set()

    async def _close_clients(
        self, code: int, reason: str, *, await_pending: bool = False, force: bool = False
    ) -> None:
        own = []  # the client whose handler calls this, from its own task
        others = []
        for client in tuple(self._all_clients):
            connection = client._connection
            if connection is not None and connection.excuse_closing_handler():
                own.append(client)
            else:
                others.append(client)

        def closing(client: ServerClient) -> Callable[[], Coroutine[Any, Any, CloseResult]]:
            return functools.partial(
                client.close, code=code, reason=reason, await_pending=await_pending, force=force
            )

        async with anyio.create_task_group() as tg:
            for client in others:
                tg.start_soon(closing(client))
        # Closing its own client cancels that handler, and with it this close,
        # and that close cannot end before the handler does: it is started last,
        # in the server's task group, once the others are closed.
        for client in own:
            if self._task_group is not None:
                self._task_group.start_soon(closing(client))

    async def call(
        self, identity: str, method: str, params: Any = None, *, timeout: float | None = None
    ) -> Any:
        """Call the charger connected as `identity` (to this server or, with a
        cluster, to any node) and return its result.

        Raises `NotConnected` at once when it is connected nowhere; else as
        `RPCClient.call`: the charger's `RPCError`, `TimeoutError` after
        `timeout` (default `call_timeout`; the outcome is then unknown),
        `ConnectionClosed` if its connection ends first.
        """
        if timeout is None:
            timeout = self._options.call_timeout
        client = self._clients.get(identity)
        if client is not None:
            return await client.call(method, params, timeout=timeout)
        if self._link is not None:
            return await self._link.call(identity, method, params, timeout)
        raise NotConnected(identity)

    # -- accepting -------------------------------------------------------------------

    async def _handle_stream(
        self, accepted: ByteStream | socket.socket, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        try:
            # Our own stream class from the first byte (the upgrade is read on it
            # too): anyio's stream, its protocol and their events are then never
            # held for the connection's lifetime.
            try:
                stream = await open_accepted(accepted)
            except OSError:  # gone before it was ours
                return
            # No `async with` and no tuple held while the connection runs: each
            # is one more object per idle connection for the collector to walk.
            try:
                admitted = await self._upgrade_stream(stream, ssl_context)
                if admitted is not None:
                    client, transport = admitted
                    admitted = None
                    try:
                        await self._run_client(client, transport)
                    finally:
                        self._connection_count -= 1
            finally:
                await stream.aclose()
        except Exception:  # one bad connection must never take the server down
            logger.exception("error while serving a connection")

    async def _upgrade_stream(
        self, stream: ByteStream, ssl_context: ssl.SSLContext | None
    ) -> tuple[ServerClient, Transport] | None:
        """TLS handshake and upgrade request within `handshake_timeout`, then
        the upgrade's admission (see `_admit`): the accepted client, else None.

        One cancel scope for all of it, which close() cancels, and which the
        server's timer service cancels at the handshake timeout unless the
        request was read by then: a deadline of the scope's own costs a timer
        of the event loop (asyncio) or a deadline registration and its change
        (trio) per connection. The scope goes with this frame: an idle
        connection does not keep it.
        """
        timeout = self._handshake_timeout
        reading = True
        tls_done = ssl_context is None
        scope = anyio.CancelScope()
        timer = None if timeout is None else self._timers.schedule(
            anyio.current_time() + timeout, scope.cancel
        )
        with scope:
            self._upgrade_scopes.add(scope)
            if self._closing:  # accepted as close() began: it did not see this scope
                scope.cancel()
            try:
                if ssl_context is not None:
                    stream = await TLSStream.wrap(
                        stream, server_side=True, ssl_context=ssl_context,
                        standard_compatible=False,
                    )
                    tls_done = True
                request = await _websocket.read_upgrade_request(
                    stream, max_header_size=self._max_header_size
                )
                if scope.cancel_called:  # the timer (or close()) came as the read ended:
                    await anyio.lowlevel.checkpoint()  # out of the scope, as if sooner
                reading = False
                if timer is not None:
                    self._timers.cancel(timer)
                return await self._admit(StreamUpgrade(stream, request))
            except _websocket.HandshakeRefused as exc:  # answered already (404, 400, 431)
                if not reading:
                    raise
                if not isinstance(exc, _websocket.HandshakeAborted):
                    self._refused(None, exc.status, exc.message)
                return None
            except (OSError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
                if not reading:
                    raise
                if not tls_done:  # a bad certificate, a port scan, plain HTTP on a TLS port...
                    error = exc.__cause__ or exc
                    logger.info(
                        "TLS handshake with %s failed: %s",
                        remote_address(stream), str(error) or type(error).__name__,
                    )
                return None
            finally:
                self._upgrade_scopes.discard(scope)
                if timer is not None:
                    self._timers.cancel(timer)
        if reading and not self._closing:  # cancelled by the timeout, not by close()
            self._refused(None, 408, "handshake timeout")
            if tls_done:
                with anyio.move_on_after(_REFUSAL_SEND_TIMEOUT):
                    await _websocket.reject_upgrade(stream, 408, "handshake timeout\n")
        return None

    async def _upgrading(self, step: Awaitable[T]) -> T | None:
        """Await `step` in a scope that close() cancels (then None). The scope
        goes with this frame: an idle connection does not keep it."""
        with anyio.CancelScope() as scope:
            self._upgrade_scopes.add(scope)
            try:
                return await step
            finally:
                self._upgrade_scopes.discard(scope)
        return None

    def _refused(self, identity: str | None, status: int, reason: str) -> None:
        log = logger.warning if status >= 500 else logger.info  # 5xx: the operator's to fix
        log("upgrade refused (%s %s) for %r", status, reason, identity)
        self._observers.emit("upgrade_aborted", UpgradeAbortedEvent(identity, status, reason))

    async def serve_upgrade(self, upgrade: Upgrade) -> None:
        """Serve one WebSocket upgrade request, however it arrived: the one path
        through the limits, the auth hook and subprotocol selection to a running
        `ServerClient`, until it ends. Adapters (`ocpp_rpc.asgi`,
        `ocpp_rpc.trio_ws`, `ocpp_rpc.testing`) call it; see `ocpp_rpc.transport`."""
        admitted = None
        try:
            # close() cancels upgrades still in the auth hook or being answered.
            admitted = await self._upgrading(self._admit(upgrade))
            if admitted is not None:
                await self._run_client(*admitted)
        finally:
            if admitted is not None:
                self._connection_count -= 1

    async def _admit(self, upgrade: Upgrade) -> tuple[ServerClient, Transport] | None:
        """Decide on an upgrade and answer it: the accepted client, holding one
        connection slot; else None (the refusal is answered and reported)."""
        identity: str | None = None
        try:
            if self._task_group is None:
                logger.error(
                    "a connection arrived while the RPCServer is not running"
                    " (enter `async with server:`, e.g. in the app's lifespan)"
                )
                raise Reject(500, "the RPC server is not running")
            try:
                handshake = upgrade.handshake()
            except ValueError as exc:
                raise Reject(400, str(exc)) from None
            identity = handshake.identity
            if self._closing:
                raise Reject(503, "server closing")
            replacing = self._check_capacity(identity)
        except Reject as exc:
            await self._refuse(upgrade, identity, exc)
            return None
        self._connection_count += 1
        if replacing:
            self._replacing.add(identity)
        admitted = None
        try:
            admitted = await self._authorize_and_accept(upgrade, handshake)
        finally:
            if replacing:
                self._replacing.discard(identity)
            if admitted is None:
                self._connection_count -= 1
        return admitted

    def _check_capacity(self, identity: str) -> bool:
        """Whether an upgrade for `identity` is let in past `max_connections`
        (Reject 503 if it is not let in at all)."""
        limit = self._max_connections
        if limit is None or self._connection_count < limit:
            return False
        # A reconnect that will replace its own stale connection is let in, one
        # at a time: else anyone who knows a connected identity could hold any
        # number of slots while the auth hook runs.
        if identity not in self._clients or identity in self._replacing:
            raise Reject(503, "too many connections")
        return True

    async def _authorize_and_accept(
        self, upgrade: Upgrade, handshake: Handshake
    ) -> tuple[ServerClient, Transport] | None:
        try:
            session, protocol = await self._authorize(handshake)
            if self._closing:
                raise Reject(503, "server closing")
        except Reject as exc:
            await self._refuse(upgrade, handshake.identity, exc)
            return None
        try:
            transport = await upgrade.accept(
                protocol, max_message_size=self._options.max_message_size
            )
        except _websocket.WebSocketClosed:
            logger.info("%r went away during the upgrade", handshake.identity)
            return None
        options = self._options if upgrade.keepalive else self._options_for_hosted()
        client = ServerClient(
            handshake, session, options, protocol, server_handlers=self._handlers,
            server_events=self._observers, timers=self._timers,
        )
        return client, transport

    async def _refuse(self, upgrade: Upgrade, identity: str | None, reject: Reject) -> None:
        self._refused(identity, reject.status, reject.message)
        with anyio.move_on_after(_REFUSAL_SEND_TIMEOUT):
            await upgrade.reject(reject.status, reject.message)

    async def _authorize(self, handshake: Handshake) -> tuple[Any, str | None]:
        """Run the auth hook and pick the subprotocol: (session, protocol), or Reject."""
        accept: Accept | None = None
        try:
            if self._auth is not None:
                accept = await self._auth(handshake)
        except Reject:
            raise
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else stray_cancellation(exc)
            if error is None:
                raise
            logger.exception("auth callback raised for %r", handshake.identity)
            self._observers.emit("error", error)
            raise Reject(500, "Internal Server Error") from None
        if accept is None:
            accept = Accept()
        protocol = accept.protocol
        if protocol is None:
            protocol = next((p for p in self._options.protocols if p in handshake.protocols), None)
            if protocol is None and self._options.protocols and self._auth is None:
                raise Reject(400, "no mutually agreed subprotocol")
        elif protocol not in handshake.protocols:
            raise Reject(400, f"client did not offer subprotocol {protocol!r}")
        return accept.session, protocol

    def _options_for_hosted(self) -> Options:
        """The client options where the host server does the keep-alive pings (ASGI)."""
        if self._host_keepalive_options is None:
            self._host_keepalive_options = self._options.updated({"ping_interval": None})
        return self._host_keepalive_options

    async def _run_client(self, client: ServerClient, transport: Transport) -> None:
        identity = client.identity
        if self._closing:  # close() started while this client was being accepted
            await transport.close(1001, "server closing")
            return
        self._all_clients.add(client)
        link = self._link
        try:
            if link is not None:  # registered in the cluster first (see ClusterLink)
                refusal = await link.admit(client)
                if refusal is None and self._closing:
                    refusal = (1001, "server closing")
                if refusal is not None:
                    with anyio.CancelScope(shield=True):
                        await transport.close(*refusal)
                    return
            stale = self._clients.get(identity)
            self._clients[identity] = client
            if stale is not None and self._task_group is not None:
                self._task_group.start_soon(
                    functools.partial(stale.close, code=1000, reason="replaced")
                )
            self._observers.emit("client", client)
            # Served here, not in a method of the client: an idle connection
            # holds one coroutine frame less.
            client._init_primitives()
            on_client = self._on_client
            first = None if on_client is None else functools.partial(
                client._run_on_client, on_client
            )
            result: CloseResult | None = None
            connection = None
            try:  # `_serve`, without its coroutine
                connection = client._attach(transport)
                if client._close_started:
                    result = await client._abandon(connection)
                else:
                    result = await connection.run(first)
            finally:
                if connection is not None:
                    client._detach(connection)
                closed = client._closed_for_good(result)
                logger.info("%r disconnected (%s %s)", identity, closed.code, closed.reason)
        finally:
            self._all_clients.discard(client)
            if self._clients.get(identity) is client:
                del self._clients[identity]
            if link is not None:
                await link.unregister(client)
