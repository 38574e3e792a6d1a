"""Every benchmark of benchmarks/bench.py runs once at a tiny size, so that none
of them rots. Nothing here is timed or compared: the numbers are only parsed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "bench.py"


@pytest.fixture(scope="module")
def smoke_table() -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--frames", "Heartbeat", "--tables", "in-process"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_bench_smoke_prints_every_scenario_of_ours(smoke_table: str) -> None:
    for scenario in ("1 seq", "2 100-in-flight", "3 3-clients", "4 server-to-3", "5 idle",
                     "6 seq strict"):
        rows = [line for line in smoke_table.splitlines()
                if line.startswith(f"| {scenario}") and "ocpp_rpc asyncio" in line]
        assert rows, f"no row for scenario {scenario!r}:\n{smoke_table}"


def test_bench_smoke_runs_the_anchors_that_are_installed(smoke_table: str) -> None:
    from importlib.util import find_spec

    names = ["ocpp_rpc trio"] if find_spec("trio") else []
    if (ROOT / ".interop" / "venv" / "bin" / "python").exists():
        names += ["ocpp 2.1.0 + websockets", "websockets echo (floor)"]
    if (ROOT / ".interop" / "node" / "node_modules" / "ocpp-rpc").exists():
        names.append("Node ocpp-rpc 2.2.1")
    for name in names:
        assert any(line.startswith("| 1 seq Heartbeat") and f"| {name} " in line
                   for line in smoke_table.splitlines()), f"no row for {name}:\n{smoke_table}"


DRIVER = ROOT / "benchmarks" / ".driver" / "raw"  # python benchmarks/driver.py install


@pytest.mark.skipif(not (shutil.which("node") and (DRIVER / "node_modules" / "ws").exists()),
                    reason="no node or no raw driver (python benchmarks/driver.py install)")
def test_bench_smoke_feeds_our_server_from_the_raw_driver(tmp_path: Path) -> None:
    out = tmp_path / "fed.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--tables", "driver", "--only", "trio", "node",
         "set_threshold", "collector off", "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Server fed by the raw driver" in done.stdout
    names, samples = json.loads(out.read_text())["fed"]
    assert "ocpp_rpc trio" in names
    assert "ocpp_rpc asyncio, gc.set_threshold(700, 10, 100)" in names
    for name in names:
        for measurement in ("fanin hb", "fanin mv", "seq 100", "answer", "conns"):
            if measurement == "answer" and name.endswith("(floor)"):
                continue  # a floor makes no calls of its own
            sample = samples[measurement][name][0]
            assert sample["rate"] > 0 and sample["cpu_us"] >= 0, (measurement, name, sample)
        assert samples["conns"][name][0]["opened"] == 20
    assert "of which the cyclic collector" in done.stdout
    for name in ("ocpp_rpc trio", "ocpp_rpc asyncio, collector off"):
        setup = samples["conns"][name][0]
        # every connection keeps its client, connection and transport for the collector
        assert setup["tracked"] > 20, setup
    off = samples["conns"]["ocpp_rpc asyncio, collector off"][0]
    assert off["gc_us"] == 0 and off["full_passes"] == 0, off
    assert "gc_us" not in samples["conns"]["Node ocpp-rpc 2.2.1"][0]
