"""The public error tree: remote OCPP-J errors (`RPCError` and one subclass per
code) and local connection failures (`ConnectError`, `ConnectionClosed`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = (
    "ConnectError",
    "ConnectionClosed",
    "NotConnected",
    "RPCError",
    "RPCFormatViolationError",
    "RPCFrameworkError",
    "RPCGenericError",
    "RPCInternalError",
    "RPCMessageTypeNotSupportedError",
    "RPCNotImplementedError",
    "RPCNotSupportedError",
    "RPCOccurrenceConstraintViolationError",
    "RPCPropertyConstraintViolationError",
    "RPCProtocolError",
    "RPCSecurityError",
    "RPCTypeConstraintViolationError",
    "create_rpc_error",
)


class RPCError(Exception):
    """A CALLERROR: the OCPP-J error `code`, a `message` and a `details` object.

    Raise one (or a subclass) from a handler to answer with that code; a call
    whose peer answered with a CALLERROR raises the matching subclass.
    `message` is the text given (the peer's description for a received error),
    `""` when none was. A CALLERROR sent for an error without a message carries
    its class's `default_message`, the OCPP-J specification's text for the code.
    """

    #: The code of errors of this class (unless one is given).
    default_code: ClassVar[str] = "GenericError"
    #: The specification's description of the code ("" for GenericError).
    default_message: ClassVar[str] = ""

    def __init__(
        self,
        message: str = "",
        details: Mapping[str, Any] | None = None,
        *,
        code: str | None = None,
    ) -> None:
        self.code: str = code if code is not None else self.default_code
        # A CALLERROR's description is a string on the wire, whatever was given.
        self.message: str = message if type(message) is str else str(message)
        self.details: dict[str, Any] = dict(details) if details else {}
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code


class RPCGenericError(RPCError):
    """`GenericError` (also any code this library does not know)."""

    default_code = "GenericError"


class RPCNotImplementedError(RPCError):
    """`NotImplemented`: the action is not known by the receiver."""

    default_code = "NotImplemented"
    default_message = "Requested method is not known"


class RPCNotSupportedError(RPCError):
    """`NotSupported`: the action is recognised but not supported."""

    default_code = "NotSupported"
    default_message = "Requested method is recognised but not supported"


class RPCInternalError(RPCError):
    """`InternalError`: the receiver failed while processing the call."""

    default_code = "InternalError"
    default_message = (
        "An internal error occurred and the receiver was not able to process "
        "the requested method successfully"
    )


class RPCProtocolError(RPCError):
    """`ProtocolError`: the payload is incomplete."""

    default_code = "ProtocolError"
    default_message = "Payload for method is incomplete"


class RPCSecurityError(RPCError):
    """`SecurityError`: a security issue prevented processing."""

    default_code = "SecurityError"
    default_message = (
        "During the processing of method a security issue occurred preventing "
        "receiver from completing the method successfully"
    )


class RPCFormatViolationError(RPCError):
    """`FormatViolation` (OCPP 1.6J spells it `FormationViolation`)."""

    default_code = "FormatViolation"
    default_message = (
        "Payload for the method is syntactically incorrect or not conform "
        "the PDU structure for the method"
    )


class RPCPropertyConstraintViolationError(RPCError):
    """`PropertyConstraintViolation`: a field holds an invalid value."""

    default_code = "PropertyConstraintViolation"
    default_message = (
        "Payload is syntactically correct but at least one field contains an invalid value"
    )


class RPCOccurrenceConstraintViolationError(RPCError):
    """`OccurrenceConstraintViolation` (1.6J: `OccurenceConstraintViolation`)."""

    default_code = "OccurrenceConstraintViolation"
    default_message = (
        "Payload for the method is syntactically correct but at least one of "
        "the fields violates occurrence constraints"
    )


class RPCTypeConstraintViolationError(RPCError):
    """`TypeConstraintViolation`: a field has the wrong data type."""

    default_code = "TypeConstraintViolation"
    default_message = (
        "Payload for the method is syntactically correct but at least one of "
        "the fields violates data type constraints"
    )


class RPCMessageTypeNotSupportedError(RPCError):
    """`MessageTypeNotSupported` (OCPP 2.x): unknown message type number."""

    default_code = "MessageTypeNotSupported"
    default_message = (
        "A message with a Message Type Number received is not supported by this implementation."
    )


class RPCFrameworkError(RPCError):
    """`RpcFrameworkError` (OCPP 2.x): the frame is not a valid RPC message."""

    default_code = "RpcFrameworkError"
    default_message = (
        "Content of the call is not a valid RPC Request, for example: "
        "MessageId could not be read."
    )


#: Every spelling seen on the wire -> its class.
ERROR_CLASSES: Mapping[str, type[RPCError]] = {
    "GenericError": RPCGenericError,
    "NotImplemented": RPCNotImplementedError,
    "NotSupported": RPCNotSupportedError,
    "InternalError": RPCInternalError,
    "ProtocolError": RPCProtocolError,
    "SecurityError": RPCSecurityError,
    "FormatViolation": RPCFormatViolationError,
    "FormationViolation": RPCFormatViolationError,
    "PropertyConstraintViolation": RPCPropertyConstraintViolationError,
    "OccurrenceConstraintViolation": RPCOccurrenceConstraintViolationError,
    "OccurenceConstraintViolation": RPCOccurrenceConstraintViolationError,
    "TypeConstraintViolation": RPCTypeConstraintViolationError,
    "MessageTypeNotSupported": RPCMessageTypeNotSupportedError,
    "RpcFrameworkError": RPCFrameworkError,
}


def create_rpc_error(
    code: str, message: str = "", details: Mapping[str, Any] | None = None
) -> RPCError:
    """The `RPCError` subclass instance for `code` (either spelling), with
    `message` as given (the class's standard text stays in `.default_message`).

    An unknown code gives an `RPCGenericError` whose `.code` is still `code`.
    """
    cls = ERROR_CLASSES.get(code, RPCGenericError)
    return cls(message, details, code=code)


class ConnectError(OSError):
    """The connection could not be opened.

    `.status` is the HTTP status when the server answered without upgrading
    (e.g. 401, 404), else `None`.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotConnected(LookupError):
    """No charger is connected under `.identity`: not to this server, nor (with
    a cluster) to any node. Raised at once by `RPCServer.call` and
    `RedisCluster.call`; the call was not delivered."""

    def __init__(self, identity: str) -> None:
        self.identity = identity
        super().__init__(f"{identity!r} is not connected")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.identity,), self.__dict__


class ConnectionClosed(Exception):
    """The connection is closing or closed: `.code` and `.reason` of its close
    (the peer's when the peer closed it; 1006 when TCP dropped without a close frame)."""

    def __init__(self, code: int = 1006, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"connection closed: {code} {reason}".rstrip())

    def __reduce__(self) -> tuple[Any, ...]:
        # Built again from code and reason (its args hold only the text).
        return type(self), (self.code, self.reason), self.__dict__
