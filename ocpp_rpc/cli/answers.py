"""Valid default answers for the common OCPP 1.6 and 2.0.1 actions, on both
sides: what a development CSMS answers a charge point (`CSMSDefaults`) and
what a simulated charge point answers a CSMS (`answer_as_charge_point`).

Every payload here validates against the OCA schemas shipped in
``ocpp_rpc/schemas`` (``tests/test_cli.py`` checks them all).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Final

from .. import Call, RPCServer, create_rpc_error

if TYPE_CHECKING:  # the answers' types; the commands never import these modules
    from .. import v16, v201


def now() -> str:
    """The current UTC time as OCPP writes it: ``2024-01-01T12:00:00.000Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_ocpp16(protocol: str | None) -> bool:
    """Whether `protocol` speaks the 1.6 message set (no subprotocol: assume 2.x)."""
    return protocol is not None and protocol.startswith("ocpp1.")


_Answer = Callable[[Call], Any]


class CSMSDefaults:
    """Default CSMS answers to charge-point-initiated calls.

    1.6 and 2.x have different message sets: an action of the other version
    (a 2.0.1 charger sending StartTransaction) is answered `NotImplemented`.
    Transaction ids count up from 1 per `CSMSDefaults`.
    """

    def __init__(self, *, heartbeat_interval: int = 300) -> None:
        self.heartbeat_interval = heartbeat_interval
        self._transaction_ids = itertools.count(1)
        self.v16: Final[Mapping[str, _Answer]] = {
            "BootNotification": self._boot,
            "Heartbeat": self._heartbeat,
            "StatusNotification": _empty,
            "Authorize": lambda call: {"idTagInfo": {"status": "Accepted"}},
            "StartTransaction": lambda call: {
                "transactionId": next(self._transaction_ids),
                "idTagInfo": {"status": "Accepted"},
            },
            "StopTransaction": lambda call: (
                {"idTagInfo": {"status": "Accepted"}} if _params(call).get("idTag") else {}
            ),
            "MeterValues": _empty,
            "DataTransfer": lambda call: {"status": "Accepted"},
            "FirmwareStatusNotification": _empty,
            "DiagnosticsStatusNotification": _empty,
            # the 1.6 security whitepaper's messages
            "LogStatusNotification": _empty,
            "SecurityEventNotification": _empty,
            "SignedFirmwareStatusNotification": _empty,
            "SignCertificate": lambda call: {"status": "Accepted"},
        }
        self.v2: Final[Mapping[str, _Answer]] = {
            "BootNotification": self._boot,
            "Heartbeat": self._heartbeat,
            "StatusNotification": _empty,
            "Authorize": lambda call: {"idTokenInfo": {"status": "Accepted"}},
            "TransactionEvent": lambda call: (
                {"idTokenInfo": {"status": "Accepted"}} if _params(call).get("idToken") else {}
            ),
            "MeterValues": _empty,
            "DataTransfer": lambda call: {"status": "Accepted"},
            "FirmwareStatusNotification": _empty,
            "LogStatusNotification": _empty,
            "SecurityEventNotification": _empty,
            "NotifyReport": _empty,
            "NotifyEvent": _empty,
            "NotifyMonitoringReport": _empty,
            "SignCertificate": lambda call: {"status": "Accepted"},
        }

    @property
    def actions(self) -> frozenset[str]:
        """Every action answered in some version."""
        return frozenset(self.v16) | frozenset(self.v2)

    def answer(self, call: Call) -> Any:
        """The default answer to `call`; `RPCNotImplementedError` if there is none
        for the call's protocol."""
        table = self.v16 if is_ocpp16(call.protocol) else self.v2
        answer = table.get(call.method)
        if answer is None:
            raise create_rpc_error(
                "NotImplemented", f"no default answer to {call.method} on {call.protocol}"
            )
        return answer(call)

    def register(self, server: RPCServer) -> None:
        """Make these the server's default handlers (one per action)."""
        for action in sorted(self.actions):
            server.handle(action, self.answer)

    def _boot(self, call: Call) -> v16.BootNotificationResponse | v201.BootNotificationResponse:
        return {"status": "Accepted", "currentTime": now(), "interval": self.heartbeat_interval}

    def _heartbeat(self, call: Call) -> v16.HeartbeatResponse | v201.HeartbeatResponse:
        return {"currentTime": now()}


def _empty(call: Call) -> dict[str, Any]:
    return {}


def _params(call: Call) -> Mapping[str, Any]:
    return call.params if isinstance(call.params, Mapping) else {}


def _get_configuration(call: Call[v16.GetConfigurationRequest]) -> v16.GetConfigurationResponse:
    known = {"HeartbeatInterval": "300", "MeterValueSampleInterval": "60"}
    keys = _params(call).get("key") or list(known)
    return {
        "configurationKey": [
            {"key": key, "readonly": False, "value": known[key]} for key in keys if key in known
        ],
        "unknownKey": [key for key in keys if key not in known],
    }


def _get_variables(call: Call[v201.GetVariablesRequest]) -> v201.GetVariablesResponse:
    return {
        "getVariableResult": [
            {
                "attributeStatus": "UnknownVariable",
                "component": item.get("component", {"name": "?"}),
                "variable": item.get("variable", {"name": "?"}),
            }
            for item in _params(call).get("getVariableData", [])
        ]
    }


def _set_variables(call: Call[v201.SetVariablesRequest]) -> v201.SetVariablesResponse:
    return {
        "setVariableResult": [
            {
                "attributeStatus": "Accepted",
                "component": item.get("component", {"name": "?"}),
                "variable": item.get("variable", {"name": "?"}),
            }
            for item in _params(call).get("setVariableData", [])
        ]
    }


def _accepted(call: Call) -> dict[str, Any]:
    return {"status": "Accepted"}


_CHARGE_POINT_16: Final[Mapping[str, _Answer]] = {
    "Reset": _accepted,
    "GetConfiguration": _get_configuration,
    "ChangeConfiguration": _accepted,
    "RemoteStartTransaction": _accepted,
    "RemoteStopTransaction": _accepted,
    "TriggerMessage": _accepted,
    "ChangeAvailability": _accepted,
    "UnlockConnector": lambda call: {"status": "Unlocked"},
    "ClearCache": _accepted,
    "DataTransfer": _accepted,
    "GetDiagnostics": _empty,
    "UpdateFirmware": _empty,
}

_CHARGE_POINT_2: Final[Mapping[str, _Answer]] = {
    "Reset": _accepted,
    "GetBaseReport": _accepted,
    "GetVariables": _get_variables,
    "SetVariables": _set_variables,
    "RequestStartTransaction": _accepted,
    "RequestStopTransaction": _accepted,
    "TriggerMessage": _accepted,
    "ChangeAvailability": _accepted,
    "UnlockConnector": lambda call: {"status": "Unlocked"},
    "ClearCache": _accepted,
    "DataTransfer": _accepted,
}


def answer_as_charge_point(call: Call) -> Any:
    """What a simulated charge point answers a CSMS-initiated call (a wildcard
    handler): a valid "Accepted"-style answer, else `NotImplemented`."""
    table = _CHARGE_POINT_16 if is_ocpp16(call.protocol) else _CHARGE_POINT_2
    answer = table.get(call.method)
    if answer is None:
        raise create_rpc_error("NotImplemented", f"the simulator does not handle {call.method}")
    return answer(call)
