"""OCPP-J RPC over WebSockets, client and server, for Trio and asyncio (via anyio)."""

from ._rpc.client import RPCClient as RPCClient
from ._rpc.client import State as State
from ._rpc.events import CloseResult as CloseResult
from ._rpc.handlers import NOREPLY as NOREPLY
from ._rpc.handlers import Call as Call
from ._rpc.reconnect import Backoff as Backoff
from ._rpc.server import Accept as Accept
from ._rpc.server import Handshake as Handshake
from ._rpc.server import Reject as Reject
from ._rpc.server import RPCServer as RPCServer
from ._rpc.server import ServerClient as ServerClient
from ._wire.validation import Validator as Validator
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
