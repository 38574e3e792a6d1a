"""Soak: N clients calling both ways for M seconds, with faults injected on a
fraction of them; nothing may be lost.

    python benchmarks/soak.py [--clients 2000 | --large] [--seconds 30] [--interval 1]
                              [--faults 0.05] [--ping-interval 5] [--backend asyncio|trio]

The CSMS (an RPCServer) runs in a child process and the clients in this one,
so that each process holds one socket per connection (10,000 clients stay
under a 20,000 open-file limit). Every client calls `Heartbeat` and the server
calls every client `GetStatus`, each about once per `--interval` seconds.
A fraction `--faults` of the clients misbehave, in four equal parts:

- drop:  the server drops their TCP connection now and then (they reconnect);
- stall: raw peers that complete the upgrade and then never read again
         (keep-alive and the write timeout must get rid of them);
- bad:   they send a garbage frame with every call;
- slow:  their handler sometimes takes longer than the server's call timeout.

Calls start once every client is connected. Prints, per direction, calls
made and calls ended (which must be equal) and how they ended, the warnings
logged, peak RSS and RSS per (idle) connection of each process. Exits 1 if
a call was lost or a task leaked.

Keep the load below what the machine can serve: once the event loops lag by
more than the ping interval, keep-alive drops healthy connections, which
reconnect and add load (with --large, use --interval 10 or more and
--ping-interval 30).
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import logging
import os
import random
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from ocpp_rpc import (
    Backoff,
    Call,
    ConnectError,
    ConnectionClosed,
    RPCClient,
    RPCError,
    RPCServer,
    ServerClient,
)

PAGE = os.sysconf("SC_PAGE_SIZE")
SERVER_CALL_TIMEOUT = 5.0
CLIENT_CALL_TIMEOUT = 10.0
PING_INTERVAL = 5.0  # --ping-interval; keep-alive and dead-peer detection on both sides
KINDS = ("drop", "stall", "bad", "slow")


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def peak_rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Stalls:
    """The longest event-loop lag (how late a 0.1 s sleep wakes up) and the
    longest pause of the garbage collector."""

    def __init__(self) -> None:
        self.loop_lag = self.gc_pause = self._gc_started = 0.0
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pause = max(self.gc_pause, time.perf_counter() - self._gc_started)

    async def watch(self) -> None:
        while True:
            asleep = anyio.current_time()
            await anyio.sleep(0.1)
            self.loop_lag = max(self.loop_lag, anyio.current_time() - asleep - 0.1)


class LogCount(logging.Handler):
    """Counts ocpp_rpc's warnings and errors by message template (not printed)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: collections.Counter[str] = collections.Counter()
        log = logging.getLogger("ocpp_rpc")
        log.addHandler(self)
        log.propagate = False

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[f"{record.levelname} {record.msg}"] += 1


def outcome_name(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    if isinstance(exc, RPCError):
        return f"{type(exc).__name__}({exc.code})"
    return type(exc).__name__


class Tally:
    """Calls made and how each one ended; `in_flight` reaches 0 when all ended."""

    def __init__(self) -> None:
        self.made = 0
        self.ended: collections.Counter[str] = collections.Counter()
        self.idle = anyio.Event()
        self.idle.set()

    @property
    def in_flight(self) -> int:
        return self.made - sum(self.ended.values())

    async def call(self, call: Callable[[], Awaitable[Any]]) -> None:
        self.made += 1
        if self.idle.is_set():
            self.idle = anyio.Event()
        outcome = "Cancelled"  # ended by the caller's cancel scope (its connection went away)
        try:
            await call()
            outcome = "ok"
        except Exception as exc:
            outcome = outcome_name(exc)
        finally:
            self.ended[outcome] += 1
            if self.in_flight == 0:
                self.idle.set()


def kind_of(identity: str) -> str:
    return identity.split("-")[0]


async def pause(stop: anyio.Event, seconds: float) -> bool:
    """Sleep `seconds` unless `stop` comes first; False once stopped."""
    with anyio.move_on_after(seconds):
        await stop.wait()
    return not stop.is_set()


# -- the server process -----------------------------------------------------------------------


async def serve(clients: int, interval: float, ping_interval: float) -> None:
    logs = LogCount()
    tally = Tally()
    stop = anyio.Event()
    drops = 0
    everyone = anyio.Event()  # calls start once every client has connected
    baseline = rss()
    full: int | None = None
    tasks_before = len(anyio.get_running_tasks())
    stalls = Stalls()
    async with anyio.create_task_group() as watching, RPCServer(
        ping_interval=ping_interval, call_timeout=SERVER_CALL_TIMEOUT
    ) as server:
        watching.start_soon(stalls.watch)
        server.handle("Heartbeat", lambda call: {"currentTime": "2024-01-01T00:00:00Z"})

        @server.on_client
        async def on_client(client: ServerClient) -> None:
            nonlocal drops, full
            if full is None and len(server.clients) >= clients:
                full = rss()  # every connection is up, and idle
                everyone.set()
            kind = kind_of(client.identity)
            await everyone.wait()
            while await pause(stop, random.uniform(0.5, 1.5) * interval):
                await tally.call(lambda: client.call("GetStatus", timeout=SERVER_CALL_TIMEOUT))
                if kind == "drop" and random.random() < 0.3:
                    drops += 1
                    await client.close(force=True)  # as if the cellular link died

        listening = await server.listen()
        print(json.dumps({"port": listening.port}), flush=True)
        stdin = anyio.wrap_file(sys.stdin.buffer)
        await stdin.readline()  # "stop"
        stop.set()
        with anyio.move_on_after(SERVER_CALL_TIMEOUT + 5):
            await tally.idle.wait()
        stats = {
            "made": tally.made, "ended": dict(tally.ended), "drops": drops,
            "peak_rss": peak_rss(), "rss_per_connection": ((full or rss()) - baseline) / clients,
            "logs": dict(logs.counts), "loop_lag": stalls.loop_lag, "gc_pause": stalls.gc_pause,
        }
        print(json.dumps(stats), flush=True)
        await stdin.readline()  # EOF: the clients are gone
        watching.cancel_scope.cancel()
    stats = {"tasks_leaked": len(anyio.get_running_tasks()) - tasks_before}
    print(json.dumps(stats), flush=True)


# -- the client process -------------------------------------------------------------------------


async def stalled_peer(port: int, identity: str, stop: anyio.Event, ping_interval: float) -> None:
    """Upgrade, then never read again; reconnect after a while, until stopped."""
    request = (
        f"GET /ocpp/{identity} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    while not stop.is_set():
        try:
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(request)
                await stream.receive()  # the 101, maybe more; then silence
                await pause(stop, 3 * ping_interval)
        except OSError:
            await pause(stop, 1)


async def client(
    url: str, identity: str, interval: float, tally: Tally, stop: anyio.Event,
    done: anyio.Event, connecting: anyio.Semaphore, connected: Callable[[], None],
    all_up: anyio.Event, ping_interval: float,
) -> None:
    kind = kind_of(identity)
    client = RPCClient(
        url, identity, ping_interval=ping_interval, call_timeout=CLIENT_CALL_TIMEOUT,
        backoff=Backoff(initial=0.5, maximum=5.0, jitter=1.0),
    )

    @client.handler("GetStatus")
    async def get_status(call: Call) -> Any:
        if kind == "slow" and random.random() < 0.3:
            await anyio.sleep(SERVER_CALL_TIMEOUT * 1.5)
        return {"status": "Available"}

    async with connecting:
        for attempt in range(10):  # a connect storm may overflow the listen backlog
            try:
                await client.__aenter__()
                break
            except ConnectError:
                if attempt == 9:
                    raise
                await anyio.sleep(0.5)
    connected()
    try:
        await all_up.wait()
        while await pause(stop, random.uniform(0.5, 1.5) * interval):
            if kind == "bad":
                try:
                    await client.send_raw('[2,"x",')
                except ConnectionClosed:
                    pass
            await tally.call(lambda: client.call("Heartbeat"))
        await done.wait()
    finally:
        await client.__aexit__(None, None, None)


async def run_clients(args: argparse.Namespace, child: subprocess.Popen[str]) -> int:
    assert child.stdin is not None and child.stdout is not None
    logs = LogCount()
    port = json.loads(child.stdout.readline())["port"]
    url = f"ws://127.0.0.1:{port}/ocpp"
    faulty = int(args.clients * args.faults)
    identities = [f"{KINDS[n % len(KINDS)]}-{n}" for n in range(faulty)]
    identities += [f"ok-{n}" for n in range(faulty, args.clients)]
    tally, stop, done = Tally(), anyio.Event(), anyio.Event()
    connecting = anyio.Semaphore(100)
    up = 0
    all_up = anyio.Event()

    def connected() -> None:
        nonlocal up
        up += 1
        if up == len(identities):
            all_up.set()

    tasks_before = len(anyio.get_running_tasks())
    baseline = rss()
    started = time.monotonic()
    stalls = Stalls()
    async with anyio.create_task_group() as tg:
        tg.start_soon(stalls.watch)
        for identity in identities:
            if kind_of(identity) == "stall":
                tg.start_soon(stalled_peer, port, identity, stop, args.ping_interval)
                connected()
            else:
                tg.start_soon(client, url, identity, args.interval, tally, stop, done,
                              connecting, connected, all_up, args.ping_interval)
        await all_up.wait()
        connect_seconds = time.monotonic() - started
        per_connection = (rss() - baseline) / len(identities)
        await anyio.sleep(args.seconds)
        stop.set()
        with anyio.move_on_after(CLIENT_CALL_TIMEOUT + 5):
            await tally.idle.wait()
        child.stdin.write("stop\n")
        child.stdin.flush()
        server = json.loads(await anyio.to_thread.run_sync(child.stdout.readline))
        done.set()
        tg.cancel_scope.cancel()
    leaked = len(anyio.get_running_tasks()) - tasks_before
    child.stdin.close()
    server_end = json.loads(await anyio.to_thread.run_sync(child.stdout.readline))
    child.wait(timeout=60)

    print(f"soak: {args.clients} clients ({faulty} faulty: drop, stall, bad, slow in equal parts),"
          f" {args.seconds:g} s, ping every {args.ping_interval:g} s, backend {args.backend};"
          f" connected in {connect_seconds:.1f} s")
    rows = [("calls made", tally.made, server["made"]),
            ("calls ended", sum(tally.ended.values()), sum(server["ended"].values()))]
    kinds = sorted(set(tally.ended) | set(server["ended"]))
    rows += [(f"  {kind}", tally.ended.get(kind, 0), server["ended"].get(kind, 0))
             for kind in kinds]
    print(f"{'':34}{'client -> server':>18}{'server -> client':>18}")
    for name, ours, theirs in rows:
        print(f"{name:34}{ours:>18}{theirs:>18}")
    print(f"server-side drops injected: {server['drops']}")
    print(f"peak RSS: clients {peak_rss() / 2**20:.0f} MiB,"
          f" server {server['peak_rss'] / 2**20:.0f} MiB")
    print(f"RSS per connection: client {per_connection / 1024:.1f} KiB,"
          f" server {server['rss_per_connection'] / 1024:.1f} KiB")
    print(f"longest event-loop lag: clients {stalls.loop_lag:.2f} s, server"
          f" {server['loop_lag']:.2f} s; longest GC pause: clients {stalls.gc_pause:.2f} s,"
          f" server {server['gc_pause']:.2f} s")
    for side, counts in (("client", logs.counts), ("server", server["logs"])):
        for message, count in sorted(counts.items()):
            print(f"{side} log, {count:>6} x {message}")
    print(f"tasks left over: clients {leaked}, server {server_end['tasks_leaked']}")
    lost = tally.made != sum(tally.ended.values()) or server["made"] != sum(
        server["ended"].values())
    return 1 if lost or leaked or server_end["tasks_leaked"] else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--large", action="store_true", help="10,000 clients")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=1.0,
                        help="mean seconds between two calls of one client, each way")
    parser.add_argument("--faults", type=float, default=0.05, help="fraction of faulty clients")
    parser.add_argument("--ping-interval", type=float, default=PING_INTERVAL,
                        help="keep-alive interval of both sides (use 30 with --large)")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.large:
        args.clients = 10_000
    if args.serve:
        raise_file_limit()
        anyio.run(serve, args.clients, args.interval, args.ping_interval, backend=args.backend)
        return
    raise_file_limit()
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--clients", str(args.clients),
         "--interval", str(args.interval), "--ping-interval", str(args.ping_interval),
         "--backend", args.backend],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    sys.exit(anyio.run(run_clients, args, child, backend=args.backend))


if __name__ == "__main__":
    main()
