"""A minimal CSMS (central system) for OCPP 1.6 and 2.0.1 charge points.

    python examples/csms.py                  # ws://127.0.0.1:9000/ocpp/<identity>
    python examples/csms.py --port 0 --duration 10

Charge points connect to ``ws://127.0.0.1:9000/ocpp/CP001``; the CSMS accepts
their BootNotification, answers Heartbeat, StatusNotification, Authorize and
the transaction messages of both versions, and logs each connection.
``--duration`` stops it after that many seconds.
"""

from __future__ import annotations

import argparse
import itertools
import logging
from datetime import datetime, timezone
from typing import Any

import anyio

from ocpp_rpc import Call, RPCServer, ServerClient

log = logging.getLogger("csms")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


async def main(port: int, duration: float | None) -> None:
    async with RPCServer(protocols=["ocpp2.0.1", "ocpp1.6"]) as server:

        @server.handler("BootNotification")
        def boot_notification(call: Call) -> dict[str, Any]:
            log.info("%s booted: %s", call.client.identity, call.params)
            return {"status": "Accepted", "currentTime": now(), "interval": 300}

        @server.handler("Heartbeat")
        def heartbeat(call: Call) -> dict[str, Any]:
            return {"currentTime": now()}

        @server.handler("StatusNotification")
        def status_notification(call: Call) -> dict[str, Any]:
            log.info("%s status: %s", call.client.identity, call.params)
            return {}

        @server.handler("Authorize")
        def authorize(call: Call) -> dict[str, Any]:
            if call.protocol == "ocpp1.6":
                return {"idTagInfo": {"status": "Accepted"}}
            return {"idTokenInfo": {"status": "Accepted"}}

        transaction_ids = itertools.count(1)

        @server.handler("StartTransaction")  # 1.6
        def start_transaction(call: Call) -> dict[str, Any]:
            return {"transactionId": next(transaction_ids), "idTagInfo": {"status": "Accepted"}}

        @server.handler("MeterValues")
        @server.handler("StopTransaction")  # 1.6
        @server.handler("TransactionEvent")  # 2.0.1
        def acknowledge(call: Call) -> dict[str, Any]:
            log.info("%s %s: %s", call.client.identity, call.method, call.params)
            return {}

        @server.on_client
        async def on_client(client: ServerClient) -> None:
            log.info("%s connected (%s)", client.identity, client.protocol)
            client.on("close", lambda result: log.info("%s left: %s", client.identity, result))

        listening = await server.listen(port, host="127.0.0.1")
        print(f"listening on ws://127.0.0.1:{listening.port}/ocpp", flush=True)
        with anyio.move_on_after(duration if duration is not None else float("inf")):
            await anyio.sleep_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        anyio.run(main, args.port, args.duration)
    except KeyboardInterrupt:
        pass
