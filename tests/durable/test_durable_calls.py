"""Durable calls end to end on 127.0.0.1 with an SQLite store, both backends:
booting while nothing listens, a restart that reports calls made before it,
and a store that cannot be used failing the ``async with`` loudly."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import anyio
import pytest
from harness import free_port, serving

from ocpp_rpc import Backoff, Call, ConnectError, RPCClient, RPCServer, State
from ocpp_rpc.durable import SQLiteStore, StoreCorrupt, StoreInUse

pytestmark = pytest.mark.anyio

FAST = Backoff(initial=0.02, maximum=0.05, factor=2, jitter=0)


def charge_point(url: str, store: SQLiteStore | None, **options: Any) -> RPCClient:
    options.setdefault("ping_interval", None)
    return RPCClient(url, "CP1", store=store, backoff=FAST, **options)


async def test_boots_offline_and_delivers_in_order_once_the_csms_listens(tmp_path: Path) -> None:
    """Nothing listens: entering succeeds, durable calls queue; the CSMS
    starts listening and every call arrives, in order, on the first connection."""
    port = await free_port()
    store = SQLiteStore(tmp_path / "cp.db")
    async with RPCServer(ping_interval=None) as server:
        seen: list[int] = []

        @server.handler("TransactionEvent")
        def transaction_event(call: Call) -> dict[str, Any]:
            seen.append(call.params["seqNo"])
            return {}

        with anyio.fail_after(10):
            async with charge_point(f"ws://127.0.0.1:{port}", store) as client:
                assert client.state is State.CONNECTING
                results: list[Any] = []
                client.on("durable_result", results.append)
                for seq in range(5):
                    with pytest.raises(TimeoutError):  # stored; delivered later
                        await client.call("TransactionEvent", {"seqNo": seq}, durable=True,
                                          timeout=0)
                assert await client.pending_durable() == 5
                await server.listen(port=port)
                last = await client.call("TransactionEvent", {"seqNo": 5}, durable=True)
                assert last == {}
                assert client.state is State.OPEN
                assert await client.pending_durable() == 0
    assert seen == [0, 1, 2, 3, 4, 5]
    assert [event.params["seqNo"] for event in results] == [0, 1, 2, 3, 4, 5]


async def test_without_a_store_booting_offline_raises_connect_error() -> None:
    port = await free_port()
    with anyio.fail_after(10), pytest.raises(ConnectError):
        async with charge_point(f"ws://127.0.0.1:{port}", None):
            pass


async def test_calls_from_before_a_restart_are_sent_and_reported(tmp_path: Path) -> None:
    """Calls stored by one client (offline) are sent by the next one on the
    same file; their outcomes reach `durable_result`."""
    port = await free_port()
    path = tmp_path / "cp.db"
    with anyio.fail_after(10):
        async with charge_point(f"ws://127.0.0.1:{port}", SQLiteStore(path)) as client:
            for n in range(3):
                with pytest.raises(TimeoutError):
                    await client.call("MeterValues", {"n": n}, durable=True, timeout=0)
        async with serving(path="") as (server, url):
            seen: list[int] = []

            @server.handler("MeterValues")
            def meter_values(call: Call) -> dict[str, Any]:
                seen.append(call.params["n"])
                return {"ack": call.params["n"]}

            results: list[Any] = []
            done = anyio.Event()

            def record(event: Any) -> None:
                results.append(event)
                if len(results) == 3:
                    done.set()

            async with charge_point(url, SQLiteStore(path)) as client:
                client.on("durable_result", record)
                await done.wait()
                assert await client.pending_durable() == 0
    assert seen == [0, 1, 2]
    assert [(event.method, event.result, event.error) for event in results] == [
        ("MeterValues", {"ack": n}, None) for n in range(3)]
    assert len({event.message_id for event in results}) == 3


async def test_a_damaged_store_fails_the_async_with_before_connecting(tmp_path: Path) -> None:
    path = tmp_path / "cp.db"
    path.write_bytes(b"\x00garbage" * 1000)
    async with serving() as (server, url):
        connected: list[Any] = []
        server.on("client", connected.append)
        with anyio.fail_after(10), pytest.raises(StoreCorrupt):
            async with charge_point(url, SQLiteStore(path)):
                pass
    assert connected == []
    assert path.read_bytes() == b"\x00garbage" * 1000


async def test_two_clients_on_one_store_file_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "cp.db"
    async with serving() as (_server, url):
        with anyio.fail_after(10):
            async with charge_point(url, SQLiteStore(path)) as first:
                with pytest.raises(StoreInUse):
                    async with charge_point(url, SQLiteStore(path)):
                        pass
                assert first.state is State.OPEN
                assert await first.pending_durable() == 0


def strings_held(root: object) -> set[str]:
    """The strs reachable from `root` through containers and our own objects
    (not through the connection, whose exchange and transport are not at issue)."""
    held: set[str] = set()
    seen: set[int] = set()
    todo = [root]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, str):
            held.add(item)
        elif isinstance(item, (set, frozenset, list, tuple, dict)) or (
            type(item).__module__.startswith("ocpp_rpc._rpc.client")
        ):
            todo.extend(gc.get_referents(item))
    return held


async def test_a_long_connection_keeps_no_ids_of_delivered_calls(tmp_path: Path) -> None:
    """An outside review found the client kept the id of every durable call
    sent on a connection for as long as it lasted (weeks, for a charge point)."""
    async with serving() as (server, url):
        server.handle("TransactionEvent", lambda call: {})
        ids: list[str] = []
        async with charge_point(url, SQLiteStore(tmp_path / "cp.db")) as client:
            client.on("durable_result", lambda event: ids.append(event.message_id))
            for seq in range(30):
                await client.call("TransactionEvent", {"seqNo": seq}, durable=True)
            assert len(ids) == 30 and await client.pending_durable() == 0
            assert len(strings_held(client._durable_sent) & set(ids)) <= 1
