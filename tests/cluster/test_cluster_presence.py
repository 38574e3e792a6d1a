"""Presence against a real Redis (API.md: Cluster): joining, registering,
compare-and-delete, takeover races, leases, events, key layout."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import anyio
import pytest
from clusterkit import FakeHost, Proxy, nodes, wait_for, wait_for_async
from redisserver import RedisServer

from ocpp_rpc.cluster import ClusterEvent, ClusterUnavailable, NotConnected, Owner, RedisCluster

pytestmark = pytest.mark.anyio

WEIRD_IDENTITIES = [
    "CP:1", "CP%3A1", "CP 1", "a/b", "{tag}", "ünïcødé-☃", "x" * 300, "", "ocpp:id:CP",
    "%", "*", "a\nb", "ä",
]


async def test_join_refused_raises_cluster_unavailable(prefix: str) -> None:
    from redisserver import free_port

    with anyio.fail_after(5):
        with pytest.raises(ClusterUnavailable) as caught:
            async with RedisCluster(f"redis://127.0.0.1:{free_port()}/0", prefix=prefix):
                pass
    assert isinstance(caught.value, OSError)


async def test_a_join_cancelled_while_redis_is_silent_is_cancelled(prefix: str) -> None:
    """Redis accepts the connection but never answers: cancelling the join
    (here `move_on_after`) cancels it, on both backends, instead of letting
    coredis's "cannot connect" escape the cancelled scope as ClusterUnavailable."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(10)  # the kernel completes the handshakes; nobody reads
        port = silent.getsockname()[1]
        url = f"redis://127.0.0.1:{port}/0"
        with anyio.fail_after(5):
            with anyio.move_on_after(0.3) as scope:
                async with RedisCluster(url, prefix=prefix):
                    pytest.fail("joined a Redis that never answers")
        assert scope.cancelled_caught
        # Uncancelled, the join fails within its operations' bound (2 x lease / 3),
        # not the shared pool's 10 s response timeout.
        start = anyio.current_time()
        with anyio.fail_after(5), pytest.raises(ClusterUnavailable):
            async with RedisCluster(url, prefix=prefix, lease=0.6):
                pass
        assert anyio.current_time() - start < 2


async def test_join_and_leave_keep_nothing_behind(redis: RedisServer, prefix: str) -> None:
    import coredis

    async with coredis.Redis.from_url(redis.url, decode_responses=True) as db:
        async with RedisCluster(redis.url, prefix=prefix, lease=5) as cluster:
            assert cluster.node_id
            assert await db.get(f"{prefix}:node:{cluster.node_id}")
            host = FakeHost(cluster)
            await host.connect("CP1")
            assert await cluster.locate("CP1") == cluster.node_id
            assert set(await db.keys(f"{prefix}:*")) >= {f"{prefix}:id:CP1", f"{prefix}:nodes"}
        assert await db.keys(f"{prefix}:*") == set()


async def test_leaving_by_cancellation_leaves_at_once(
    redis: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A node's block ended by a cancelled scope (a failing sibling task,
    `move_on_after`) still leaves: its lease and registrations go at once,
    not a lease later (Redis's connections are not cancelled with it)."""
    import coredis

    async with coredis.Redis.from_url(redis.url, decode_responses=True) as db:
        with anyio.CancelScope() as scope:
            async with RedisCluster(redis.url, prefix=prefix, lease=30) as cluster:
                await FakeHost(cluster).connect("CP1")
                assert await db.keys(f"{prefix}:*")
                scope.cancel()
                await anyio.sleep_forever()
        assert scope.cancelled_caught
        assert await db.keys(f"{prefix}:*") == set()
    assert "could not leave cleanly" not in caplog.text


async def test_register_locate_unregister(redis: RedisServer, prefix: str) -> None:
    async with nodes(redis.url, prefix, 2) as (a, worker):
        host = FakeHost(a)
        assert await worker.locate("CP1") is None
        conn, previous = await host.connect("CP1")
        assert previous is None
        assert await worker.locate("CP1") == a.node_id
        assert await a.unregister("CP1", "some-other-connection") is False
        assert await worker.locate("CP1") == a.node_id
        assert await a.unregister("CP1", conn) is True
        assert await worker.locate("CP1") is None
        assert await a.unregister("CP1", conn) is False


async def test_stale_unregister_never_removes_a_newer_registration(
    redis: RedisServer, prefix: str
) -> None:
    async with nodes(redis.url, prefix, 3) as (a, b, worker):
        host_a, host_b = FakeHost(a), FakeHost(b)
        old, _ = await host_a.connect("CP1")
        new, previous = await host_b.connect("CP1")
        assert previous == Owner(a.node_id, old)
        # The stale connection closing on A (late) leaves B's registration alone.
        assert await a.unregister("CP1", old) is False
        assert await worker.locate("CP1") == b.node_id
        # Same node: a newer connection replaced an older one locally.
        newer, previous = await host_b.connect("CP1")
        assert previous == Owner(b.node_id, new)
        assert await b.unregister("CP1", new) is False
        assert await worker.locate("CP1") == b.node_id
        assert await b.unregister("CP1", newer) is True
        assert await worker.locate("CP1") is None


async def test_takeover_closes_the_older_connection_on_its_node(
    redis: RedisServer, prefix: str
) -> None:
    async with nodes(redis.url, prefix, 2) as (a, b):
        host_a, host_b = FakeHost(a), FakeHost(b)
        old, _ = await host_a.connect("CP1")
        await host_b.connect("CP1")
        await wait_for(lambda: host_a.replaced_connections)
        assert host_a.replaced_connections == [("CP1", old)]
        assert host_a.unregister_results == [False]  # B's registration stays
        assert "CP1" not in host_a.connected
        assert host_b.replaced_connections == []
        assert await a.locate("CP1") == b.node_id


async def test_two_nodes_registering_at_once_leave_exactly_one(
    redis: RedisServer, prefix: str
) -> None:
    async with nodes(redis.url, prefix, 3) as (a, b, worker):
        host_a, host_b = FakeHost(a), FakeHost(b)
        for round_ in range(50):
            identity = f"CP{round_}"
            async with anyio.create_task_group() as tg:
                tg.start_soon(host_a.connect, identity)
                tg.start_soon(host_b.connect, identity)
            owner = await worker.locate(identity)
            loser = host_b if owner == a.node_id else host_a
            winner = host_a if loser is host_b else host_b
            await wait_for(lambda: identity not in loser.connected, timeout=2)  # noqa: B023
            assert identity in winner.connected
            assert owner in (a.node_id, b.node_id)
        # Nobody was told to close a connection that won.
        for host in (host_a, host_b):
            for identity, connection_id in host.replaced_connections:
                assert (await worker.locate(identity)) != host.cluster.node_id or (
                    host.connected.get(identity) != connection_id
                )
        assert len(host_a.replaced_connections) + len(host_b.replaced_connections) == 50


async def test_identities_are_arbitrary_strings(redis: RedisServer, prefix: str) -> None:
    import coredis

    async with nodes(redis.url, prefix, 2) as (a, worker):
        host = FakeHost(a)
        for identity in WEIRD_IDENTITIES:
            await host.connect(identity)
        async with coredis.Redis.from_url(redis.url, decode_responses=True) as db:
            keys = set(await db.keys(f"{prefix}:id:*"))
        assert keys == {f"{prefix}:id:{quote(i, safe='')}" for i in WEIRD_IDENTITIES}
        assert all(":" not in key[len(f"{prefix}:id:"):] for key in keys)
        for identity in WEIRD_IDENTITIES:
            assert await worker.locate(identity) == a.node_id
            assert (await worker.call(identity, "echo", {"i": identity}))["params"] == {
                "i": identity
            }
        assert await worker.locate("CP%253A1") is None
    # The Lua side encodes identities the same way: the node leaving removed
    # every one of them.
    async with coredis.Redis.from_url(redis.url, decode_responses=True) as db:
        assert await db.keys(f"{prefix}:*") == set()


async def test_prefixes_keep_deployments_apart(redis: RedisServer, prefix: str) -> None:
    async with (
        RedisCluster(redis.url, prefix=prefix) as one,
        RedisCluster(redis.url, prefix=prefix + "-b") as other,
        RedisCluster(redis.url, prefix=prefix + ":id") as tricky,
    ):
        events = other.events()
        await FakeHost(one).connect("CP1")
        await FakeHost(tricky).connect("CP1")
        assert await other.locate("CP1") is None
        with pytest.raises(NotConnected):
            await other.call("CP1", "echo")
        assert await one.locate("CP1") == one.node_id
        assert await tricky.locate("CP1") == tricky.node_id
        with anyio.move_on_after(0.2):
            async for event in events:
                pytest.fail(f"event from another prefix: {event}")


async def test_events_from_every_node(redis: RedisServer, prefix: str) -> None:
    async with nodes(redis.url, prefix, 3) as (a, b, worker):
        host_a, host_b = FakeHost(a), FakeHost(b)
        async with worker.events() as events:
            await host_a.connect("CP1", "ocpp1.6")
            await host_b.connect("CP2", None)
            await host_b.connect("CP1", "ocpp2.1")  # takes CP1 over from A
            await host_b.disconnect("CP2")
            await wait_for(lambda: "CP1" not in host_a.connected)
            seen: list[ClusterEvent] = []
            with anyio.fail_after(5):
                async for event in events:
                    seen.append(event)
                    if len(seen) == 4:
                        break
        assert [(e.type, e.identity, e.node_id, e.protocol) for e in seen] == [
            ("connected", "CP1", a.node_id, "ocpp1.6"),
            ("connected", "CP2", b.node_id, None),
            ("connected", "CP1", b.node_id, "ocpp2.1"),
            ("disconnected", "CP2", b.node_id, None),
        ]
        assert all(abs(e.time - seen[0].time) < 5 for e in seen)
        # Closing the iterator unsubscribes it; a new one sees only new events.
        async with worker.events() as later:
            await host_a.connect("CP3")
            with anyio.fail_after(5):
                event = await later.__anext__()
        assert (event.type, event.identity) == ("connected", "CP3")


async def test_events_end_when_the_cluster_closes(redis: RedisServer, prefix: str) -> None:
    async with RedisCluster(redis.url, prefix=prefix) as cluster:
        events = cluster.events()
    with anyio.fail_after(2):
        assert [event async for event in events] == []


async def test_a_second_process_with_the_same_node_id_waits_for_the_lease(
    redis: RedisServer, prefix: str
) -> None:
    async with RedisCluster(redis.url, prefix=prefix, node_id="fixed-node", lease=0.3):
        start = anyio.current_time()
        with pytest.raises(ClusterUnavailable, match="held by another live node"):
            async with RedisCluster(redis.url, prefix=prefix, node_id="fixed-node", lease=0.3):
                pass
        assert anyio.current_time() - start >= 0.3


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="node_id"):
        RedisCluster(node_id="has:colon")
    with pytest.raises(ValueError, match="lease"):
        RedisCluster(lease=0)
    with pytest.raises(ValueError, match="prefix"):
        RedisCluster(prefix="")
    with pytest.raises(ValueError, match="scheme"):
        RedisCluster("http://localhost")


async def test_a_vanished_node_counts_as_gone_within_its_lease(
    redis: RedisServer, prefix: str
) -> None:
    lease = 0.6
    async with (
        Proxy(redis.port) as proxy,
        RedisCluster(proxy.url(), prefix=prefix, lease=lease) as doomed,
        RedisCluster(redis.url, prefix=prefix, lease=lease) as worker,
        RedisCluster(redis.url, prefix=prefix, lease=lease) as other,
    ):
        host = FakeHost(doomed)
        await host.connect("CP1")
        await host.connect("CP2")
        assert await worker.locate("CP1") == doomed.node_id
        async with worker.events() as events:
            await proxy.cut()  # the node's host vanished: no unregister, no renewal
            # A charger reconnecting elsewhere is accepted at once.
            start = anyio.current_time()
            other_host = FakeHost(other)
            _, previous = await other_host.connect("CP2")
            assert anyio.current_time() - start < lease / 2
            assert previous is not None and previous.node_id == doomed.node_id
            elapsed = await wait_for_async(
                lambda: _is_none(worker.locate("CP1")), timeout=lease * 3
            )
            assert elapsed <= lease + 0.3
            with pytest.raises(NotConnected):
                await worker.call("CP1", "echo")
            assert await worker.locate("CP2") == other.node_id
            # Someone reaps the dead node: "disconnected" for what it still held.
            gone: list[ClusterEvent] = []
            with anyio.fail_after(lease * 3):
                async for event in events:
                    if event.type == "disconnected":
                        gone.append(event)
                        break
        assert [(e.identity, e.node_id) for e in gone] == [("CP1", doomed.node_id)]


async def _is_none(awaitable: object) -> bool:
    return await awaitable is None  # type: ignore[misc]


NODE_SCRIPT = Path(__file__).with_name("node_process.py")


async def test_a_node_process_killed_with_sigkill(
    redis: RedisServer, prefix: str, anyio_backend: str
) -> None:
    """A separate node process: calls reach it; SIGKILL it and within its
    lease its chargers are connected nowhere."""
    lease = 0.8
    process = await anyio.open_process(
        [sys.executable, str(NODE_SCRIPT), redis.url, prefix, str(lease), anyio_backend,
         "CP1", "CP2"],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert process.stdout is not None
        with anyio.fail_after(20):
            line = b""
            while not line.endswith(b"\n"):
                line += await process.stdout.receive(1)
        node_id = line.decode().split()[1]
        async with RedisCluster(redis.url, prefix=prefix, lease=lease) as worker:
            assert await worker.locate("CP1") == node_id
            answer = await worker.call("CP2", "echo", {"n": 1}, timeout=5)
            assert answer["params"] == {"n": 1}
            process.send_signal(signal.SIGKILL)
            await process.wait()
            # A call made at once is not lost and does not wait for its
            # timeout: NotConnected as soon as the dead node's lease is gone.
            start = anyio.current_time()
            with pytest.raises(NotConnected):
                await worker.call("CP2", "echo", timeout=30)
            assert anyio.current_time() - start <= lease + 0.3
            assert await worker.locate("CP1") is None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
