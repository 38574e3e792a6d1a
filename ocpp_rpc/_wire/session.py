"""[pure] The sans-IO RPC exchange of one connection: message ids, the
pending-call table, inbound calls in progress, the bad-message count, every row
of API.md's wire table, and the answers it prescribes (strict mode included).

The I/O layer feeds each inbound WebSocket message to `Exchange.receive` and
acts on the returned value; it never inspects frames itself, and asks the
exchange which answer a failure gets. (`Exchange`, not "session": a
`ServerClient.session` is the auth hook's value.)
"""

from __future__ import annotations

import itertools
import math
import os
import traceback
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..errors import (
    RPCError,
    RPCFrameworkError,
    RPCGenericError,
    RPCInternalError,
    RPCNotImplementedError,
)
from .codec import (
    BadFrame,
    CallErrorFrame,
    CallFrame,
    CallResultFrame,
    Dialect,
    SendFrame,
    decode,
    dialect_for,
    encode_call_result,
    encode_error,
)

P = TypeVar("P")


# What `receive` makes of a message; Dispatch and Answer, made per message,
# are not frozen (see the frames in codec).


@dataclass(slots=True)
class Dispatch:
    """Run the handler for this CALL (or SEND); a CALL is now "being handled"."""

    frame: CallFrame | SendFrame


@dataclass(slots=True)
class Answer(Generic[P]):
    """A CALLRESULT/CALLERROR/CALLRESULTERROR for the pending call `pending`."""

    pending: P
    frame: CallResultFrame | CallErrorFrame


@dataclass(frozen=True, slots=True)
class Refuse:
    """A valid CALL or SEND refused by the framework, not a bad message: its id
    is still being handled, or (`busy`) `max_inbound_calls` are being handled
    already, or a local close has begun (`Exchange.stop_calls`). Send `reply`
    unless it is None (a refused SEND is dropped)."""

    frame: CallFrame | SendFrame
    reply: str | None
    busy: bool = False


@dataclass(frozen=True, slots=True)
class Bad(Generic[P]):
    """A bad message. Send `reply` unless it is None; close with 1002 if `close`
    (then `reply` is None). `failed` is a pending call that must fail with
    `error`; `unexpected` is a well-formed response nobody waits for."""

    error: RPCError
    reply: str | None
    close: bool
    failed: P | None = None
    unexpected: CallResultFrame | CallErrorFrame | None = None


Received = Dispatch | Answer[P] | Refuse | Bad[P] | None


class Exchange(Generic[P]):
    """The RPC state of one WebSocket connection (no I/O).

    `P` is whatever the I/O layer keeps per outbound call awaiting an answer;
    the exchange hands it back with the answer. `detailed_errors`
    (``respond_with_detailed_errors``) may change while the connection runs.
    """

    def __init__(
        self,
        protocol: str | None,
        *,
        max_bad_messages: float = math.inf,
        max_inbound_calls: float = math.inf,
        detailed_errors: bool = False,
    ) -> None:
        self.dialect: Dialect = dialect_for(protocol)
        self.detailed_errors = detailed_errors
        self.max_bad_messages = max_bad_messages
        self.bad_message_count = 0
        self.pending: dict[str, P] = {}
        # Ids of the inbound CALLs being handled (a dict: smaller than a set
        # when empty, as it mostly is).
        self.handling: dict[str, None] = {}
        self.sends_handling = 0  # inbound SENDs being handled
        # Inbound work is bounded without ever making the reader wait (a handler
        # may await an answer from this very peer): the excess is refused at once.
        self.max_inbound_calls = max_inbound_calls
        self.busy_refusals = 0  # consecutive refusals for that reason
        # Set by `stop_calls` once a local close has begun: no inbound CALL or
        # SEND is handled any more; a CALL is answered while `answer_closing`.
        self.closing = False
        self.answer_closing = False

    # -- outbound ------------------------------------------------------------

    def add_pending(self, message_id: str, pending: P) -> None:
        """Register an outbound call that awaits its answer."""
        self.pending[message_id] = pending

    def withdraw(self, message_id: str) -> None:
        """Forget a pending call (cancelled or timed out); a late answer is unexpected."""
        self.pending.pop(message_id, None)

    # -- inbound -------------------------------------------------------------

    def finish(self, message_id: str) -> None:
        """An inbound CALL has been answered (or dropped)."""
        self.handling.pop(message_id, None)

    def finish_send(self) -> None:
        """The handler of an inbound SEND has ended."""
        self.sends_handling -= 1

    def stop_calls(self, *, answer: bool) -> None:
        """A local close has begun: every inbound CALL and SEND is refused from
        now on, its handler never runs (as in ocpp-rpc, which handles no call
        unless OPEN), so that a peer that keeps calling cannot keep the close
        open. While `answer` (a close awaiting pending calls: our Close is not
        sent until they end), a CALL gets a `GenericError` CALLERROR, as a busy
        refusal does (a code OCPP-J 1.6 and 2.x both have): the peer learns at
        once instead of at its call timeout. Without it (called so again once
        the Close is to go) nothing is sent: after a Close nothing may follow.
        A SEND is never answered."""
        self.closing = True
        self.answer_closing = answer

    @property
    def inbound_in_progress(self) -> int:
        """Inbound CALLs and SENDs being handled."""
        return len(self.handling) + self.sends_handling

    # -- answers ---------------------------------------------------------------

    def result_reply(self, message_id: str, result: Any) -> str:
        """The CALLRESULT for a handler's result; RPCInternalError if JSON cannot
        hold it (saying why only with `detailed_errors`, as for a handler's
        exception: the text names the result's types)."""
        try:
            return encode_call_result(message_id, result)
        except (TypeError, ValueError) as exc:
            if not self.detailed_errors:
                raise RPCInternalError(RPCInternalError.default_message) from exc
            raise RPCInternalError(f"the handler's result is not JSON: {exc}") from exc

    def error_reply(self, message_id: str, error: RPCError, details: Any = None) -> str:
        """The CALLERROR for an inbound call, spelled for this dialect (with
        `details` instead of the error's own when given)."""
        return encode_error(message_id, error, self.dialect, details)

    @staticmethod
    def unhandled(method: str) -> RPCError:
        """The error answering a call that no handler takes."""
        return RPCNotImplementedError(f"Unable to handle '{method}' calls")

    def failure(self, exc: Exception) -> tuple[RPCError, Any]:
        """The error and details answering a call whose handler raised `exc`.

        An `RPCError` answers as it is. Anything else is an `InternalError`
        with the generic description: the exception's text and stack may hold
        secrets, so they go out only with `detailed_errors`.
        """
        if isinstance(exc, RPCError):
            return exc, exc.details
        if not self.detailed_errors:
            return RPCInternalError(RPCInternalError.default_message), None
        details = {
            "name": type(exc).__name__,
            "message": str(exc),
            "stack": "".join(traceback.format_exception(exc)),
        }
        return RPCInternalError(str(exc) or type(exc).__name__), details

    @staticmethod
    def invalid_own_result(error: RPCError) -> RPCError:
        """Strict mode: the error answering a call whose handler returned a
        result that fails validation (`error`): a generic `InternalError`, since
        the peer did nothing wrong."""
        return RPCInternalError()

    def invalid_result_reply(self, message_id: str, error: RPCError) -> str | None:
        """Strict mode: what to send for the peer's CALLRESULT that fails
        validation with `error` (the local call fails with `error` anyway): on
        OCPP 2.1 a CALLRESULTERROR tells the peer; before 2.1 nothing can."""
        if not self.dialect.rpc21:
            return None
        return encode_error(message_id, error, self.dialect, result_error=True)

    # -- receiving -------------------------------------------------------------

    def receive(self, text: str | bytes) -> Received[P]:
        """Classify one inbound message (see the wire table in API.md)."""
        frame = decode(text, self.dialect)
        if frame is None:
            return None
        if isinstance(frame, BadFrame):
            response_id = frame.response_id
            failed = None if response_id is None else self.pending.pop(response_id, None)
            return self._bad(frame.error, frame.reply, failed=failed)
        if isinstance(frame, CallFrame):
            self.bad_message_count = 0
            if self.closing:
                return self._refuse_closing(frame)
            if frame.message_id in self.handling:
                error = RPCFrameworkError(
                    f"Already processing a call with message ID: {frame.message_id}"
                )
                return Refuse(frame, encode_error(frame.message_id, error, self.dialect))
            if self.inbound_in_progress >= self.max_inbound_calls:
                return self._busy(frame)
            self.busy_refusals = 0
            self.handling[frame.message_id] = None
            return Dispatch(frame)
        if isinstance(frame, SendFrame):
            self.bad_message_count = 0
            if self.closing:
                return Refuse(frame, None)
            if self.inbound_in_progress >= self.max_inbound_calls:
                return self._busy(frame)
            self.busy_refusals = 0
            self.sends_handling += 1
            return Dispatch(frame)
        pending = self.pending.pop(frame.message_id, None)
        if pending is None:
            kind = "CALLRESULT" if isinstance(frame, CallResultFrame) else "CALLERROR"
            error = RPCFrameworkError(
                f"Received {kind} for unrecognised message ID: {frame.message_id}"
            )
            return self._bad(error, None, unexpected=frame)
        self.bad_message_count = 0
        return Answer(pending, frame)

    def _refuse_closing(self, frame: CallFrame) -> Refuse:
        if not self.answer_closing:
            return Refuse(frame, None)
        error = RPCGenericError("The connection is closing; no new calls are accepted")
        return Refuse(frame, encode_error(frame.message_id, error, self.dialect))

    def _busy(self, frame: CallFrame | SendFrame) -> Refuse:
        self.busy_refusals += 1
        if isinstance(frame, SendFrame):
            return Refuse(frame, None, busy=True)
        error = RPCGenericError(
            f"Too many inbound calls in progress ({self.max_inbound_calls:g}); try again later"
        )
        return Refuse(frame, encode_error(frame.message_id, error, self.dialect), busy=True)

    def _bad(
        self,
        error: RPCError,
        reply: str | None,
        *,
        failed: P | None = None,
        unexpected: CallResultFrame | CallErrorFrame | None = None,
    ) -> Bad[P]:
        self.bad_message_count += 1
        close = self.bad_message_count > self.max_bad_messages
        return Bad(error, None if close else reply, close, failed, unexpected)


class MessageIds:
    """Unique outbound message ids: a random per-process prefix and a counter
    (at most 36 characters, as OCPP-J requires)."""

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex() + "-"
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter)}"
