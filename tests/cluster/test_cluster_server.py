"""`RPCServer(cluster=RedisCluster(...))`: the integrated cluster against a
real Redis, with real sockets and real `RPCClient` chargers (API.md:
"Server-initiated calls by identity", "Cluster").

Calls by identity between nodes and from an API worker, takeover (also two
nodes accepting one identity at once), events, the faults (a node cut off
from Redis, Redis restarted, a node process killed), ``reuse_port``, and a
server without a cluster. Several servers run in this process, each a node;
one test kills a node running in a process of its own."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import pytest
from clusterkit import Proxy, wait_for, wait_for_async
from redisserver import RedisServer, free_port
from serverkit import (
    PROTOCOL,
    Node,
    chargers,
    elapsed_since,
    pending_calls,
    registered,
    servers,
    worker,
)

from ocpp_rpc import (
    ConnectionClosed,
    NotConnected,
    RPCClient,
    RPCPropertyConstraintViolationError,
    RPCServer,
    ServerClient,
    State,
)
from ocpp_rpc.cluster import ClusterEvent, ClusterUnavailable, RedisCluster

pytestmark = pytest.mark.anyio

SERVER_NODE = Path(__file__).with_name("server_node.py")


# -- calls by identity ---------------------------------------------------------------


async def test_calls_by_identity_reach_a_charger_on_another_node(
    redis: RedisServer, prefix: str
) -> None:
    """From another node and from an API worker (and locally): the charger's
    result, its CALLERROR with code, message and details intact; an identity
    connected nowhere is `NotConnected` at once. The charger is registered
    before `on_client` runs."""
    located_in_on_client: list[str | None] = []
    async with (
        servers([redis.url] * 2, prefix) as (a, b),
        worker(redis.url, prefix) as api,
        chargers() as cps,
    ):

        @a.server.on_client
        async def on_client(client: ServerClient) -> None:
            located_in_on_client.append(await api.locate(client.identity))

        await cps.connect(a.url, "CP1")
        await registered(a, "CP1")
        assert located_in_on_client == [a.node_id]
        assert "CP1" not in b.server.clients  # `clients` is each node's own
        params = {"x": [1, "ü", None], "n": 1.5}
        for caller in (b.server, api, a.server):
            answer = await caller.call("CP1", "Echo", params, timeout=5)
            assert answer == {"identity": "CP1", "charger": 1, "params": params}
        assert (await b.server.call("CP1", "Echo"))["params"] == {}  # None sends {}

        error = {
            "code": "PropertyConstraintViolation",
            "message": "connectorId out of range",
            "details": {"field": "connectorId", "max": 2},
        }
        for caller in (b.server, api):
            with pytest.raises(RPCPropertyConstraintViolationError) as caught:
                await caller.call("CP1", "Fail", error)
            assert caught.value.code == "PropertyConstraintViolation"
            assert caught.value.message == "connectorId out of range"
            assert caught.value.details == {"field": "connectorId", "max": 2}

        for caller in (b.server, api, a.server):
            start = anyio.current_time()
            with pytest.raises(NotConnected) as not_connected:
                await caller.call("CP404", "Echo", timeout=30)
            assert not_connected.value.identity == "CP404"
            assert elapsed_since(start) < 0.5


class HeldRegistration(RedisCluster):
    """A node whose registrations return only when `hold` is set: the window
    in which Redis already routes calls to a charger the server is still
    admitting, which a loaded machine can stretch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hold = anyio.Event()
        self.registered = anyio.Event()

    async def register(self, identity: str, connection_id: str, protocol: str | None = None) -> Any:
        owner = await super().register(identity, connection_id, protocol)
        self.registered.set()
        await self.hold.wait()
        return owner


async def test_a_call_routed_while_the_charger_is_being_admitted_waits_for_it(
    redis: RedisServer, prefix: str
) -> None:
    """Registered in Redis, the charger is routed to before its server has
    finished admitting it: the call waits for the admission instead of
    finding nobody there (NotConnected, a flaky failure under load)."""
    cluster = HeldRegistration(redis.url, prefix=prefix, lease=1.0)
    async with (
        RPCServer(protocols=[PROTOCOL], ping_interval=None, cluster=cluster) as server,
        worker(redis.url, prefix) as api,
        chargers() as cps,
        anyio.create_task_group() as tg,
    ):
        listening = await server.listen(0, "127.0.0.1")
        tg.start_soon(cps.connect, f"ws://127.0.0.1:{listening.port}/ocpp", "CP1")
        with anyio.fail_after(5):
            await cluster.registered.wait()
        outcome: list[Any] = []
        answered = anyio.Event()

        async def call() -> None:
            try:
                outcome.append(await api.call("CP1", "Echo", {"n": 1}, timeout=5))
            except Exception as exc:
                outcome.append(exc)
            answered.set()

        tg.start_soon(call)
        try:
            with anyio.move_on_after(0.3):  # time enough for the call to reach the node and back
                await answered.wait()
            assert outcome == []
        finally:
            cluster.hold.set()  # else the server's close waits for the admission forever
        with anyio.fail_after(5):
            await answered.wait()
        assert outcome == [{"identity": "CP1", "charger": 1, "params": {"n": 1}}]


async def test_a_charger_that_never_answers_times_out_at_the_callers_deadline(
    redis: RedisServer, prefix: str
) -> None:
    """`TimeoutError` at the caller's deadline, and the deadline travels: the
    node holding the charger gives up at the caller's deadline on its own
    (its `call_timeout` is 60 s) even when the caller's withdrawal cannot
    reach it."""
    async with (
        Proxy(redis.port) as proxy,
        servers([redis.url] * 2, prefix) as (a, b),
        worker(proxy.url(), prefix) as api,
        chargers() as cps,
    ):
        await cps.connect(a.url, "CP1")
        await registered(a, "CP1")
        on_a = a.server.clients["CP1"]
        failures: list[tuple[float, BaseException]] = []
        on_a.on("call_error", lambda event: failures.append((anyio.current_time(), event.error)))

        start = anyio.current_time()
        with pytest.raises(TimeoutError):
            await b.server.call("CP1", "Hang", timeout=0.3)
        assert 0.3 <= elapsed_since(start) <= 0.45
        assert b.cluster._caller.pending == 0
        await wait_for(
            lambda: pending_calls(on_a) == 0 and a.cluster._deliverer.inflight == 0, timeout=1
        )

        # The API worker's link to Redis stalls as soon as the charger has
        # the call: no withdrawal, no reply can pass.
        cps.entered = anyio.Event()
        failures.clear()
        async with anyio.create_task_group() as tg:

            async def stall() -> None:
                await cps.entered.wait()
                proxy.pause()

            tg.start_soon(stall)
            start = anyio.current_time()
            with pytest.raises(TimeoutError):
                await api.call("CP1", "Hang", timeout=0.5)
            assert 0.5 <= elapsed_since(start) <= 0.65
        await wait_for(lambda: failures, timeout=1)
        when, error = failures[0]
        assert isinstance(error, TimeoutError)
        assert when - start <= 0.5 + 0.15
        await wait_for(lambda: a.cluster._deliverer.inflight == 0, timeout=1)
        assert pending_calls(on_a) == 0
        proxy.resume()


async def test_connection_closed_when_the_charger_goes_away_mid_call(
    redis: RedisServer, prefix: str
) -> None:
    async with servers([redis.url] * 2, prefix) as (a, b), chargers() as cps:
        charger = await cps.connect(a.url, "CP1")
        await registered(a, "CP1")
        async with anyio.create_task_group() as tg:

            async def leave() -> None:
                await cps.entered.wait()
                await charger.close(code=1001, reason="bye")

            tg.start_soon(leave)
            with anyio.fail_after(5), pytest.raises(ConnectionClosed) as caught:
                await b.server.call("CP1", "Hang", timeout=30)
        assert (caught.value.code, caught.value.reason) == (1001, "bye")

        async def gone() -> bool:
            try:
                await b.server.call("CP1", "Echo", timeout=5)
            except NotConnected:
                return True
            return False

        await wait_for_async(gone, timeout=2)


async def test_a_cancelled_caller_leaves_nothing_behind(redis: RedisServer, prefix: str) -> None:
    """Cancelled mid-call: no pending call on the caller's node, the call
    withdrawn on the charger's node (its call slot freed), no task left."""
    async with servers([redis.url] * 2, prefix) as (a, b), chargers() as cps:
        await cps.connect(a.url, "CP1")
        await registered(a, "CP1")
        on_a = a.server.clients["CP1"]
        assert (await b.server.call("CP1", "Echo"))["charger"] == 1
        before = len(anyio.get_running_tasks())

        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def cancel_once_the_charger_has_it() -> None:
                    await cps.entered.wait()
                    scope.cancel()

                tg.start_soon(cancel_once_the_charger_has_it)
                await b.server.call("CP1", "Hang", timeout=30)
        assert scope.cancelled_caught
        assert b.cluster._caller.pending == 0
        await wait_for(
            lambda: a.cluster._deliverer.inflight == 0 and pending_calls(on_a) == 0, timeout=2
        )
        # The connection's one call slot is free again (call_concurrency=1).
        assert (await b.server.call("CP1", "Echo", {"n": 2}, timeout=2))["params"] == {"n": 2}
        cps.release.set()  # the charger answers at last, to nobody: dropped
        await wait_for(lambda: len(anyio.get_running_tasks()) <= before, timeout=2)


# -- one live connection per identity ---------------------------------------------------


async def test_a_charger_connecting_to_another_node_replaces_its_older_connection(
    redis: RedisServer, prefix: str
) -> None:
    async with servers([redis.url] * 2, prefix) as (a, b), chargers() as cps:
        old = await cps.connect(a.url, "CP1")
        await registered(a, "CP1")
        new = await cps.connect(b.url, "CP1")
        with anyio.fail_after(3):
            closed = await old.wait_closed()
        assert (closed.code, closed.reason) == (1000, "replaced")
        await wait_for(lambda: "CP1" not in a.server.clients)
        await registered(b, "CP1")
        assert await a.cluster.locate("CP1") == b.node_id
        assert new.state is State.OPEN
        assert (await a.server.call("CP1", "Echo"))["charger"] == new.number  # type: ignore[attr-defined]


async def test_a_half_open_connection_replaced_by_another_node_leaves_clients_at_once(
    redis: RedisServer, prefix: str
) -> None:
    """The older connection on node A is half-open (its network vanished)
    when the charger connects to node B: A drops it from `clients` as soon
    as it learns it was replaced, as a single server does, so a call by
    identity on A reaches the charger on B while the old connection's close
    handshake still waits."""
    async with servers([redis.url] * 2, prefix) as (a, b), chargers() as cps:
        async with Proxy(urlsplit(a.url).port or 0) as proxy:
            old = await cps.connect(f"ws://127.0.0.1:{proxy.port}/ocpp", "CP1")
            await registered(a, "CP1")
            proxy.pause()
            new = await cps.connect(b.url, "CP1")
            await registered(b, "CP1")
            await wait_for(lambda: "CP1" not in a.server.clients, timeout=1)
            answer = await a.server.call("CP1", "Echo", timeout=2)
            assert answer["charger"] == new.number  # type: ignore[attr-defined]
            assert old.state is State.OPEN  # it never heard of its close
            proxy.resume()


async def test_one_identity_connecting_to_two_nodes_at_once_keeps_one_connection(
    redis: RedisServer, prefix: str
) -> None:
    """Two chargers with one identity connect at the same moment, to two
    nodes (or twice to one node): exactly one connection stays, on the node
    that the cluster locates, and calls by identity reach it."""
    async with servers([redis.url] * 2, prefix) as (a, b), chargers() as cps:
        pairs = [(a, b), (b, a), (a, a), (b, b)]
        for round_ in range(20):
            identity = f"CP{round_}"
            pair = pairs[round_ % len(pairs)]
            clients: list[RPCClient] = []

            async def connect(node: Node, identity: str = identity,
                              clients: list[RPCClient] = clients) -> None:
                clients.append(await cps.connect(node.url, identity))

            async with anyio.create_task_group() as race:
                for node in pair:
                    race.start_soon(connect, node)

            def settled(identity: str = identity, clients: list[RPCClient] = clients) -> bool:
                open_clients = [c for c in clients if c.state is State.OPEN]
                holders = [n for n in (a, b) if identity in n.server.clients]
                return len(open_clients) == 1 and len(holders) == 1

            await wait_for(settled, timeout=3)
            winner = next(c for c in clients if c.state is State.OPEN)
            loser = next(c for c in clients if c is not winner)
            with anyio.fail_after(3):
                closed = await loser.wait_closed()
            assert (closed.code, closed.reason) == (1000, "replaced")
            holder = next(n for n in (a, b) if identity in n.server.clients)
            assert await b.cluster.locate(identity) == holder.node_id
            for node in (a, b):
                answer = await node.server.call(identity, "Echo", timeout=2)
                assert answer["charger"] == winner.number  # type: ignore[attr-defined]
            assert settled()


# -- events ------------------------------------------------------------------------


async def test_events_from_every_node(redis: RedisServer, prefix: str) -> None:
    async with (
        servers([redis.url] * 2, prefix) as (a, b),
        worker(redis.url, prefix) as api,
        chargers() as cps,
        api.events() as events,
    ):

        async def next_two() -> list[ClusterEvent]:
            with anyio.fail_after(3):
                return [await events.__anext__(), await events.__anext__()]

        cp1 = await cps.connect(a.url, "CP1")
        cp2 = await cps.connect(b.url, "CP2")
        connected = await next_two()
        await cp1.close()
        await cp2.close()
        disconnected = await next_two()
    assert {(e.type, e.identity, e.node_id, e.protocol) for e in connected} == {
        ("connected", "CP1", a.node_id, PROTOCOL),
        ("connected", "CP2", b.node_id, PROTOCOL),
    }
    assert {(e.type, e.identity, e.node_id) for e in disconnected} == {
        ("disconnected", "CP1", a.node_id),
        ("disconnected", "CP2", b.node_id),
    }
    assert all(abs(e.time - time.time()) < 10 for e in connected + disconnected)


# -- faults ------------------------------------------------------------------------


async def test_a_node_cut_off_from_redis_hands_its_chargers_over(
    redis: RedisServer, prefix: str
) -> None:
    """Node A cannot reach Redis for longer than its lease: it closes its
    chargers with 1001, refuses new ones with 1013 while cut off, and the
    chargers reconnecting to node B are accepted there at once."""
    lease = 0.6
    async with (
        Proxy(redis.port) as proxy,
        servers([proxy.url(), redis.url], prefix, lease=lease) as (a, b),
        chargers() as cps,
    ):
        cp1 = await cps.connect(a.url, "CP1")
        cp2 = await cps.connect(a.url, "CP2")
        await registered(a, "CP1")
        await registered(a, "CP2")
        proxy.pause()
        start = anyio.current_time()
        with anyio.fail_after(lease * 3):
            closed = [await cp1.wait_closed(), await cp2.wait_closed()]
        assert elapsed_since(start) <= lease + 0.3
        assert [c.code for c in closed] == [1001, 1001]
        await wait_for(lambda: not a.server.clients)

        start = anyio.current_time()
        for identity in ("CP1", "CP2"):
            await cps.connect(b.url, identity)
            await registered(b, identity)
        assert elapsed_since(start) < lease / 2
        assert (await b.server.call("CP1", "Echo"))["identity"] == "CP1"

        refused = await cps.connect(a.url, "CP3")
        with anyio.fail_after(lease * 3):
            assert (await refused.wait_closed()).code == 1013
        assert "CP3" not in a.server.clients
        proxy.resume()


async def test_redis_restarted(own_redis: RedisServer, prefix: str) -> None:
    """Redis killed (its data lost) and restarted on the same port: a call to
    a charger on another node fails within its timeout meanwhile (a local
    one still works); the charger stays connected and is located again
    within the lease once Redis is back."""
    lease = 1.0
    async with servers([own_redis.url] * 2, prefix, lease=lease) as (a, b), chargers() as cps:
        charger = await cps.connect(a.url, "CP1")
        await registered(a, "CP1")
        own_redis.kill()
        start = anyio.current_time()
        with pytest.raises((ClusterUnavailable, TimeoutError)):
            await b.server.call("CP1", "Echo", timeout=0.5)
        assert elapsed_since(start) <= 0.5 + 0.1
        assert (await a.server.call("CP1", "Echo", timeout=1))["identity"] == "CP1"

        await anyio.to_thread.run_sync(own_redis.start)

        async def located() -> bool:
            return await b.cluster.locate("CP1") == a.node_id

        assert await wait_for_async(located, timeout=lease * 3) <= lease

        async def callable_() -> bool:
            return bool(await b.server.call("CP1", "Echo", timeout=1))

        await wait_for_async(callable_, timeout=lease * 3)
        assert charger.state is State.OPEN
        assert "CP1" in a.server.clients


async def test_a_node_process_killed_without_cleanup(
    redis: RedisServer, prefix: str, anyio_backend: str
) -> None:
    """A server node in a process of its own is SIGKILLed: its chargers'
    connections drop; within its lease they are `NotConnected` from the
    other node, and a charger reconnecting to the other node is accepted at
    once (without waiting for the lease)."""
    lease = 0.8
    process = await anyio.open_process(
        [sys.executable, str(SERVER_NODE), redis.url, prefix, str(lease), anyio_backend],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert process.stdout is not None
        with anyio.fail_after(20):
            line = b""
            while not line.endswith(b"\n"):
                line += await process.stdout.receive(1)
        _, doomed_id, port = line.decode().split()
        doomed_url = f"ws://127.0.0.1:{port}/ocpp"
        async with servers([redis.url], prefix, lease=lease) as (b,), chargers() as cps:
            cp1 = await cps.connect(doomed_url, "CP1")
            cp2 = await cps.connect(doomed_url, "CP2")

            async def on_doomed() -> bool:
                return all([await b.cluster.locate(i) == doomed_id for i in ("CP1", "CP2")])

            await wait_for_async(on_doomed, timeout=5)
            assert (await b.server.call("CP2", "Echo", {"n": 1}, timeout=5))["params"] == {"n": 1}

            process.send_signal(signal.SIGKILL)
            await process.wait()
            with anyio.fail_after(5):
                assert (await cp1.wait_closed()).code == 1006
                assert (await cp2.wait_closed()).code == 1006

            start = anyio.current_time()
            await cps.connect(b.url, "CP1")
            await registered(b, "CP1", timeout=lease / 2)
            assert elapsed_since(start) < lease / 2

            # A call made now is not lost, and does not wait for its timeout.
            with pytest.raises(NotConnected):
                await b.server.call("CP2", "Echo", timeout=30)
            assert elapsed_since(start) <= lease + 0.3
            assert await b.cluster.locate("CP2") is None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_joining_fails_with_cluster_unavailable(prefix: str) -> None:
    cluster = RedisCluster(f"redis://127.0.0.1:{free_port()}/0", prefix=prefix, lease=0.5)
    server = RPCServer(cluster=cluster)
    with anyio.fail_after(5), pytest.raises(ClusterUnavailable):
        async with server:
            pass
    assert not server.running


# -- reuse_port, and no cluster ---------------------------------------------------------


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")
async def test_two_nodes_listening_on_one_port(redis: RedisServer, prefix: str) -> None:
    """``listen(reuse_port=True)``: two servers (two nodes) share one port and
    both accept chargers; every charger is callable by identity."""
    async with (
        servers([redis.url] * 2, prefix) as (a, b),
        worker(redis.url, prefix) as api,
        chargers() as cps,
    ):
        port = (await a.server.listen(0, "127.0.0.1", reuse_port=True)).port
        assert (await b.server.listen(port, "127.0.0.1", reuse_port=True)).port == port
        identities = [f"CP{n}" for n in range(16)]
        for identity in identities:
            await cps.connect(f"ws://127.0.0.1:{port}/ocpp", identity)
        await wait_for(lambda: len(a.server.clients) + len(b.server.clients) == len(identities))
        assert a.server.clients and b.server.clients
        with anyio.fail_after(5):
            for identity in identities:
                assert (await api.call(identity, "Echo"))["identity"] == identity


async def test_server_call_without_a_cluster() -> None:
    async with RPCServer(protocols=[PROTOCOL], ping_interval=None) as server, chargers() as cps:
        port = (await server.listen(0, "127.0.0.1")).port
        await cps.connect(f"ws://127.0.0.1:{port}/ocpp", "CP1")
        await wait_for(lambda: "CP1" in server.clients)
        assert (await server.call("CP1", "Echo", {"a": 1}))["params"] == {"a": 1}
        start = anyio.current_time()
        with pytest.raises(NotConnected) as caught:
            await server.call("CP2", "Echo", timeout=30)
        assert caught.value.identity == "CP2" and isinstance(caught.value, LookupError)
        assert elapsed_since(start) < 0.1


def test_without_a_cluster_nothing_extra_is_imported() -> None:
    code = (
        "import sys, ocpp_rpc; ocpp_rpc.RPCServer(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'coredis' "
        "or m.startswith('ocpp_rpc.cluster')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


