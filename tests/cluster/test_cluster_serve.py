"""``ocpp-rpc serve --workers N --redis URL``, run from outside against the
test Redis: N worker processes on one port are one CSMS."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from clusterkit import wait_for_async
from redisserver import RedisServer
from serverkit import chargers, registered, servers

from ocpp_rpc.cluster import RedisCluster

pytestmark = pytest.mark.anyio

TIMEOUT = 20


class Serve:
    """A running ``serve --json``: its stdout events, its stdin console."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._changed = anyio.Event()
        self.ended = False

    async def read(self) -> None:
        assert self.process.stdout is not None
        lines = BufferedByteReceiveStream(self.process.stdout)
        try:
            while True:
                self.events.append(json.loads(await lines.receive_until(b"\n", 1 << 20)))
                self._changed.set()
                self._changed = anyio.Event()
        except (anyio.EndOfStream, anyio.IncompleteRead):
            self.ended = True
            self._changed.set()

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        seen = 0
        with anyio.fail_after(timeout):
            while True:
                for event in self.events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self.events)
                assert not self.ended, f"serve ended: {self.events}"
                await self._changed.wait()

    async def command(self, line: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(line.encode() + b"\n")


@asynccontextmanager
async def serve(*options: str, stderr: Path) -> AsyncIterator[Serve]:
    with stderr.open("wb") as errors:
        process = await anyio.open_process(
            [sys.executable, "-m", "ocpp_rpc", "serve", "--port", "0", "--json", *options],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
    running = Serve(process)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(running.read)
            yield running
            tg.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
        with anyio.CancelScope(shield=True):
            await process.wait()
            await process.aclose()


async def test_serve_workers_is_one_csms(
    redis: RedisServer, prefix: str, anyio_backend: str, tmp_path: Path
) -> None:
    """Two workers on one port: chargers spread over both, every one is
    callable by identity through a standalone RedisCluster and through the
    console; a killed worker is started again and its chargers are taken
    back at once; SIGINT stops everything, exit 0, nothing left in Redis."""
    lease = 1.0
    options = ("--workers", "2", "--redis", redis.url, "--redis-prefix", prefix,
               "--lease", str(lease), "--quiet", "--backend", anyio_backend)
    identities = [f"CP{n}" for n in range(1, 13)]
    async with (
        serve(*options, stderr=tmp_path / "stderr") as csms,
        RedisCluster(redis.url, prefix=prefix, lease=lease) as api,
        chargers() as cps,
    ):
        listening = await csms.wait_for(lambda e: e["event"] == "listening")
        workers = {w["node"]: w for w in listening["workers"]}
        assert len(workers) == 2
        url = f"ws://127.0.0.1:{listening['port']}/ocpp"
        clients = {identity: await cps.connect(url, identity) for identity in identities}

        async def located() -> dict[str, str | None]:
            return {identity: await api.locate(identity) for identity in identities}

        async def all_located() -> bool:
            return None not in (await located()).values()

        await wait_for_async(all_located, timeout=5)
        where = await located()
        assert set(where.values()) == set(workers)  # the kernel spread them over both
        for identity in identities:
            assert (await api.call(identity, "Echo", {"n": 1}))["identity"] == identity

        # The console of the parent calls any charger by identity.
        await csms.command("list")
        listed = await csms.wait_for(lambda e: e["event"] == "clients")
        assert {(c["identity"], c["node"]) for c in listed["clients"]} == set(where.items())
        await csms.command('CP3 Echo {"via": "console"}')
        result = await csms.wait_for(lambda e: e["event"] in ("result", "error"))
        assert result["result"] == {"identity": "CP3", "charger": 3, "params": {"via": "console"}}

        # A worker killed: started again; its chargers come back at once.
        doomed = next(iter(workers.values()))
        os.kill(doomed["pid"], signal.SIGKILL)
        dropped = [i for i in identities if where[i] == doomed["node"]]
        with anyio.fail_after(5):
            for identity in dropped:
                assert (await clients[identity].wait_closed()).code == 1006
        exited = await csms.wait_for(lambda e: e["event"] == "worker_exited")
        assert exited["index"] == doomed["index"]
        start = anyio.current_time()
        for identity in dropped:
            clients[identity] = await cps.connect(url, identity)

        async def taken_back() -> bool:
            nodes = [await api.locate(identity) for identity in dropped]
            return None not in nodes and doomed["node"] not in nodes

        await wait_for_async(taken_back, timeout=lease)
        assert anyio.current_time() - start < lease
        again = await csms.wait_for(lambda e: e["event"] == "worker_started")
        assert again["index"] == doomed["index"] and again["node"] not in workers

        csms.process.send_signal(signal.SIGINT)
        with anyio.fail_after(15):
            assert await csms.process.wait() == 0
        stopped = await csms.wait_for(lambda e: e["event"] == "stopped")
        assert stopped["exit_codes"] == [0, 0]
        with anyio.fail_after(5):
            for identity in identities:
                assert (await clients[identity].wait_closed()).code == 1000
        assert all(node is None for node in (await located()).values())


async def test_serve_redis_is_a_single_node(
    redis: RedisServer, prefix: str, anyio_backend: str, tmp_path: Path
) -> None:
    """``serve --redis URL`` alone: one process, a node of the cluster; its
    console calls by identity a charger connected to another node."""
    options = ("--redis", redis.url, "--redis-prefix", prefix, "--quiet",
               "--backend", anyio_backend)
    async with (
        servers([redis.url], prefix) as (other,),
        serve(*options, stderr=tmp_path / "stderr") as csms,
        RedisCluster(redis.url, prefix=prefix) as api,
        chargers() as cps,
    ):
        listening = await csms.wait_for(lambda e: e["event"] == "listening")
        await cps.connect(f"{listening['url']}/ocpp", "CP1")
        await cps.connect(other.url, "CP2")
        await registered(other, "CP2")

        async def on_serve() -> bool:
            return await api.locate("CP1") == listening["node"]

        await wait_for_async(on_serve, timeout=5)
        await csms.command('CP2 Echo {"from": "serve"}')
        result = await csms.wait_for(lambda e: e["event"] in ("result", "error"))
        assert result["result"]["params"] == {"from": "serve"}
        await csms.command("CP404 Echo {}")
        error = await csms.wait_for(lambda e: e["event"] == "error")
        assert error["code"] == "NotConnected"
        csms.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(15):
            assert await csms.process.wait() == 0
        assert await api.locate("CP1") is None


def test_serve_cannot_reach_redis_exits_3() -> None:
    """One node or the supervisor of workers: Redis is checked first."""
    from redisserver import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    for workers in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-m", "ocpp_rpc", "serve", "--port", "0", "--no-stdin",
             "--redis", url, "--workers", workers],
            capture_output=True, text=True, timeout=TIMEOUT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert done.returncode == 3, done.stderr
        assert "cannot join the cluster" in done.stderr
        assert done.stdout == ""
