"""ocpp_rpc's RPCServer alone in a process, for the raw driver (driver.py).

    python benchmarks/server_ours.py --port P [--backend asyncio|trio] [--uvloop] [--fast]
        [--gc-threshold G0,G1,G2] [--gc-stats]

Protocols ocpp1.6, default options (keep-alive pings on); answers Heartbeat with
``{"currentTime": ...}`` and anything else with ``{}``. ``--fast`` lets the codec
use orjson (the `fast` extra); without it orjson is hidden, as if not installed.
``--gc-threshold`` calls ``gc.set_threshold(G0, G1, G2)`` first, as an operator
of a big CSMS may (docs/csms.md, "Many charge points"); ``0,0,0`` switches the
collector off. ``--gc-stats`` times every collection (``gc.callbacks``).
Commands on stdin, one JSON line each; end of input stops the server:
``{"op": "call", "clients": K, "calls": N, "msg": "gc"|"gcall"}`` waits for K
clients, calls each N times in sequence (all at once) and prints
``{"calls": ..., "seconds": ...}``; ``{"op": "gc"}`` (with ``--gc-stats``) prints
the collector's totals so far: ``seconds`` in all collections, ``full_seconds``
in full ones, the ``longest`` full one, ``collections`` per generation, and the
objects it ``tracked`` now.
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


class GCStats:
    """The collector's time, from `gc.callbacks` (``--gc-stats``)."""

    def __init__(self) -> None:
        self.seconds = self.full_seconds = self.longest = 0.0
        self.collections = [0, 0, 0]
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        generation = info["generation"]
        self.seconds += took
        self.collections[generation] += 1
        if generation == 2:
            self.full_seconds += took
            self.longest = max(self.longest, took)

    def report(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "full_seconds": self.full_seconds,
                "longest": self.longest, "collections": self.collections,
                "tracked": len(gc.get_objects())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--fast", action="store_true", help="let the codec use orjson")
    parser.add_argument("--max-seconds", type=float, default=900)
    parser.add_argument("--gc-threshold", help="G0,G1,G2 for gc.set_threshold")
    parser.add_argument("--gc-stats", action="store_true", help="time the collector")
    args = parser.parse_args()
    stats = GCStats() if args.gc_stats else None
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
                    if command["op"] == "gc":
                        assert stats is not None, "start with --gc-stats"
                        print(json.dumps(stats.report()), flush=True)
                        continue
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
