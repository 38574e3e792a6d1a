"""OCPP-J RPC over WebSockets, client and server, for Trio and asyncio (via anyio)."""

import inspect
import sys
from types import FunctionType

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
from .errors import NotConnected as NotConnected
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
    "NotConnected",
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



def _publish(public: type | FunctionType) -> None:
    """Make `public` report ``ocpp_rpc`` as its module, as documented, repr'd
    and pickled (``ocpp_rpc.RPCClient``, not the private module that defines it
    today and may move). `typing.get_type_hints` looks a class's string
    annotations up in the module it reports, so they are resolved first, in
    the module that wrote them (one left as a string if it names something
    imported only for type checkers, as before)."""
    if isinstance(public, type):
        namespace = vars(sys.modules[public.__module__])
        annotations = inspect.get_annotations(public)  # its own, a copy
        for key, annotation in annotations.items():
            if isinstance(annotation, str):
                try:
                    annotations[key] = eval(annotation, namespace, dict(vars(public)))
                except NameError:
                    pass
        public.__annotations__ = annotations
    public.__module__ = __name__


for _public in map(globals().__getitem__, __all__):
    if isinstance(_public, (type, FunctionType)):
        _publish(_public)
del _public
