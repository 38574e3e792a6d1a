"""A charge point (OCPP 1.6) on Trio that charges once: Authorize,
StartTransaction, MeterValues every few seconds, StopTransaction. Handlers
and calls are exactly what they would be on asyncio.

    python examples/csms.py &                # or `ocpp-rpc serve`
    python examples/trio_charge_point.py --url ws://127.0.0.1:9000/ocpp
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import Any

import trio

from ocpp_rpc import Call, ConnectError, RPCClient, RPCError


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


async def main(url: str, identity: str, meter_interval: float) -> None:
    stop_requested = trio.Event()
    async with RPCClient(url, identity, protocols=["ocpp1.6"]) as cp:

        @cp.handler("RemoteStopTransaction")
        async def remote_stop(call: Call) -> dict[str, Any]:
            stop_requested.set()
            return {"status": "Accepted"}

        await cp.call("BootNotification", {"chargePointVendor": "ACME",
                                           "chargePointModel": "TrioCharger"})
        try:
            auth = await cp.call("Authorize", {"idTag": "04E1A2B3C4"})
        except RPCError as exc:  # e.g. a CSMS without an Authorize handler
            print("Authorize failed:", exc.code, exc.message)
            return
        print("Authorize:", auth["idTagInfo"]["status"])
        try:
            started = await cp.call("StartTransaction", {
                "connectorId": 1, "idTag": "04E1A2B3C4", "meterStart": 0, "timestamp": now()})
        except RPCError as exc:
            print("StartTransaction failed:", exc.code, exc.message)
            return
        transaction_id = started["transactionId"]
        print("charging, transaction", transaction_id)
        meter = 0
        with trio.move_on_after(3 * meter_interval + 0.5):  # charge for a while
            while not stop_requested.is_set():
                await trio.sleep(meter_interval)
                meter += 250
                await cp.call("MeterValues", {
                    "connectorId": 1, "transactionId": transaction_id,
                    "meterValue": [{"timestamp": now(),
                                    "sampledValue": [{"value": str(meter), "unit": "Wh"}]}]})
        await cp.call("StopTransaction", {"transactionId": transaction_id, "meterStop": meter,
                                          "timestamp": now()})
        print("stopped after", meter, "Wh")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:9000/ocpp")
    parser.add_argument("--identity", default="CP002")
    parser.add_argument("--meter-interval", type=float, default=1.0, metavar="SECONDS")
    args = parser.parse_args()
    try:
        trio.run(main, args.url, args.identity, args.meter_interval)
    except ConnectError as exc:
        raise SystemExit(f"{exc} (is a CSMS running? try: python examples/csms.py)") from None
    except KeyboardInterrupt:
        pass
