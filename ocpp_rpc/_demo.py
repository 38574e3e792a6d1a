"""A demo CSMS and charge point talking over loopback, printing the traffic."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import Any, TextIO

import anyio

from ._client import RPCClient
from ._events import MessageEvent
from ._handlers import Call
from ._server import RPCServer, ServerClient


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


async def run_demo(*, chargers: int = 2, out: TextIO = sys.stdout) -> None:
    """Start a CSMS, connect `chargers` charge points, exchange BootNotification,
    Heartbeat and StatusNotification, and let the CSMS call each charger once."""

    def show(identity: str) -> Any:
        def print_frame(event: MessageEvent) -> None:
            arrow = "->" if event.outbound else "<-"
            print(f"CSMS {arrow} {identity:<4} {event.message!s}", file=out, flush=True)

        return print_frame

    async with RPCServer(protocols=["ocpp2.0.1", "ocpp1.6"]) as csms:
        booted = {"count": 0}
        all_booted = anyio.Event()

        @csms.handler("BootNotification")
        def boot(call: Call) -> dict[str, Any]:
            booted["count"] += 1
            if booted["count"] == chargers:
                all_booted.set()
            return {"status": "Accepted", "currentTime": _now(), "interval": 300}

        @csms.handler("Heartbeat")
        def heartbeat(call: Call) -> dict[str, Any]:
            return {"currentTime": _now()}

        @csms.handler("StatusNotification")
        def status(call: Call) -> dict[str, Any]:
            return {}

        @csms.on_client
        async def greet(client: ServerClient) -> None:
            client.on("message", show(client.identity))
            print(f"CSMS: {client.identity} connected ({client.protocol})", file=out)

        listening = await csms.listen()
        url = f"ws://127.0.0.1:{listening.port}/ocpp"
        print(f"CSMS listening on {url}", file=out)

        async def charge_point(number: int) -> None:
            identity = f"CP{number}"
            protocol = "ocpp1.6" if number % 2 else "ocpp2.0.1"
            async with RPCClient(url, identity, protocols=[protocol]) as cp:

                @cp.handler("GetBaseReport" if protocol == "ocpp2.0.1" else "GetConfiguration")
                def report(call: Call) -> dict[str, Any]:
                    if protocol == "ocpp2.0.1":
                        return {"status": "Accepted"}
                    return {"configurationKey": [
                        {"key": "HeartbeatInterval", "readonly": False, "value": "300"}
                    ]}

                if protocol == "ocpp1.6":
                    await cp.call("BootNotification", {
                        "chargePointVendor": "Demo", "chargePointModel": "PyCharger"})
                    await cp.call("StatusNotification", {
                        "connectorId": 1, "errorCode": "NoError", "status": "Available"})
                else:
                    await cp.call("BootNotification", {
                        "chargingStation": {"vendorName": "Demo", "model": "PyCharger"},
                        "reason": "PowerUp"})
                    await cp.call("StatusNotification", {
                        "timestamp": _now(), "connectorStatus": "Available",
                        "evseId": 1, "connectorId": 1})
                await cp.call("Heartbeat")
                await finished.wait()

        finished = anyio.Event()
        async with anyio.create_task_group() as tg:
            for number in range(1, chargers + 1):
                tg.start_soon(charge_point, number)
            with anyio.fail_after(10):
                await all_booted.wait()
            for identity, client in sorted(csms.clients.items()):
                if client.protocol == "ocpp2.0.1":
                    result = await client.call(
                        "GetBaseReport", {"requestId": 1, "reportBase": "SummaryInventory"})
                else:
                    result = await client.call("GetConfiguration", {"key": ["HeartbeatInterval"]})
                print(f"CSMS: {identity} answered {result}", file=out)
            finished.set()
    print("demo finished: every charger booted and answered the CSMS", file=out)
