"""A 1.6 charge point written with the typed API: must pass `mypy --strict` as is."""

from __future__ import annotations

from typing import assert_type

from ocpp_rpc import Call, RPCClient, v16


async def run(client: RPCClient) -> None:
    @v16.handler(client, "RemoteStartTransaction")
    async def remote_start(
        call: Call[v16.RemoteStartTransactionRequest],
    ) -> v16.RemoteStartTransactionResponse:
        profile = call.params.get("chargingProfile")
        if profile is not None:
            assert_type(profile["chargingProfilePurpose"], v16.ChargingProfilePurpose)
            for period in profile["chargingSchedule"]["chargingSchedulePeriod"]:
                assert_type(period["limit"], float)
        return {"status": "Accepted"}

    @v16.handler(client, "GetConfiguration")
    def get_configuration(
        call: Call[v16.GetConfigurationRequest],
    ) -> v16.GetConfigurationResponse:
        keys = call.params.get("key", [])
        return {
            "configurationKey": [{"key": "HeartbeatInterval", "readonly": False, "value": "300"}],
            "unknownKey": [key for key in keys if key != "HeartbeatInterval"],
        }

    boot = await v16.call(
        client, "BootNotification", {"chargePointVendor": "Acme", "chargePointModel": "One"}
    )
    assert_type(boot, v16.BootNotificationResponse)
    if boot["status"] == "Accepted":
        assert_type(boot["interval"], int)

    started = await v16.call(
        client,
        "StartTransaction",
        {"connectorId": 1, "idTag": "TAG", "meterStart": 0, "timestamp": "2025-01-01T00:00:00Z"},
    )
    assert_type(started["idTagInfo"]["status"], v16.IdTagInfoStatus)

    await v16.call(
        client,
        "MeterValues",
        {
            "connectorId": 1,
            "transactionId": started["transactionId"],
            "meterValue": [
                {
                    "timestamp": "2025-01-01T00:01:00Z",
                    "sampledValue": [
                        {"value": "12.5", "measurand": "Energy.Active.Import.Register",
                         "unit": "kWh"},
                    ],
                }
            ],
        },
    )
    heartbeat = await v16.call(client, "Heartbeat", {})
    assert_type(heartbeat["currentTime"], str)
