"""OCPP 2.1 with the typed API, and the payload types used on their own."""

from __future__ import annotations

from typing import assert_type

from ocpp_rpc import Call, RPCClient, v21


class VendorData(v21.CustomDataType):
    """customData takes vendor keys: a TypedDict that extends CustomDataType."""

    firmwareChannel: str


async def run(client: RPCClient) -> None:
    custom: VendorData = {"vendorId": "com.example", "firmwareChannel": "beta"}
    boot = await v21.call(
        client,
        "BootNotification",
        {
            "reason": "PowerUp",
            "chargingStation": {"model": "One", "vendorName": "Acme"},
            "customData": custom,
        },
    )
    assert_type(boot["status"], v21.RegistrationStatusEnumType)

    @v21.handler(client, "SetDERControl")
    def set_der(call: Call[v21.SetDERControlRequest]) -> v21.SetDERControlResponse:
        assert_type(call.params["isDefault"], bool)
        return {"status": "Accepted"}

    stream: v21.NotifyPeriodicEventStreamRequest = {
        "id": 1, "pending": 0, "basetime": "2025-01-01T00:00:00Z", "data": [{"t": 0.5, "v": "1"}],
    }
    await client.send("NotifyPeriodicEventStream", stream)  # SEND: no response type
