"""A cluster node in a process of its own (for tests that SIGKILL it):
``python node_process.py URL PREFIX LEASE BACKEND IDENTITY...`` registers the
identities with a `FakeHost`, prints ``READY <node id>`` and waits forever."""

from __future__ import annotations

import sys

import anyio
from clusterkit import FakeHost

from ocpp_rpc.cluster import RedisCluster


async def main(url: str, prefix: str, lease: float, identities: list[str]) -> None:
    async with RedisCluster(url, prefix=prefix, lease=lease) as cluster:
        host = FakeHost(cluster)
        for identity in identities:
            await host.connect(identity)
        print("READY", cluster.node_id, flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    url, prefix, lease, backend, *identities = sys.argv[1:]
    anyio.run(main, url, prefix, float(lease), identities, backend=backend)
