"""One benchmark measurement of ocpp_rpc; prints one JSON line. Run by bench.py.

    python benchmarks/bench_ours.py SCENARIO [--backend asyncio|uvloop|trio]
        [--frame Heartbeat|MeterValues] [--calls N] [--clients N] [--conns N] [--strict]

Scenarios (see README.md): seq (1 and 6), inflight (2), many (3), server (4),
idle (5: this process holds the server side, a child process the clients).
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio

from ocpp_rpc import RPCClient, RPCServer

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

PROTOCOLS = ["ocpp1.6"]


def handlers(target: Any) -> None:
    for method, frame in FRAMES.items():
        target.handle(method, lambda call, result=frame["result"]: result)


def server(strict: bool, **options: Any) -> RPCServer:
    srv = RPCServer(protocols=PROTOCOLS, ping_interval=None, strict_mode=strict, **options)
    handlers(srv)
    return srv


def client(port: int, identity: str, strict: bool = False, **options: Any) -> RPCClient:
    options.setdefault("ping_interval", None)
    return RPCClient(f"ws://127.0.0.1:{port}", identity, protocols=PROTOCOLS, reconnect=False,
                     strict_mode=strict, **options)


async def seq(args: argparse.Namespace) -> dict[str, Any]:
    params = FRAMES[args.frame]["params"]
    async with server(args.strict) as srv:
        port = (await srv.listen()).port
        async with client(port, "BENCH", args.strict) as c:
            for _ in range(min(200, args.calls)):
                await c.call(args.frame, params)
            times = []
            clock = time.perf_counter
            cpu0, start = time.process_time(), clock()
            for _ in range(args.calls):
                t0 = clock()
                await c.call(args.frame, params)
                times.append(clock() - t0)
            seconds = clock() - start
            cpu = time.process_time() - cpu0
    return {"calls": args.calls, "seconds": seconds, "cpu": cpu, **latency_stats(times)}


async def inflight(args: argparse.Namespace) -> dict[str, Any]:
    params = FRAMES[args.frame]["params"]
    async with server(args.strict) as srv:
        port = (await srv.listen()).port
        async with client(port, "BENCH", args.strict, call_concurrency=100) as c:
            for _ in range(min(200, args.calls)):
                await c.call(args.frame, params)
            cpu0, start = time.process_time(), time.perf_counter()
            async with anyio.create_task_group() as tg:
                for _ in range(args.calls):
                    tg.start_soon(c.call, args.frame, params)
            seconds = time.perf_counter() - start
            cpu = time.process_time() - cpu0
    return {"calls": args.calls, "seconds": seconds, "cpu": cpu}


async def many(args: argparse.Namespace) -> dict[str, Any]:
    """`clients` clients, each making `calls` sequential calls into one server."""
    params = FRAMES[args.frame]["params"]
    async with server(args.strict) as srv:
        port = (await srv.listen()).port
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(client(port, f"CP{i}", args.strict))
                       for i in range(args.clients)]

            async def run(c: RPCClient) -> None:
                for _ in range(args.calls):
                    await c.call(args.frame, params)

            cpu0, start = time.process_time(), time.perf_counter()
            async with anyio.create_task_group() as tg:
                for c in clients:
                    tg.start_soon(run, c)
            seconds = time.perf_counter() - start
            cpu = time.process_time() - cpu0
    return {"calls": args.calls * args.clients, "seconds": seconds, "cpu": cpu}


async def server_calls(args: argparse.Namespace) -> dict[str, Any]:
    """The server calls each of `clients` connected clients `calls` times in sequence."""
    params = FRAMES[args.frame]["params"]
    async with server(args.strict) as srv:
        port = (await srv.listen()).port
        async with AsyncExitStack() as stack:
            for i in range(args.clients):
                c = await stack.enter_async_context(client(port, f"CP{i}", args.strict))
                handlers(c)
            while len(srv.clients) < args.clients:  # noqa: ASYNC110
                await anyio.sleep(0.01)

            async def run(sc: Any) -> None:
                for _ in range(args.calls):
                    await sc.call(args.frame, params)

            cpu0, start = time.process_time(), time.perf_counter()
            async with anyio.create_task_group() as tg:
                for sc in list(srv.clients.values()):
                    tg.start_soon(run, sc)
            seconds = time.perf_counter() - start
            cpu = time.process_time() - cpu0
    return {"calls": args.calls * args.clients, "seconds": seconds, "cpu": cpu}


async def settle() -> None:
    await anyio.sleep(0.3)
    collect()


async def idle(args: argparse.Namespace) -> dict[str, Any]:
    """Server side here (default options: keep-alive pings on); clients in a child."""
    async with RPCServer(protocols=PROTOCOLS) as srv:
        handlers(srv)
        port = (await srv.listen()).port
        child = Child([sys.executable, __file__, "idle-clients", "--backend", args.backend,
                       "--conns", str(args.conns), "--port", str(port)])
        try:
            await anyio.to_thread.run_sync(child.expect, "warm")
            await settle()
            base = rss_bytes()
            child.say("go")
            report = await anyio.to_thread.run_sync(child.expect, "ready")
            with anyio.fail_after(60):
                while len(srv.clients) < args.conns:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            await settle()
            held = rss_bytes() - base
            connected = len(srv.clients)
        finally:
            await anyio.to_thread.run_sync(child.close)
    return {"conns": connected, "setup_seconds": report["setup_seconds"],
            "server_rss": held / connected, "client_rss": report["rss"] / connected}


async def idle_clients(args: argparse.Namespace) -> None:
    """Child of `idle`: open `conns` clients (default options, 100 handshakes at
    a time), report, hold them until stdin closes."""
    async with client(args.port, "WARM", ping_interval=30.0):
        pass
    tell_parent("warm")
    await anyio.to_thread.run_sync(read_parent)
    await settle()
    base = rss_bytes()
    limiter = anyio.CapacityLimiter(100)
    opened = 0
    all_open, stop = anyio.Event(), anyio.Event()

    async def hold(i: int) -> None:
        nonlocal opened
        async with AsyncExitStack() as stack:
            async with limiter:
                await stack.enter_async_context(client(args.port, f"IDLE{i}", ping_interval=30.0))
            opened += 1
            if opened == args.conns:
                all_open.set()
            await stop.wait()

    async with anyio.create_task_group() as tg:
        start = time.perf_counter()
        for i in range(args.conns):
            tg.start_soon(hold, i)
        await all_open.wait()
        seconds = time.perf_counter() - start
        await settle()
        tell_parent("ready", setup_seconds=seconds, rss=rss_bytes() - base)
        while await anyio.to_thread.run_sync(read_parent):
            pass
        finish(None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario",
                        choices=["seq", "inflight", "many", "server", "idle", "idle-clients"])
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "uvloop", "trio"])
    parser.add_argument("--frame", default="Heartbeat", choices=sorted(FRAMES))
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--conns", type=int, default=2000)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args()
    scenario = {"seq": seq, "inflight": inflight, "many": many, "server": server_calls,
                "idle": idle, "idle-clients": idle_clients}[args.scenario]
    backend, options = args.backend, {}
    if backend == "uvloop":
        backend, options = "asyncio", {"use_uvloop": True}
    finish(anyio.run(scenario, args, backend=backend, backend_options=options))


if __name__ == "__main__":
    main()
