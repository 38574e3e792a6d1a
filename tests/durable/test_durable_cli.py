"""`ocpp-rpc simulate --store DIR` and `ocpp-rpc demo --store DIR`: simulated
chargers with durable transaction messages ride out a CSMS that is not there
yet, and deliver every transaction message in order."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.text import TextReceiveStream
from harness import free_port

from ocpp_rpc import Call, RPCServer
from ocpp_rpc.cli.answers import CSMSDefaults

pytestmark = pytest.mark.anyio

TRANSACTION_MESSAGES = {"StartTransaction", "StopTransaction", "MeterValues", "TransactionEvent"}


def _stores(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.glob("*.db"))


async def test_simulate_with_a_store_waits_for_the_csms_and_delivers(tmp_path: Path) -> None:
    port = await free_port()
    seen: list[tuple[str, str, Any]] = []
    async with RPCServer(protocols=["ocpp1.6", "ocpp2.0.1"], ping_interval=None) as server:
        defaults = CSMSDefaults()
        defaults.register(server)

        def record(call: Call) -> Any:
            if call.method in TRANSACTION_MESSAGES:
                seen.append((call.client.identity, call.method, call.params))
            return defaults.answer(call)

        for method in TRANSACTION_MESSAGES:
            server.handle(method, record)
        with anyio.fail_after(30):
            async with await anyio.open_process(
                [sys.executable, "-m", "ocpp_rpc", "simulate", f"ws://127.0.0.1:{port}/ocpp",
                 "--chargers", "2", "--protocol", "mixed", "--transactions", "2",
                 "--meter-values", "2", "--store", str(tmp_path / "stores"), "--json"],
            ) as process:
                assert process.stdout is not None and process.stderr is not None
                output = TextReceiveStream(process.stdout)
                out = ""
                while '"start"' not in out:  # the chargers start now, while nothing listens
                    out += await output.receive()
                errors = TextReceiveStream(process.stderr)
                err = ""
                while "cannot reach the CSMS" not in err:
                    err += await errors.receive()
                await server.listen(port=port)
                assert await process.wait() == 0
    assert _stores(tmp_path / "stores") == ["SIM0001.db", "SIM0002.db"]
    v16 = [method for identity, method, _ in seen if identity == "SIM0001"]
    assert v16 == ["StartTransaction", "MeterValues", "MeterValues", "StopTransaction"] * 2
    v201 = [params["seqNo"] for identity, _, params in seen if identity == "SIM0002"]
    assert v201 == [0, 1, 2, 3] * 2


async def test_demo_with_a_store_runs(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [sys.executable, "-m", "ocpp_rpc", "demo", "--store", str(tmp_path)], check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert "demo finished" in done.stdout.decode()
    assert _stores(tmp_path) == ["CP1.db", "CP2.db"]
