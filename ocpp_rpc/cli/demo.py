"""``ocpp-rpc demo``: a CSMS and charge points talking over loopback, every
frame printed. Built on the public API only, like a user's program."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import anyio

from .. import RPCClient, RPCServer, ServerClient, v16, v201
from .answers import CSMSDefaults, answer_as_charge_point
from .common import EXIT_BROKEN_PIPE, EXIT_OK
from .output import BOLD, GREEN, Output
from .simulation import charger_store, run_session, transaction_call


async def run_demo(
    *, chargers: int = 2, out: TextIO | Output = sys.stdout, store: str | None = None
) -> None:
    """Start a CSMS, connect `chargers` charge points (odd ones OCPP 1.6, even
    ones 2.0.1), let each boot, report status, heartbeat and run one
    transaction, then let the CSMS call each charger once. With `store` (a
    directory) the charge points send transaction messages as durable calls."""
    output = out if isinstance(out, Output) else Output(out)
    async with RPCServer(protocols=["ocpp2.0.1", "ocpp1.6"]) as csms:
        CSMSDefaults().register(csms)

        def show(client: ServerClient) -> None:
            def print_frame(event: Any) -> None:
                output.frame("CSMS", client.identity, event.outbound, event.message)

            client.on("message", print_frame)
            output.emit(
                "connected", output.style(f"CSMS: {client.identity} connected ({client.protocol})",
                                          BOLD),
                identity=client.identity, protocol=client.protocol)

        csms.on("client", show)
        listening = await csms.listen()
        url = f"ws://127.0.0.1:{listening.port}/ocpp"
        output.emit("listening", f"CSMS listening on {url}", url=url, port=listening.port)

        sessions_done = 0
        all_done = anyio.Event()
        finished = anyio.Event()

        async def charge_point(number: int) -> None:
            nonlocal sessions_done
            identity = f"CP{number}"
            protocol = "ocpp1.6" if number % 2 else "ocpp2.0.1"
            cp_store = charger_store(store, identity)
            async with RPCClient(url, identity, protocols=[protocol], reconnect=False,
                                 store=cp_store) as cp:
                cp.handle(answer_as_charge_point)
                await run_session(cp.call if cp_store is None else transaction_call(cp), protocol,
                                  serial=f"DEMO-{number:04d}", meter_values=1)
                sessions_done += 1
                if sessions_done == chargers:
                    all_done.set()
                await finished.wait()

        async with anyio.create_task_group() as tg:
            for number in range(1, chargers + 1):
                tg.start_soon(charge_point, number)
            with anyio.fail_after(30):
                await all_done.wait()
            # The server-initiated call: the CSMS asks every charger for its configuration.
            for identity, client in sorted(csms.clients.items()):
                result: Mapping[str, object]
                if client.protocol == "ocpp2.0.1":
                    result = await v201.call(
                        client, "GetBaseReport", {"requestId": 1, "reportBase": "SummaryInventory"})
                else:
                    result = await v16.call(
                        client, "GetConfiguration", {"key": ["HeartbeatInterval"]})
                output.emit("answered", f"CSMS: {identity} answered {json.dumps(result)}",
                            identity=identity, result=result)
            finished.set()
    output.emit(
        "finished",
        output.style("demo finished: every charger booted, ran a transaction and answered "
                     "the CSMS", GREEN),
        chargers=chargers)


async def demo_command(args: argparse.Namespace) -> int:
    """``ocpp-rpc demo``."""
    out = Output(json_lines=args.json)
    with out.until_reader_gone():
        await run_demo(chargers=args.chargers, out=out, store=args.store)
    return EXIT_BROKEN_PIPE if out.reader_gone else EXIT_OK

