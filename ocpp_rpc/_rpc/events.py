"""Event payloads and the synchronous observer registry behind `.on()`/`.off()`,
and the values that describe an endpoint's connection (`State`, `CloseResult`)."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

logger = logging.getLogger("ocpp_rpc")


class State(enum.IntEnum):
    """Connection states, numbered as in ocpp-rpc (and the browser WebSocket)."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


class CloseResult(NamedTuple):
    """How a connection closed: the WebSocket close `code` and `reason`."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectingEvent:
    """`connecting`: a connection attempt starts, offering `protocols`."""

    protocols: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OpenEvent:
    """`open`: the WebSocket is open with the agreed `protocol`."""

    protocol: str | None


@dataclass(frozen=True, slots=True)
class MessageEvent:
    """`message`: one raw frame in or out."""

    message: str | bytes
    outbound: bool


@dataclass(frozen=True, slots=True)
class PayloadEvent:
    """`call` / `response`: a CALL, or a CALLRESULT/CALLERROR, as a list."""

    outbound: bool
    payload: list[Any]


@dataclass(frozen=True, slots=True)
class CallResultEvent:
    """`call_result`: a call (`outbound` = ours) ended with `result`."""

    outbound: bool
    message_id: str
    method: str
    params: Any
    result: Any


@dataclass(frozen=True, slots=True)
class CallErrorEvent:
    """`call_error`: a call (`outbound` = ours) ended with `error`."""

    outbound: bool
    message_id: str
    method: str
    params: Any
    error: BaseException


@dataclass(frozen=True, slots=True)
class DurableResultEvent:
    """`durable_result`: a durable call left the store, delivered (`result`;
    `error` None) or dropped after its last CALLERROR (`error`). `message_id`
    is the call's id in the store, the same across attempts and restarts."""

    message_id: str
    method: str
    params: Any
    result: Any = None
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class BadMessageEvent:
    """`bad_message`: an inbound frame that is not a valid RPC message."""

    message: str | bytes
    error: BaseException
    response: list[Any] | None


@dataclass(frozen=True, slots=True)
class StrictValidationFailureEvent:
    """`strict_validation_failure`: a payload failed schema validation."""

    error: BaseException
    message_id: str
    method: str
    outbound: bool
    is_call: bool


@dataclass(frozen=True, slots=True)
class PingEvent:
    """`ping`: a keep-alive ping was answered after `rtt` seconds."""

    rtt: float


@dataclass(frozen=True, slots=True)
class ClosingEvent:
    """`closing`: a close has started."""


@dataclass(frozen=True, slots=True)
class UpgradeAbortedEvent:
    """`upgrade_aborted` (server): an upgrade was refused with an HTTP status."""

    identity: str | None
    status: int
    reason: str


Observer = Callable[[Any], object]


class Observers:
    """Named lists of synchronous observers. An observer that raises is logged
    and never breaks the caller."""

    __slots__ = ("_observers",)

    def __init__(self) -> None:
        self._observers: dict[str, list[Observer]] = {}

    def on(self, event: str, callback: Observer) -> None:
        """Call `callback(payload)` on every `event`, after those already registered."""
        self._observers.setdefault(event, []).append(callback)

    def off(self, event: str, callback: Observer) -> None:
        """Stop calling `callback` on `event` (no error if it was not registered)."""
        callbacks = self._observers.get(event)
        if callbacks and callback in callbacks:
            callbacks.remove(callback)
            if not callbacks:  # `wants` is then a plain lookup
                del self._observers[event]

    def wants(self, event: str) -> bool:
        """Whether anyone observes `event` (to skip building unused payloads)."""
        return event in self._observers

    def emit(self, event: str, payload: Any) -> None:
        """Call every observer of `event` with `payload`, in registration order."""
        for callback in tuple(self._observers.get(event, ())):
            try:
                callback(payload)
            except (Exception, asyncio.CancelledError):  # a plain callback is never cancelled
                logger.exception("observer %r of event %r raised", callback, event)
