"""A charge point (OCPP 2.0.1) on asyncio: boots, reports its connector,
answers the CSMS's Reset and GetBaseReport, and sends heartbeats.

    python examples/csms.py &                # or any CSMS, e.g. `ocpp-rpc serve`
    python examples/charge_point.py --url ws://127.0.0.1:9000/ocpp --identity CP001
    python examples/charge_point.py --once   # boot, one heartbeat, exit
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone

import anyio

from ocpp_rpc import Call, ConnectError, RPCClient, v201


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


async def main(url: str, identity: str, once: bool) -> None:
    async with RPCClient(url, identity, protocols=["ocpp2.0.1"]) as cp:

        # Typed handlers and calls (ocpp_rpc.v201): mypy checks every key and value.
        @v201.handler(cp, "Reset")
        def reset(call: Call[v201.ResetRequest]) -> v201.ResetResponse:
            print("the CSMS asks for a reset:", call.params)
            return {"status": "Accepted"}

        @v201.handler(cp, "GetBaseReport")
        def get_base_report(call: Call[v201.GetBaseReportRequest]) -> v201.GetBaseReportResponse:
            return {"status": "Accepted"}

        boot = await v201.call(cp, "BootNotification", {
            "chargingStation": {"vendorName": "ACME", "model": "Example"},
            "reason": "PowerUp",
        })
        print("BootNotification:", boot["status"], "- heartbeat every", boot["interval"], "s")
        await v201.call(cp, "StatusNotification", {
            "timestamp": now(), "connectorStatus": "Available", "evseId": 1, "connectorId": 1,
        })
        while True:
            print("Heartbeat:", (await v201.call(cp, "Heartbeat", {}))["currentTime"])
            if once:
                return
            await anyio.sleep(boot["interval"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:9000/ocpp")
    parser.add_argument("--identity", default="CP001")
    parser.add_argument("--once", action="store_true", help="exit after the first heartbeat")
    args = parser.parse_args()
    try:
        anyio.run(main, args.url, args.identity, args.once)
    except ConnectError as exc:
        raise SystemExit(f"{exc} (is a CSMS running? try: python examples/csms.py)") from None
    except KeyboardInterrupt:
        pass
