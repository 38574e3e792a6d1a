"""Faults against a real Redis (API.md: Cluster, "Failures"): Redis killed
and restarted, a node cut off from Redis, a missed takeover message, foreign
messages; and security: password, TLS, prefixes."""

from __future__ import annotations

import logging
import ssl

import anyio
import anyio.to_thread
import coredis
import pytest
from clusterkit import FakeHost, Proxy, nodes, wait_for, wait_for_async
from redisserver import RedisServer

from ocpp_rpc import ConnectionClosed
from ocpp_rpc.cluster import ClusterUnavailable, NotConnected, RedisCluster

pytestmark = pytest.mark.anyio


async def located(cluster: RedisCluster, identity: str, node_id: str | None) -> bool:
    return await cluster.locate(identity) == node_id


async def test_redis_restart(own_redis: RedisServer, prefix: str) -> None:
    """Redis killed (all data lost) and restarted on the same port: calls fail
    fast meanwhile, never hang; then every node registers its live
    connections again within its lease and calls work again."""
    lease = 1.5
    async with nodes(own_redis.url, prefix, 2, lease=lease) as (a, worker):
        host = FakeHost(a)
        await host.connect("CP1")
        await host.connect("CP2")
        own_redis.kill()
        start = anyio.current_time()
        with pytest.raises(ClusterUnavailable):
            await worker.call("CP1", "echo", timeout=10)
        with pytest.raises(ClusterUnavailable):
            await worker.locate("CP1")
        with pytest.raises(ClusterUnavailable):
            await a.register("CP3", "c3")
        assert await a.unregister("CP2", host.connected.pop("CP2")) is False  # deferred
        assert anyio.current_time() - start < 1.0

        await anyio.to_thread.run_sync(own_redis.start)
        elapsed = await wait_for_async(lambda: located(worker, "CP1", a.node_id), timeout=lease * 3)
        assert elapsed <= lease
        # The deferred unregister happened; nothing else came back.
        assert await worker.locate("CP2") is None
        assert await worker.locate("CP3") is None
        await wait_for_async(lambda: worker.call("CP1", "echo", timeout=1), timeout=lease * 3)
        assert not host.cut.is_set()
        await host.connect("CP4")
        assert (await worker.call("CP4", "echo", {"k": 4}))["params"] == {"k": 4}


async def test_a_redis_restart_mid_call_is_not_a_lost_node(
    own_redis: RedisServer, prefix: str
) -> None:
    """Redis restarts (its data lost) while a routed call waits for the
    charger; the node holding it stays up and re-joins. The caller cannot
    tell that node from a lost one by its lease any more, so it is not
    failed with ConnectionClosed(1006): the charger's answer comes back."""
    lease = 1.0
    async with nodes(own_redis.url, prefix, 2, lease=lease) as (a, worker):
        await FakeHost(a).connect("CP1")

        async def restart() -> None:
            await anyio.sleep(0.2)
            own_redis.kill()
            await anyio.sleep(0.2)
            await anyio.to_thread.run_sync(own_redis.start)

        async with anyio.create_task_group() as tg:
            tg.start_soon(restart)
            with anyio.fail_after(5):
                assert await worker.call("CP1", "sleep", {"delay": 2.0}, timeout=4) == "slept"


async def test_a_node_lost_after_a_redis_restart_is_still_seen_lost(
    own_redis: RedisServer, prefix: str
) -> None:
    """Once the node holding the charger has re-joined after a Redis restart
    (under a new lease), its death is noticed again: the waiting call fails
    with ConnectionClosed(1006) well before its deadline."""
    lease = 1.0
    async with (
        Proxy(own_redis.port) as proxy,
        RedisCluster(proxy.url(), prefix=prefix, lease=lease) as node,
        RedisCluster(own_redis.url, prefix=prefix, lease=lease) as worker,
    ):
        await FakeHost(node).connect("CP1")
        outcome: list[BaseException] = []
        ended = anyio.Event()

        async def call() -> None:
            try:
                await worker.call("CP1", "hang", timeout=20)
            except Exception as exc:
                outcome.append(exc)
            finally:
                ended.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await anyio.sleep(0.2)
            own_redis.kill()
            await anyio.sleep(0.2)
            await anyio.to_thread.run_sync(own_redis.start)
            await wait_for_async(lambda: _holds(worker, "CP1", node.node_id), timeout=5)
            await proxy.cut()  # the node vanishes: no renewal, no answer
            with anyio.fail_after(lease * 5):
                await ended.wait()
        assert isinstance(outcome[0], ConnectionClosed) and outcome[0].code == 1006


async def _holds(worker: RedisCluster, identity: str, node_id: str) -> bool:
    try:
        return await worker.locate(identity) == node_id
    except ClusterUnavailable:
        return False


async def test_cut_off_longer_than_the_lease(redis: RedisServer, prefix: str) -> None:
    """A node that cannot reach Redis for `lease` seconds reports it (the
    server then closes its chargers with 1001); once Redis is reachable again
    it rejoins and works."""
    lease = 0.6
    async with (
        Proxy(redis.port) as proxy,
        RedisCluster(proxy.url(), prefix=prefix, lease=lease) as node,
        RedisCluster(redis.url, prefix=prefix, lease=lease) as worker,
    ):
        host = FakeHost(node)
        await host.connect("CP1")
        # A short stall (well under the lease) changes nothing.
        proxy.pause()
        await anyio.sleep(lease / 4)
        proxy.resume()
        assert not host.cut.is_set()
        assert await worker.locate("CP1") == node.node_id

        proxy.pause()
        start = anyio.current_time()
        with anyio.fail_after(lease * 3):
            await host.cut.wait()
        elapsed = anyio.current_time() - start
        assert lease * 0.6 <= elapsed <= lease + 0.25
        assert node.cut_off
        assert host.connected == {}  # the host closed its chargers
        # The node gives up at most `lease` after its last renewal was *sent*;
        # Redis drops the lease `lease` after it *ran*, a moment later.
        await wait_for_async(lambda: located(worker, "CP1", None), timeout=0.5)
        with pytest.raises(NotConnected):
            await worker.call("CP1", "echo")

        proxy.resume()
        with anyio.fail_after(lease * 4):
            await host.back.wait()
        assert not node.cut_off
        await wait_for(lambda: node._subscribed, timeout=5)
        await host.connect("CP2")
        assert (await worker.call("CP2", "echo"))["params"] == {}
        assert await worker.locate("CP1") is None


async def test_a_stalled_redis_never_hangs_a_caller(redis: RedisServer, prefix: str) -> None:
    """Redis stops answering (a paused proxy): a call ends at its deadline,
    a lookup fails once the node notices the stall; both well within the
    lease; after the stall everything works again."""
    lease = 0.9
    async with (
        Proxy(redis.port) as proxy,
        RedisCluster(redis.url, prefix=prefix, lease=lease) as node,
        RedisCluster(proxy.url(), prefix=prefix, lease=lease) as worker,
    ):
        await FakeHost(node).connect("CP1")
        proxy.pause()
        start = anyio.current_time()
        with pytest.raises(TimeoutError):
            await worker.call("CP1", "echo", timeout=0.2)
        assert anyio.current_time() - start <= 0.2 + 0.1
        with anyio.fail_after(lease), pytest.raises(ClusterUnavailable):
            await worker.locate("CP1")
        proxy.resume()
        await wait_for_async(lambda: worker.call("CP1", "echo", timeout=1), timeout=lease * 4)
        assert await worker.locate("CP1") == node.node_id


async def test_a_missed_takeover_is_caught_up(redis: RedisServer, prefix: str) -> None:
    """Node A's connection to Redis blips while B takes a charger over, so A
    never gets the "replace" message: once resubscribed, A finds out and
    closes its stale connection."""
    async with (
        Proxy(redis.port) as proxy,
        RedisCluster(proxy.url(), prefix=prefix, lease=3) as a,
        RedisCluster(redis.url, prefix=prefix, lease=3) as b,
    ):
        host_a, host_b = FakeHost(a), FakeHost(b)
        old, _ = await host_a.connect("CP1")
        await proxy.drop()
        await wait_for(lambda: not a._subscribed)
        await host_b.connect("CP1")
        proxy.resume()
        await wait_for(lambda: host_a.replaced_connections, timeout=5)
        assert host_a.replaced_connections == [("CP1", old)]
        assert await b.locate("CP1") == b.node_id


async def test_unknown_versions_and_garbage_are_dropped_and_logged(
    redis: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "ocpp_rpc.cluster")
    async with nodes(redis.url, prefix, 2) as (a, worker), coredis.Redis.from_url(
        redis.url, decode_responses=True
    ) as db:
        host = FakeHost(a)
        await host.connect("CP1")
        inbox = f"{prefix}:inbox:{a.node_id}"
        future = '{"v":2,"k":"call","id":"1","from":"x","identity":"CP1","method":"echo"}'
        for text in (future, "not json", "[1]", '{"v":1,"k":"call"}', '{"v":1,"k":"?"}'):
            assert await db.publish(inbox, text) == 1
        await db.publish(f"{prefix}:events", '{"v":7,"k":"connected"}')
        await wait_for(lambda: len(caplog.records) >= 5)
        messages = [record.getMessage() for record in caplog.records]
        assert any("unknown version 2" in message for message in messages)
        assert host.calls == []
        assert (await worker.call("CP1", "echo"))["params"] == {}


async def test_password_and_tls(
    tls_redis: RedisServer, prefix: str, client_ssl_context: ssl.SSLContext
) -> None:
    url = tls_redis.url  # rediss://:<percent-encoded password>@127.0.0.1:port/0?ssl_ca_certs=...
    async with (
        RedisCluster(url, prefix=prefix) as a,
        RedisCluster(url.split("?")[0], prefix=prefix, ssl_context=client_ssl_context) as b,
    ):
        await FakeHost(a).connect("CP1")
        assert (await b.call("CP1", "echo", {"tls": True}))["params"] == {"tls": True}
        assert "s3cr" not in repr(a)
    wrong = url.replace(url.split("@")[0], "rediss://:wrong")
    with anyio.fail_after(5), pytest.raises(ClusterUnavailable):
        async with RedisCluster(wrong, prefix=prefix):
            pass
    # The server's certificate is verified by default.
    untrusted = url.split("?")[0]
    with anyio.fail_after(5), pytest.raises(ClusterUnavailable):
        async with RedisCluster(untrusted, prefix=prefix):
            pass


async def test_password_required(redis_binary_path: str, prefix: str, tmp_path: object) -> None:
    from pathlib import Path

    server = RedisServer(redis_binary_path, Path(str(tmp_path)), password="pa ss")
    await anyio.to_thread.run_sync(server.start)
    try:
        async with RedisCluster(server.url, prefix=prefix) as cluster:
            await FakeHost(cluster).connect("CP1")
            assert await cluster.locate("CP1") == cluster.node_id
        with pytest.raises(ClusterUnavailable):
            async with RedisCluster(f"redis://127.0.0.1:{server.port}/0", prefix=prefix):
                pass
    finally:
        server.kill()


async def test_no_task_outlives_the_cluster(redis: RedisServer, prefix: str) -> None:
    before = len(anyio.get_running_tasks())
    async with nodes(redis.url, prefix, 3) as (a, b, worker):
        host, host_b = FakeHost(a), FakeHost(b)
        await host_b.connect("CP1")
        await host.connect("CP1")
        async with worker.events() as events:
            await host_b.connect("CP2")
            await events.__anext__()
        with pytest.raises(TimeoutError):
            await worker.call("CP1", "hang", timeout=0.05)
        assert (await worker.call("CP1", "echo"))["params"] == {}
        assert len(anyio.get_running_tasks()) > before
    await wait_for(lambda: len(anyio.get_running_tasks()) == before, timeout=2)
