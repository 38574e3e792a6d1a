"""ocpp_rpc side by side with its anchors, in one run on this machine; prints
tables with ratios (see README.md for how to read them):

- in-process (client+server, what a simulator pays): each contender's client
  and server in one process;
- server fed by the raw driver: each server alone in its process, fed by the
  neutral Node `ws` driver (driver.py), its CPU time read from /proc;
- cluster: fan-in workers: `ocpp-rpc serve --workers 1` vs `--workers 2 --redis`,
  fed by the same driver.

    python benchmarks/bench.py [--tables in-process driver cluster] [--runs 5]
        [--calls 2000] [--clients 200] [--client-calls 20] [--conns 2000 | --conns 10000]
        [--fed-runs 3] [--fed-seconds 5] [--fed-conns 10000] [--only NAME ...]
        [--json results.json] [--quick] [--smoke]

Contenders, each measurement in its own subprocess (loopback only):
  Node ocpp-rpc 2.2.1        benchmarks/bench_node.js (.interop/node/node_modules)
  ocpp 2.1.0 + websockets    benchmarks/bench_websockets.py ocpp  (.interop/venv)
  websockets echo (floor)    benchmarks/bench_websockets.py echo  (.interop/venv)
  ocpp_rpc asyncio / uvloop / trio   benchmarks/bench_ours.py
A contender whose runtime is missing is skipped (its row says why).

Driver-fed servers (benchmarks/server_*): server_node.js, server_ours.py
(asyncio, asyncio + uvloop + orjson, trio, asyncio with generation 2's GC
threshold raised as docs/csms.md suggests, and asyncio with the collector off:
what the rest of its work costs; each times its collector), server_websockets.py,
server_picows.py and server_trio_floor.py (floors); the driver is installed
by `driver.py install`.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
INTEROP = Path(os.environ.get("OCPP_RPC_INTEROP", ROOT / ".interop"))
NODE_MODULES = Path(os.environ.get("OCPP_RPC_NODE_MODULES", INTEROP / "node" / "node_modules"))
INTEROP_PYTHON = Path(os.environ.get("INTEROP_PYTHON", INTEROP / "venv" / "bin" / "python"))

NODE = "Node ocpp-rpc 2.2.1"
MOBILITYHOUSE = "ocpp 2.1.0 + websockets"
ECHO = "websockets echo (floor)"
OURS = ("ocpp_rpc asyncio", "ocpp_rpc uvloop", "ocpp_rpc trio")
TIMEOUT = 300.0  # seconds, per measurement
TABLES = {
    "in-process": "In-process (client+server, what a simulator pays)",
    "driver": "Server fed by the raw driver (what a CSMS pays)",
    "cluster": "Cluster: fan-in workers (server fed by the raw driver)",
}


@dataclass
class Contender:
    name: str
    argv: Callable[[str], list[str]]  # scenario -> command line (sizes appended later)
    missing: str | None = None  # why it cannot run here
    strict: bool = False  # has a strict mode (scenario 6)


def contenders() -> list[Contender]:
    node_ok = shutil.which("node") and (NODE_MODULES / "ocpp-rpc").exists()
    py_ok = INTEROP_PYTHON.exists()
    result = [
        Contender(NODE, lambda s: ["node", str(HERE / "bench_node.js"), s],
                  None if node_ok else f"no node or no {NODE_MODULES}/ocpp-rpc", strict=True),
        Contender(MOBILITYHOUSE,
                  lambda s: [str(INTEROP_PYTHON), str(HERE / "bench_websockets.py"), "ocpp", s],
                  None if py_ok else f"no interop venv at {INTEROP_PYTHON}"),
        Contender(ECHO,
                  lambda s: [str(INTEROP_PYTHON), str(HERE / "bench_websockets.py"), "echo", s],
                  None if py_ok else f"no interop venv at {INTEROP_PYTHON}"),
    ]
    for name in OURS:
        backend = name.split()[-1]
        missing = None
        if backend == "uvloop" and importlib.util.find_spec("uvloop") is None:
            missing = "uvloop not installed (pip install 'ocpp-rpc[uvloop]')"
        if backend == "trio" and importlib.util.find_spec("trio") is None:
            missing = "trio not installed"
        result.append(Contender(
            name,
            lambda s, b=backend: [sys.executable, str(HERE / "bench_ours.py"), s, "--backend", b],
            missing, strict=True))
    return result


@dataclass
class Scenario:
    key: str  # row label
    script: str  # scenario name understood by the child scripts
    args: list[str]
    strict: bool = False
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    frames = args.frames
    seq, per_client = ["--calls", str(args.calls)], ["--calls", str(args.client_calls),
                                                      "--clients", str(args.clients)]
    rows: list[Scenario] = []
    for frame in frames:
        rows.append(Scenario(f"1 seq {frame}", "seq", [*seq, "--frame", frame]))
    for frame in frames:
        rows.append(Scenario(f"2 100-in-flight {frame}", "inflight",
                             ["--calls", str(args.calls * 2), "--frame", frame]))
    for frame in frames:
        rows.append(Scenario(f"3 {args.clients}-clients {frame}", "many",
                             [*per_client, "--frame", frame]))
    for frame in frames:
        rows.append(Scenario(f"4 server-to-{args.clients} {frame}", "server",
                             [*per_client, "--frame", frame]))
    rows.append(Scenario(f"5 idle {args.conns}", "idle", ["--conns", str(args.conns)]))
    for frame in frames:
        rows.append(Scenario(f"6 seq strict {frame}", "seq", [*seq, "--frame", frame, "--strict"],
                             strict=True))
    return rows


def measure(argv: list[str]) -> dict[str, Any]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(lines[-1])


def med(samples: list[dict[str, Any]], metric: Callable[[dict[str, Any]], float]) -> float:
    return statistics.median(metric(s) for s in samples)


def fmt_ratio(value: float | None, anchor: float | None) -> str:
    return f"{value / anchor:.2f}x" if value and anchor else "-"


def render(rows: list[Scenario], names: list[str], runs: int) -> str:
    calls_header = ("scenario", "implementation", "calls/s", "vs Node", "vs ocpp+ws",
                    "vs floor", "p50 µs", "p99 µs", "wall µs/call", "CPU µs/call")
    table: list[tuple[str, ...]] = [calls_header]
    idle_rows: list[tuple[str, ...]] = []
    plain: dict[tuple[str, str], float] = {}
    for row in rows:
        rates = {n: med(s, lambda x: x["calls"] / x["seconds"]) for n, s in row.samples.items()
                 if row.script != "idle"}
        for name in names:
            samples = row.samples.get(name)
            if not samples:
                continue
            if row.script == "idle":
                idle_rows.append((
                    row.key, name,
                    f"{med(samples, lambda x: x['conns']):,.0f}",
                    f"{med(samples, lambda x: x['conns'] / x['setup_seconds']):,.0f}",
                    f"{med(samples, lambda x: x['server_rss']) / 1024:.1f}",
                    f"{med(samples, lambda x: x['client_rss']) / 1024:.1f}",
                ))
                continue
            rate = rates[name]
            wall = med(samples, lambda x: 1e6 * x["seconds"] / x["calls"])
            cpu = med(samples, lambda x: 1e6 * x["cpu"] / x["calls"])
            p50 = f"{med(samples, lambda x: 1e6 * x['p50']):.0f}" if "p50" in samples[0] else ""
            p99 = f"{med(samples, lambda x: 1e6 * x['p99']):.0f}" if "p99" in samples[0] else ""
            label = row.key
            if row.strict:
                base = plain.get((row.key.replace("6 seq strict", "1 seq"), name))
                if base:
                    label += f" (+{100 * (wall - base) / base:.0f}% vs plain)"
            elif row.script == "seq":
                plain[(row.key, name)] = wall
            ratios = [fmt_ratio(rate, rates.get(a)) for a in (NODE, MOBILITYHOUSE, ECHO)]
            table.append((label, name, f"{rate:,.0f}", *ratios, p50, p99, f"{wall:.0f}",
                          f"{cpu:.0f}"))
    out = [_markdown(table)]
    if idle_rows:
        idle_header = ("scenario", "implementation", "connections", "setup conn/s",
                       "server KiB/conn", "client KiB/conn")
        out.append(_markdown([idle_header, *idle_rows]))
    out.append(f"(median of {runs} run(s); each measurement one subprocess; loopback; "
               "scenarios 1-4 and 6 hold client and server in one process, so CPU is both ends)")
    return "\n\n".join(out)


def _markdown(table: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in table]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip() \
        if shutil.which("node") else "no node"
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"CPython {platform.python_version()}, Node {node}")


# -- servers fed by the raw driver -------------------------------------------------

sys.path.insert(0, str(HERE))
import driver as drv  # noqa: E402  (benchmarks/ is no package)

# Plain asyncio with generation 2's threshold raised, as docs/csms.md ("Many charge
# points") tells an operator: the figures with the collector's full passes mostly gone.
GC_TUNED = "ocpp_rpc asyncio, gc.set_threshold(700, 10, 100)"
# Plain asyncio with no collection at all: what the rest of the server's work costs.
GC_OFF = "ocpp_rpc asyncio, collector off"
FED_FLOORS = ("websockets (floor)", "picows + uvloop (floor)", "trio raw sockets (floor)")


@dataclass
class Fed:
    """A server for the driver: a command (``--port P`` appended)."""

    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    missing: str | None = None
    calls: bool = True  # answers the ``call`` command (server-initiated calls)
    collector: bool = False  # server_ours.py: times its collector (``--gc-stats``)


def _has(*modules: str) -> str | None:
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    return f"{', '.join(absent)} not installed" if absent else None


def fed_contenders() -> list[Fed]:
    py, ours = sys.executable, str(HERE / "server_ours.py")

    def ours_with(name: str, *argv: str, missing: str | None = None) -> Fed:
        return Fed(name, [py, ours, *argv, "--gc-stats"], missing=missing, collector=True)

    modules = drv.node_modules()
    return [
        Fed(NODE, ["node", str(HERE / "server_node.js")],
            {"OCPP_RPC_NODE_MODULES": str(modules)} if modules else None,
            None if modules and shutil.which("node") else "no node or no ocpp-rpc in node_modules"),
        ours_with("ocpp_rpc asyncio", "--backend", "asyncio"),
        ours_with("ocpp_rpc asyncio+uvloop+orjson", "--uvloop", "--fast",
                  missing=_has("uvloop", "orjson")),
        ours_with("ocpp_rpc trio", "--backend", "trio", missing=_has("trio")),
        ours_with(GC_TUNED, "--backend", "asyncio", "--gc-threshold", "700,10,100"),
        ours_with(GC_OFF, "--backend", "asyncio", "--gc-threshold", "0,0,0"),
        Fed(FED_FLOORS[0], [py, str(HERE / "server_websockets.py")],
            missing=_has("websockets"), calls=False),
        Fed(FED_FLOORS[1], [py, str(HERE / "server_picows.py")],
            missing=_has("picows", "uvloop"), calls=False),
        Fed(FED_FLOORS[2], [py, str(HERE / "server_trio_floor.py")],
            missing=_has("trio"), calls=False),
    ]


@dataclass
class FedRow:
    label: str
    measurement: str  # key of the measurement (one measurement may feed two rows)
    metric: str  # "rate" or "kib"
    cpu: bool = True  # show server CPU µs per call / connection


def fed_rows(args: argparse.Namespace) -> list[FedRow]:
    k, n = args.fed_clients, args.fed_conns
    return [
        FedRow(f"{k} clients fan-in, Heartbeat: calls/s (server CPU µs/call)", "fanin hb", "rate"),
        FedRow(f"{k} clients fan-in, 1 KB MeterValues: calls/s (µs/call)", "fanin mv", "rate"),
        FedRow("one client, 100 in flight, pipelined: calls/s (µs/call)", "seq 100", "rate"),
        FedRow(f"connection setup at {n:,}: conn/s (server CPU µs/conn)", "conns", "rate"),
        FedRow("  of which the cyclic collector: µs/conn (full passes; longest, ms)", "conns",
               "gc_us", cpu=False),
        FedRow(f"idle memory at {n:,}: server KiB/conn (lower is better)", "conns", "kib",
               cpu=False),
        FedRow(f"server calls {k} clients, GetConfiguration: calls/s (µs/call)", "answer",
               "rate"),
    ]


def fed_measure(server: drv.Server, fed: Fed, args: argparse.Namespace
                ) -> dict[str, dict[str, float]]:
    """Every driver-fed measurement of one round, in one server process (the
    10,000 connections last: they leave the most behind)."""
    k, seconds = args.fed_clients, args.fed_seconds
    out = {
        "fanin hb": drv.fanin(server, k, seconds, "hb"),
        "fanin mv": drv.fanin(server, k, seconds, "mv"),
        "seq 100": drv.seq(server, args.fed_calls, 100, "hb"),
    }
    if fed.calls:
        out["answer"] = drv.answer(server, k, args.fed_answer_calls, "gc")
    out["conns"] = drv.conns(server, args.fed_conns, warm=args.fed_warm, settle=args.fed_settle,
                             collector=fed.collector)
    return out


def run_fed(args: argparse.Namespace, only: list[str] | None
            ) -> tuple[list[str], dict[str, dict[str, list[dict[str, float]]]]]:
    """Rounds of every driver-fed contender (interleaved); samples by
    measurement, then contender."""
    everyone = fed_contenders()
    if only:
        everyone = [f for f in everyone if any(o.lower() in f.name.lower() for o in only)]
    for f in everyone:
        if f.missing:
            print(f"skipping {f.name} (driver-fed): {f.missing}", file=sys.stderr)
    runnable = [f for f in everyone if not f.missing]
    samples: dict[str, dict[str, list[dict[str, float]]]] = {}
    started = time.monotonic()
    for run in range(args.fed_runs):
        for fed in runnable:
            with drv.Server(fed.argv, env=fed.env) as server:
                for key, sample in fed_measure(server, fed, args).items():
                    samples.setdefault(key, {}).setdefault(fed.name, []).append(sample)
        print(f"driver-fed round {run + 1}/{args.fed_runs} done after "
              f"{time.monotonic() - started:.0f}s", file=sys.stderr)
    return [f.name for f in runnable], samples


def render_fed(names: list[str], samples: dict[str, dict[str, list[dict[str, float]]]],
               args: argparse.Namespace) -> str:
    header = ("scenario (server fed by the raw driver)", *names)
    table: list[tuple[str, ...]] = [header]
    for row in fed_rows(args):
        by_name = samples.get(row.measurement, {})
        metric = row.metric

        def value_of(x: dict[str, float], metric: str = metric) -> float:
            return x[metric]

        node = by_name.get(NODE)
        anchor = med(node, value_of) if node and metric in node[0] else None
        cells = []
        for name in names:
            got = by_name.get(name)
            if not got or metric not in got[0]:
                cells.append("-")
                continue
            value = med(got, value_of)
            if metric == "gc_us":
                cells.append(f"{value:,.0f} ({med(got, lambda x: x['full_passes']):.0f}; "
                             f"{med(got, lambda x: x['longest']):,.0f})")
                continue
            cell = f"{value:,.1f}" if row.metric == "kib" else f"{value:,.0f}"
            if row.cpu:
                cell += f" ({med(got, lambda x: x['cpu_us']):,.1f})"
            if anchor and name != NODE:
                cell += f" = {value / anchor:.2f}x"
            if "driver_cpu" in got[0] and med(got, lambda x: x["driver_cpu"]) > 0.9:
                cell += " †"
            cells.append(cell)
        table.append((row.label, *cells))
    return "\n".join([
        _markdown(table), "",
        f"(median of {args.fed_runs} round(s); each server alone in its process, fed by the "
        "raw Node `ws` driver; server CPU = utime+stime of its processes from /proc over the "
        "driver's timed window; ratios to Node ocpp-rpc in the same run; † = the driver used "
        "> 90 % of a core: compare CPU µs/call there, not calls/s)"])


# -- cluster: fan-in workers ---------------------------------------------------------

def cluster_configs(redis_url: str | None) -> list[tuple[str, list[str], int]]:
    serve = [sys.executable, "-m", "ocpp_rpc", "serve", "--protocols", "ocpp1.6", "--quiet",
             "--no-stdin", "--backend", "asyncio"]
    configs = [("serve --workers 1", serve, 1)]
    if redis_url:
        configs += [
            ("serve --workers 1 --redis", [*serve, "--workers", "1", "--redis", redis_url], 1),
            ("serve --workers 2 --redis", [*serve, "--workers", "2", "--redis", redis_url], 2),
        ]
    return configs


def run_cluster(args: argparse.Namespace) -> tuple[list[str], dict[str, list[dict[str, float]]]]:
    """Fan-in into `ocpp-rpc serve` with 1 and 2 workers (a Redis of our own)."""
    redis = shutil.which("redis-server") or shutil.which("valkey-server")
    if redis is None or importlib.util.find_spec("coredis") is None:
        print("cluster: no redis-server or no coredis: only --workers 1", file=sys.stderr)
        redis = None
    samples: dict[str, list[dict[str, float]]] = {}
    with ExitStack() as stack:
        store = None
        if redis:
            store = stack.enter_context(drv.Server(
                [redis, "--port", "{port}", "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no"], commands=False, deadline=7200))
        configs = cluster_configs(f"redis://127.0.0.1:{store.port}/0" if store else None)
        for _ in range(args.fed_runs):
            for name, argv, workers in configs:
                with drv.Server(argv, listeners=workers, commands=False, deadline=900) as server:
                    for msg in ("hb", "mv"):
                        sample = drv.fanin(server, args.fed_clients, args.fed_seconds, msg,
                                           extra=[store.pid] if store else [])
                        samples.setdefault(f"{name} {msg}", []).append(sample)
    return [name for name, _, _ in configs], samples


def render_cluster(names: list[str], samples: dict[str, list[dict[str, float]]],
                   args: argparse.Namespace) -> str:
    table: list[tuple[str, ...]] = [(
        f"fan-in, {args.fed_clients} clients", "calls/s", "vs 1 worker",
        "server CPU µs/call (all processes)", "of which supervisor", "Redis µs/call")]
    for msg, label in (("hb", "Heartbeat"), ("mv", "1 KB MeterValues")):
        base = samples.get(f"{names[0]} {msg}")
        base_rate = med(base, lambda x: x["rate"]) if base else None
        for name in names:
            got = samples.get(f"{name} {msg}")
            if not got:
                continue
            rate = med(got, lambda x: x["rate"])
            table.append((f"{label}: {name}", f"{rate:,.0f}", fmt_ratio(rate, base_rate),
                          f"{med(got, lambda x: x['cpu_us']):.1f}",
                          f"{med(got, lambda x: x['parent_us']):.1f}",
                          f"{med(got, lambda x: x['extra_us']):.1f}"))
    return "\n".join([
        _markdown(table), "",
        f"(median of {args.fed_runs} round(s); `ocpp-rpc serve --quiet --no-stdin` on asyncio, "
        "its own Redis; workers share one port with SO_REUSEPORT; the supervisor is the "
        "parent process of --workers N)"])



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement (median)")
    parser.add_argument("--calls", type=int, default=2000, help="calls in scenarios 1, 2 (x2), 6")
    parser.add_argument("--clients", type=int, default=200, help="clients in scenarios 3, 4")
    parser.add_argument("--client-calls", type=int, default=20,
                        help="sequential calls per client in scenarios 3, 4")
    parser.add_argument("--conns", type=int, default=2000,
                        help="idle connections in scenario 5 (5000, 10000 hold)")
    parser.add_argument("--frames", nargs="+", default=["Heartbeat", "MeterValues"])
    parser.add_argument("--only", nargs="+", help="contender names (substring match)")
    parser.add_argument("--scenarios", nargs="+", help="scenario numbers to run, e.g. 1 5")
    parser.add_argument("--json", type=Path, help="also write every sample here")
    parser.add_argument("--quick", action="store_true", help="1 run, 1/4 sizes")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 run (tests)")
    parser.add_argument("--from-json", type=Path, help="print the table of a --json file again")
    parser.add_argument("--tables", nargs="+", choices=TABLES, default=list(TABLES),
                        help="which tables to measure (default: all three)")
    group = parser.add_argument_group("server fed by the raw driver (and cluster)")
    group.add_argument("--fed-runs", type=int, default=3, help="rounds (median)")
    group.add_argument("--fed-clients", type=int, default=200, help="fan-in and answer clients")
    group.add_argument("--fed-seconds", type=float, default=5, help="fan-in window")
    group.add_argument("--fed-calls", type=int, default=20_000,
                       help="pipelined calls (100 in flight)")
    group.add_argument("--fed-answer-calls", type=int, default=20,
                       help="server-initiated calls to each client, in sequence")
    group.add_argument("--fed-conns", type=int, default=10_000, help="connections (setup, memory)")
    group.add_argument("--fed-warm", type=int, default=200,
                       help="connections opened before the measured ones")
    group.add_argument("--fed-settle", type=float, default=1.0,
                       help="seconds before reading the server's memory")
    args = parser.parse_args()
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        print(f"{saved['date']} — {saved['machine']}\n")
        old = argparse.Namespace(**saved["args"])
        if saved["samples"]:
            rows = scenarios(old)
            for row in rows:
                row.samples = saved["samples"].get(row.key, {})
            names = list(dict.fromkeys(n for r in rows for n in r.samples))
            print(f"## {TABLES['in-process']}\n\n{render(rows, names, old.runs)}\n")
        if saved.get("fed"):
            print(f"## {TABLES['driver']}\n\n{render_fed(saved['fed'][0], saved['fed'][1], old)}\n")
        if saved.get("cluster"):
            table = render_cluster(saved["cluster"][0], saved["cluster"][1], old)
            print(f"## {TABLES['cluster']}\n\n{table}")
        return
    if args.quick:
        args.runs, args.calls, args.client_calls = 1, args.calls // 4, args.client_calls // 4
        args.conns = args.conns // 4
    if args.smoke:
        args.runs, args.calls, args.clients, args.client_calls, args.conns = 1, 20, 3, 2, 10
        args.fed_runs, args.fed_clients, args.fed_seconds, args.fed_calls = 1, 3, 1, 200
        args.fed_answer_calls, args.fed_conns, args.fed_warm, args.fed_settle = 2, 20, 2, 0.1
    print(f"{datetime.date.today()} — {machine()}\n")
    rows, fed, cluster = [], None, None
    if "in-process" in args.tables:
        rows = run_in_process(args)
    if "driver" in args.tables or "cluster" in args.tables:
        if drv.driver_dir() is None:
            print("skipping the driver-fed tables: no node or the raw driver is not installed "
                  "(python benchmarks/driver.py install)", file=sys.stderr)
        else:
            if "driver" in args.tables:
                fed = run_fed(args, args.only)
                print(f"## {TABLES['driver']}\n\n{render_fed(*fed, args)}\n", flush=True)
            if "cluster" in args.tables:
                cluster = run_cluster(args)
                print(f"## {TABLES['cluster']}\n\n{render_cluster(*cluster, args)}\n")
    if args.json:
        args.json.write_text(json.dumps(
            {"machine": machine(), "date": str(datetime.date.today()), "args": vars(args) | {
                "json": str(args.json)},
             "samples": {r.key: r.samples for r in rows}, "fed": fed, "cluster": cluster},
            indent=1, default=str))


def run_in_process(args: argparse.Namespace) -> list[Scenario]:
    """The in-process table: measured, printed, returned."""

    everyone = contenders()
    if args.only:
        everyone = [c for c in everyone if any(o.lower() in c.name.lower() for o in args.only)]
    elif args.smoke:  # uvloop runs the same script as asyncio: one is enough to keep it alive
        everyone = [c for c in everyone if c.name != "ocpp_rpc uvloop"]
    rows = scenarios(args)
    if args.scenarios:
        rows = [r for r in rows if r.key.split()[0] in args.scenarios]
    for c in everyone:
        if c.missing:
            print(f"skipping {c.name}: {c.missing}", file=sys.stderr)
    runnable = [c for c in everyone if not c.missing]
    started = time.monotonic()
    # Runs are interleaved (every contender once, then again) so that a slow
    # phase of the machine hits everyone alike.
    for run in range(args.runs):
        for row in rows:
            for c in runnable:
                if row.strict and not c.strict:
                    continue
                sample = measure([*c.argv(row.script), *row.args])
                row.samples.setdefault(c.name, []).append(sample)
        print(f"run {run + 1}/{args.runs} done after {time.monotonic() - started:.0f}s",
              file=sys.stderr)
    names = [c.name for c in runnable]
    print(f"## {TABLES['in-process']}\n\n{render(rows, names, args.runs)}\n", flush=True)
    return rows


if __name__ == "__main__":
    main()
