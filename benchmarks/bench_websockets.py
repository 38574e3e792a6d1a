"""The Python anchors of bench.py; prints one JSON line. Runs in the interop venv
(mobilityhouse `ocpp` 2.1.0 + `websockets` 17.4), plain asyncio.

    .interop/venv/bin/python benchmarks/bench_websockets.py IMPL SCENARIO
        [--frame Heartbeat|MeterValues] [--calls N] [--clients N] [--conns N]

IMPL: `ocpp` (a ChargePoint with @on handlers on both sides, over websockets;
the package's defaults, which validate every payload against its schema) or
`echo` (bare websockets: the client sends the CALL frame, the server decodes it
and answers the CALLRESULT frame; the floor any Python library on websockets
stands on). Scenarios as in bench_ours.py.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (
    FRAMES,
    Child,
    collect,
    finish,
    latency_stats,
    read_parent,
    rss_bytes,
    tell_parent,
)

PROTOCOL = "ocpp1.6"
logging.getLogger("ocpp").setLevel(logging.WARNING)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# -- the two implementations: a peer object per connection -----------------------------


class OcppPeer:
    """mobilityhouse: one ChargePoint per connection, serving it with .start()."""

    def __init__(self, ws: Any, identity: str) -> None:
        from ocpp.routing import on
        from ocpp.v16 import ChargePoint, call, call_result

        heartbeat_result = FRAMES["Heartbeat"]["result"]

        class Peer(ChargePoint):  # type: ignore[misc]
            @on("Heartbeat")
            def on_heartbeat(self) -> Any:
                return call_result.Heartbeat(current_time=heartbeat_result["currentTime"])

            @on("MeterValues")
            def on_meter_values(self, connector_id: int, meter_value: Any,
                                transaction_id: int | None = None) -> Any:
                return call_result.MeterValues()

        self.cp = Peer(identity, ws)
        self._payloads = {
            method: getattr(call, method)(**{_snake(k): v for k, v in frame["params"].items()})
            for method, frame in FRAMES.items()
        }

    async def serve(self) -> None:
        try:
            await self.cp.start()
        except Exception:  # the connection closed
            pass

    async def call(self, method: str) -> Any:
        return await self.cp.call(self._payloads[method])


class EchoPeer:
    """Bare websockets: JSON frames, a pending table, one reader per connection."""

    _ids = itertools.count(1)

    def __init__(self, ws: Any, identity: str) -> None:
        self.ws = ws
        self.pending: dict[str, asyncio.Future[Any]] = {}

    async def serve(self) -> None:
        ws = self.ws
        try:
            async for text in ws:
                message = json.loads(text)
                if message[0] == 2:
                    result = FRAMES[message[2]]["result"]
                    await ws.send(json.dumps([3, message[1], result], separators=(",", ":")))
                elif message[0] == 3:
                    future = self.pending.pop(message[1], None)
                    if future is not None:
                        future.set_result(message[2])
        except Exception:
            pass

    async def call(self, method: str) -> Any:
        message_id = str(next(self._ids))
        future = asyncio.get_running_loop().create_future()
        self.pending[message_id] = future
        params = FRAMES[method]["params"]
        await self.ws.send(json.dumps([2, message_id, method, params], separators=(",", ":")))
        return await future


IMPLS = {"ocpp": OcppPeer, "echo": EchoPeer}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.peer_class = IMPLS[args.impl]
        self.server_peers: list[Any] = []
        self.connected = asyncio.Event()

    async def handler(self, ws: Any) -> None:
        peer = self.peer_class(ws, ws.request.path.strip("/"))
        self.server_peers.append(peer)
        if len(self.server_peers) >= self.args.clients:
            self.connected.set()
        await peer.serve()

    def serve(self, **options: Any) -> Any:
        return serve(self.handler, "127.0.0.1", 0, subprotocols=[PROTOCOL], **options)

    async def open_client(self, port: int, identity: str, **options: Any) -> tuple[Any, Any]:
        ws = await connect(f"ws://127.0.0.1:{port}/{identity}", subprotocols=[PROTOCOL],
                           **options)
        peer = self.peer_class(ws, identity)
        task = asyncio.create_task(peer.serve())
        return peer, task

    async def calls(self, peers: list[Any], calls: int) -> dict[str, Any]:
        method = self.args.frame

        async def run(peer: Any) -> None:
            for _ in range(calls):
                await peer.call(method)

        cpu0, start = time.process_time(), time.perf_counter()
        await asyncio.gather(*(run(p) for p in peers))
        return {"calls": calls * len(peers), "seconds": time.perf_counter() - start,
                "cpu": time.process_time() - cpu0}


async def warm_client(b: Bench, server: Any) -> Any:
    """One client of `server`, after 200 warm-up calls."""
    port = server.sockets[0].getsockname()[1]
    peer, _ = await b.open_client(port, "BENCH", ping_interval=None)
    for _ in range(min(200, b.args.calls)):
        await peer.call(b.args.frame)
    return peer


async def seq(b: Bench) -> dict[str, Any]:
    args = b.args
    async with b.serve(ping_interval=None) as server:
        peer = await warm_client(b, server)
        times = []
        clock = time.perf_counter
        cpu0, start = time.process_time(), clock()
        for _ in range(args.calls):
            t0 = clock()
            await peer.call(args.frame)
            times.append(clock() - t0)
        seconds = clock() - start
        cpu = time.process_time() - cpu0
        return {"calls": args.calls, "seconds": seconds, "cpu": cpu, **latency_stats(times)}


async def inflight(b: Bench) -> dict[str, Any]:
    args = b.args
    async with b.serve(ping_interval=None) as server:
        peer = await warm_client(b, server)
        cpu0, start = time.process_time(), time.perf_counter()
        await asyncio.gather(*(peer.call(args.frame) for _ in range(args.calls)))
        return {"calls": args.calls, "seconds": time.perf_counter() - start,
                "cpu": time.process_time() - cpu0}


async def many(b: Bench) -> dict[str, Any]:
    async with b.serve(ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        peers = [(await b.open_client(port, f"CP{i}", ping_interval=None))[0]
                 for i in range(b.args.clients)]
        return await b.calls(peers, b.args.calls)


async def server_calls(b: Bench) -> dict[str, Any]:
    async with b.serve(ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        for i in range(b.args.clients):
            await b.open_client(port, f"CP{i}", ping_interval=None)
        await asyncio.wait_for(b.connected.wait(), 60)
        return await b.calls(b.server_peers, b.args.calls)


async def settle() -> None:
    await asyncio.sleep(0.3)
    collect()


async def idle(b: Bench) -> dict[str, Any]:
    args = b.args
    b.args.clients = args.conns
    async with b.serve() as server:  # defaults: keep-alive pings on
        port = server.sockets[0].getsockname()[1]
        child = Child([sys.executable, __file__, args.impl, "idle-clients",
                       "--conns", str(args.conns), "--port", str(port)])
        try:
            await asyncio.to_thread(child.expect, "warm")
            b.server_peers.clear()
            await settle()
            base = rss_bytes()
            child.say("go")
            report = await asyncio.to_thread(child.expect, "ready")
            await asyncio.wait_for(b.connected.wait(), 60)
            await settle()
            held = rss_bytes() - base
            connected = len(b.server_peers)
        finally:
            await asyncio.to_thread(child.close)
    return {"conns": connected, "setup_seconds": report["setup_seconds"],
            "server_rss": held / connected, "client_rss": report["rss"] / connected}


async def idle_clients(b: Bench) -> None:
    args = b.args
    peer, task = await b.open_client(args.port, "WARM")
    await peer_close(peer, task)
    tell_parent("warm")
    await asyncio.to_thread(read_parent)
    await settle()
    base = rss_bytes()
    semaphore = asyncio.Semaphore(100)

    async def open_one(i: int) -> Any:
        async with semaphore:
            return await b.open_client(args.port, f"IDLE{i}")

    start = time.perf_counter()
    held = await asyncio.gather(*(open_one(i) for i in range(args.conns)))
    seconds = time.perf_counter() - start
    await settle()
    tell_parent("ready", setup_seconds=seconds, rss=rss_bytes() - base)
    while await asyncio.to_thread(read_parent):
        pass
    del held
    finish(None)


async def peer_close(peer: Any, task: asyncio.Task[Any]) -> None:
    ws = peer.cp._connection if hasattr(peer, "cp") else peer.ws
    await ws.close()
    await task


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("impl", choices=sorted(IMPLS))
    parser.add_argument("scenario",
                        choices=["seq", "inflight", "many", "server", "idle", "idle-clients"])
    parser.add_argument("--frame", default="Heartbeat", choices=sorted(FRAMES))
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--conns", type=int, default=2000)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    scenario = {"seq": seq, "inflight": inflight, "many": many, "server": server_calls,
                "idle": idle, "idle-clients": idle_clients}[args.scenario]
    finish(asyncio.run(scenario(Bench(args))))


if __name__ == "__main__":
    main()
