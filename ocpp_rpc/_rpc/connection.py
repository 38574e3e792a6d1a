"""One live WebSocket connection: a task group whose host task is the reader,
holding the writer (`writer.py`, only while there is something to write), the
keep-alive (`keepalive.py`), the call deadlines (one `TimerHeap` task while any
is pending) and one task per awaited inbound call. It moves data; every wire
decision is made by the pure `Exchange` (`_wire.session`).

A connection takes what it needs explicitly (its frozen `ConnectionConfig`,
the handler lookup, the observers, the shared timers, the endpoint to hand
handlers as `Call.client`): it never reads its owner.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import anyio
from anyio.abc import TaskGroup

from .._concurrency.events import (
    EventLike,
    checkpoint_if_cancelled,
    current_task_id,
    new_event,
    stray_cancellation,
)
from .._concurrency.latch import Latch
from .._transport.websocket import WebSocket
from .._wire.codec import (
    CallErrorFrame,
    CallFrame,
    CallResultFrame,
    SendFrame,
    encode_call,
    encode_send,
)
from .._wire.session import Answer, Bad, Dispatch, Exchange, MessageIds, Received, Refuse
from ..errors import ConnectionClosed, RPCError
from ..transport import Transport, WebSocketClosed
from .events import (
    BadMessageEvent,
    CallErrorEvent,
    CallResultEvent,
    CloseResult,
    MessageEvent,
    Observers,
    PayloadEvent,
)
from .handlers import NOREPLY, HandlerLookup, RPCEndpoint, make_call
from .keepalive import KeepAlive
from .options import ConnectionConfig
from .outbox import Outbox, OutboxClosed
from .strict import StrictChecks, StrictRefusal
from .timers import TimerHeap, TimerService
from .writer import Writer

logger = logging.getLogger("ocpp_rpc.connection")

next_message_id = MessageIds()

#: How many outbound frames may wait for the writer before senders block.
WRITE_BUFFER = 64
#: Seconds a close handshake may take before TCP is dropped.
CLOSE_TIMEOUT = 5.0
#: In `Connection._handler_scopes`: a handler waiting for its own close (no task's id).
EXCUSED = 0


@dataclass(slots=True, eq=False)
class PendingCall:
    """An outbound call awaiting its answer."""

    method: str
    params: Any
    done: EventLike = field(default_factory=new_event)
    result: Any = None
    error: BaseException | None = None
    refused: bool = False  # strict mode refused the peer's result: `error` says why
    # A durable call's send past its timeout, still open to a late answer: a
    # close awaiting pending calls does not wait for it.
    lingering: bool = False

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        if not self.done.is_set():
            self.result, self.error = result, error
            self.done.set()


@dataclass(slots=True, eq=False)
class Sends:
    """One outbound call sent, maybe several times, on one connection: each
    send has its own id (OCPP-J 1.6 forbids reusing one on a connection), and
    all of them await the same `pending` answer, so that a peer that answers
    late, even after a resend, is still heard."""

    pending: PendingCall
    ids: list[str] = field(default_factory=list)


class Endpoint(RPCEndpoint, Protocol):
    """The client a connection serves (an `RPCClient`), as the connection sees it."""

    def _closing_itself(self, code: int, reason: str) -> None:
        """The connection closes on its own decision (see `Connection._close`)."""


class Connection:
    """The RPC exchange over one open transport."""

    # No instance dict: a server holds one per charger, and most of them sit idle.
    __slots__ = (
        "_awaiting", "_client", "_close_done", "_deadlines", "_deferred", "_find_handler",
        "_handler_scopes", "_idle", "_inline", "_keepalive", "_outbox", "_strict", "_task_group",
        "_writer", "closed", "closing",
        "config", "events", "exchange", "identity", "protocol", "transport",
    )

    def __init__(
        self,
        transport: Transport,
        config: ConnectionConfig,
        *,
        find_handler: HandlerLookup,
        observers: Observers,
        timers: TimerService | None,
        identity: str,
        client: Endpoint,
    ) -> None:
        """`find_handler` gives the handler of a method; `timers` keeps the
        keep-alive ping times (None: a pinger task of its own); `identity`
        names the connection in logs; `client` is every `Call.client`."""
        self.transport = transport
        self.config = config
        self.protocol = transport.subprotocol
        self.identity = identity
        self.events = observers
        self._find_handler = find_handler
        self._client = client
        self.exchange: Exchange[PendingCall] = Exchange(
            self.protocol,
            max_bad_messages=config.max_bad_messages,
            max_inbound_calls=config.max_inbound_calls,
            detailed_errors=config.respond_with_detailed_errors,
        )
        self._strict = None if config.validator is None else StrictChecks(
            config.validator, observers, self.exchange
        )
        transport.write_timeout = config.write_timeout  # the transport bounds every write
        self._outbox = Outbox(WRITE_BUFFER)
        # Both tell this connection (`ended`) how the transport ended under them:
        # the connection itself, not a bound method of it, one object less.
        self._writer = Writer(transport, self._outbox, identity=identity, owner=self)
        self._keepalive = KeepAlive(
            transport, observers, timers, writer=self._writer, owner=self
        )
        # Made by the first outbound call with a timeout: a connection that
        # only answers never needs it (and the collector never walks it).
        self._deadlines: TimerHeap[str] | None = None
        self._task_group: TaskGroup | None = None
        # Our own WebSocket takes sink and immediate writes (`__call__`).
        self._inline = transport if type(transport) is WebSocket else None
        # What the sink began for the message it left to the reader (or the
        # error it met).
        self._deferred: tuple[str | bytes, Received[PendingCall] | Exception] | None = None
        # The scopes of awaited inbound calls (a dict: smaller than a set when empty).
        # Each with the id of the task that runs it once it runs, `EXCUSED` once
        # it waits for its own close (see `excuse_closing_handler`).
        self._handler_scopes: dict[anyio.CancelScope, int | None] = {}
        # Made by a close awaiting pending work; set once no outbound call and no
        # inbound handler is pending.
        self._idle: anyio.Event | None = None
        # While a close awaits pending work: how many close() callers wait for
        # it (None: no close does, or it no longer does).
        self._awaiting: int | None = None
        self.closing: CloseResult | None = None  # set once a local close started
        self.closed: CloseResult | None = None
        self._close_done: Latch | None = None  # made by its first waiter or setter

    # -- lifetime ----------------------------------------------------------------

    async def run(self, first: Callable[[], Awaitable[None]] | None = None) -> CloseResult:
        """Serve the connection until it ends; returns how it closed.

        `first`, if given, runs in its own task before any inbound frame is read
        (the server's `on_client` hook: handlers it registers before its first
        await see every call).
        """
        try:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                self._writer.attach(tg)
                self._keepalive.start(tg, self.config.ping_interval)
                if first is not None:
                    started = new_event()
                    tg.start_soon(self._run_first, first, started)
                    # Set as `first` starts: this task reads on once `first` reached
                    # its first await (or ended), as a task it had started would.
                    await started.wait()
                    del started  # not held by an idle connection's frame
                await self._reader()  # no task of its own: this one is idle anyway
        finally:
            self._outbox.close()
            self._keepalive.stop()
            if self.closed is None:  # cancelled from outside: nothing closed the transport
                with anyio.CancelScope(shield=True):
                    await self.transport.abort()
            result = self.closed or CloseResult(1006, "")
            self.closed = result
            self._fail_pending(ConnectionClosed(*result))
            self._done_latch().set()
        return result

    def discard(self) -> None:
        """Release a connection that will never run (closed while connecting)."""
        self._outbox.close()

    def reconfigure(self, config: ConnectionConfig, changed: Collection[str]) -> None:
        """The owner was reconfigured (the options named in `changed`, now as in
        `config`): apply what a live connection picks up. Setting
        `ping_interval`, even to its current value, restarts the keep-alive."""
        self.config = config
        self.exchange.detailed_errors = config.respond_with_detailed_errors
        if "write_timeout" in changed:
            self.transport.write_timeout = config.write_timeout
        if "ping_interval" in changed:
            self._keepalive.restart(config.ping_interval)

    async def _run_first(self, first: Callable[[], Awaitable[None]], started: EventLike) -> None:
        assert self._task_group is not None
        started.set()  # the reader cannot run before `first` reaches its first await
        try:
            await first()
        except Exception as exc:
            logger.exception("on_client callback raised; closing the client with 1011")
            self.events.emit("error", exc)
            self._task_group.start_soon(self._close, 1011, "Internal error", False, False)

    def ended(self, result: CloseResult) -> None:
        """The transport is gone: record how, and stop every task."""
        if self.closed is None:
            self.closed = CloseResult(int(result.code), str(result.reason))  # no IntEnums
        self._keepalive.stop()
        self._fail_pending(ConnectionClosed(*self.closed))
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()

    def _done_latch(self) -> Latch:
        """The latch set once `run` has ended, made by its first waiter or setter."""
        latch = self._close_done
        if latch is None:
            latch = self._close_done = Latch()
        return latch

    def _fail_pending(self, error: ConnectionClosed) -> None:
        pending = self.exchange.pending
        if pending:
            calls = list(pending.values())
            pending.clear()
            for call in calls:
                call.settle(error=error)
        self._check_idle()

    def _check_idle(self) -> None:
        if (
            self._idle is not None
            and all(call.lingering for call in self.exchange.pending.values())
            and all(runs == EXCUSED for runs in self._handler_scopes.values())
        ):
            self._idle.set()
            self._idle = None

    # -- reading -------------------------------------------------------------------

    async def _reader(self) -> None:
        transport = self.transport
        inline = self._inline
        if inline is not None:  # messages that need no waiting are dealt with as they come
            inline.set_sink(self)
        try:
            while True:
                try:
                    message = await transport.receive()
                except WebSocketClosed as exc:
                    self.ended(CloseResult(exc.code, exc.reason))
                    return
                except Exception as exc:  # a transport bug must not leave calls hanging
                    logger.exception("transport failed")
                    self.events.emit("socket_error", exc)
                    await transport.abort()
                    self.ended(CloseResult(1006, ""))
                    return
                deferred = self._deferred
                if deferred is not None and deferred[0] is message:  # the sink began it
                    self._deferred = None
                    if isinstance(deferred[1], Exception):
                        raise deferred[1]
                    received = deferred[1]
                else:
                    received = self._receive(message)
                if not await self._process(message, received):
                    return
        finally:
            if inline is not None:
                inline.set_sink(None)

    def _receive(self, message: str | bytes) -> Received[PendingCall]:
        """What the exchange makes of a received message (and what is due on receipt)."""
        if self.config.defer_pings_on_activity:
            self._keepalive.last_activity = anyio.current_time()
        if logger.isEnabledFor(logging.DEBUG):  # one line per frame, at DEBUG only
            logger.debug("[%s] recv %s", self.identity, message)
        if message and self.events.wants("message"):
            self.events.emit("message", MessageEvent(message, False))
        return self.exchange.receive(message)

    async def _process(self, message: str | bytes, received: Received[PendingCall]) -> bool:
        """Act on a received message; False: stop reading."""
        kind = type(received)
        if kind is Dispatch:
            assert isinstance(received, Dispatch)
            self._emit_call(received.frame)
            if self._task_group is not None:
                await self._dispatch(received.frame)
        elif kind is Answer:
            assert isinstance(received, Answer)
            refusal = self._answer(received)
            if refusal is not None:
                await self._reply(refusal)
            self._check_idle()
        elif kind is Refuse:
            assert isinstance(received, Refuse)
            reply = self._refused(received)
            if reply is not None:
                await self._reply(reply)
        elif kind is Bad:
            assert isinstance(received, Bad)
            await self._on_bad(message, received)
            if received.close:
                return False
        return True

    def __call__(self, message: str | bytes) -> bool:
        """The transport's sink (`WebSocket.set_sink`): deal with `message` as
        it arrives when that needs no waiting, which is what a synchronous
        handler's call, an answer and a refusal need while the outbox has room
        for the one frame they may send back. False: the reader takes it
        (what the exchange made of it already is in `_deferred`). The
        connection is the sink itself, not a bound method of it: one object
        less per idle connection."""
        if self._task_group is None or self._outbox.full or self.closed is not None:
            return False
        try:
            return self._take(message)
        except Exception as exc:  # a bug: the reader raises it, as if it had met it itself
            self._deferred = (message, exc)
            return False

    def _take(self, message: str | bytes) -> bool:
        received = self._receive(message)
        kind = type(received)
        if kind is Dispatch:
            assert isinstance(received, Dispatch)
            frame = received.frame
            self._emit_call(frame)
            is_call = type(frame) is CallFrame
            reply = self._start_inbound(frame, is_call)
            if reply is not False:
                try:
                    if reply is not None:
                        self._send_reply_now(reply)
                finally:
                    self._finish_inbound(frame, is_call)
        elif kind is Answer:
            assert isinstance(received, Answer)
            refusal = self._answer(received)
            if refusal is not None:
                self._reply_now(refusal)
            self._check_idle()
        elif kind is Refuse:
            assert isinstance(received, Refuse)
            reply = self._refused(received)
            if reply is not None:
                self._reply_now(reply)
        elif kind is Bad:  # it may close the connection: the reader waits for that
            self._deferred = (message, received)
            return False
        return True

    def _emit_call(self, frame: CallFrame | SendFrame) -> None:
        if self.events.wants("call"):
            self.events.emit(
                "call",
                PayloadEvent(
                    False,
                    [2 if type(frame) is CallFrame else 6, frame.message_id, frame.method,
                     frame.params],
                ),
            )

    def _answer(self, received: Answer[PendingCall]) -> str | None:
        """Settle the pending call a CALLRESULT or CALLERROR answers; returns
        the refusal to send for a result strict mode rejects."""
        frame = received.frame
        if self.events.wants("response"):
            self.events.emit("response", PayloadEvent(False, _response_payload(frame)))
        if type(frame) is CallResultFrame:
            if self._strict is None:
                received.pending.settle(frame.result)
                return None
            return self._settle_checked(received.pending, frame)
        assert type(frame) is CallErrorFrame
        received.pending.settle(error=frame.to_error())
        return None

    def _refused(self, received: Refuse) -> str | None:
        """An inbound call the exchange refuses: the answer to send, if any."""
        exchange = self.exchange
        if received.busy and exchange.busy_refusals == 1:  # once per burst
            logger.warning(
                "[%s] %s inbound calls in progress (max_inbound_calls):"
                " refusing more until some end", self.identity, exchange.inbound_in_progress,
            )
        return received.reply

    def _settle_checked(self, pending: PendingCall, frame: CallResultFrame) -> str | None:
        """Strict mode: settle a pending call with a result that must be valid.
        Returns what the exchange says to send the peer for an invalid one."""
        assert self._strict is not None
        try:
            error = self._strict.peer_result(frame.message_id, pending.method, frame.result)
        except BaseException as exc:  # e.g. a custom schema that fails to compile
            pending.settle(error=exc)  # the exchange let go of it: its caller must not hang
            raise
        if error is None:
            pending.settle(frame.result)
            return None
        pending.refused = True
        pending.settle(error=error)
        return self.exchange.invalid_result_reply(frame.message_id, error)

    async def _on_bad(self, message: str | bytes, bad: Bad[PendingCall]) -> None:
        if bad.failed is not None:
            bad.failed.settle(error=bad.error)
            self._check_idle()
        events = self.events
        if events.wants("bad_message"):
            response = json.loads(bad.reply) if bad.reply is not None else None
            events.emit("bad_message", BadMessageEvent(message, bad.error, response))
        if bad.unexpected is not None:
            events.emit("unexpected_response", _response_payload(bad.unexpected))
        if bad.close:
            await self._close(1002, "Protocol error", False, False)
        elif bad.reply is not None:
            await self._reply(bad.reply)

    # -- inbound calls -------------------------------------------------------------

    async def _dispatch(self, frame: CallFrame | SendFrame) -> None:
        """Handle an inbound CALL or SEND whose handler may be awaited."""
        is_call = type(frame) is CallFrame
        context = None if self._inline is None else self._inline.sink_context
        if context is None:
            reply = self._start_inbound(frame, is_call)
        else:  # in the context the sink runs handlers in (see WebSocket.sink_context)
            reply = context.run(self._start_inbound, frame, is_call)
        if reply is False:
            return
        try:
            if reply is not None:
                await self._send_reply(reply)
        finally:
            self._finish_inbound(frame, is_call)

    def _start_inbound(
        self, frame: CallFrame | SendFrame, is_call: bool
    ) -> str | Literal[False] | None:
        """Call the handler of an inbound CALL or SEND, right here: a
        synchronous one (the common case) costs no task, and its answer is
        returned for the caller to send (None: nothing to send) before it
        finishes the call. An awaitable outcome is awaited in a task of its
        own, in a cancel scope that closing the connection cancels, which
        answers and finishes it: then False."""
        try:
            outcome = self._call_handler(frame, is_call)
            # A dict, the usual answer, skips isawaitable's ABC check.
            if type(outcome) is not dict and inspect.isawaitable(outcome):
                assert self._task_group is not None
                scope = anyio.CancelScope()
                self._handler_scopes[scope] = None
                self._task_group.start_soon(self._handle, frame, scope, outcome)
                return False
            reply = self._outcome_reply(frame, is_call, outcome)
        except Exception as exc:
            reply = self._failure_reply(frame, is_call, exc)
        except BaseException as exc:
            error = self._stray(frame, is_call, exc)
            if error is None:
                raise
            reply = self._failure_reply(frame, is_call, error)
        return reply if is_call else None

    async def _handle(
        self, frame: CallFrame | SendFrame, scope: anyio.CancelScope, outcome: Awaitable[Any]
    ) -> None:
        is_call = type(frame) is CallFrame
        reply: str | None = None
        self._handler_scopes[scope] = current_task_id()  # see excuse_closing_handler
        try:
            with scope:
                try:
                    reply = self._outcome_reply(frame, is_call, await outcome)
                except Exception as exc:
                    reply = self._failure_reply(frame, is_call, exc)
                except BaseException as exc:
                    error = self._stray(frame, is_call, exc)
                    if error is None:
                        raise
                    reply = self._failure_reply(frame, is_call, error)
            if is_call and reply is not None and not scope.cancelled_caught:
                await self._send_reply(reply)
        finally:
            self._handler_scopes.pop(scope, None)
            self._finish_inbound(frame, is_call)

    def _stray(
        self, frame: CallFrame | SendFrame, is_call: bool, exc: BaseException
    ) -> Exception | None:
        """The error to answer for a cancellation `exc` that no cancelled scope
        explains (see `stray_cancellation`), logged; None: let `exc` go on.
        Left to go on, a stray one would end the connection, silently on trio."""
        error = stray_cancellation(exc)
        if error is not None and is_call:  # a SEND's failure is logged as it is answered
            logger.error(
                "[%s] handler of %r raised a cancellation no cancel scope explains",
                self.identity, frame.method, exc_info=exc,
            )
        return error

    def _call_handler(self, frame: CallFrame | SendFrame, is_call: bool) -> Any:
        """Validate (strict mode), find the handler and call it; its outcome."""
        if self._strict is not None:
            self._strict.inbound(frame, is_call)
        method = frame.method
        handler = self._find_handler(method)
        if handler is None:
            raise self.exchange.unhandled(method)
        call = make_call(method, frame.params, frame.message_id, self.protocol, self._client)
        return handler(call)

    def _outcome_reply(
        self, frame: CallFrame | SendFrame, is_call: bool, outcome: Any
    ) -> str | None:
        """The CALLRESULT for a handler's outcome (None: nothing to send)."""
        if not is_call or outcome is NOREPLY:
            return None
        message_id, method = frame.message_id, frame.method
        if self._strict is not None:
            self._strict.own_result(message_id, method, outcome)
        reply = self.exchange.result_reply(message_id, outcome)
        if self.events.wants("call_result"):
            self.events.emit(
                "call_result", CallResultEvent(False, message_id, method, frame.params, outcome)
            )
        return reply

    def _failure_reply(self, frame: CallFrame | SendFrame, is_call: bool, exc: Exception) -> str:
        """The CALLERROR for a handler that raised (call it in the `except` block)."""
        message_id, method, params = frame.message_id, frame.method, frame.params
        if not is_call and not isinstance(exc, RPCError):
            logger.exception("handler of SEND %r raised", method)
        error, details = self.exchange.failure(exc)
        if self.events.wants("call_error"):
            self.events.emit("call_error", CallErrorEvent(False, message_id, method, params, error))
        return self.exchange.error_reply(message_id, error, details)

    async def _send_reply(self, reply: str) -> None:
        if self.events.wants("response"):
            self.events.emit("response", PayloadEvent(True, json.loads(reply)))
        await self._reply(reply)

    def _finish_inbound(self, frame: CallFrame | SendFrame, is_call: bool) -> None:
        if is_call:
            self.exchange.finish(frame.message_id)
        else:
            self.exchange.finish_send()
        self._check_idle()

    async def _reply(self, frame: str) -> None:
        """Send an answer; a connection that is going away just drops it."""
        if await self._writer.write_now(frame):
            if self.events.wants("message"):
                self.events.emit("message", MessageEvent(frame, True))
            return
        try:
            await self._send(frame)
        except ConnectionClosed:
            pass

    def _send_reply_now(self, reply: str) -> None:
        if self.events.wants("response"):
            self.events.emit("response", PayloadEvent(True, json.loads(reply)))
        self._reply_now(reply)

    def _reply_now(self, frame: str) -> None:
        """`_reply` without waiting: written at once if nothing is queued or
        being written, else queued for the writer (the sink made sure there
        is room); dropped if the connection is going away."""
        writer, outbox = self._writer, self._outbox
        inline = self._inline
        if (
            inline is not None
            and not writer.running
            and not len(outbox)
            and not outbox.closed
            and inline.send_nowait(frame)
        ):
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("[%s] send %s", self.identity, frame)
        else:
            try:
                outbox.put_nowait(frame)
            except OutboxClosed:
                return
            if not writer.running:
                writer.start()
        if self.events.wants("message"):
            self.events.emit("message", MessageEvent(frame, True))

    # -- outbound --------------------------------------------------------------------

    async def _send(self, frame: str) -> None:
        try:
            await self._outbox.put(frame)
        except OutboxClosed:
            raise ConnectionClosed(*(self.closed or self.closing or (1006, ""))) from None
        if not self._writer.running:
            self._writer.start()
        if self.events.wants("message"):
            self.events.emit("message", MessageEvent(frame, True))

    async def call(
        self,
        method: str,
        params: Any,
        *,
        no_reply: bool = False,
        deadline: float = math.inf,
        message_id: str | None = None,
        refusals: bool = False,
    ) -> Any:
        """Send a CALL and wait for its answer; TimeoutError at `deadline`
        (applied here so that the `call_error` event carries the TimeoutError).
        `message_id`: the id to send it under (the caller makes sure this
        connection has not used it); by default a new one. `refusals`: raise
        strict mode's error for these params or for the peer's result as a
        `StrictRefusal`, which a caller can tell from the peer's CALLERROR."""
        # A caller whose scope is cancelled already gets its Cancelled before
        # the CALL is queued, not after: an operation that raised it did not
        # happen (queuing it needs no wait, so nothing else would raise it).
        await checkpoint_if_cancelled()
        if self.closing is not None or self.closed is not None:
            raise ConnectionClosed(*(self.closed or self.closing or (1006, "")))
        if message_id is None or message_id in self.exchange.pending:
            message_id = next_message_id()
        if self._strict is not None:
            try:
                self._strict.outbound_call(message_id, method, params)
            except RPCError as error:
                if refusals:
                    raise StrictRefusal(error) from error
                raise
        frame = encode_call(message_id, method, params)
        events = self.events
        if events.wants("call"):
            events.emit("call", PayloadEvent(True, [2, message_id, method, params]))
        timeout = None if math.isinf(deadline) else deadline - anyio.current_time()
        if no_reply:
            with anyio.fail_after(timeout):
                await self._send(frame)
            return None
        pending = PendingCall(method, params)
        self.exchange.add_pending(message_id, pending)
        try:
            if timeout is not None:
                self._expire_at(deadline, message_id)
            if timeout is not None and self._outbox.full:
                with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
                    await self._send(frame)
            else:
                await self._send(frame)  # room in the outbox: does not wait
            await pending.done.wait()
        except BaseException as exc:
            self.exchange.withdraw(message_id)
            self._check_idle()
            if events.wants("call_error"):
                events.emit("call_error", CallErrorEvent(True, message_id, method, params, exc))
            raise
        return self._outcome(message_id, method, params, pending, refusals)

    def _outcome(
        self, message_id: str, method: str, params: Any, pending: PendingCall, refusals: bool
    ) -> Any:
        """The answered call's result, or its error raised; the events of either."""
        events = self.events
        if pending.error is not None:
            if events.wants("call_error"):
                events.emit(
                    "call_error", CallErrorEvent(True, message_id, method, params, pending.error)
                )
            if refusals and pending.refused:
                assert isinstance(pending.error, RPCError)
                raise StrictRefusal(pending.error)
            raise pending.error
        if events.wants("call_result"):
            events.emit(
                "call_result", CallResultEvent(True, message_id, method, params, pending.result)
            )
        return pending.result

    async def resend(self, sends: Sends, *, deadline: float, message_id: str | None) -> Any:
        """Send `sends`' call once more, unless one of its sends has been
        answered meanwhile, and return the first answer to any of them (as
        `call` with `refusals` does). A TimeoutError at `deadline` leaves every
        send awaiting its answer: call `forget` once the call is settled elsewhere."""
        pending = sends.pending
        method, params = pending.method, pending.params
        events = self.events
        if not pending.done.is_set():
            if self.closing is not None or self.closed is not None:
                raise ConnectionClosed(*(self.closed or self.closing or (1006, "")))
            if message_id is None or message_id in self.exchange.pending:
                message_id = next_message_id()
            if self._strict is not None:
                try:
                    self._strict.outbound_call(message_id, method, params)
                except RPCError as error:
                    raise StrictRefusal(error) from error
            frame = encode_call(message_id, method, params)
            if events.wants("call"):
                events.emit("call", PayloadEvent(True, [2, message_id, method, params]))
            self.exchange.add_pending(message_id, pending)
            sends.ids.append(message_id)
            pending.lingering = False
            try:
                # Not the shared timer heap: it would settle `pending` with the
                # TimeoutError that the earlier sends' late answers must not meet.
                with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
                    await self._send(frame)
                    await pending.done.wait()
            except BaseException as exc:
                timed_out = isinstance(exc, TimeoutError)
                if not (timed_out and pending.done.is_set()):  # else answered as time ran out
                    # Only a timeout leaves the sends awaiting their answers,
                    # which a close awaiting pending calls does not wait for.
                    if timed_out:
                        pending.lingering = True
                        self._check_idle()
                    else:
                        self.forget(sends)
                    if events.wants("call_error"):
                        events.emit(
                            "call_error", CallErrorEvent(True, message_id, method, params, exc)
                        )
                    raise
        # The send that was answered is the one the exchange no longer holds.
        answered = next((i for i in sends.ids if i not in self.exchange.pending), message_id)
        self.forget(sends)
        return self._outcome(answered or "", method, params, pending, True)

    def forget(self, sends: Sends) -> None:
        """Stop awaiting answers to `sends` (a late one is then unexpected)."""
        pending = self.exchange.pending
        for message_id in sends.ids:
            if pending.get(message_id) is sends.pending:
                del pending[message_id]
        sends.ids.clear()
        self._check_idle()

    def _expire_at(self, deadline: float, message_id: str) -> None:
        """Have the call `message_id` fail with TimeoutError at `deadline`."""
        deadlines = self._deadlines
        if deadlines is None:
            deadlines = self._deadlines = TimerHeap(self.exchange.pending, self._expire_call)
        if deadlines.push(deadline, message_id):  # its task must be started
            started = False
            if self._task_group is not None:
                try:
                    self._task_group.start_soon(deadlines.run)
                    started = True
                except RuntimeError:  # the task group is done: the connection is ending
                    pass
            deadlines.started(started)
            if not started:
                self._fail_pending(ConnectionClosed(*(self.closed or self.closing or (1006, ""))))

    def _expire_call(self, message_id: str) -> None:
        pending = self.exchange.pending.pop(message_id, None)
        if pending is not None:
            pending.settle(error=TimeoutError())
            self._check_idle()

    async def send_message(self, method: str, params: Any) -> None:
        """Send an OCPP 2.1 SEND frame."""
        await checkpoint_if_cancelled()  # as `call`: cancelled, nothing goes out
        if self.closing is not None or self.closed is not None:
            raise ConnectionClosed(*(self.closed or self.closing or (1006, "")))
        message_id = next_message_id()
        if self._strict is not None:
            self._strict.outbound_send(message_id, method, params)
        frame = encode_send(message_id, method, params)
        if self.events.wants("call"):
            self.events.emit("call", PayloadEvent(True, [6, message_id, method, params]))
        await self._send(frame)

    async def send_raw(self, text: str | bytes) -> None:
        """Send one frame as it is (UnicodeEncodeError for a str that is not UTF-8 text)."""
        if isinstance(text, str):
            text.encode("utf-8")  # fail here, not in the writer, which would end the connection
        if self.closed is not None:
            raise ConnectionClosed(*self.closed)
        try:
            await self._outbox.put(text)
        except OutboxClosed:
            raise ConnectionClosed(*(self.closed or (1006, ""))) from None
        if not self._writer.running:
            self._writer.start()
        if self.events.wants("message"):
            self.events.emit("message", MessageEvent(text, True))

    # -- closing -------------------------------------------------------------------------

    async def close(
        self, code: int, reason: str, *, await_pending: bool, force: bool
    ) -> CloseResult:
        """Close this connection (first close wins); returns how it closed.

        A close awaiting pending work that every caller asking for it gave up
        on (cancelled while waiting) stops waiting at the next close() that
        does not ask for it (e.g. the one leaving `async with`): pending calls
        fail and handlers are cancelled, as a close without `await_pending`
        does, with the first close's code and reason. A later close with
        `force` drops TCP at once, whatever close is under way."""
        self.excuse_closing_handler()
        if self.closing is None and self.closed is None and self._task_group is not None:
            self.closing = CloseResult(code, reason)
            if await_pending and not force:
                self._awaiting = 0
            # From now on the peer's CALLs run no handler (see Exchange.stop_calls):
            # answered while pending work keeps our Close back, dropped otherwise.
            self.exchange.stop_calls(answer=await_pending and not force)
            # Runs in the connection's task group so that it completes even if the
            # caller is a handler of this connection, which the close cancels.
            closing = self._close(code, reason, await_pending, force)
            try:
                self._task_group.start_soon(lambda: closing, name="ocpp_rpc close")
            except RuntimeError:
                # The task group is winding down, cancelled from outside (e.g. the
                # scope around `async with` this client): run() drops the transport.
                closing.close()
        elif self.closed is None and force:
            # A close under way, graceful or given up on: `force` drops TCP now,
            # as it promises, instead of waiting for that close's handshake.
            if self._awaiting is not None:
                self._stop_awaiting()
            await self.transport.abort()
            self.ended(CloseResult(1006, ""))
        elif self._awaiting == 0 and not await_pending and self.closed is None:
            self._stop_awaiting()
        # Only a caller that asked to await pending work counts: one that does
        # not, waiting alongside, must not end the wait of one that still waits.
        counted = await_pending and self._awaiting is not None
        if counted:
            self._awaiting = (self._awaiting or 0) + 1
        try:
            await self._done_latch().wait()
        finally:
            if counted and self._awaiting is not None:
                self._awaiting -= 1
        assert self.closed is not None
        return self.closed

    def _stop_awaiting(self) -> None:
        """End the wait of a close awaiting pending work (see `close`)."""
        self._awaiting = None
        assert self.closing is not None
        self._fail_pending(ConnectionClosed(*self.closing))
        for scope in tuple(self._handler_scopes):
            scope.cancel()
        idle = self._idle
        if idle is not None:  # `_close` goes on now, not once the handlers have ended
            self._idle = None
            idle.set()

    def excuse_closing_handler(self) -> bool:
        """Called by every close(), first or not: if a handler of this
        connection makes it from its own task (not from a task it started,
        which may well wait for the handler), a close awaiting pending work
        no longer waits for that handler, which waits for the close. True if
        it was such a handler."""
        scopes = self._handler_scopes
        if scopes:
            task = current_task_id()
            for scope, runs in scopes.items():
                if runs == task:
                    scopes[scope] = EXCUSED
                    self._check_idle()
                    return True
        return False

    async def _close(self, code: int, reason: str, await_pending: bool, force: bool) -> None:
        if self.closing is None:  # its own decision (bad frames, on_client raising), not close()'s
            self.closing = CloseResult(code, reason)
            self.exchange.stop_calls(answer=await_pending and not force)
            self._client._closing_itself(code, reason)
        if await_pending and not force and self._awaiting is not None:  # see `close`
            if self.exchange.pending or self._handler_scopes:
                idle = self._idle = self._idle or anyio.Event()
                self._check_idle()  # a handler that is closing is not waited for
                await idle.wait()
        else:
            self._fail_pending(ConnectionClosed(code, reason))
            for scope in tuple(self._handler_scopes):
                scope.cancel()
        if force:
            await self.transport.abort()
            self.ended(CloseResult(1006, ""))
            return
        self.exchange.stop_calls(answer=False)  # our Close goes next: nothing may follow it
        with anyio.CancelScope(shield=True):
            await self._writer.finish(CLOSE_TIMEOUT)  # flush what is queued, then stop
            await self.transport.close(code, reason, timeout=CLOSE_TIMEOUT)
        closed_code = self.transport.close_code
        closed_reason = self.transport.close_reason
        self.ended(CloseResult(closed_code or code, closed_reason if closed_code else reason))


def _response_payload(frame: CallResultFrame | CallErrorFrame) -> list[Any]:
    if type(frame) is CallResultFrame:
        return [3, frame.message_id, frame.result]
    assert type(frame) is CallErrorFrame
    return [5 if frame.result_error else 4, frame.message_id, frame.code, frame.description,
            frame.details]
