"""A charge point (OCPP 1.6) on Trio that charges once: Authorize,
StartTransaction, MeterValues every few seconds, StopTransaction. Handlers
and calls are exactly what they would be on asyncio.

    python examples/csms.py &                # or `ocpp-rpc serve`
    python examples/trio_charge_point.py --url ws://127.0.0.1:9000/ocpp
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone

import trio

from ocpp_rpc import Call, ConnectError, RPCClient, RPCError, v16


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


async def main(url: str, identity: str, meter_interval: float) -> None:
    stop_requested = trio.Event()
    async with RPCClient(url, identity, protocols=["ocpp1.6"]) as cp:

        # Typed handlers and calls (ocpp_rpc.v16): mypy checks every key and value.
        @v16.handler(cp, "RemoteStopTransaction")
        async def remote_stop(
            call: Call[v16.RemoteStopTransactionRequest],
        ) -> v16.RemoteStopTransactionResponse:
            stop_requested.set()
            return {"status": "Accepted"}

        await v16.call(cp, "BootNotification", {"chargePointVendor": "ACME",
                                                "chargePointModel": "TrioCharger"})
        try:
            auth = await v16.call(cp, "Authorize", {"idTag": "04E1A2B3C4"})
        except RPCError as exc:  # e.g. a CSMS without an Authorize handler
            print("Authorize failed:", exc.code, exc.message)
            return
        print("Authorize:", auth["idTagInfo"]["status"])
        try:
            started = await v16.call(cp, "StartTransaction", {
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
                await v16.call(cp, "MeterValues", {
                    "connectorId": 1, "transactionId": transaction_id,
                    "meterValue": [{"timestamp": now(),
                                    "sampledValue": [{"value": str(meter), "unit": "Wh"}]}]})
        await v16.call(cp, "StopTransaction", {"transactionId": transaction_id,
                                               "meterStop": meter, "timestamp": now()})
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
