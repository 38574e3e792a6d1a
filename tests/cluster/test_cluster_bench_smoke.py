"""benchmarks/cluster_bench.py runs once at a tiny size, so that it does not
rot. Nothing is timed or compared: the tables are only parsed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cluster_bench_smoke(redis_binary_path: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "cluster_bench.py"), "--calls", "20",
         "--conc", "5", "--chargers", "40", "--spread", "0", "--backends", "asyncio",
         "--presence-timeout", "60"],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
        env={**os.environ, "OCPP_RPC_REDIS_SERVER": redis_binary_path},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| asyncio")]
    callers = {(row[1], row[2]) for row in rows if row[1].endswith(("node", "worker"))}
    assert callers == {(caller, flight) for caller in ("same node", "other node", "API worker")
                       for flight in ("1", "5")}, done.stdout
    presence = [row for row in rows if row[1] == "40"]
    assert len(presence) == 1, done.stdout
    registered = float(presence[0][4].replace(",", ""))  # "all registered s": a number
    assert registered > 0, done.stdout
