"""The public face, pinned: what `ocpp_rpc` and its public modules export, that
every name imports, and that public classes and functions report the module
users import them from (reprs, pickles, documentation)."""

from __future__ import annotations

import importlib
import pickle
import typing
from types import FunctionType
from typing import Any

import pytest

import ocpp_rpc
from ocpp_rpc import errors

PUBLIC = {
    # endpoints
    "RPCServer", "RPCClient", "ServerClient",
    # server-side auth
    "Handshake", "Accept", "Reject",
    # values
    "Call", "CloseResult", "State", "NOREPLY", "Backoff", "Validator",
    # remote errors
    "RPCError", "create_rpc_error", "RPCGenericError", "RPCNotImplementedError",
    "RPCNotSupportedError", "RPCInternalError", "RPCProtocolError", "RPCSecurityError",
    "RPCFormatViolationError", "RPCPropertyConstraintViolationError",
    "RPCOccurrenceConstraintViolationError", "RPCTypeConstraintViolationError",
    "RPCMessageTypeNotSupportedError", "RPCFrameworkError",
    # local failures
    "ConnectError", "ConnectionClosed", "NotConnected",
}

# Public modules: their __all__ exactly. Their own classes report their own module.
MODULES = {
    "ocpp_rpc.errors": {
        "ConnectError", "ConnectionClosed", "NotConnected", "RPCError", "RPCFormatViolationError",
        "RPCFrameworkError", "RPCGenericError", "RPCInternalError",
        "RPCMessageTypeNotSupportedError", "RPCNotImplementedError", "RPCNotSupportedError",
        "RPCOccurrenceConstraintViolationError", "RPCPropertyConstraintViolationError",
        "RPCProtocolError", "RPCSecurityError", "RPCTypeConstraintViolationError",
        "create_rpc_error",
    },
    "ocpp_rpc.transport": {"Dialer", "Transport", "Upgrade", "UpgradeServer", "WebSocketClosed"},
    "ocpp_rpc.asgi": {"ASGIApp", "ASGIWebSocket"},
    "ocpp_rpc.trio_ws": {"TrioWebSocketTransport", "attach_client", "serve_request"},
    "ocpp_rpc.durable": {
        "DEFAULT_MAX_MESSAGES", "DurableStore", "MemoryStore", "SQLiteStore", "StoreCorrupt",
        "StoreError", "StoreFull", "StoreInUse", "StoredCall",
    },
}


def _classes_and_functions(names: typing.Iterable[str], module: Any) -> list[Any]:
    return [
        getattr(module, name) for name in sorted(names)
        if isinstance(getattr(module, name), (type, FunctionType))
    ]


def test_all_is_exactly_the_public_face() -> None:
    assert set(ocpp_rpc.__all__) == PUBLIC
    assert len(ocpp_rpc.__all__) == len(PUBLIC)  # no name twice


def test_every_public_name_imports() -> None:
    namespace: dict[str, Any] = {}
    exec("from ocpp_rpc import *", namespace)
    assert namespace.keys() >= PUBLIC
    for name in PUBLIC:
        assert getattr(ocpp_rpc, name) is namespace[name]


@pytest.mark.parametrize("public", _classes_and_functions(PUBLIC, ocpp_rpc),
                         ids=lambda public: public.__name__)
def test_public_classes_and_functions_report_ocpp_rpc(public: Any) -> None:
    assert public.__module__ == "ocpp_rpc"
    assert getattr(ocpp_rpc, public.__qualname__) is public


@pytest.mark.parametrize("public", [p for p in _classes_and_functions(PUBLIC, ocpp_rpc)
                                    if isinstance(p, type)], ids=lambda public: public.__name__)
def test_type_hints_of_public_classes_still_resolve(public: type) -> None:
    # Resolved in the ocpp_rpc namespace once __module__ says so.
    typing.get_type_hints(public)


@pytest.mark.parametrize("module_name", sorted(MODULES))
def test_public_modules_export_exactly_their_names(module_name: str) -> None:
    if module_name == "ocpp_rpc.trio_ws":
        pytest.importorskip("trio_websocket")
    module = importlib.import_module(module_name)
    assert set(module.__all__) == MODULES[module_name]
    for name in module.__all__:
        assert getattr(module, name) is not None
    for public in _classes_and_functions(module.__all__, module):
        if public is not getattr(ocpp_rpc, public.__name__, None):
            assert public.__module__ == module_name, public


@pytest.mark.parametrize("module_name", ["ocpp_rpc.v16", "ocpp_rpc.v201", "ocpp_rpc.v21"])
def test_typed_payload_modules_export_call_handler_and_types_of_their_own(
    module_name: str,
) -> None:
    # Generated (tools/generate_types.py): hundreds of names, pinned by tests/typed.
    module = importlib.import_module(module_name)
    assert {"call", "handler", "BootNotificationRequest", "BootNotificationResponse"} <= set(
        module.__all__
    )
    for name in module.__all__:
        public = getattr(module, name)
        if isinstance(public, (type, FunctionType)):
            assert public.__module__ == module_name, public


def test_errors_are_the_same_objects_in_both_places() -> None:
    for name in errors.__all__:
        assert getattr(errors, name) is getattr(ocpp_rpc, name)


@pytest.mark.parametrize(
    "error",
    [
        *(cls("why", {"k": [1]}) for cls in errors.ERROR_CLASSES.values()),
        ocpp_rpc.create_rpc_error("VendorSpecific", "odd", {"x": 1}),
        ocpp_rpc.create_rpc_error("NotImplemented"),
        ocpp_rpc.ConnectError("refused", status=401),
        ocpp_rpc.ConnectionClosed(1001, "going away"),
        ocpp_rpc.ConnectionClosed(),
        ocpp_rpc.NotConnected("CP 1"),
    ],
    ids=repr,
)
def test_public_errors_pickle_and_unpickle(error: Exception) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert vars(copy) == vars(error)
    assert copy.args == error.args
    assert str(copy) == str(error) and repr(copy) == repr(error)
    assert f"ocpp_rpc\n{type(error).__name__}".encode() in pickle.dumps(error, protocol=0)


def test_public_values_pickle_by_their_public_name() -> None:
    for value in (ocpp_rpc.State.OPEN, ocpp_rpc.CloseResult(1000, "bye"), ocpp_rpc.Backoff()):
        assert pickle.loads(pickle.dumps(value)) == value
        assert f"ocpp_rpc\n{type(value).__name__}".encode() in pickle.dumps(value, protocol=0)
