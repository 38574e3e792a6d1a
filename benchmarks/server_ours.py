"""ocpp_rpc's RPCServer alone in a process, for the raw driver (driver.py).

    python benchmarks/server_ours.py --port P [--backend asyncio|trio] [--uvloop] [--fast]
        [--gc-threshold G0,G1,G2]

Protocols ocpp1.6, default options (keep-alive pings on); answers Heartbeat with
``{"currentTime": ...}`` and anything else with ``{}``. ``--fast`` lets the codec
use orjson (the `fast` extra); without it orjson is hidden, as if not installed.
``--gc-threshold`` calls ``gc.set_threshold(G0, G1, G2)`` first, as an operator
of a big CSMS may (docs/csms.md, "Many charge points").
Commands on stdin, one JSON line each; end of input stops the server:
``{"op": "call", "clients": K, "calls": N, "msg": "gc"|"gcall"}`` waits for K
clients, calls each N times in sequence (all at once) and prints
``{"calls": ..., "seconds": ...}``.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from datetime import datetime, timezone
from typing import Any

PARAMS = {"gc": {"key": ["HeartbeatInterval"]}, "gcall": {}}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--fast", action="store_true", help="let the codec use orjson")
    parser.add_argument("--max-seconds", type=float, default=900)
    parser.add_argument("--gc-threshold", help="G0,G1,G2 for gc.set_threshold")
    args = parser.parse_args()
    if args.gc_threshold:
        gc.set_threshold(*(int(part) for part in args.gc_threshold.split(",")))
    if not args.fast:
        sys.modules["orjson"] = None  # type: ignore[assignment]  # import fails: stdlib json
    import anyio

    from ocpp_rpc import RPCServer

    async def serve() -> None:
        async with RPCServer(protocols=["ocpp1.6"]) as server:
            server.handle("Heartbeat", lambda call: {"currentTime": now()})
            server.handle(lambda call: {})
            await server.listen(args.port)
            with anyio.move_on_after(args.max_seconds):
                stdin = anyio.wrap_file(sys.stdin)
                async for line in stdin:
                    command = json.loads(line)
                    print(json.dumps(await calls(server, **command)), flush=True)
            await server.close(force=True)

    async def calls(server: RPCServer, op: str, clients: int, calls: int, msg: str
                    ) -> dict[str, Any]:
        assert op == "call"
        with anyio.fail_after(60):
            while len(server.clients) < clients:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        params = PARAMS[msg]

        async def run(client: Any) -> None:
            for _ in range(calls):
                await client.call("GetConfiguration", params)

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for client in list(server.clients.values()):
                tg.start_soon(run, client)
        return {"calls": calls * clients, "seconds": time.perf_counter() - start}

    options = {"use_uvloop": True} if args.uvloop else {}
    anyio.run(serve, backend=args.backend, backend_options=options)


if __name__ == "__main__":
    main()
