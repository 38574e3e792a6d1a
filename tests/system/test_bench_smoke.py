"""Every benchmark of benchmarks/bench.py runs once at a tiny size, so that none
of them rots. Nothing here is timed or compared: the numbers are only parsed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "bench.py"


@pytest.fixture(scope="module")
def smoke_table() -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--frames", "Heartbeat"],
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
