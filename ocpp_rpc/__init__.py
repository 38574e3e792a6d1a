"""OCPP-J RPC over WebSockets, client and server, for Trio and asyncio (via anyio)."""

from ._client import RPCClient as RPCClient
from ._client import State as State
from ._events import CloseResult as CloseResult
from ._handlers import NOREPLY as NOREPLY
from ._handlers import Call as Call
from ._reconnect import Backoff as Backoff
from ._server import Accept as Accept
from ._server import Handshake as Handshake
from ._server import Reject as Reject
from ._server import RPCServer as RPCServer
from ._server import ServerClient as ServerClient
from ._validation import Validator as Validator
from .errors import ConnectError as ConnectError
from .errors import ConnectionClosed as ConnectionClosed
from .errors import RPCError as RPCError
from .errors import RPCFormatViolationError as RPCFormatViolationError
from .errors import RPCFrameworkError as RPCFrameworkError
from .errors import RPCGenericError as RPCGenericError
from .errors import RPCInternalError as RPCInternalError
from .errors import RPCMessageTypeNotSupportedError as RPCMessageTypeNotSupportedError
from .errors import RPCNotImplementedError as RPCNotImplementedError
from .errors import RPCNotSupportedError as RPCNotSupportedError
from .errors import (
    RPCOccurrenceConstraintViolationError as RPCOccurrenceConstraintViolationError,
)
from .errors import RPCPropertyConstraintViolationError as RPCPropertyConstraintViolationError
from .errors import RPCProtocolError as RPCProtocolError
from .errors import RPCSecurityError as RPCSecurityError
from .errors import RPCTypeConstraintViolationError as RPCTypeConstraintViolationError
from .errors import create_rpc_error as create_rpc_error

__version__ = "0.1.0"

__all__ = (
    "NOREPLY",
    "Accept",
    "Backoff",
    "Call",
    "CloseResult",
    "ConnectError",
    "ConnectionClosed",
    "Handshake",
    "RPCClient",
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
    "RPCServer",
    "RPCTypeConstraintViolationError",
    "Reject",
    "ServerClient",
    "State",
    "Validator",
    "create_rpc_error",
)
