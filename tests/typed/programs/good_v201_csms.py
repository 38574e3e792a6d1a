"""A 2.0.1 CSMS written with the typed API: must pass `mypy --strict` as is."""

from __future__ import annotations

from typing import Any, assert_type

from ocpp_rpc import NOREPLY, Call, RPCServer, ServerClient, v201


def serve(server: RPCServer) -> None:
    @v201.handler(server, "BootNotification")
    def boot(call: Call[v201.BootNotificationRequest]) -> v201.BootNotificationResponse:
        station = call.params["chargingStation"]
        assert_type(station["model"], str)
        assert_type(call.params["reason"], v201.BootReasonEnumType)
        modem = station.get("modem")
        if modem is not None:
            assert_type(modem.get("iccid"), str | None)
        return {"status": "Accepted", "currentTime": "2025-01-01T00:00:00Z", "interval": 300}

    @v201.handler(server, "Heartbeat")
    async def heartbeat(call: Call[v201.HeartbeatRequest]) -> v201.HeartbeatResponse:
        return {"currentTime": "2025-01-01T00:00:00Z"}

    @v201.handler(server, "TransactionEvent")
    def transaction(call: Call[v201.TransactionEventRequest]) -> v201.TransactionEventResponse:
        for meter_value in call.params.get("meterValue", []):
            for sampled in meter_value["sampledValue"]:
                assert_type(sampled["value"], float)
        if call.params["eventType"] == "Started":
            return {"idTokenInfo": {"status": "Accepted"}}
        return {}

    @v201.handler(server, "StatusNotification")
    def status(call: Call[v201.StatusNotificationRequest]) -> Any:
        return NOREPLY  # answering nothing is a valid handler result

    # A handler written before typed payloads: a bare `Call` still type-checks.
    def legacy(call: Call) -> dict[str, Any]:
        return {"params": call.params}

    server.handle("DataTransfer", legacy)


async def manage(client: ServerClient) -> None:
    result = await v201.call(
        client,
        "GetVariables",
        {
            "getVariableData": [
                {
                    "component": {"name": "OCPPCommCtrlr"},
                    "variable": {"name": "HeartbeatInterval"},
                    "attributeType": "Actual",
                    "customData": {"vendorId": "com.example"},
                }
            ]
        },
        timeout=10,
    )
    assert_type(result, v201.GetVariablesResponse)
    for item in result["getVariableResult"]:
        assert_type(item["attributeStatus"], v201.GetVariableStatusEnumType)
        value = item.get("attributeValue")
        assert_type(value, str | None)

    reset: v201.ResetRequest = {"type": "OnIdle"}
    answer = await v201.call(client, "Reset", reset)
    assert_type(answer["status"], v201.ResetStatusEnumType)

    profile: v201.ChargingProfileType = {
        "id": 1,
        "stackLevel": 0,
        "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Absolute",
        "chargingSchedule": [
            {
                "id": 1,
                "chargingRateUnit": "W",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000}],
            }
        ],
    }
    await v201.call(client, "SetChargingProfile", {"evseId": 1, "chargingProfile": profile})


async def on_heartbeat(call: Call[v201.HeartbeatRequest]) -> v201.HeartbeatResponse:
    return {"currentTime": "2025-01-01T00:00:00Z"}


async def registered_by_a_plain_call(server: RPCServer, call: Call[v201.HeartbeatRequest]) -> None:
    # Not as a decorator: the name keeps its own type, so a test can await it.
    assert v201.handler(server, "Heartbeat")(on_heartbeat) is on_heartbeat
    assert_type((await on_heartbeat(call))["currentTime"], str)
