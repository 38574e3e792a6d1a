"""A server-initiated call: as soon as a charge point connects, the CSMS reads
one of its variables and asks it to reset. Runs a CSMS and an OCPP 2.0.1
charge point in one process, then exits.

    python examples/server_call.py
"""

from __future__ import annotations

import anyio

from ocpp_rpc import Call, RPCClient, RPCError, RPCServer, ServerClient, v201


async def main() -> None:
    async with RPCServer(protocols=["ocpp2.0.1"]) as server:
        done = anyio.Event()

        @server.on_client
        async def on_client(client: ServerClient) -> None:
            # Runs in the client's own task group: it can call the charger,
            # and it is cancelled if the charger goes away.
            # ocpp_rpc.v201.call: the payload and the result are typed for mypy.
            variables = await v201.call(client, "GetVariables", {"getVariableData": [{
                "component": {"name": "OCPPCommCtrlr"},
                "variable": {"name": "HeartbeatInterval"}}]})
            print("CSMS: HeartbeatInterval is",
                  variables["getVariableResult"][0].get("attributeValue"))
            try:
                reset = await v201.call(client, "Reset", {"type": "OnIdle"}, timeout=5)
                print("CSMS: Reset answered", reset["status"])
            except RPCError as exc:  # a CALLERROR arrives as the RPCError subclass
                print("CSMS: Reset refused:", exc.code, exc.message)
            done.set()

        listening = await server.listen()
        async with RPCClient(f"ws://127.0.0.1:{listening.port}/ocpp", "CP001",
                             protocols=["ocpp2.0.1"]) as cp:

            @v201.handler(cp, "GetVariables")
            def get_variables(call: Call[v201.GetVariablesRequest]) -> v201.GetVariablesResponse:
                return {"getVariableResult": [
                    {"attributeStatus": "Accepted", "attributeValue": "300",
                     "component": item["component"], "variable": item["variable"]}
                    for item in call.params["getVariableData"]]}

            @v201.handler(cp, "Reset")
            def reset(call: Call[v201.ResetRequest]) -> v201.ResetResponse:
                print("charger: reset requested:", call.params["type"])
                return {"status": "Scheduled"}

            with anyio.fail_after(10):
                await done.wait()


if __name__ == "__main__":
    anyio.run(main)
