"""Calls and handlers that must not type-check: each bad line announces mypy's error.

A payload written inline in `call` fails overload resolution as a whole (mypy:
"No overload variant of "call" matches argument types ..."); annotated
payloads (bad_payloads.py) get the precise message."""

from __future__ import annotations

from ocpp_rpc import Call, RPCClient, RPCServer, v16, v201


async def calls(client: RPCClient) -> None:
    station: v201.ChargingStationType = {"model": "One", "vendorName": "Acme"}
    # a misspelled key, an unknown enumeration value, a missing required key
    await v201.call(  # E: No overload variant of "call" matches argument types "RPCClient", "str", "dict[str, Collection[str]]"
        client, "BootNotification", {"reasn": "PowerUp", "chargingStation": station}
    )
    await v201.call(  # E: No overload variant of "call" matches argument types "RPCClient", "str", "dict[str, Collection[str]]"
        client, "BootNotification", {"reason": "Reboot", "chargingStation": station}
    )
    await v201.call(  # E: No overload variant of "call" matches argument types "RPCClient", "str", "dict[str, ChargingStationType]"
        client, "BootNotification", {"chargingStation": station}
    )
    # a wrong type and a missing key, in 1.6
    await v16.call(  # E: No overload variant of "call" matches argument types "RPCClient", "str", "dict[str, object]"
        client, "StartTransaction", {"connectorId": "1", "idTag": "T", "meterStart": 0}
    )
    # actions that do not exist in that version
    await v201.call(  # E: No overload variant of "call" matches argument types "RPCClient", "str", "dict[str, object]"
        client, "StartTransaction", {"connectorId": 1, "idTag": "T"}
    )
    await v16.call(client, "TransactionEvent", {})  # E: No overload variant of "call" matches argument types "RPCClient", "str", "dict[Never, Never]"
    # the result is the response type
    result = await v201.call(client, "Heartbeat", {})
    result["currentTme"]  # E: TypedDict "HeartbeatResponse" has no key "currentTme"
    seconds: int = result["currentTime"]  # E: Incompatible types in assignment (expression has type "str", variable has type "int")
    print(seconds)


def handlers(server: RPCServer) -> None:
    @v201.handler(server, "BootNotification")
    def boot(call: Call[v201.BootNotificationRequest]) -> v201.BootNotificationResponse:
        return {"status": "Accepted", "currentTime": "2025-01-01T00:00:00Z"}  # E: Missing key "interval" for TypedDict "BootNotificationResponse"

    # a handler whose result is another action's response
    @v201.handler(server, "BootNotification")  # E: Argument 1 has incompatible type "Callable[[Call[BootNotificationRequest]], HeartbeatResponse]"; expected "Callable[[Call[BootNotificationRequest]], BootNotificationResponse | Awaitable[BootNotificationResponse]]"
    def wrong_result(call: Call[v201.BootNotificationRequest]) -> v201.HeartbeatResponse:
        return {"currentTime": "2025-01-01T00:00:00Z"}

    # a handler that takes another action's request
    @v201.handler(server, "Heartbeat")  # E: Argument 1 has incompatible type "Callable[[Call[BootNotificationRequest]], Coroutine[Any, Any, HeartbeatResponse]]"; expected "Callable[[Call[HeartbeatRequest]], HeartbeatResponse | Awaitable[HeartbeatResponse]]"
    async def wrong_params(call: Call[v201.BootNotificationRequest]) -> v201.HeartbeatResponse:
        return {"currentTime": "2025-01-01T00:00:00Z"}

    @v201.handler(server, "Heartbeat")
    def reads_a_missing_key(call: Call[v201.HeartbeatRequest]) -> v201.HeartbeatResponse:
        return {"currentTime": call.params["currentTime"]}  # E: TypedDict "HeartbeatRequest" has no key "currentTime"

    # an action that does not exist in that version
    @v16.handler(server, "GetVariables")  # E: No overload variant of "handler" matches argument types "RPCServer", "str"  # E: Untyped decorator makes function "not_in_16" untyped
    def not_in_16(call: Call[v201.GetVariablesRequest]) -> v201.GetVariablesResponse:
        return {"getVariableResult": []}
