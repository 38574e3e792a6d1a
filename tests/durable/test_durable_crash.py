"""A charge point PROCESS killed with SIGKILL at random points while making
durable calls, restarted on the same SQLite store each time: first while the
CSMS is down, then while it is up (a call may be in flight at the kill).
Once the CSMS is up every call reaches it, in order; the only duplicates are
adjacent (the call in flight at a kill, or the call stored in the instant
between its write and the line the test reads, which the next run makes again).

Against our RPCServer, and against the Node ocpp-rpc server (`interop`).
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from anyio.streams.text import TextReceiveStream
from harness import free_port

from ocpp_rpc import Call, RPCServer

pytestmark = pytest.mark.anyio

CHILD = Path(__file__).with_name("crash_charge_point.py")
ROOT = Path(__file__).resolve().parents[2]
INTEROP = Path(os.environ.get("OCPP_RPC_INTEROP", ROOT / ".interop"))
HAVE_NODE = (INTEROP / "node" / "node_modules" / "ocpp-rpc").exists()

KILLS_WHILE_DOWN = 3
KILLS_WHILE_UP = 2


async def _run_and_kill(url: str, store: Path, start: int, backend: str,
                        rng: random.Random) -> int:
    """Start the charge point at `start`, SIGKILL it at a random moment once it
    makes calls; returns the seq to start the next run at."""
    process = await anyio.open_process(
        [sys.executable, str(CHILD), url, str(store), "--start", str(start), "--count", "100000",
         "--backend", backend],
        stderr=subprocess.DEVNULL,
    )
    out = ""
    async with process:
        assert process.stdout is not None
        lines = TextReceiveStream(process.stdout)
        try:
            while "stored " not in out:  # it is making calls: kill it somewhere in them
                out += await lines.receive()
            await anyio.sleep(rng.uniform(0.0, 0.15))
        finally:
            process.kill()  # SIGKILL, our own child, by its handle
        with contextlib.suppress(anyio.EndOfStream):
            while True:
                out += await lines.receive()
        await process.wait()
    stored = [int(line.split()[1]) for line in out.splitlines() if line.startswith("stored ")]
    assert stored == list(range(start, start + len(stored)))
    return stored[-1] + 1 if stored else start


async def _drain(url: str, store: Path, backend: str) -> None:
    """Run the charge point until its store is empty."""
    process = await anyio.run_process(
        [sys.executable, str(CHILD), url, str(store), "--drain", "--backend", backend,
         "--max-seconds", "20"],
        check=False,
    )
    assert process.returncode == 0, process.stderr.decode()
    assert process.stdout.decode().splitlines()[-1] == "drained"


async def _crash_rounds(url: str, store: Path, backend: str, csms_up: Callable[[], object],
                        rng: random.Random) -> int:
    start = 0
    for _ in range(KILLS_WHILE_DOWN):
        start = await _run_and_kill(url, store, start, backend, rng)
    await csms_up()  # type: ignore[misc]
    for _ in range(KILLS_WHILE_UP):
        start = await _run_and_kill(url, store, start, backend, rng)
    await _drain(url, store, backend)
    return start


def _check_arrivals(arrivals: list[int], made: int) -> None:
    collapsed = [seq for i, seq in enumerate(arrivals) if i == 0 or arrivals[i - 1] != seq]
    assert collapsed == list(range(len(collapsed))), arrivals
    # every call the charge point reported stored; one more if the last kill
    # came between a write and its line
    assert len(collapsed) in (made, made + 1), (made, arrivals)
    assert made > KILLS_WHILE_DOWN  # the kills did land while calls were being made
    # at most an in-flight call and a call made again per kill
    assert len(arrivals) - len(collapsed) <= 2 * (KILLS_WHILE_DOWN + KILLS_WHILE_UP)


async def test_sigkilled_charge_point_loses_nothing_with_our_server(
    tmp_path: Path, anyio_backend: str
) -> None:
    rng = random.Random()
    port = await free_port()
    url = f"ws://127.0.0.1:{port}"
    arrivals: list[int] = []
    async with RPCServer(ping_interval=None) as server:

        @server.handler("Seq")
        def seq(call: Call) -> dict[str, int]:
            arrivals.append(call.params["seq"])
            return {"seq": call.params["seq"]}

        async def up() -> None:
            await server.listen(port=port)

        with anyio.fail_after(60):
            made = await _crash_rounds(url, tmp_path / "cp.db", anyio_backend, up, rng)
    _check_arrivals(arrivals, made)


@pytest.mark.interop
@pytest.mark.skipif(not HAVE_NODE, reason="run via `nox` (installs the Node peers)")
async def test_sigkilled_charge_point_loses_nothing_with_the_node_server(
    tmp_path: Path, anyio_backend: str
) -> None:
    sys.path.insert(0, str(INTEROP))
    import peers  # type: ignore[import-not-found]

    rng = random.Random()
    port = await free_port()
    url = f"ws://127.0.0.1:{port}"
    servers: list[peers.Peer] = []

    async def up() -> None:
        servers.append(await anyio.to_thread.run_sync(
            lambda: peers.node_server("--port", str(port), "--max-seconds", "60")))

    try:
        with anyio.fail_after(60):
            made = await _crash_rounds(url, tmp_path / "cp.db", anyio_backend, up, rng)
        events = list(servers[0].events)
    finally:
        for server in servers:
            await anyio.to_thread.run_sync(server.stop)
    arrivals = [event["params"]["seq"] for event in events
                if event.get("event") == "call" and event.get("direction") == "in"
                and event.get("method") == "Seq"]
    _check_arrivals(arrivals, made)
