"""ocpp_rpc side by side with its anchors, in one run on this machine; prints one
table with ratios (see README.md for how to read it).

    python benchmarks/bench.py [--runs 5] [--calls 2000] [--clients 200]
        [--client-calls 20] [--conns 2000 | --conns 10000] [--only NAME ...]
        [--json results.json] [--quick] [--smoke]

Contenders, each measurement in its own subprocess (loopback only):
  Node ocpp-rpc 2.2.1        benchmarks/bench_node.js (.interop/node/node_modules)
  ocpp 2.1.0 + websockets    benchmarks/bench_websockets.py ocpp  (.interop/venv)
  websockets echo (floor)    benchmarks/bench_websockets.py echo  (.interop/venv)
  ocpp_rpc asyncio / uvloop / trio   benchmarks/bench_ours.py
A contender whose runtime is missing is skipped (its row says why).
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
    args = parser.parse_args()
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        rows = scenarios(argparse.Namespace(**saved["args"]))
        for row in rows:
            row.samples = saved["samples"].get(row.key, {})
        names = list(dict.fromkeys(n for r in rows for n in r.samples))
        print(f"{saved['date']} — {saved['machine']}\n")
        print(render(rows, names, saved["args"]["runs"]))
        return
    if args.quick:
        args.runs, args.calls, args.client_calls = 1, args.calls // 4, args.client_calls // 4
        args.conns = args.conns // 4
    if args.smoke:
        args.runs, args.calls, args.clients, args.client_calls, args.conns = 1, 20, 3, 2, 10

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
    print(f"{datetime.date.today()} — {machine()}\n")
    print(render(rows, names, args.runs))
    if args.json:
        args.json.write_text(json.dumps(
            {"machine": machine(), "date": str(datetime.date.today()), "args": vars(args) | {
                "json": str(args.json)},
             "samples": {r.key: r.samples for r in rows}}, indent=1, default=str))


if __name__ == "__main__":
    main()
