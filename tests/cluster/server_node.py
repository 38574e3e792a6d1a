"""An `RPCServer` cluster node in a process of its own (for tests that
SIGKILL it): ``python server_node.py URL PREFIX LEASE BACKEND`` listens on a
free loopback port, prints ``READY <node id> <port>`` and serves until killed."""

from __future__ import annotations

import sys

import anyio

from ocpp_rpc import RPCServer
from ocpp_rpc.cluster import RedisCluster


async def main(url: str, prefix: str, lease: float) -> None:
    cluster = RedisCluster(url, prefix=prefix, lease=lease)
    async with RPCServer(protocols=["ocpp2.0.1"], ping_interval=None, cluster=cluster) as server:
        listening = await server.listen(0, "127.0.0.1")
        print("READY", cluster.node_id, listening.port, flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    url, prefix, lease, backend = sys.argv[1:]
    anyio.run(main, url, prefix, float(lease), backend=backend)
