"""The README's main command: `python -m ocpp_rpc demo` runs and shows the traffic."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_demo_runs_and_prints_traffic(backend: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ocpp_rpc", "demo", "--backend", backend],
        capture_output=True, text=True, timeout=60, check=True,
    )
    out = done.stdout
    for needle in ('"BootNotification"', '"Heartbeat"', '"StatusNotification"',
                   '"GetConfiguration"', '"GetBaseReport"', "CP1 connected (ocpp1.6)",
                   "CP2 connected (ocpp2.0.1)", "demo finished"):
        assert needle in out, out
    assert "CSMS -> CP1" in out and "CSMS <- CP2" in out
