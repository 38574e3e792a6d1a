"""One live WebSocket session: a task group whose host task is the reader,
holding the single writer (from the first frame until the keep-alive finds it
idle), the keep-alive ping (while one is in flight; a pinger task for clients
without a shared `Keepalive`) and one task per awaited inbound call. It moves data; every wire
decision is made by the pure `Session` in `_protocol`."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from .._concurrency.events import EventLike, new_event
from .._concurrency.latch import Signal
from .._wire.codec import (
    CallErrorFrame,
    CallFrame,
    CallResultFrame,
    SendFrame,
    encode_call,
    encode_call_error,
    encode_call_result,
    encode_send,
)
from .._wire.session import Answer, Bad, Dispatch, MessageIds, Refuse, Session
from ..errors import (
    ConnectionClosed,
    RPCError,
    RPCInternalError,
    RPCNotImplementedError,
)
from ..transport import Transport, WebSocketClosed
from .deadlines import Deadlines
from .events import (
    BadMessageEvent,
    CallErrorEvent,
    CallResultEvent,
    CloseResult,
    MessageEvent,
    Observers,
    PayloadEvent,
    PingEvent,
    StrictValidationFailureEvent,
)
from .handlers import NOREPLY, Call
from .keepalive import Timer
from .outbox import Outbox, OutboxClosed

if TYPE_CHECKING:
    from .client import RPCClient

logger = logging.getLogger("ocpp_rpc.connection")

next_message_id = MessageIds()

#: How many outbound frames may wait for the writer before senders block.
WRITE_BUFFER = 64
#: Seconds a close handshake may take before TCP is dropped.
CLOSE_TIMEOUT = 5.0


@dataclass(slots=True, eq=False)
class PendingCall:
    """An outbound call awaiting its answer."""

    method: str
    params: Any
    done: EventLike = field(default_factory=new_event)
    result: Any = None
    error: BaseException | None = None

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        if not self.done.is_set():
            self.result, self.error = result, error
            self.done.set()


class Connection:
    """The RPC session over one open transport, owned by an `RPCClient`."""

    def __init__(self, owner: RPCClient, transport: Transport) -> None:
        self.owner = owner
        self.transport = transport
        self.protocol = transport.subprotocol
        self.session: Session[PendingCall] = Session(
            self.protocol,
            max_bad_messages=owner._options.max_bad_messages,
            max_inbound_calls=owner._options.max_inbound_calls,
        )
        self.events: Observers = owner._observers
        # Strict mode: the validator of the agreed subprotocol, if it is validated.
        self.validator = None if self.protocol is None else owner._options.validators.get(
            self.protocol
        )
        self._set_write_timeout()
        self._outbox = Outbox(WRITE_BUFFER)
        self._deadlines = Deadlines(self.session.pending, self._expire_call)
        self._task_group: TaskGroup | None = None
        # The scopes of awaited inbound calls (a dict: 64 bytes empty, a set 216).
        self._handler_scopes: dict[anyio.CancelScope, None] = {}
        # Made by a close awaiting pending work; set once no outbound call and no
        # inbound handler is pending.
        self._idle: anyio.Event | None = None
        self._pinger_scope: anyio.CancelScope | None = None
        self._ping_timer: Timer | None = None  # the next ping, in the owner's Keepalive
        self._last_activity = 0.0
        self.closing: CloseResult | None = None  # set once a local close started
        self.closed: CloseResult | None = None
        self._close_done = Signal()
        self._writing = False  # the writer task runs
        self._writer_done: anyio.Event | None = None  # made by a close waiting for the writer

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
                if len(self._outbox):
                    self._start_writer()
                self.restart_pinger()
                if first is None:
                    await self._reader()  # no task of its own: this one is idle anyway
                else:
                    tg.start_soon(self._run_first, first)
        finally:
            self._outbox.close()
            if self._ping_timer is not None:
                self._ping_timer.cancel()
            if self.closed is None:  # cancelled from outside: nothing closed the transport
                with anyio.CancelScope(shield=True):
                    await self.transport.abort()
            result = self.closed or CloseResult(1006, "")
            self.closed = result
            self._fail_pending(ConnectionClosed(*result))
            self._close_done.set()
        return result

    def discard(self) -> None:
        """Release a connection that will never run (closed while connecting)."""
        self._outbox.close()

    async def _run_first(self, first: Callable[[], Awaitable[None]]) -> None:
        assert self._task_group is not None
        # Scheduled now, but it cannot run before `first` reaches its first await.
        self._task_group.start_soon(self._reader)
        try:
            await first()
        except Exception as exc:
            logger.exception("on_client callback raised; closing the client with 1011")
            self.events.emit("error", exc)
            self._task_group.start_soon(self._close, 1011, "Internal error", False, False)

    def _end(self, result: CloseResult) -> None:
        """The transport is gone: record how, and stop every task."""
        if self.closed is None:
            self.closed = CloseResult(int(result.code), str(result.reason))  # no IntEnums
        self._fail_pending(ConnectionClosed(*self.closed))
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()

    def _fail_pending(self, error: ConnectionClosed) -> None:
        pending = self.session.pending
        if pending:
            calls = list(pending.values())
            pending.clear()
            for call in calls:
                call.settle(error=error)
        self._check_idle()

    def _check_idle(self) -> None:
        if self._idle is not None and not self.session.pending and not self._handler_scopes:
            self._idle.set()
            self._idle = None

    # -- reading -------------------------------------------------------------------

    async def _reader(self) -> None:
        transport, session, events = self.transport, self.session, self.events
        defer_pings = self.owner._options.defer_pings_on_activity
        while True:
            try:
                message = await transport.receive()
            except WebSocketClosed as exc:
                self._end(CloseResult(exc.code, exc.reason))
                return
            except Exception as exc:  # a transport bug must not leave calls hanging
                logger.exception("transport failed")
                events.emit("socket_error", exc)
                await transport.abort()
                self._end(CloseResult(1006, ""))
                return
            if defer_pings:
                self._last_activity = anyio.current_time()
            if logger.isEnabledFor(logging.DEBUG):  # one line per frame, at DEBUG only
                logger.debug("[%s] recv %s", self.owner.identity, message)
            if message and events.wants("message"):
                events.emit("message", MessageEvent(message, False))
            received = session.receive(message)
            if type(received) is Dispatch:
                frame = received.frame
                if events.wants("call"):
                    events.emit(
                        "call",
                        PayloadEvent(
                            False,
                            [2 if type(frame) is CallFrame else 6, frame.message_id, frame.method,
                             frame.params],
                        ),
                    )
                if self._task_group is not None:
                    await self._dispatch(frame)
            elif type(received) is Answer:
                frame_ = received.frame
                if events.wants("response"):
                    events.emit("response", PayloadEvent(False, _response_payload(frame_)))
                if type(frame_) is CallResultFrame:
                    if self.validator is None:
                        received.pending.settle(frame_.result)
                    elif (refusal := self._settle_checked(received.pending, frame_)) is not None:
                        await self._reply(refusal)
                else:
                    assert type(frame_) is CallErrorFrame
                    received.pending.settle(error=frame_.to_error())
                self._check_idle()
            elif type(received) is Refuse:
                if received.busy and session.busy_refusals == 1:  # once per burst
                    logger.warning(
                        "[%s] %s inbound calls in progress (max_inbound_calls):"
                        " refusing more until some end", self.owner.identity,
                        session.inbound_in_progress,
                    )
                if received.reply is not None:
                    await self._reply(received.reply)
            elif type(received) is Bad:
                await self._on_bad(message, received)
                if received.close:
                    return

    def _settle_checked(self, pending: PendingCall, frame: CallResultFrame) -> str | None:
        """Strict mode: settle a pending call with a result that must be valid.
        Returns the CALLRESULTERROR to send for an invalid one (OCPP 2.1)."""
        assert self.validator is not None
        try:
            self.validator.validate_result(pending.method, frame.result)
        except RPCError as error:
            self._strict_failure(error, frame.message_id, pending.method, False, False)
            pending.settle(error=error)
            if self.session.dialect.rpc21:  # OCPP 2.1: tell the peer
                return encode_call_error(
                    frame.message_id, error.code, error.message, error.details,
                    self.session.dialect, result_error=True,
                )
        else:
            pending.settle(frame.result)
        return None

    def _strict_failure(
        self, error: RPCError, message_id: str, method: str, outbound: bool, is_call: bool
    ) -> None:
        logger.info(
            "strict mode: %s %s %r (%s): %s", "outbound" if outbound else "inbound",
            "call" if is_call else "result", method, message_id, error,
        )
        self.events.emit(
            "strict_validation_failure",
            StrictValidationFailureEvent(error, message_id, method, outbound, is_call),
        )

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
        """Handle an inbound CALL or SEND. The handler is called right here: a
        synchronous one (the common case) costs no task, and its answer is
        written by the reader; an awaitable outcome is awaited in a task of its
        own, in a cancel scope that closing the connection cancels."""
        is_call = type(frame) is CallFrame
        reply: str | None = None
        try:
            outcome = self._call_handler(frame, is_call)
            if inspect.isawaitable(outcome):
                assert self._task_group is not None
                scope = anyio.CancelScope()
                self._handler_scopes[scope] = None
                self._task_group.start_soon(self._handle, frame, scope, outcome)
                return
            reply = self._outcome_reply(frame, is_call, outcome)
        except Exception as exc:
            reply = self._failure_reply(frame, is_call, exc)
        try:
            if is_call and reply is not None:
                await self._send_reply(reply)
        finally:
            self._finish_inbound(frame, is_call)

    async def _handle(
        self, frame: CallFrame | SendFrame, scope: anyio.CancelScope, outcome: Awaitable[Any]
    ) -> None:
        is_call = type(frame) is CallFrame
        reply: str | None = None
        try:
            with scope:
                try:
                    reply = self._outcome_reply(frame, is_call, await outcome)
                except Exception as exc:
                    reply = self._failure_reply(frame, is_call, exc)
            if is_call and reply is not None and not scope.cancelled_caught:
                await self._send_reply(reply)
        finally:
            self._handler_scopes.pop(scope, None)
            self._finish_inbound(frame, is_call)

    def _call_handler(self, frame: CallFrame | SendFrame, is_call: bool) -> Any:
        """Validate (strict mode), find the handler and call it; its outcome."""
        if self.validator is not None:
            self._check_inbound(frame, is_call)
        owner, method = self.owner, frame.method
        handler = owner._find_handler(method)
        if handler is None:
            raise RPCNotImplementedError(f"Unable to handle '{method}' calls")
        return handler(Call(method, frame.params, frame.message_id, self.protocol, owner))

    def _outcome_reply(
        self, frame: CallFrame | SendFrame, is_call: bool, outcome: Any
    ) -> str | None:
        """The CALLRESULT for a handler's outcome (None: nothing to send)."""
        if not is_call or outcome is NOREPLY:
            return None
        message_id, method = frame.message_id, frame.method
        if self.validator is not None:
            self._check_outbound_result(message_id, method, outcome)
        reply = self._result_reply(message_id, outcome)
        if self.events.wants("call_result"):
            self.events.emit(
                "call_result", CallResultEvent(False, message_id, method, frame.params, outcome)
            )
        return reply

    def _failure_reply(self, frame: CallFrame | SendFrame, is_call: bool, exc: Exception) -> str:
        """The CALLERROR for a handler that raised (call it in the `except` block)."""
        message_id, method, params = frame.message_id, frame.method, frame.params
        if isinstance(exc, RPCError):
            return self._error_reply(message_id, method, params, exc, exc.details)
        if not is_call:
            logger.exception("handler of SEND %r raised", method)
        return self._internal_error_reply(message_id, method, params, exc)

    async def _send_reply(self, reply: str) -> None:
        if self.events.wants("response"):
            self.events.emit("response", PayloadEvent(True, json.loads(reply)))
        await self._reply(reply)

    def _finish_inbound(self, frame: CallFrame | SendFrame, is_call: bool) -> None:
        if is_call:
            self.session.finish(frame.message_id)
        else:
            self.session.finish_send()
        self._check_idle()

    def _check_inbound(self, frame: CallFrame | SendFrame, is_call: bool) -> None:
        """Strict mode: an invalid inbound CALL raises (answered with its code);
        an invalid SEND raises too, and is dropped."""
        assert self.validator is not None
        try:
            if is_call:
                self.validator.validate_call(frame.method, frame.params)
            else:
                self.validator.validate_send(frame.method, frame.params)
        except RPCError as error:
            self._strict_failure(error, frame.message_id, frame.method, False, True)
            raise

    def _check_outbound_result(self, message_id: str, method: str, result: Any) -> None:
        """Strict mode: an invalid result of our handler becomes InternalError."""
        assert self.validator is not None
        try:
            self.validator.validate_result(method, result)
        except RPCError as error:
            self._strict_failure(error, message_id, method, True, False)
            raise RPCInternalError() from error

    def _internal_error_reply(
        self, message_id: str, method: str, params: Any, exc: Exception
    ) -> str:
        if not self.owner._options.respond_with_detailed_errors:
            return self._error_reply(message_id, method, params, RPCInternalError(), None)
        error = RPCInternalError(str(exc) or type(exc).__name__)
        details = {
            "name": type(exc).__name__,
            "message": str(exc),
            "stack": "".join(traceback.format_exception(exc)),
        }
        return self._error_reply(message_id, method, params, error, details)

    async def _reply(self, frame: str) -> None:
        """Send an answer; a connection that is going away just drops it."""
        try:
            await self._send(frame)
        except ConnectionClosed:
            pass

    def _result_reply(self, message_id: str, result: Any) -> str:
        try:
            return encode_call_result(message_id, result)
        except (TypeError, ValueError) as exc:
            raise RPCInternalError(f"the handler's result is not JSON: {exc}") from exc

    def _error_reply(
        self, message_id: str, method: str, params: Any, error: RPCError, details: Any
    ) -> str:
        if self.events.wants("call_error"):
            self.events.emit("call_error", CallErrorEvent(False, message_id, method, params, error))
        return self.session.error_reply(message_id, error, details)

    # -- outbound --------------------------------------------------------------------

    async def _send(self, frame: str) -> None:
        try:
            await self._outbox.put(frame)
        except OutboxClosed:
            raise ConnectionClosed(*(self.closed or self.closing or (1006, ""))) from None
        if not self._writing:
            self._start_writer()
        if self.events.wants("message"):
            self.events.emit("message", MessageEvent(frame, True))

    async def call(
        self, method: str, params: Any, *, no_reply: bool = False, deadline: float = math.inf
    ) -> Any:
        """Send a CALL and wait for its answer; TimeoutError at `deadline`
        (applied here so that the `call_error` event carries the TimeoutError)."""
        if self.closing is not None or self.closed is not None:
            raise ConnectionClosed(*(self.closed or self.closing or (1006, "")))
        message_id = next_message_id()
        if self.validator is not None:
            self._check_outbound(self.validator.validate_call, message_id, method, params)
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
        self.session.add_pending(message_id, pending)
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
            self.session.withdraw(message_id)
            self._check_idle()
            if events.wants("call_error"):
                events.emit("call_error", CallErrorEvent(True, message_id, method, params, exc))
            raise
        if pending.error is not None:
            if events.wants("call_error"):
                events.emit(
                    "call_error", CallErrorEvent(True, message_id, method, params, pending.error)
                )
            raise pending.error
        if events.wants("call_result"):
            events.emit(
                "call_result", CallResultEvent(True, message_id, method, params, pending.result)
            )
        return pending.result

    def _expire_at(self, deadline: float, message_id: str) -> None:
        """Have the call `message_id` fail with TimeoutError at `deadline`."""
        if self._deadlines.add(deadline, message_id):  # its task must be started
            started = False
            if self._task_group is not None:
                try:
                    self._task_group.start_soon(self._deadlines.run)
                    started = True
                except RuntimeError:  # the task group is done: the connection is ending
                    pass
            self._deadlines.started(started)
            if not started:
                self._fail_pending(ConnectionClosed(*(self.closed or self.closing or (1006, ""))))

    def _expire_call(self, message_id: str) -> None:
        pending = self.session.pending.pop(message_id, None)
        if pending is not None:
            pending.settle(error=TimeoutError())
            self._check_idle()

    def _check_outbound(
        self, validate: Callable[[str, Any], None], message_id: str, method: str, params: Any
    ) -> None:
        """Strict mode: an invalid outbound call raises here; nothing is sent."""
        try:
            validate(method, params)
        except RPCError as error:
            self._strict_failure(error, message_id, method, True, True)
            raise

    async def send_message(self, method: str, params: Any) -> None:
        """Send an OCPP 2.1 SEND frame."""
        if self.closing is not None or self.closed is not None:
            raise ConnectionClosed(*(self.closed or self.closing or (1006, "")))
        message_id = next_message_id()
        if self.validator is not None:
            self._check_outbound(self.validator.validate_send, message_id, method, params)
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
        if not self._writing:
            self._start_writer()
        if self.events.wants("message"):
            self.events.emit("message", MessageEvent(text, True))

    def _start_writer(self) -> None:
        """Start the writer task for what is queued (senders only queue)."""
        if self._task_group is None:  # not running yet: run() starts it
            return
        self._writing = True
        try:
            self._task_group.start_soon(self._writer)
        except RuntimeError:  # the task group is done: the connection has ended
            self._writing = False
            self._outbox.close()

    async def _writer(self) -> None:
        """Write what senders queue, every frame queued meanwhile in one write.

        Ends when the outbox closes, or is retired while idle by the keep-alive
        (the next frame starts it again): an idle connection has no writer.
        A peer that stopped reading blocks a write (and, through the bounded
        outbox, every sender) until `write_timeout` drops it; the transport
        applies that bound itself (see `Transport.write_timeout`).
        """
        send_many, outbox = self.transport.send_many, self._outbox
        done = False
        try:
            while frames := await outbox.take():
                try:
                    await send_many(frames)
                except WebSocketClosed as exc:
                    if exc.reason == "write timeout":
                        self._log_write_timeout()
                    self._end(CloseResult(exc.code, exc.reason))
                    return
                if logger.isEnabledFor(logging.DEBUG):  # one line per frame, at DEBUG only
                    for frame in frames:
                        logger.debug("[%s] send %s", self.owner.identity, frame)
            done = True
        finally:
            if not done:  # the connection ended (or the writer was cancelled)
                self._outbox.close()
            self._writing = False
            if self._writer_done is not None:
                self._writer_done.set()

    def _log_write_timeout(self) -> None:
        logger.warning(
            "[%s] the peer took no frame for %ss: dropping the connection",
            self.owner.identity, self.owner._options.write_timeout,
        )

    # -- options -----------------------------------------------------------------------

    def options_changed(self, changed: dict[str, Any]) -> None:
        """The owner was reconfigured: apply what a live connection must pick up."""
        if "ping_interval" in changed:
            self.restart_pinger()
        if "write_timeout" in changed:
            self._set_write_timeout()

    def _set_write_timeout(self) -> None:
        # The transport bounds every write itself (ours: data, Pong and Close).
        self.transport.write_timeout = self.owner._options.write_timeout

    # -- keep-alive --------------------------------------------------------------------

    def restart_pinger(self) -> None:
        """(Re)start the keep-alive pings with the owner's current options: in
        the owner's `Keepalive` if it has one, else in a pinger task."""
        if self._pinger_scope is not None:
            self._pinger_scope.cancel()
            self._pinger_scope = None
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
        interval = self.owner._options.ping_interval
        if self._task_group is None or self.closed is not None or not interval or interval <= 0:
            return
        if math.isinf(interval):
            return
        self._last_activity = anyio.current_time()
        if self.owner._keepalive is not None:
            self._schedule_ping(interval)
            return
        scope = anyio.CancelScope()
        self._pinger_scope = scope
        self._task_group.start_soon(self._pinger, scope, interval)

    async def _pinger(self, scope: anyio.CancelScope, interval: float) -> None:
        with scope:
            while True:
                # With defer_pings_on_activity the reader moves _last_activity forward.
                while (delay := self._last_activity + interval - anyio.current_time()) > 0:
                    await anyio.sleep(delay)
                    self._retire_idle_writer()
                if not await self._ping(interval):
                    return

    def _retire_idle_writer(self) -> None:
        """Once per ping interval: end the writer if nothing is queued, so that
        a connection that went idle holds no writer task."""
        if self._writing and not len(self._outbox):
            self._outbox.interrupt()

    def _schedule_ping(self, interval: float) -> None:
        keepalive = self.owner._keepalive
        assert keepalive is not None
        self._ping_timer = keepalive.schedule(
            self._last_activity + interval, functools.partial(self._ping_due, interval)
        )

    def _ping_due(self, interval: float) -> None:
        """The `Keepalive` says it is time: ping in a task of its own, unless
        activity (defer_pings_on_activity) moved the ping later."""
        self._ping_timer = None
        if self._task_group is None or self.closed is not None:
            return
        self._retire_idle_writer()
        if self._last_activity + interval > anyio.current_time():
            self._schedule_ping(interval)
            return
        scope = anyio.CancelScope()
        self._pinger_scope = scope
        try:
            self._task_group.start_soon(self._scheduled_ping, scope, interval)
        except RuntimeError:  # the task group is done: the connection has ended
            self._pinger_scope = None

    async def _scheduled_ping(self, scope: anyio.CancelScope, interval: float) -> None:
        with scope:
            # A restart_pinger() while the pong was being delivered cancelled this
            # scope and scheduled the next ping itself: do not schedule a second.
            if await self._ping(interval) and not scope.cancel_called:
                self._pinger_scope = None
                self._schedule_ping(interval)

    async def _ping(self, interval: float) -> bool:
        """One keep-alive ping; False if the connection ended (a ping without
        its pong within `interval` drops it)."""
        started = anyio.current_time()
        self._last_activity = started
        with anyio.move_on_after(interval) as timeout:
            try:
                await self.transport.ping()
            except WebSocketClosed:
                return False
        if timeout.cancelled_caught:
            logger.warning("no pong within %ss: dropping the connection", interval)
            # Recorded before the abort, which the reader would report as a plain 1006.
            self._end(CloseResult(1006, "ping timeout"))
            with anyio.CancelScope(shield=True):
                await self.transport.abort()
            return False
        self.events.emit("ping", PingEvent(anyio.current_time() - started))
        return True

    # -- closing -------------------------------------------------------------------------

    async def close(
        self, code: int, reason: str, *, await_pending: bool, force: bool
    ) -> CloseResult:
        """Close this connection (first close wins); returns how it closed."""
        if self.closing is None and self.closed is None and self._task_group is not None:
            self.closing = CloseResult(code, reason)
            # Runs in the connection's task group so that it completes even if the
            # caller is a handler of this connection, which the close cancels.
            closing = self._close(code, reason, await_pending, force)
            try:
                self._task_group.start_soon(lambda: closing, name="ocpp_rpc close")
            except RuntimeError:
                # The task group is winding down, cancelled from outside (e.g. the
                # scope around `async with` this client): run() drops the transport.
                closing.close()
        await self._close_done.wait()
        assert self.closed is not None
        return self.closed

    async def _close(self, code: int, reason: str, await_pending: bool, force: bool) -> None:
        self.closing = self.closing or CloseResult(code, reason)
        if await_pending and not force:
            if self.session.pending or self._handler_scopes:
                self._idle = self._idle or anyio.Event()
                await self._idle.wait()
        else:
            self._fail_pending(ConnectionClosed(code, reason))
            for scope in tuple(self._handler_scopes):
                scope.cancel()
        if force:
            await self.transport.abort()
            self._end(CloseResult(1006, ""))
            return
        self._outbox.close()  # let the writer flush what is queued, then stop
        with anyio.CancelScope(shield=True):
            if self._writing:
                self._writer_done = anyio.Event()
                with anyio.move_on_after(CLOSE_TIMEOUT):
                    await self._writer_done.wait()
            await self.transport.close(code, reason, timeout=CLOSE_TIMEOUT)
        closed_code = self.transport.close_code
        closed_reason = self.transport.close_reason
        self._end(CloseResult(closed_code or code, closed_reason if closed_code else reason))


def _response_payload(frame: CallResultFrame | CallErrorFrame) -> list[Any]:
    if type(frame) is CallResultFrame:
        return [3, frame.message_id, frame.result]
    assert type(frame) is CallErrorFrame
    return [5 if frame.result_error else 4, frame.message_id, frame.code, frame.description,
            frame.details]
