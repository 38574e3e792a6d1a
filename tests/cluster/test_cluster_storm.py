"""A reconnect storm against a real Redis: a burst of registrations on one
node far larger than it completes within one operation timeout."""

from __future__ import annotations

import anyio
import coredis
import pytest
from clusterkit import FakeHost
from redisserver import RedisServer

from ocpp_rpc.cluster import ClusterUnavailable, RedisCluster

pytestmark = pytest.mark.anyio

BURST = 3000
LEASE = 3.0  # registrations time out after 2 s (2 x lease / 3)


async def test_a_registration_storm_registers_every_charger(
    own_redis: RedisServer, prefix: str
) -> None:
    """Registered all at once, a burst of 3,000 used to time out as one (every
    registration sharing the loop and the pool), and the node then lost its
    lease: every charger refused with 1013. They now take turns, and all of
    them are registered, the lease kept throughout."""
    failures: list[BaseException] = []
    async with RedisCluster(own_redis.url, prefix=prefix, lease=LEASE) as cluster:
        host = FakeHost(cluster)

        async def connect(identity: str) -> None:
            try:
                await host.connect(identity)
            except ClusterUnavailable as exc:
                failures.append(exc)

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for number in range(BURST):
                    tg.start_soon(connect, f"CP{number}")
        assert failures == []
        assert not host.cut.is_set()
        assert not cluster.cut_off
        async with coredis.Redis.from_url(own_redis.url, decode_responses=True) as db:
            instances = await db.zrange(f"{prefix}:nodes", 0, -1)
            assert len(instances) == 1
            assert await db.scard(f"{prefix}:inst:{instances[0]}") == BURST
        assert await cluster.locate(f"CP{BURST - 1}") == cluster.node_id
