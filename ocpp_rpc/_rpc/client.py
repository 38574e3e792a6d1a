"""`RPCClient`: one OCPP-J endpoint over a WebSocket, with queueing while
connecting, reconnects, keep-alive and handlers."""

from __future__ import annotations

import base64
import logging
import math
import ssl
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import anyio
from anyio.abc import TaskGroup, TaskStatus
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, stop_never

from .._concurrency.events import EventLike
from .._concurrency.latch import Latch
from .._concurrency.slots import CallSlots
from .._transport import websocket as _websocket
from .._transport.close_codes import check_close_code
from .._wire.codec import dialect_for
from .._wire.validation import Validator
from ..errors import ConnectError, ConnectionClosed, RPCError
from ..transport import Dialer, Transport
from .connection import Connection, PendingCall, Sends
from .events import (
    CloseResult,
    ClosingEvent,
    ConnectingEvent,
    DurableResultEvent,
    Observer,
    Observers,
    OpenEvent,
)
from .events import State as State  # re-exported: its home before options.py and events.py
from .handlers import H, Handler, Handlers
from .options import DEFAULT_MAX_INBOUND_CALLS, DEFAULT_WRITE_TIMEOUT, Options
from .options import DEFAULT_MAX_MESSAGE_SIZE as DEFAULT_MAX_MESSAGE_SIZE  # re-exported, as State
from .reconnect import DEFAULT_BACKOFF, Backoff, BackoffWait, NotRetryable, is_retryable
from .strict import report_failure
from .timers import TimerService

if TYPE_CHECKING:  # imported when a store is given: a client without one loads no sqlite3
    from ..durable import DurableStore, StoredCall
    from .durable_queue import DurableQueue

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup
    from typing_extensions import Self

logger = logging.getLogger("ocpp_rpc")

#: Seconds allowed for TCP + TLS + the HTTP upgrade when connecting.
HANDSHAKE_TIMEOUT = 30.0


class RPCClient:
    """An OCPP-J RPC client: connects to ``endpoint/identity`` over WebSocket.

    Use as ``async with RPCClient(...) as client:``; every task of the client
    lives inside that block. See the README for the full option list.

    Bounds against a misbehaving peer:

    - `max_inbound_calls` (100): inbound CALLs and SENDs handled at once.
      Beyond it a CALL is answered at once with a ``GenericError`` CALLERROR
      ("Too many inbound calls in progress") and a SEND is dropped; both are
      logged. The reader never waits for handlers, so a handler may await a
      call to the same peer.
    - `write_timeout` (60 s; None: no limit): a frame the peer does not take
      within it (it stopped reading) drops the connection (1006, logged);
      until then writes wait, so memory stays bounded.

    `dialer` opens each connection (see `ocpp_rpc.transport.Dialer`); the
    default dials ``ws://`` and ``wss://`` over TCP. `ocpp_rpc.testing`
    passes one that connects through memory streams.

    `store` (an `ocpp_rpc.durable.DurableStore`, e.g. ``SQLiteStore(path)``)
    enables ``call(..., durable=True)`` and lets the client boot offline:
    entering ``async with`` then succeeds while the CSMS cannot be reached
    and the client keeps connecting in the background (docs/durable.md).
    """

    def __init__(
        self,
        endpoint: str,
        identity: str,
        *,
        protocols: Sequence[str] = (),
        password: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        call_timeout: float = 60.0,
        ping_interval: float | None = 30.0,
        defer_pings_on_activity: bool = False,
        call_concurrency: int = 1,
        respond_with_detailed_errors: bool = False,
        reconnect: bool = True,
        max_reconnects: float = math.inf,
        backoff: Backoff = DEFAULT_BACKOFF,
        max_bad_messages: float = math.inf,
        strict_mode: bool | Sequence[str] = False,
        strict_mode_validators: Sequence[Validator] = (),
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_inbound_calls: float = DEFAULT_MAX_INBOUND_CALLS,
        write_timeout: float | None = DEFAULT_WRITE_TIMEOUT,
        dialer: Dialer | None = None,
        store: DurableStore | None = None,
    ) -> None:
        if isinstance(protocols, str):
            raise TypeError("protocols must be a sequence of str, not a str")
        options = Options(
            protocols=tuple(protocols),
            password=password,
            headers=headers,
            query=query,
            ssl_context=ssl_context,
            call_timeout=call_timeout,
            ping_interval=ping_interval,
            defer_pings_on_activity=defer_pings_on_activity,
            call_concurrency=call_concurrency,
            respond_with_detailed_errors=respond_with_detailed_errors,
            reconnect=reconnect,
            max_reconnects=max_reconnects,
            backoff=backoff,
            max_bad_messages=max_bad_messages,
            strict_mode=strict_mode if isinstance(strict_mode, bool) else tuple(strict_mode),
            strict_mode_validators=tuple(strict_mode_validators),
            max_message_size=max_message_size,
            max_inbound_calls=max_inbound_calls,
            write_timeout=write_timeout,
        )
        self._setup(identity, options, endpoint=endpoint, dialer=dialer, store=store)

    def _setup(
        self,
        identity: str,
        options: Options,
        *,
        endpoint: str = "",
        dialer: Dialer | None = None,
        handlers: Handlers | None = None,
        timers: TimerService | None = None,
        protocol: str | None = None,
        state: State = State.CLOSED,
        store: DurableStore | None = None,
    ) -> None:
        """Initialise every attribute; each way of constructing an endpoint
        (`RPCClient(...)`, a server's `ServerClient`) goes through here."""
        self._endpoint = endpoint
        self._dialer: Dialer = _websocket.connect if dialer is None else dialer
        self._identity = identity
        self._options = options
        self._handlers = Handlers() if handlers is None else handlers
        self._observers = Observers()
        self._state = state
        self._protocol = protocol  # given only for an endpoint that is already upgraded
        self._connected_once = False
        self._connection: Connection | None = None
        self._task_group: TaskGroup | None = None
        self._started = False  # its `async with` (or the server's) began
        # Made by the first call and by the first task to wait for CLOSED (see
        # `_slots`, `_closed_latch`): many a server's client never needs them.
        self._limiter: CallSlots | None = None
        self._state_changed: anyio.Event | None = None  # made by a task waiting for a change
        self._closed: Latch | None = None
        self._close_result: CloseResult | None = None
        self._close_requested: CloseResult | None = None  # what close() asked for, once called
        self._last_close: CloseResult | None = None
        self._reconnect_scope: anyio.CancelScope | None = None
        #: Keeps the connection's ping times (None: the connection runs a pinger task).
        self._timers = timers
        self._store = store
        self._durable: DurableQueue | None = None  # while the block runs, with a store
        self._durable_sent: _DurableSent | None = None

    # -- properties ------------------------------------------------------------

    @property
    def identity(self) -> str:
        """The identity this client connects as (the last path segment)."""
        return self._identity

    @property
    def protocol(self) -> str | None:
        """The agreed subprotocol (fixed after the first connection), or None."""
        return self._protocol

    @property
    def state(self) -> State:
        """CONNECTING, OPEN, CLOSING or CLOSED."""
        return self._state

    # -- handlers and events ---------------------------------------------------------

    def handle(self, method: str | Handler, handler: Handler | None = None, /) -> None:
        """`handle(method, handler)`, or `handle(handler)` for the wildcard.

        A handler receives one `Call`, may be sync or async, and returns the
        CALLRESULT payload (or `NOREPLY`); raising an `RPCError` answers with
        that code, any other exception with `InternalError`.
        """
        self._handlers.handle(method, handler)  # type: ignore[arg-type]

    def handler(self, method: str | None = None) -> Callable[[H], H]:
        """Decorator: ``@client.handler("Method")``, or ``@client.handler()`` for the wildcard."""
        return self._handlers.handler(method)

    def remove_handler(self, method: str | None = None) -> None:
        """Remove the handler of `method` (None: the wildcard)."""
        self._handlers.remove_handler(method)

    def remove_all_handlers(self) -> None:
        """Remove every handler, the wildcard included."""
        self._handlers.remove_all_handlers()

    def on(self, event: str, callback: Observer) -> None:
        """Call `callback(payload)` on every `event` (synchronous observers)."""
        self._observers.on(event, callback)

    def off(self, event: str, callback: Observer) -> None:
        """Stop observing `event` with `callback`."""
        self._observers.off(event, callback)

    # -- options -------------------------------------------------------------------

    def reconfigure(self, **options: Any) -> None:
        """Change options of a live client (e.g. `call_concurrency`,
        `ping_interval`, `backoff`, `protocols`, `call_timeout`)."""
        if "strict_mode" in options and not isinstance(options["strict_mode"], bool):
            options["strict_mode"] = tuple(options["strict_mode"])
        self._options = self._options.updated(options)
        if self._limiter is not None:
            self._limiter.total = self._options.call_concurrency
        connection = self._connection
        if connection is not None:
            connection.reconfigure(
                self._options.connection_config(connection.protocol), changed=options.keys()
            )

    # -- lifetime --------------------------------------------------------------------

    @property
    def _close_started(self) -> bool:
        return self._close_requested is not None

    def _set_state(self, state: State) -> None:
        self._state = state
        if self._state_changed is not None:
            self._state_changed.set()
            self._state_changed = None

    def _init_primitives(self) -> None:
        self._started = True
        self._limiter = None
        self._state_changed = None
        self._closed = None
        self._close_result = None
        self._close_requested = None
        self._last_close = None

    async def __aenter__(self) -> Self:
        self._context = self._lifetime()
        return await self._context.__aenter__()

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self._context.__aexit__(*exc_info)

    @asynccontextmanager
    async def _lifetime(self) -> AsyncGenerator[Self, None]:
        if self._task_group is not None:
            raise RuntimeError("this client is already running")
        self._init_primitives()
        store = self._store
        if store is not None:
            await store.open()  # a damaged or busy store fails here, loudly, before connecting
        body_error: BaseException | None = None
        try:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                try:
                    await tg.start(self._run)
                except BaseException as exc:
                    body_error = _unwrap(exc)
                    tg.cancel_scope.cancel()
                else:
                    if store is not None:  # started once CONNECTING or OPEN (not CLOSED)
                        from .durable_queue import DurableQueue

                        self._durable = DurableQueue(
                            store, wait_open=self._wait_durable_turn, send=self._send_durable,
                            check=self._check_durable, closed_error=self._closed_error,
                            emit=self._emit_durable_result,
                        )
                        await tg.start(self._durable.run)
                    try:
                        yield self
                    except BaseException as exc:
                        body_error = exc
                    finally:
                        with anyio.CancelScope(shield=True):
                            await self.close()
                            if self._durable is not None:
                                self._durable.stop()
        finally:
            self._task_group = None
            self._durable = None
            self._durable_sent = None
            if store is not None:
                with anyio.CancelScope(shield=True):
                    await store.close()
        if body_error is not None:
            raise body_error

    async def _run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect; then serve, reconnecting as configured, until closed.

        With a store the client boots offline: a first attempt that fails in
        a way reconnecting may cure (refused, timed out, any HTTP status)
        does not fail the ``async with``; the client keeps connecting with
        its backoff, as after a drop.
        """
        final: CloseResult | None = None
        try:
            try:
                first = await self._first_connect()
            except ConnectError as exc:
                if self._store is None or not self._options.reconnect or not is_retryable(exc):
                    raise
                logger.warning("%s: cannot reach the CSMS (%s); durable calls are queued while "
                               "reconnecting", self._identity, exc)
                task_status.started()
                reconnected = await self._reconnect()
                if isinstance(reconnected, CloseResult):
                    final = reconnected
                    return
                transport = reconnected
            else:
                task_status.started()
                if first is None:  # close() came while connecting: nothing to serve
                    return
                transport = first
            while True:
                result = await self._serve(transport)
                if self._close_started or not self._options.reconnect:
                    final = result
                    break
                reconnected = await self._reconnect()
                if isinstance(reconnected, CloseResult):
                    final = reconnected
                    break
                transport = reconnected
        finally:
            self._closed_for_good(final)

    async def _first_connect(self) -> Transport | None:
        """The first connection attempt, which close() aborts (then None), as
        it aborts a reconnect."""
        with anyio.CancelScope() as scope:
            self._reconnect_scope = scope
            if self._close_started:
                scope.cancel()
            try:
                return await self._connect(self._options.protocols)
            finally:
                self._reconnect_scope = None
        return None

    def _closed_for_good(self, final: CloseResult | None) -> CloseResult:
        """Bookkeeping once the endpoint is CLOSED for good (`final`: how its
        last connection closed, if known); returns the close result."""
        self._last_close = final or self._close_result or CloseResult(1006, "")
        if self._close_result is None:
            self._close_result = self._last_close
        self._set_state(State.CLOSED)
        self._observers.emit("close", self._close_result)
        self._closed_latch().set()
        return self._close_result

    def _closed_latch(self) -> Latch:
        """The latch set once CLOSED for good, made by its first waiter or setter."""
        latch = self._closed
        if latch is None:
            latch = self._closed = Latch()
        return latch

    def _slots(self) -> CallSlots:
        """The `call_concurrency` slots, made by the first call."""
        limiter = self._limiter
        if limiter is None:
            limiter = self._limiter = CallSlots(self._options.call_concurrency)
        return limiter

    async def _connect(self, protocols: Sequence[str]) -> Transport:
        """One connection attempt; raises ConnectError on failure."""
        self._set_state(State.CONNECTING)
        self._observers.emit("connecting", ConnectingEvent(tuple(protocols)))
        options = self._options
        url = self._url()
        headers = [(k, v) for k, v in (options.headers or {}).items()]
        if options.password is not None:
            password = options.password
            if isinstance(password, str):
                password = password.encode()
            token = base64.b64encode(self._identity.encode() + b":" + password).decode()
            headers.append(("Authorization", f"Basic {token}"))
        try:
            ws = await self._dialer(
                url,
                subprotocols=protocols,
                headers=headers,
                ssl_context=options.ssl_context,
                max_message_size=options.max_message_size,
                handshake_timeout=HANDSHAKE_TIMEOUT,
            )
        except _websocket.HandshakeError as exc:
            if exc.status is None:
                raise NotRetryable(str(exc)) from exc
            raise ConnectError(str(exc), status=exc.status) from exc
        except TimeoutError as exc:
            raise ConnectError(f"timed out connecting to {url}") from exc
        except ConnectError:
            raise
        except OSError as exc:
            raise ConnectError(f"cannot connect to {url}: {exc}") from exc
        if protocols and ws.subprotocol is None:
            await ws.close(1002, "no subprotocol agreed")
            raise NotRetryable(
                f"the server agreed to none of the offered subprotocols {list(protocols)}"
            )
        return ws

    def _url(self) -> str:
        # The identity is the path's last segment even when the endpoint has a
        # query of its own (a token, say): `query` joins that query.
        scheme, netloc, path, query, fragment = urlsplit(self._endpoint)
        if path.endswith("/"):
            path = path[:-1]
        path = f"{path}/{quote(self._identity, safe='')}"
        if self._options.query:
            query = "&".join(filter(None, (query, urlencode(self._options.query))))
        return urlunsplit((scheme, netloc, path, query, fragment))

    async def _serve(self, transport: Transport, first: Callable[[], Awaitable[None]] | None = None
                     ) -> CloseResult:
        """Run one open connection until it ends; emits open/disconnect."""
        connection = self._attach(transport)
        try:
            if self._close_started:
                return await self._abandon(connection)
            return await connection.run(first)
        finally:
            self._detach(connection)

    # `_serve` in three parts, for the server, which runs them in its own
    # frame: an idle connection holds one coroutine less.

    def _attach(self, transport: Transport) -> Connection:
        """The connection on `transport`, now the current one; emits open
        (unless close() came while connecting: then CLOSING, see `_abandon`)."""
        if not self._connected_once:
            self._connected_once = True
            self._protocol = transport.subprotocol
            self._observers.emit("protocol", self._protocol)
        connection = Connection(
            transport,
            self._options.connection_config(transport.subprotocol),
            find_handler=self._handlers,
            observers=self._observers,
            timers=self._timers,
            identity=self._identity,
            client=self,
        )
        self._connection = connection
        if self._close_started:  # close() came while connecting
            self._set_state(State.CLOSING)
        else:
            self._set_state(State.OPEN)
            self._observers.emit("open", OpenEvent(self._protocol))
        return connection

    async def _abandon(self, connection: Connection) -> CloseResult:
        """Close a connection that close() came before (instead of running it)."""
        connection.discard()
        await connection.transport.close(*(self._close_result or (1000, "")))
        return self._close_result or CloseResult(1000, "")

    def _detach(self, connection: Connection) -> None:
        """`connection` ended: no current one; emits disconnect."""
        self._connection = None
        self._observers.emit("disconnect", connection.closed or CloseResult(1006, ""))

    async def _reconnect(self) -> Transport | CloseResult:
        """Reconnect with backoff; a CloseResult when giving up or closed."""
        options = self._options
        if not self._connected_once:  # booting offline: offer them all, as the first attempt did
            protocols = options.protocols
        else:
            protocols = (self._protocol,) if self._protocol is not None else ()
        self._set_state(State.CONNECTING)
        if options.max_reconnects < 1:
            return CloseResult(1001, "Giving up")
        stop = (
            stop_never
            if math.isinf(options.max_reconnects)
            else stop_after_attempt(int(options.max_reconnects))
        )
        with anyio.CancelScope() as scope:
            self._reconnect_scope = scope
            try:
                await anyio.sleep(options.backoff.delay(1))
                async for attempt in AsyncRetrying(
                    stop=stop,
                    wait=BackoffWait(lambda: self._options.backoff),
                    retry=retry_if_exception(is_retryable),
                    sleep=anyio.sleep,
                    reraise=True,
                ):
                    with attempt:
                        return await self._connect(protocols)
            except NotRetryable as exc:
                logger.warning("giving up reconnecting %s: %s", self._identity, exc)
                return CloseResult(1001, str(exc))
            except (OSError, TimeoutError) as exc:
                logger.warning("giving up reconnecting %s: %s", self._identity, exc)
                return CloseResult(1001, "Giving up")
            finally:
                self._reconnect_scope = None
        return self._close_result or CloseResult(1000, "")

    # -- calls ---------------------------------------------------------------------

    def _closed_error(self) -> ConnectionClosed:
        # While a close() runs, the calls it refuses carry its code and reason.
        result = (
            self._close_result or self._close_requested or self._last_close
            or CloseResult(1006, "")
        )
        return ConnectionClosed(*result)

    async def _wait_open(self) -> Connection:
        """The open connection; waits while connecting, reconnecting, or while
        the connection that just ended is still being let go of (a call that
        had not gone out then waits for the next one, on either backend)."""
        while True:
            connection = self._connection
            if self._state is State.OPEN and connection is not None and connection.closed is None:
                return connection
            if self._state is State.CLOSING or self._state is State.CLOSED or self._close_started:
                raise self._closed_error()
            if self._state_changed is None:
                self._state_changed = anyio.Event()
            await self._state_changed.wait()

    async def call(
        self,
        method: str,
        params: Any = None,
        *,
        timeout: float | None = None,
        no_reply: bool = False,
        durable: bool = False,
    ) -> Any:
        """Call `method` on the peer and return its result.

        Raises the `RPCError` subclass of a CALLERROR, `TimeoutError` after
        `timeout` (default `call_timeout`), or `ConnectionClosed`. Calls beyond
        `call_concurrency` queue in order; while connecting they wait for OPEN.
        Cancelling the caller withdraws the call; in a scope cancelled
        already, the call raises the cancellation and nothing is sent.

        `durable=True` (needs a `store`) first writes the call to the store;
        from then on it is kept even if this caller is cancelled, times out
        or the process dies. Durable calls are sent one at a time, in order,
        retried after a CALLERROR as the store's `attempts` and `interval`
        say (one without an answer in time waits for it, however late, and
        goes out again on the next connection, not as an attempt), and the
        outcome also reaches the `durable_result` event.
        `timeout` then bounds only this caller's wait. Raises
        `ocpp_rpc.durable.StoreFull` when the store is full, ValueError
        without a store (a `ServerClient` has none).
        """
        if durable:
            if no_reply:
                raise ValueError("a durable call waits for its answer: no_reply must be False")
            if self._store is None:
                raise ValueError(
                    "durable=True needs a store: RPCClient(..., store=SQLiteStore(path)); "
                    "a server-side ServerClient has none"
                )
        if self._close_started or self._state is State.CLOSED or not self._started:
            raise self._closed_error()
        if params is None:
            params = {}
        if timeout is None:
            timeout = self._options.call_timeout
        if durable:
            if self._durable is None:
                raise self._closed_error()
            return await self._durable.call(method, params, timeout)
        async with self._slots():
            connection = self._connection
            if self._state is State.OPEN and connection is not None and connection.closed is None:
                deadline = anyio.current_time() + timeout  # no scope needed: nothing to wait for
            else:
                with anyio.fail_after(timeout) as waiting:
                    connection = await self._wait_open()
                deadline = waiting.deadline
            return await connection.call(method, params, no_reply=no_reply, deadline=deadline)

    async def pending_durable(self) -> int:
        """How many durable calls the store holds (2.0.1's `messagesInQueue`);
        0 without a store. Only inside the client's ``async with``."""
        if self._store is None:
            return 0
        if self._durable is None:
            raise RuntimeError("the store is open only inside the client's `async with` block")
        return await self._store.count()

    async def _wait_durable_turn(
        self, dropped: object | None, not_before: float, answer: bool
    ) -> object:
        """The open connection for the next durable call, other than
        `dropped` (the one that just dropped a call and may still be closing),
        once the time is `not_before`; with `answer` (its send timed out), on
        the connection that send went on only once it is answered (a resend
        there could meet a CSMS still busy with it). ConnectionClosed as soon
        as close() starts."""
        while True:
            connection = await self._wait_open()
            answered = None
            wait: float | None = None
            if connection is not dropped:
                sent = self._durable_sent
                if answer and sent is not None and sent.connection is connection and (
                    sent.sends is not None
                ):
                    answered = sent.sends.pending.done
                    if answered.is_set():
                        return connection
                else:
                    wait = not_before - anyio.current_time()
                    if wait <= 0:
                        return connection
            if self._state_changed is None:
                self._state_changed = anyio.Event()
            with anyio.move_on_after(wait):  # any change of state (CLOSING too) looks again
                if answered is None:
                    await self._state_changed.wait()
                else:
                    await _either(self._state_changed, answered)

    async def _send_durable(self, call: StoredCall) -> Any:
        """One attempt of a durable call, through the normal path: a
        `call_concurrency` slot, then `call_timeout` for the answer, to this
        send or to an earlier one on the same connection (taken at once if
        it came while the call waited for its turn)."""
        async with self._slots():
            connection = await self._wait_open()
            sent = self._durable_sent
            if sent is None or sent.connection is not connection:
                if sent is not None and sent.call_id == call.message_id and (
                    sent.sends is not None and _answered(sent.sends.pending)
                ):
                    # Answered on the connection that has just dropped, before
                    # this sender took the answer up: that is the result, and
                    # sending it again would deliver it twice.
                    self._durable_sent = None
                    return await sent.connection.resend(
                        sent.sends, deadline=anyio.current_time(), message_id=None
                    )
                sent = self._durable_sent = _DurableSent(connection)
            sends = sent.sends
            if sends is None or sent.call_id != call.message_id:
                if sends is not None:
                    connection.forget(sends)
                sends = sent.sends = Sends(PendingCall(call.method, call.params))
                sent.call_id = call.message_id
            # The first send on each connection goes under the call's own id,
            # so that a CSMS that saw it before (its answer was lost with the
            # connection) can tell; OCPP-J 1.6 forbids reusing an id on one
            # connection, and a CSMS still handling the first send would refuse
            # its id as a CALLERROR: a resend on the same one gets a fresh id.
            message_id = None if call.message_id == sent.own_id else call.message_id
            sent.own_id = call.message_id
            deadline = anyio.current_time() + self._options.call_timeout
            settled = True
            try:
                return await connection.resend(sends, deadline=deadline, message_id=message_id)
            except TimeoutError:
                settled = False  # its sends still await an answer
                raise
            finally:
                if settled:
                    sent.sends = None

    def _check_durable(self, message_id: str, method: str, params: Any) -> None:
        """Strict mode, before a durable call is stored: raises the `RPCError`
        of invalid params, as an ordinary call raises it before sending.
        Unchecked while the subprotocol is unknown (booting offline with
        several offered): the attempt then checks it."""
        if self._connected_once:
            protocol = self._protocol
        elif len(self._options.protocols) == 1:
            protocol = self._options.protocols[0]
        else:
            return
        validator = None if protocol is None else self._options.validators.get(protocol)
        if validator is None:
            return
        try:
            validator.validate_call(method, params)
        except RPCError as error:
            error.code = dialect_for(protocol).spelling(error.code)  # as a connection spells it
            report_failure(self._observers, error, message_id, method, True, True)
            raise

    def _emit_durable_result(self, event: DurableResultEvent) -> None:
        self._observers.emit("durable_result", event)

    async def send(self, method: str, params: Any = None) -> None:
        """OCPP 2.1 SEND (message type 6): never answered, not limited by
        `call_concurrency`. Raises ValueError before OCPP 2.1."""
        protocol = self._protocol
        if protocol is not None and not dialect_for(protocol).rpc21:
            raise ValueError(f"SEND needs ocpp2.1 or later; the agreed protocol is {protocol}")
        if self._close_started or self._state is State.CLOSED:
            raise self._closed_error()
        with anyio.fail_after(self._options.call_timeout):
            connection = await self._wait_open()
        await connection.send_message(method, {} if params is None else params)

    async def send_raw(self, text: str | bytes) -> None:
        """Send one frame exactly as given (testing, diagnostics)."""
        if self._state is State.CLOSED:
            raise self._closed_error()
        connection = self._connection
        if connection is None or self._state is State.CONNECTING:
            with anyio.fail_after(self._options.call_timeout):
                connection = await self._wait_open()
        await connection.send_raw(text)

    # -- closing ---------------------------------------------------------------------

    async def close(
        self,
        *,
        code: int = 1000,
        reason: str = "",
        await_pending: bool = False,
        force: bool = False,
    ) -> CloseResult:
        """Close the client for good and return how it closed.

        Without `await_pending`, calls in flight fail with `ConnectionClosed`
        and inbound handlers are cancelled; with it, new calls are refused
        while pending ones finish. Either way the peer's calls run no handler
        once the close has begun: meanwhile, with `await_pending`, they get a
        `GenericError` CALLERROR, else no answer (our Close has gone). `force`
        drops TCP without a close handshake.
        A second close() returns the first one's result; if every caller of an
        `await_pending` close gave up (was cancelled while waiting), one
        without `await_pending` ends the pending work, as a close without it
        would, with the first close's code and reason. ValueError for a code
        that a Close frame cannot carry (e.g. 1005, 1006).
        """
        check_close_code(code)
        if not self._started:
            return self._close_result or CloseResult(code, reason)
        if self._close_started:
            connection = self._connection
            if connection is not None and connection.closing is not None:
                # It excuses a handler waiting for its own close, and ends the
                # wait for pending work that the first close's caller gave up on.
                await connection.close(code, reason, await_pending=await_pending, force=force)
            elif connection is not None:  # a handler waiting for its own close
                connection.excuse_closing_handler()
            await self._closed_latch().wait()
            assert self._close_result is not None
            return self._close_result
        self._close_requested = CloseResult(code, reason)
        if self._state is State.CLOSED:
            self._close_result = self._last_close or CloseResult(code, reason)
            return self._close_result
        connection = self._connection
        self._set_state(State.CLOSING)
        self._observers.emit("closing", ClosingEvent())
        if connection is not None:
            self._close_result = await connection.close(
                code, reason, await_pending=await_pending, force=force
            )
        else:
            self._close_result = (
                CloseResult(code, reason)
                if self._connected_once
                else CloseResult(1001, "Connection aborted")
            )
            if self._reconnect_scope is not None:
                self._reconnect_scope.cancel()
        await self._closed_latch().wait()
        return self._close_result

    def _closing_itself(self, code: int, reason: str) -> None:
        """The connection closes on its own decision (1002 for bad frames, 1011
        when on_client raised): unless a reconnect follows, that is this
        client's close, as if close() had been called (CLOSING, `closing`)."""
        if self._close_started or self._options.reconnect or self._state is not State.OPEN:
            return
        self._close_requested = CloseResult(code, reason)
        self._set_state(State.CLOSING)
        self._observers.emit("closing", ClosingEvent())

    async def wait_closed(self) -> CloseResult:
        """Wait until the client is CLOSED for good; returns how it closed."""
        if not self._started:
            return self._close_result or self._last_close or CloseResult(1006, "")
        await self._closed_latch().wait()
        assert self._close_result is not None
        return self._close_result


class _DurableSent:
    """What durable calls left on the connection they last went on."""

    __slots__ = ("call_id", "connection", "own_id", "sends")

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        # The call last sent under its own id on it. Durable calls go out one
        # at a time and never again once they leave the store, so no other one
        # can come back: one id, not a set of every id sent for as long as the
        # connection lasts.
        self.own_id: str | None = None
        self.call_id: str | None = None  # the call whose `sends` await an answer
        self.sends: Sends | None = None


def _answered(pending: PendingCall) -> bool:
    """Whether the peer answered `pending` (a result or a CALLERROR), not its
    connection's end."""
    return pending.done.is_set() and not isinstance(pending.error, ConnectionClosed)


async def _either(first: anyio.Event, second: EventLike) -> None:
    """Wait until `first` or `second` is set."""
    async with anyio.create_task_group() as tg:

        async def wait(event: anyio.Event | EventLike) -> None:
            await event.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(wait, first)
        tg.start_soon(wait, second)


def _unwrap(exc: BaseException) -> BaseException:
    """The single exception inside (nested) exception groups, else `exc`."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
