"""Round trips per second over loopback, one process per run, side by side with
the Node ocpp-rpc anchor. Prints one table; no assertions.

    python benchmarks/roundtrip.py [--calls 5000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def ours(backend: str, calls: int, concurrency: int, strict: bool = False) -> dict[str, float]:
    """One measurement of ocpp_rpc: a server and a client in this process."""
    import anyio

    from ocpp_rpc import RPCClient, RPCServer

    async def main() -> dict[str, float]:
        async with RPCServer(protocols=["ocpp1.6"], ping_interval=None,
                             strict_mode=strict) as server:
            server.handle("Heartbeat", lambda call: {"currentTime": "2024-01-01T00:00:00Z"})
            listening = await server.listen()
            url = f"ws://127.0.0.1:{listening.port}"
            async with RPCClient(url, "BENCH", protocols=["ocpp1.6"], ping_interval=None,
                                 call_concurrency=concurrency, reconnect=False,
                                 strict_mode=strict) as client:
                for _ in range(200):
                    await client.call("Heartbeat")
                cpu0, start = time.process_time(), time.perf_counter()
                if concurrency == 1:
                    for _ in range(calls):
                        await client.call("Heartbeat")
                else:
                    async with anyio.create_task_group() as tg:
                        for _ in range(calls):
                            tg.start_soon(client.call, "Heartbeat")
                seconds = time.perf_counter() - start
                return {"calls": calls, "seconds": seconds, "cpu": time.process_time() - cpu0}

    return anyio.run(main, backend=backend)


def run_child(args: list[str]) -> dict[str, float]:
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=300).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", nargs=3, metavar=("BACKEND", "CONCURRENCY", "STRICT"))
    args = parser.parse_args()
    if args.child:
        backend, concurrency, strict = args.child
        print(json.dumps(ours(backend, args.calls, int(concurrency), strict == "strict")))
        return
    node_modules = Path(os.environ.get(
        "OCPP_RPC_NODE_MODULES", HERE.parent / ".interop" / "node" / "node_modules"))
    rows = []
    for concurrency in (1, 100):
        contenders: dict[str, list[str]] = {}
        for backend in ("asyncio", "trio"):
            for strict in ("plain", "strict") if concurrency == 1 else ("plain",):
                name = f"ocpp_rpc {backend}" + (" strict" if strict == "strict" else "")
                contenders[name] = [sys.executable, __file__, "--calls", str(args.calls),
                                    "--child", backend, str(concurrency), strict]
        if shutil.which("node") and (node_modules / "ocpp-rpc").exists():
            contenders["Node ocpp-rpc 2.2.1"] = [
                "node", str(HERE / "node_roundtrip.js"), str(args.calls), str(concurrency)]
        results = {}
        for name, argv in contenders.items():
            samples = [run_child(argv) for _ in range(args.runs)]
            rate = statistics.median(s["calls"] / s["seconds"] for s in samples)
            cpu_us = statistics.median(1e6 * s["cpu"] / s["calls"] for s in samples)
            results[name] = (rate, cpu_us)
        anchor = results.get("Node ocpp-rpc 2.2.1", (None, None))[0]
        for name, (rate, cpu_us) in results.items():
            ratio = f"{rate / anchor:.2f}x" if anchor else "-"
            rows.append((f"{concurrency} in flight", name, f"{rate:,.0f}", f"{cpu_us:.0f}", ratio))
    header = ("scenario", "implementation", "calls/s", "CPU µs/call", "vs Node")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(5)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    print(f"(median of {args.runs} runs x {args.calls} Heartbeat calls, one process each, "
          f"client and server in the same process, loopback)")


if __name__ == "__main__":
    main()
