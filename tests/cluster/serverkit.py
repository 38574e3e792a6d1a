"""Helpers of the tests of the integrated cluster: `RPCServer` nodes on
loopback, and real `RPCClient` charge points."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus
from clusterkit import wait_for, wait_for_async

from ocpp_rpc import Call, RPCClient, RPCServer, ServerClient, create_rpc_error
from ocpp_rpc.cluster import RedisCluster

PROTOCOL = "ocpp2.0.1"
LEASE = 1.0


@dataclass
class Node:
    """A running `RPCServer` that is a cluster node, listening on loopback."""

    server: RPCServer
    cluster: RedisCluster
    url: str  # the chargers' endpoint

    @property
    def node_id(self) -> str:
        return self.cluster.node_id


@asynccontextmanager
async def servers(
    redis_urls: Sequence[str], prefix: str, *, lease: float = LEASE
) -> AsyncIterator[list[Node]]:
    """One running server node per Redis URL (a URL may go through a `Proxy`)."""
    async with AsyncExitStack() as stack:
        nodes = []
        for url in redis_urls:
            cluster = RedisCluster(url, prefix=prefix, lease=lease)
            server = RPCServer(protocols=[PROTOCOL], ping_interval=None, cluster=cluster)
            await stack.enter_async_context(server)
            listening = await server.listen(0, "127.0.0.1")
            nodes.append(Node(server, cluster, f"ws://127.0.0.1:{listening.port}/ocpp"))
        yield nodes


def worker(url: str, prefix: str, lease: float = LEASE) -> RedisCluster:
    """A connection-less node: an API worker."""
    return RedisCluster(url, prefix=prefix, lease=lease)


class Chargers:
    """Real charge points (`RPCClient`, no reconnects) running in a task group
    until its block ends. Their handlers:

    - ``Echo``: ``{"identity", "charger" (this connection's number), "params"}``
    - ``Fail``: raises the CALLERROR in params (``code``, ``message``, ``details``)
    - ``Hang``: sets `entered`, answers only once `release` is set
    """

    def __init__(self, tg: TaskGroup) -> None:
        self._tg = tg
        self._numbers = itertools.count(1)
        self.entered = anyio.Event()
        self.release = anyio.Event()

    async def connect(self, url: str, identity: str) -> RPCClient:
        number = next(self._numbers)
        client = RPCClient(
            url, identity, protocols=[PROTOCOL], reconnect=False, ping_interval=None
        )

        def echo(call: Call) -> Any:
            return {"identity": identity, "charger": number, "params": call.params}

        def fail(call: Call) -> Any:
            raise create_rpc_error(
                call.params["code"], call.params["message"], call.params["details"]
            )

        async def hang(call: Call) -> Any:
            self.entered.set()
            await self.release.wait()
            return {"released": True}

        client.handle("Echo", echo)
        client.handle("Fail", fail)
        client.handle("Hang", hang)
        client.number = number  # type: ignore[attr-defined]
        started: RPCClient = await self._tg.start(self._run, client)
        return started

    @staticmethod
    async def _run(client: RPCClient, *, task_status: TaskStatus[RPCClient]) -> None:
        async with client:
            task_status.started(client)
            await client.wait_closed()


@asynccontextmanager
async def chargers() -> AsyncIterator[Chargers]:
    async with anyio.create_task_group() as tg:
        yield Chargers(tg)
        tg.cancel_scope.cancel()


async def registered(node: Node, identity: str, timeout: float = 2.0) -> None:
    """Wait until `identity` is `node`'s client and the cluster locates it there."""
    await wait_for(lambda: identity in node.server.clients, timeout=timeout)

    async def located() -> bool:
        return await node.cluster.locate(identity) == node.node_id

    await wait_for_async(located, timeout=timeout)


def pending_calls(client: ServerClient) -> int:
    """Calls the server has sent to this charger and still waits for."""
    connection = client._connection
    return 0 if connection is None else len(connection.exchange.pending)


def elapsed_since(start: float) -> float:
    return anyio.current_time() - start


