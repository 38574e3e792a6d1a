"""Calls by identity across nodes against a real Redis (API.md: Server-
initiated calls by identity, Cluster): outcomes, deadlines, cancellation,
at-most-once, a node lost mid-call."""

from __future__ import annotations

import anyio
import pytest
from clusterkit import FakeHost, Proxy, nodes, wait_for
from redisserver import RedisServer

from ocpp_rpc import (
    ConnectionClosed,
    RPCError,
    RPCInternalError,
    RPCPropertyConstraintViolationError,
)
from ocpp_rpc.cluster import ClusterUnavailable, NotConnected, RedisCluster

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["node", "worker"])
def caller_kind(request: pytest.FixtureRequest) -> str:
    """Calls come from another server node, or from a connection-less worker."""
    return str(request.param)


async def test_result_comes_back(redis: RedisServer, prefix: str, caller_kind: str) -> None:
    async with nodes(redis.url, prefix, 2) as (a, b):
        host_a = FakeHost(a)
        if caller_kind == "node":
            FakeHost(b)
        await host_a.connect("CP1")
        result = await b.call("CP1", "echo", {"x": [1, "ü", None]}, timeout=5)
        assert result["params"] == {"x": [1, "ü", None]}
        assert host_a.calls[0][:3] == ("CP1", "echo", {"x": [1, "ü", None]})
        assert (await b.call("CP1", "echo"))["params"] == {}  # None sends {}


async def test_a_call_to_a_charger_on_the_same_node(redis: RedisServer, prefix: str) -> None:
    async with nodes(redis.url, prefix, 1) as (a,):
        await FakeHost(a).connect("CP1")
        assert (await a.call("CP1", "echo", {"n": 2}))["params"] == {"n": 2}


async def test_callerror_code_message_and_details_intact(
    redis: RedisServer, prefix: str, caller_kind: str
) -> None:
    async with nodes(redis.url, prefix, 2) as (a, b):
        await FakeHost(a).connect("CP1")
        params = {
            "code": "PropertyConstraintViolation",
            "message": "connectorId out of range",
            "details": {"field": "connectorId", "max": 2},
        }
        with pytest.raises(RPCPropertyConstraintViolationError) as caught:
            await b.call("CP1", "error", params)
        assert caught.value.code == "PropertyConstraintViolation"
        assert caught.value.message == "connectorId out of range"
        assert caught.value.details == {"field": "connectorId", "max": 2}
        # An unknown code keeps its spelling.
        params["code"] = "VendorSpecificThing"
        with pytest.raises(RPCError) as caught_unknown:
            await b.call("CP1", "error", params)
        assert caught_unknown.value.code == "VendorSpecificThing"
        # A failing node-side bug becomes an InternalError, not a hang.
        with pytest.raises(RPCInternalError):
            await b.call("CP1", "boom")


async def test_connection_closed_comes_back(redis: RedisServer, prefix: str) -> None:
    async with nodes(redis.url, prefix, 2) as (a, b):
        await FakeHost(a).connect("CP1")
        with pytest.raises(ConnectionClosed) as caught:
            await b.call("CP1", "closed")
        assert (caught.value.code, caught.value.reason) == (1001, "going away")


async def test_not_connected_at_once(redis: RedisServer, prefix: str) -> None:
    async with nodes(redis.url, prefix, 2) as (a, b):
        host = FakeHost(a)
        start = anyio.current_time()
        with pytest.raises(NotConnected) as caught:
            await b.call("nobody", "echo", timeout=30)
        assert caught.value.identity == "nobody"
        assert isinstance(caught.value, LookupError)
        # Registered, but the node no longer holds it (a stale registration):
        # NotConnected too, not a timeout.
        await host.connect("CP1")
        del host.connected["CP1"]
        with pytest.raises(NotConnected):
            await b.call("CP1", "echo", timeout=30)
        assert anyio.current_time() - start < 1.0


async def test_the_deadline_travels_with_the_call(redis: RedisServer, prefix: str) -> None:
    async with nodes(redis.url, prefix, 2) as (a, b):
        host = FakeHost(a)
        await host.connect("CP1")
        result = await b.call("CP1", "echo", timeout=2.5)
        assert 2.0 < result["timeout"] <= 2.5
        # The node uses the remaining time: its own TimeoutError comes back
        # no later than the caller's deadline.
        start = anyio.current_time()
        with pytest.raises(TimeoutError):
            await b.call("CP1", "expire", timeout=0.4)
        elapsed = anyio.current_time() - start
        assert 0.35 <= elapsed <= 0.4 + 0.15
        assert 0.3 < host.calls[-1][3] <= 0.4


async def test_timeout_none_means_the_default(redis: RedisServer, prefix: str) -> None:
    """As `server.call`: ``timeout=None`` is the default (60 s for `RedisCluster.call`)."""
    async with nodes(redis.url, prefix, 2) as (a, b):
        await FakeHost(a).connect("CP1")
        result = await b.call("CP1", "echo", timeout=None)
        assert 59.0 < result["timeout"] <= 60.0


async def test_a_charger_that_never_answers(redis: RedisServer, prefix: str) -> None:
    async with nodes(redis.url, prefix, 2) as (a, b):
        host = FakeHost(a)
        await host.connect("CP1")
        start = anyio.current_time()
        with pytest.raises(TimeoutError):
            await b.call("CP1", "hang", timeout=0.3)
        assert anyio.current_time() - start <= 0.3 + 0.1
        # The node abandons the call too: a host that does not keep to the
        # deadline it was given is cancelled at most a second after it.
        with anyio.fail_after(2):
            await host.withdrawn.wait()
        await wait_for(lambda: a._deliverer.inflight == 0 and b._caller.pending == 0)


async def test_a_call_that_times_out_is_not_withdrawn(redis: RedisServer, prefix: str) -> None:
    """The node holding the call works to the same deadline and ends it
    itself; a Cancel would mostly arrive after that and be kept there as one
    that overtook its call (an outside review counted 0.77 such dead entries
    per timed-out call)."""
    async with nodes(redis.url, prefix, 2) as (a, b):
        host = FakeHost(a)
        await host.connect("CP1")
        cancels: list[object] = []
        on_cancel = a._deliverer.on_cancel
        a._deliverer.on_cancel = lambda cancel: (cancels.append(cancel), on_cancel(cancel))  # type: ignore[method-assign]
        with pytest.raises(TimeoutError):
            await b.call("CP1", "hang", timeout=0.2)
        with anyio.fail_after(2):
            await host.withdrawn.wait()  # abandoned by the node itself
        # A call published after any Cancel reaches the node after it, in order.
        assert (await b.call("CP1", "echo"))["params"] == {}
        assert cancels == []
        assert not a._deliverer._early_cancels


async def test_a_cancelled_caller_leaves_nothing_behind(
    redis: RedisServer, prefix: str, caller_kind: str
) -> None:
    async with nodes(redis.url, prefix, 2) as (a, b):
        host = FakeHost(a)
        await host.connect("CP1")
        async with anyio.create_task_group() as tg:
            tg.start_soon(b.call, "CP1", "hang")
            with anyio.fail_after(2):
                await host.hanging.wait()
            assert b._caller.pending == 1 and a._deliverer.inflight == 1
            tg.cancel_scope.cancel()
        assert b._caller.pending == 0
        with anyio.fail_after(2):
            await host.withdrawn.wait()  # the node withdrew the charger's call
        await wait_for(lambda: a._deliverer.inflight == 0)
        # Both still work.
        assert (await b.call("CP1", "echo"))["params"] == {}


async def test_a_call_in_a_cancelled_scope_is_not_delivered(
    redis: RedisServer, prefix: str, caller_kind: str
) -> None:
    """Cancelled before it starts: the caller gets the cancellation and the
    charger never gets the call (an operation that raised it did not happen)."""
    async with nodes(redis.url, prefix, 2) as (a, b):
        host = FakeHost(a)
        if caller_kind == "node":
            FakeHost(b)
        await host.connect("CP1")
        with anyio.CancelScope() as scope:
            scope.cancel()
            await b.call("CP1", "echo", {"n": 1})
        assert scope.cancelled_caught
        assert (await b.call("CP1", "echo", {"n": 2}))["params"] == {"n": 2}
        assert [call[2] for call in host.calls] == [{"n": 2}]


async def test_a_call_is_never_delivered_twice(redis: RedisServer, prefix: str) -> None:
    async with nodes(redis.url, prefix, 3) as (a, b, worker):
        host_a = FakeHost(a)
        await host_a.connect("CP1")
        await FakeHost(b).connect("CP2")
        async with anyio.create_task_group() as tg:
            for n in range(40):
                tg.start_soon(worker.call, "CP1" if n % 2 else "CP2", "echo", {"n": n})
        assert sorted(c[2]["n"] for c in host_a.calls) == list(range(1, 40, 2))


async def test_a_node_lost_mid_call(redis: RedisServer, prefix: str) -> None:
    """The node holding the charger vanishes after receiving the call: the
    caller learns it once the node's lease is gone, well before its timeout."""
    lease = 0.6
    async with (
        Proxy(redis.port) as proxy,
        RedisCluster(proxy.url(), prefix=prefix, lease=lease) as doomed,
        RedisCluster(redis.url, prefix=prefix, lease=lease) as worker,
    ):
        host = FakeHost(doomed)
        await host.connect("CP1")
        async with anyio.create_task_group() as tg:

            async def vanish() -> None:
                await host.hanging.wait()
                await proxy.cut()

            tg.start_soon(vanish)
            start = anyio.current_time()
            with pytest.raises(ConnectionClosed) as caught:
                await worker.call("CP1", "hang", timeout=30)
        assert caught.value.code == 1006
        assert anyio.current_time() - start <= lease * 2 + 0.5
        # ... and a call made now is NotConnected at once.
        with pytest.raises(NotConnected):
            await worker.call("CP1", "echo", timeout=30)


async def test_calls_need_a_running_cluster(redis: RedisServer, prefix: str) -> None:
    cluster = RedisCluster(redis.url, prefix=prefix)
    with pytest.raises(RuntimeError, match="async with"):
        await cluster.call("CP1", "echo")
    async with cluster:
        pass
    with pytest.raises(RuntimeError):
        await cluster.locate("CP1")
    with pytest.raises(RuntimeError, match="only once"):
        async with cluster:
            pass


async def test_a_pending_call_fails_when_its_cluster_closes(
    redis: RedisServer, prefix: str
) -> None:
    async with RedisCluster(redis.url, prefix=prefix) as a:
        host = FakeHost(a)
        await host.connect("CP1")
        outcome: list[BaseException] = []
        async with anyio.create_task_group() as tg:
            async with RedisCluster(redis.url, prefix=prefix) as b:

                async def call() -> None:
                    try:
                        await b.call("CP1", "hang", timeout=30)
                    except ClusterUnavailable as exc:
                        outcome.append(exc)

                tg.start_soon(call)
                await host.hanging.wait()
        assert len(outcome) == 1
