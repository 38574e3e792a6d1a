"""Durable calls: what the store costs (see README.md, "Durable calls").

Against a local RPCServer on 127.0.0.1 (client and server in one process):

- ordinary calls/s, one after another (the baseline);
- durable calls/s, one after another (each: write + fsync, send, answer,
  remove + fsync), with an SQLiteStore and with a MemoryStore (the queue
  without the disk);
- durable calls/s when a backlog drains (N calls queued offline, then the
  CSMS comes up: what a charge point does after an outage);
- fsync cost: SQLiteStore.append and .remove latency (median, p99) and a raw
  ``os.fdatasync`` of a 4 KiB append in the same directory, for reference;
- store size per queued call (a 1.6 MeterValues payload).

    python benchmarks/durable_bench.py [--calls 2000] [--backend asyncio|trio]
        [--dir DIR] [--json results.json]

The store lives in --dir (default: a temporary directory under the current
one); put it on the disk a charge point would use: on tmpfs an fsync is free.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import SocketAttribute

from ocpp_rpc import Backoff, RPCClient, RPCServer
from ocpp_rpc.durable import DurableStore, MemoryStore, SQLiteStore

METER_VALUES = {
    "connectorId": 1,
    "transactionId": 123456,
    "meterValue": [{"timestamp": "2026-12-07T01:02:03.456Z", "sampledValue": [
        {"value": "123456.7", "context": "Sample.Periodic",
         "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
        {"value": "7200", "context": "Sample.Periodic", "measurand": "Power.Active.Import",
         "unit": "W"},
    ]}],
}


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def calls_per_second(url: str, calls: int, store: DurableStore | None,
                           durable: bool) -> float:
    async with RPCClient(url, "BENCH", store=store, ping_interval=None) as client:
        for _ in range(min(50, calls)):  # warm-up
            await client.call("MeterValues", METER_VALUES, durable=durable)
        started = time.perf_counter()
        for _ in range(calls):
            await client.call("MeterValues", METER_VALUES, durable=durable)
        return calls / (time.perf_counter() - started)


async def backlog_per_second(server: RPCServer, calls: int, store: DurableStore) -> float:
    """Queue `calls` while the CSMS is down, then time the drain once it listens."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    await listener.aclose()
    url = f"ws://127.0.0.1:{port}"
    async with RPCClient(url, "BACKLOG", store=store, ping_interval=None,
                         backoff=Backoff(initial=0.01, maximum=0.01, jitter=0)) as client:
        drained = anyio.Event()
        delivered = 0

        def count(event: object) -> None:
            nonlocal delivered
            delivered += 1
            if delivered == calls:
                drained.set()

        client.on("durable_result", count)
        for _ in range(calls):
            try:
                await client.call("MeterValues", METER_VALUES, durable=True, timeout=0)
            except TimeoutError:
                pass
        started = time.perf_counter()
        await server.listen(port=port)
        await drained.wait()
        return calls / (time.perf_counter() - started)


def _raw_fsyncs(directory: Path, count: int) -> list[float]:
    """Seconds each of `count` fdatasyncs of a 4 KiB append takes in `directory`."""
    fsyncs = []
    path = directory / "fsync.bin"
    with open(path, "wb") as file:
        for _ in range(count):
            file.write(b"x" * 4096)
            file.flush()
            started = time.perf_counter()
            os.fdatasync(file.fileno())  # what SQLite calls on Linux
            fsyncs.append(time.perf_counter() - started)
    path.unlink()
    return fsyncs


def _size(directory: Path, pattern: str) -> int:
    return sum(path.stat().st_size for path in directory.glob(pattern))


async def store_latencies(directory: Path, calls: int) -> dict[str, float]:
    store = SQLiteStore(directory / "latency.db")
    await store.open()
    appends, removes = [], []
    keys = []
    for n in range(calls):
        started = time.perf_counter()
        stored = await store.append(f"id{n}", "MeterValues", METER_VALUES)
        appends.append(time.perf_counter() - started)
        keys.append(stored.key)
    for key in keys:
        started = time.perf_counter()
        await store.remove(key)
        removes.append(time.perf_counter() - started)
    await store.close()
    fsyncs = await anyio.to_thread.run_sync(_raw_fsyncs, directory, min(calls, 500))
    return {
        "append_ms_p50": statistics.median(appends) * 1000,
        "append_ms_p99": _percentile(appends, 0.99) * 1000,
        "remove_ms_p50": statistics.median(removes) * 1000,
        "remove_ms_p99": _percentile(removes, 0.99) * 1000,
        "raw_fsync_ms_p50": statistics.median(fsyncs) * 1000,
    }


async def bytes_per_call(directory: Path, calls: int) -> float:
    path = directory / "size.db"
    store = SQLiteStore(path)
    await store.open()
    for n in range(calls):
        await store.append(f"{n:036d}", "MeterValues", METER_VALUES)
    await store.close()  # checkpoints the write-ahead log into the file
    size = await anyio.to_thread.run_sync(_size, directory, "size.db*")
    return size / calls


async def main(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(args.dir) if args.dir else Path.cwd()
    with tempfile.TemporaryDirectory(prefix="durable-bench-", dir=base) as tmp:
        directory = Path(tmp)
        results: dict[str, Any] = {"backend": args.backend, "calls": args.calls,
                                   "directory": str(base)}
        async with RPCServer(ping_interval=None) as server:
            server.handle("MeterValues", lambda call: {})
            listening = await server.listen()
            url = f"ws://127.0.0.1:{listening.port}"
            results["ordinary_calls_per_s"] = await calls_per_second(url, args.calls, None, False)
            results["durable_sqlite_calls_per_s"] = await calls_per_second(
                url, args.calls, SQLiteStore(directory / "seq.db"), True)
            results["durable_memory_calls_per_s"] = await calls_per_second(
                url, args.calls, MemoryStore(), True)
        async with RPCServer(ping_interval=None) as server:
            server.handle("MeterValues", lambda call: {})
            results["backlog_sqlite_calls_per_s"] = await backlog_per_second(
                server, args.calls, SQLiteStore(directory / "backlog.db"))
        results.update(await store_latencies(directory, args.calls))
        results["store_bytes_per_call"] = await bytes_per_call(directory, max(args.calls, 1000))
    return results


def _print(results: dict[str, Any]) -> None:
    print(f"durable calls, {results['calls']} calls, {results['backend']}, "
          f"store in {results['directory']}")
    rows = [
        ("ordinary calls/s (sequential)", f"{results['ordinary_calls_per_s']:.0f}"),
        ("durable calls/s, SQLiteStore (sequential)",
         f"{results['durable_sqlite_calls_per_s']:.0f}"),
        ("durable calls/s, MemoryStore (sequential)",
         f"{results['durable_memory_calls_per_s']:.0f}"),
        ("durable calls/s, SQLiteStore backlog draining",
         f"{results['backlog_sqlite_calls_per_s']:.0f}"),
        ("SQLiteStore.append ms p50 / p99",
         f"{results['append_ms_p50']:.2f} / {results['append_ms_p99']:.2f}"),
        ("SQLiteStore.remove ms p50 / p99",
         f"{results['remove_ms_p50']:.2f} / {results['remove_ms_p99']:.2f}"),
        ("raw fdatasync of a 4 KiB append ms p50", f"{results['raw_fsync_ms_p50']:.2f}"),
        ("store bytes per queued MeterValues", f"{results['store_bytes_per_call']:.0f}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value.rjust(13)} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--dir", help="where the stores live (default: the current directory)")
    parser.add_argument("--json", help="also write the results to this file")
    arguments = parser.parse_args()
    measured = anyio.run(main, arguments, backend=arguments.backend)
    _print(measured)
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(measured, indent=2) + "\n")
    sys.exit(0)
