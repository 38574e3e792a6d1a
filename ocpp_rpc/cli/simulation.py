"""A simulated charge point's session, for 1.6 and 2.0.1: boot, status,
heartbeats and transactions with meter values. Used by `ocpp-rpc demo` and
`ocpp-rpc simulate`; every payload validates against the OCA schemas."""

from __future__ import annotations

import math
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .. import RPCClient
from ..durable import SQLiteStore
from .answers import is_ocpp16, now

#: `(action, params) -> result`: the client's `call`, or a wrapper that times it.
CallFunction = Callable[[str, Any], Awaitable[Any]]

#: The transaction-related messages a charge point keeps while offline and
#: delivers in order (OCPP 1.6 §3.7, 2.0.1 E13): durable calls with a store.
TRANSACTION_MESSAGES = frozenset(
    {"StartTransaction", "StopTransaction", "MeterValues", "TransactionEvent"})


def charger_store(directory: str | None, identity: str) -> SQLiteStore | None:
    """The store of charger `identity` under `directory` (``--store``), or None."""
    if directory is None:
        return None
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    return SQLiteStore(path / f"{quote(identity, safe='')}.db")


def transaction_call(client: RPCClient) -> CallFunction:
    """A call function that sends transaction messages as durable calls
    waiting for as long as the CSMS is away, and the rest as usual."""

    async def call(action: str, params: Any) -> Any:
        if action in TRANSACTION_MESSAGES:
            return await client.call(action, params, durable=True, timeout=math.inf)
        return await client.call(action, params)

    return call

VENDOR = "ocpp_rpc"
MODEL = "Simulator"


def boot_notification(protocol: str | None, serial: str = "SIM-0001") -> dict[str, Any]:
    """A BootNotification request for `protocol`."""
    if is_ocpp16(protocol):
        return {"chargePointVendor": VENDOR, "chargePointModel": MODEL,
                "chargePointSerialNumber": serial}
    return {"chargingStation": {"vendorName": VENDOR, "model": MODEL, "serialNumber": serial},
            "reason": "PowerUp"}


def status_notification(protocol: str | None, status: str) -> dict[str, Any]:
    """A StatusNotification for connector 1; `status` is a 1.6 name (Available,
    Preparing, Charging, Finishing) and is mapped to 2.0.1's connector states."""
    if is_ocpp16(protocol):
        return {"connectorId": 1, "errorCode": "NoError", "status": status, "timestamp": now()}
    connector_status = "Available" if status == "Available" else "Occupied"
    return {"timestamp": now(), "connectorStatus": connector_status, "evseId": 1,
            "connectorId": 1}


async def run_session(
    call: CallFunction,
    protocol: str | None,
    *,
    serial: str = "SIM-0001",
    heartbeats: int = 1,
    transactions: int = 1,
    meter_values: int = 2,
    id_tag: str = "04E1A2B3C4",
) -> None:
    """Boot, report the connector Available, send `heartbeats` Heartbeats, then
    run `transactions` charging sessions with `meter_values` readings each.

    1.6: Authorize, StartTransaction, MeterValues, StopTransaction;
    2.0.1: Authorize, TransactionEvent Started / Updated / Ended.
    """
    await call("BootNotification", boot_notification(protocol, serial))
    await call("StatusNotification", status_notification(protocol, "Available"))
    for _ in range(heartbeats):
        await call("Heartbeat", {})
    for _ in range(transactions):
        if is_ocpp16(protocol):
            await _transaction_16(call, id_tag, meter_values)
        else:
            await _transaction_2(call, id_tag, meter_values)


async def _transaction_16(call: CallFunction, id_tag: str, meter_values: int) -> None:
    await call("Authorize", {"idTag": id_tag})
    await call("StatusNotification", status_notification("ocpp1.6", "Charging"))
    meter = 1000
    started = await call("StartTransaction", {
        "connectorId": 1, "idTag": id_tag, "meterStart": meter, "timestamp": now()})
    transaction_id = int(started["transactionId"])
    for _ in range(meter_values):
        meter += 1500
        await call("MeterValues", {
            "connectorId": 1,
            "transactionId": transaction_id,
            "meterValue": [{"timestamp": now(), "sampledValue": [{
                "value": str(meter), "context": "Sample.Periodic",
                "measurand": "Energy.Active.Import.Register", "unit": "Wh"}]}],
        })
    await call("StopTransaction", {
        "transactionId": transaction_id, "idTag": id_tag, "meterStop": meter + 500,
        "timestamp": now(), "reason": "Local"})
    await call("StatusNotification", status_notification("ocpp1.6", "Available"))


async def _transaction_2(call: CallFunction, id_tag: str, meter_values: int) -> None:
    id_token = {"idToken": id_tag, "type": "ISO14443"}
    transaction_id = str(uuid.uuid4())
    evse = {"id": 1, "connectorId": 1}
    await call("Authorize", {"idToken": id_token})
    await call("StatusNotification", status_notification("ocpp2.0.1", "Charging"))
    energy = 1000.0

    def reading(context: str) -> list[dict[str, Any]]:
        return [{"timestamp": now(), "sampledValue": [{
            "value": energy, "context": context, "measurand": "Energy.Active.Import.Register",
            "unitOfMeasure": {"unit": "Wh"}}]}]

    await call("TransactionEvent", {
        "eventType": "Started", "timestamp": now(), "triggerReason": "Authorized", "seqNo": 0,
        "transactionInfo": {"transactionId": transaction_id, "chargingState": "Charging"},
        "evse": evse, "idToken": id_token, "meterValue": reading("Transaction.Begin")})
    seq_no = 1
    for _ in range(meter_values):
        energy += 1500.0
        await call("TransactionEvent", {
            "eventType": "Updated", "timestamp": now(), "triggerReason": "MeterValuePeriodic",
            "seqNo": seq_no,
            "transactionInfo": {"transactionId": transaction_id, "chargingState": "Charging"},
            "meterValue": reading("Sample.Periodic")})
        seq_no += 1
    energy += 500.0
    await call("TransactionEvent", {
        "eventType": "Ended", "timestamp": now(), "triggerReason": "StopAuthorized",
        "seqNo": seq_no,
        "transactionInfo": {"transactionId": transaction_id, "chargingState": "Idle",
                            "stoppedReason": "Local"},
        "idToken": id_token, "meterValue": reading("Transaction.End")})
    await call("StatusNotification", status_notification("ocpp2.0.1", "Available"))
