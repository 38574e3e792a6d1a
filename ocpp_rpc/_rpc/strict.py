"""`StrictChecks`: strict mode on one connection.

Validates payloads against the agreed subprotocol's schemas and reports each
failure (a log line and the `strict_validation_failure` event). Which answer
a failure gets on the wire is the exchange's rule (`_wire.session`).
"""

from __future__ import annotations

import logging
from typing import Any

from .._wire.codec import CallFrame, SendFrame
from .._wire.session import Exchange
from .._wire.validation import Validator
from ..errors import RPCError
from .events import Observers, StrictValidationFailureEvent

logger = logging.getLogger("ocpp_rpc.connection")


class StrictRefusal(Exception):
    """Strict mode refused a call's params or the peer's result (`error`, the
    `RPCError` an ordinary call raises): a resend would be refused alike."""

    def __init__(self, error: RPCError) -> None:
        super().__init__(error)
        self.error = error


def report_failure(
    events: Observers, error: RPCError, message_id: str, method: str, outbound: bool,
    is_call: bool,
) -> None:
    """Log a strict-mode failure and emit its `strict_validation_failure` event."""
    logger.info(
        "strict mode: %s %s %r (%s): %s", "outbound" if outbound else "inbound",
        "call" if is_call else "result", method, message_id, error,
    )
    events.emit(
        "strict_validation_failure",
        StrictValidationFailureEvent(error, message_id, method, outbound, is_call),
    )


class StrictChecks:
    """The strict-mode checks of one connection (one validator)."""

    __slots__ = ("_events", "_exchange", "_validator")

    def __init__(self, validator: Validator, events: Observers, exchange: Exchange[Any]) -> None:
        self._validator = validator
        self._events = events
        self._exchange = exchange

    def outbound_call(self, message_id: str, method: str, params: Any) -> None:
        """An invalid outbound CALL raises its `RPCError` here: nothing is sent."""
        try:
            self._validator.validate_call(method, params)
        except RPCError as error:
            self._failure(error, message_id, method, True, True)
            raise

    def outbound_send(self, message_id: str, method: str, params: Any) -> None:
        """An invalid outbound SEND raises its `RPCError` here: nothing is sent."""
        try:
            self._validator.validate_send(method, params)
        except RPCError as error:
            self._failure(error, message_id, method, True, True)
            raise

    def inbound(self, frame: CallFrame | SendFrame, is_call: bool) -> None:
        """An invalid inbound CALL raises (it is answered with that code and its
        handler does not run); an invalid SEND raises too, and is dropped."""
        try:
            if is_call:
                self._validator.validate_call(frame.method, frame.params)
            else:
                self._validator.validate_send(frame.method, frame.params)
        except RPCError as error:
            self._failure(error, frame.message_id, frame.method, False, True)
            raise

    def own_result(self, message_id: str, method: str, result: Any) -> None:
        """An invalid result of our handler raises the error that answers instead."""
        try:
            self._validator.validate_result(method, result)
        except RPCError as error:
            self._failure(error, message_id, method, True, False)
            raise self._exchange.invalid_own_result(error) from error

    def peer_result(self, message_id: str, method: str, result: Any) -> RPCError | None:
        """The error of the peer's invalid result for our call `method`, else None."""
        try:
            self._validator.validate_result(method, result)
        except RPCError as error:
            self._failure(error, message_id, method, False, False)
            return error
        return None

    def _failure(
        self, error: RPCError, message_id: str, method: str, outbound: bool, is_call: bool
    ) -> None:
        # Raised here, not read off the wire: spelled as the peer would (1.6J's own).
        error.code = self._exchange.dialect.spelling(error.code)
        report_failure(self._events, error, message_id, method, outbound, is_call)
