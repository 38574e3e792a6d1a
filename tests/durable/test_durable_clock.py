"""Durable calls in time, over the memory transport under Trio's `MockClock`:
the CALLERROR retry rule (attempts, ``interval * previous attempts``, then
dropped and reported), resends after a timeout or a drop (on the next
connection), a late answer, order, ordinary
calls beside a long queue, callers that give up, restarts, booting while the
CSMS refuses. Times are exact; minutes of simulated time take milliseconds."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from trio.testing import MockClock

from ocpp_rpc import (
    NOREPLY,
    Backoff,
    Call,
    ConnectError,
    ConnectionClosed,
    Handshake,
    Reject,
    RPCClient,
    RPCGenericError,
    RPCServer,
    ServerClient,
    State,
)
from ocpp_rpc._rpc.durable_queue import STORE_RETRY_DELAY
from ocpp_rpc.durable import MemoryStore, StoreError, StoreFull
from ocpp_rpc.testing import connect

pytestmark = pytest.mark.anyio

LIMIT = 3600  # simulated seconds any test may take
NO_JITTER = Backoff(initial=1, maximum=1, factor=1, jitter=0)


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return "trio", {"clock": MockClock(autojump_threshold=0)}


class Csms:
    """A server whose handlers record (simulated time, method, params) of every call."""

    def __init__(self, server: RPCServer) -> None:
        self.server = server
        self.start = anyio.current_time()
        self.calls: list[tuple[float, str, Any]] = []
        self._changed = anyio.Event()

    def record(self, call: Call) -> None:
        self.calls.append((anyio.current_time() - self.start, call.method, call.params))
        self._changed.set()
        self._changed = anyio.Event()

    def answer(self, method: str, answer: Callable[[Call], Any]) -> None:
        async def handler(call: Call) -> Any:
            self.record(call)
            result = answer(call)
            if callable(getattr(result, "__await__", None)):
                result = await result
            return result

        self.server.handle(method, handler)

    async def wait_calls(self, count: int) -> None:
        while len(self.calls) < count:
            await self._changed.wait()

    def times(self, method: str) -> list[float]:
        return [time for time, name, _ in self.calls if name == method]


class Results:
    """The `durable_result` events of a client, waitable by count."""

    def __init__(self, client: RPCClient) -> None:
        self.events: list[Any] = []
        self._changed = anyio.Event()
        client.on("durable_result", self._record)

    def _record(self, event: Any) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, count: int) -> list[Any]:
        while len(self.events) < count:
            await self._changed.wait()
        return self.events


def fail(call: Call) -> Any:
    raise RPCGenericError("try again later")


async def test_callerror_is_retried_with_growing_intervals_then_dropped() -> None:
    """attempts=3, interval=30: sent at 0, 30 and 90 s; the caller and
    `durable_result` get the last CALLERROR; the store is empty."""
    store = MemoryStore(attempts=3, interval=30)
    wire_ids: list[str] = []

    def fail_recording_id(call: Call) -> Any:
        wire_ids.append(call.message_id)
        return fail(call)

    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            csms = Csms(server)
            csms.answer("StopTransaction", fail_recording_id)
            async with connect(server, "CP1", store=store, ping_interval=None) as client:
                results: list[Any] = []
                client.on("durable_result", results.append)
                with pytest.raises(RPCGenericError, match="try again later"):
                    await client.call("StopTransaction", {"transactionId": 7}, durable=True,
                                      timeout=LIMIT)
                assert await client.pending_durable() == 0
    assert csms.times("StopTransaction") == pytest.approx([0, 30, 90])
    [result] = results
    assert (result.method, result.params, result.result) == (
        "StopTransaction", {"transactionId": 7}, None)
    assert isinstance(result.error, RPCGenericError)
    assert len(result.message_id) == 36
    # the first attempt under the call's own id, each retry on this connection
    # under a fresh one (OCPP-J: never one id twice on a connection)
    assert wire_ids[0] == result.message_id
    assert len(set(wire_ids)) == 3


@pytest.mark.parametrize(("attempts", "interval", "expected"), [
    (1, 30, [0]),
    (2, 5, [0, 5]),
    (4, 10, [0, 10, 30, 60]),
])
async def test_retry_rule_counts(attempts: int, interval: float, expected: list[float]) -> None:
    store = MemoryStore(attempts=attempts, interval=interval)
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            csms = Csms(server)
            csms.answer("MeterValues", fail)
            async with connect(server, "CP1", store=store, ping_interval=None) as client:
                with pytest.raises(RPCGenericError):
                    await client.call("MeterValues", {}, durable=True, timeout=LIMIT)
    assert csms.times("MeterValues") == pytest.approx(expected)


async def test_a_retry_that_succeeds_returns_the_result() -> None:
    store = MemoryStore(attempts=3, interval=10)
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            csms = Csms(server)

            def flaky(call: Call) -> Any:
                if len(csms.calls) < 3:
                    raise RPCGenericError("busy")
                return {"idTagInfo": {"status": "Accepted"}}

            csms.answer("StopTransaction", flaky)
            async with connect(server, "CP1", store=store, ping_interval=None) as client:
                result = await client.call("StopTransaction", {}, durable=True, timeout=LIMIT)
    assert result == {"idTagInfo": {"status": "Accepted"}}
    assert csms.times("StopTransaction") == pytest.approx([0, 10, 30])


async def test_later_calls_wait_behind_a_call_being_retried() -> None:
    """Order holds through retries: the second call goes out only after the
    first is dropped."""
    store = MemoryStore(attempts=2, interval=20)
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            csms = Csms(server)
            csms.answer("A", fail)
            csms.answer("B", lambda call: {"ok": True})
            async with connect(server, "CP1", store=store, ping_interval=None) as client:
                outcomes: list[Any] = []
                client.on("durable_result", lambda event: outcomes.append(event.method))

                async def call_a() -> None:
                    with pytest.raises(RPCGenericError):
                        await client.call("A", {}, durable=True, timeout=LIMIT)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(call_a)
                    await csms.wait_calls(1)
                    assert await client.call("B", {}, durable=True, timeout=LIMIT) == {"ok": True}
    assert [(time, method) for time, method, _ in csms.calls] == [(0, "A"), (20, "A"), (20, "B")]
    assert outcomes == ["A", "B"]


async def test_calls_arrive_in_the_order_they_were_made() -> None:
    store = MemoryStore()
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            csms = Csms(server)

            async def slow(call: Call) -> Any:
                await anyio.sleep(1)
                return {}

            csms.answer("TransactionEvent", slow)
            async with connect(server, "CP1", store=store, ping_interval=None) as client:
                finished: list[int] = []

                async def event(seq: int) -> None:
                    await client.call("TransactionEvent", {"seqNo": seq}, durable=True,
                                      timeout=LIMIT)
                    finished.append(seq)

                async with anyio.create_task_group() as tg:
                    for seq in range(10):
                        await tg.start(_started, functools.partial(event, seq))
    assert [params["seqNo"] for _, _, params in csms.calls] == list(range(10))
    assert finished == list(range(10))
    # one at a time: each waits for the answer to the one before
    assert csms.times("TransactionEvent") == pytest.approx(list(range(10)))


async def _started(fn: Callable[[], Any], *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
    """Run `fn` in a task, reporting started at once (keeps the tasks' order)."""
    task_status.started()
    await fn()


async def test_ordinary_calls_are_not_held_up_by_a_long_queue() -> None:
    """With 20 durable calls of 10 s each queued, an ordinary call waits for
    at most the one in flight (call_concurrency=1), not for the queue."""
    store = MemoryStore()
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            csms = Csms(server)

            async def slow(call: Call) -> Any:
                await anyio.sleep(10)
                return {}

            csms.answer("MeterValues", slow)
            csms.answer("Heartbeat", lambda call: {"currentTime": "now"})
            async with connect(server, "CP1", store=store, ping_interval=None,
                               call_timeout=LIMIT) as client:
                results = Results(client)
                for n in range(20):
                    with pytest.raises(TimeoutError):  # stored; its caller stops waiting
                        await client.call("MeterValues", {"n": n}, durable=True, timeout=0)
                await csms.wait_calls(1)
                start = anyio.current_time()
                await client.call("Heartbeat")
                assert anyio.current_time() - start <= 10
                assert await client.pending_durable() >= 18
                await results.wait_for(20)
                assert await client.pending_durable() == 0
    assert [params["n"] for _, method, params in csms.calls if method == "MeterValues"] == list(
        range(20))


async def test_caller_cancellation_and_timeout_keep_the_call() -> None:
    """A caller cancelled while its call waits, and one that times out, leave
    their calls in the store: they are delivered and reported."""
    store = MemoryStore()
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            csms = Csms(server)
            gate = anyio.Event()

            async def gated(call: Call) -> Any:
                await gate.wait()
                return {"n": call.params["n"]}

            csms.answer("Tx", gated)
            async with connect(server, "CP1", store=store, ping_interval=None,
                               call_timeout=LIMIT) as client:
                results = Results(client)
                with anyio.move_on_after(5) as cancelled:
                    await client.call("Tx", {"n": 1}, durable=True, timeout=LIMIT)
                assert cancelled.cancelled_caught
                with pytest.raises(TimeoutError):
                    await client.call("Tx", {"n": 2}, durable=True, timeout=5)
                assert await client.pending_durable() == 2
                gate.set()
                await results.wait_for(2)
    assert [event.result for event in results.events] == [{"n": 1}, {"n": 2}]
    assert [params for _, _, params in csms.calls] == [{"n": 1}, {"n": 2}]


async def test_a_late_answer_settles_the_call_however_late() -> None:
    """The CSMS answers 450 s after the call, long past call_timeout (30 s)
    and fifteen retry intervals: the call was not sent again meanwhile, it is
    delivered then, and the next one goes out at once, on the same connection."""
    store = MemoryStore()
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            csms = Csms(server)

            async def slow(call: Call) -> Any:
                await anyio.sleep(450 if call.params["n"] == 1 else 0)
                return {"n": call.params["n"]}

            csms.answer("Tx", slow)
            async with connect(server, "CP1", store=store, ping_interval=None,
                               call_timeout=30) as client:
                start = anyio.current_time()
                assert await client.call("Tx", {"n": 1}, durable=True, timeout=LIMIT) == {"n": 1}
                assert anyio.current_time() - start == pytest.approx(450)
                assert await client.call("Tx", {"n": 2}, durable=True, timeout=LIMIT) == {"n": 2}
    assert csms.times("Tx") == pytest.approx([0, 450])


@pytest.mark.parametrize(("close_at", "closed_at"), [(10, 30), (40, 40)])
async def test_close_awaiting_pending_calls_waits_for_a_send_not_for_a_timed_out_one(
    close_at: float, closed_at: float
) -> None:
    """close(await_pending=True) while a durable call is on the wire waits for
    its answer up to call_timeout (30 s), as for any call; once it has timed
    out, its sends still listening for a late answer do not hold the close."""
    store = MemoryStore()
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            Csms(server).answer("Tx", lambda call: NOREPLY)
            async with connect(server, "CP1", store=store, ping_interval=None,
                               call_timeout=30) as client:
                start = anyio.current_time()
                with pytest.raises(TimeoutError):
                    await client.call("Tx", {}, durable=True, timeout=close_at)
                await client.close(await_pending=True)
                assert anyio.current_time() - start == pytest.approx(closed_at)
                assert await client.pending_durable() == 1


async def test_no_answer_in_time_waits_for_the_next_connection_and_is_not_an_attempt() -> None:
    """A call the CSMS does not answer within call_timeout stays first in the
    queue and goes out again on the next connection (under its own id, which
    the CSMS saw before), not on this one; with attempts=1 it is delivered."""
    store = MemoryStore(attempts=1)
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            csms = Csms(server)
            wire_ids: list[str] = []

            def first_unanswered(call: Call) -> Any:
                wire_ids.append(call.message_id)
                return NOREPLY if len(csms.calls) == 1 else {"ok": True}

            csms.answer("StatusNotification", first_unanswered)
            async with connect(server, "CP1", store=store, ping_interval=None, call_timeout=30,
                               backoff=NO_JITTER) as client:
                async with anyio.create_task_group() as tg:

                    async def replace_connection() -> None:
                        await anyio.sleep(100)  # long after the call timed out
                        assert len(csms.calls) == 1  # nothing sent again meanwhile
                        await server.clients["CP1"].close(force=True)

                    tg.start_soon(replace_connection)
                    result = await client.call("StatusNotification", {}, durable=True,
                                               timeout=LIMIT)
    assert result == {"ok": True}
    # unanswered at 0, timed out at 30, connection dropped at 100 and back at 101
    assert csms.times("StatusNotification") == pytest.approx([0, 101])
    assert wire_ids[0] == wire_ids[1]


async def test_a_call_whose_connection_drops_goes_out_on_the_next_connection() -> None:
    store = MemoryStore(attempts=1)
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            csms = Csms(server)
            first_seen = anyio.Event()
            wire_ids: list[str] = []

            def drop_first(call: Call) -> Any:
                wire_ids.append(call.message_id)
                if len(csms.calls) == 1:
                    first_seen.set()
                    return NOREPLY
                return {"ok": True}

            csms.answer("StopTransaction", drop_first)
            async with connect(server, "CP1", store=store, ping_interval=None,
                               backoff=NO_JITTER) as client:
                opened: list[float] = []
                client.on("open", lambda event: opened.append(anyio.current_time()))
                async with anyio.create_task_group() as tg:

                    async def drop() -> None:
                        await first_seen.wait()
                        await anyio.sleep(2)
                        await server.clients["CP1"].close(force=True)

                    tg.start_soon(drop)
                    result = await client.call("StopTransaction", {"transactionId": 3},
                                               durable=True, timeout=LIMIT)
    assert result == {"ok": True}
    # sent, dropped at 2 s, reconnected 1 s later (the backoff), sent again at once
    assert csms.times("StopTransaction") == pytest.approx([0, 3])
    assert len(opened) == 1
    # under the call's own id both times (a new connection may reuse it): the
    # CSMS can tell the resend by its message id
    assert wire_ids[0] == wire_ids[1]


async def test_calls_left_at_exit_go_out_on_the_next_start_and_are_reported() -> None:
    """A restart: calls stored (one mid-retry) when the block ended are sent on
    the next block's first connection; `durable_result` reports them, with
    the attempts already made counted."""
    store = MemoryStore(attempts=2, interval=100)
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            csms = Csms(server)
            csms.answer("Fails", fail)
            csms.answer("Ok", lambda call: {"n": call.params["n"]})
            async with connect(server, "CP1", store=store, ping_interval=None) as client:
                for method, n in [("Fails", 0), ("Ok", 1), ("Ok", 2)]:
                    with pytest.raises(TimeoutError):
                        await client.call(method, {"n": n}, durable=True, timeout=0)
                await csms.wait_calls(1)
                await anyio.sleep(1)  # the CALLERROR is back: its attempt is counted
            assert await _pending(store) == 3
            restarted = anyio.current_time()
            async with connect(server, "CP1", store=store, ping_interval=None) as client:
                results = Results(client)
                await results.wait_for(3)
                assert await client.pending_durable() == 0
    assert [(event.method, event.params, event.result, type(event.error))
            for event in results.events] == [
        ("Fails", {"n": 0}, None, RPCGenericError),
        ("Ok", {"n": 1}, {"n": 1}, type(None)),
        ("Ok", {"n": 2}, {"n": 2}, type(None)),
    ]
    # the second (last) attempt waited interval * 1 previous attempt after the restart
    second = [time for time, method, _ in csms.calls if method == "Fails"][1]
    assert second + csms.start - restarted == pytest.approx(100)


async def _pending(store: MemoryStore) -> int:
    await store.open()
    try:
        return await store.count()
    finally:
        await store.close()


async def test_a_full_store_refuses_a_new_call_and_keeps_the_others() -> None:
    store = MemoryStore(max_messages=2)
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            csms = Csms(server)
            gate = anyio.Event()

            async def gated(call: Call) -> Any:
                await gate.wait()
                return {}

            csms.answer("M", gated)
            async with connect(server, "CP1", store=store, ping_interval=None,
                               call_timeout=LIMIT) as client:
                results = Results(client)
                for n in range(2):
                    with pytest.raises(TimeoutError):
                        await client.call("M", {"n": n}, durable=True, timeout=0)
                with pytest.raises(StoreFull):
                    await client.call("M", {"n": 2}, durable=True)
                assert await client.pending_durable() == 2
                gate.set()
                await results.wait_for(2)
    assert [params["n"] for _, _, params in csms.calls] == [0, 1]


async def test_booting_while_the_csms_refuses_then_delivering() -> None:
    """With a store, entering succeeds although the CSMS answers 503 (and
    then 401); the client keeps connecting with its backoff and the queued
    calls go out, in order, once it is accepted."""
    store = MemoryStore()
    backoff = Backoff(initial=1, maximum=4, factor=2, jitter=0)
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            csms = Csms(server)
            csms.answer("Tx", lambda call: {"n": call.params["n"]})
            refusals = [503, 503, 401]
            attempts: list[float] = []

            @server.auth
            async def auth(handshake: Handshake) -> None:
                attempts.append(anyio.current_time() - csms.start)
                if refusals:
                    raise Reject(refusals.pop(0), "not now")

            async with connect(server, "CP1", store=store, ping_interval=None,
                               backoff=backoff) as client:
                assert client.state is State.CONNECTING
                results = Results(client)
                for n in range(3):
                    with pytest.raises(TimeoutError):
                        await client.call("Tx", {"n": n}, durable=True, timeout=0)
                assert await client.pending_durable() == 3
                await results.wait_for(3)
                assert client.state is State.OPEN
    assert attempts == pytest.approx([0, 1, 3, 7])
    assert [params["n"] for _, _, params in csms.calls] == [0, 1, 2]
    assert csms.times("Tx") == pytest.approx([7, 7, 7])


async def test_without_a_store_a_refused_boot_still_raises() -> None:
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:

            @server.auth
            async def auth(handshake: Handshake) -> None:
                raise Reject(401, "who are you")

            with pytest.raises(ConnectError) as refused:
                async with connect(server, "CP1", ping_interval=None):
                    pass
            assert refused.value.status == 401


async def test_a_boot_that_reconnecting_cannot_cure_raises_even_with_a_store() -> None:
    """A server that upgrades but agrees to none of the offered subprotocols
    will not change its mind: ConnectError at once."""
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:  # agrees to no subprotocol
            with pytest.raises(ConnectError):
                async with connect(server, "CP1", protocols=["ocpp1.6"], store=MemoryStore(),
                                   ping_interval=None):
                    pass


async def test_closing_while_offline_ends_waiting_callers() -> None:
    """A caller waiting for a call that cannot go out gets ConnectionClosed
    when the client closes; the call stays stored for the next start."""
    store = MemoryStore()
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:

            @server.auth
            async def auth(handshake: Handshake) -> None:
                raise Reject(503, "down")

            async with connect(server, "CP1", store=store, ping_interval=None) as client:
                async with anyio.create_task_group() as tg:

                    async def close_later() -> None:
                        await anyio.sleep(30)
                        await client.close()

                    tg.start_soon(close_later)
                    with pytest.raises(ConnectionClosed):
                        await client.call("Tx", {}, durable=True, timeout=LIMIT)
                with pytest.raises(ConnectionClosed):
                    await client.call("Tx", {}, durable=True)
    assert await _pending(store) == 1


async def test_durable_needs_a_store() -> None:
    """Without a store (an RPCClient without one, any ServerClient) durable=True
    is refused with a ValueError that says so; pending_durable() is 0."""
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            server_side: list[ServerClient] = []
            server.on("client", server_side.append)
            async with connect(server, "CP1", ping_interval=None) as client:
                with pytest.raises(ValueError, match="needs a store"):
                    await client.call("Heartbeat", {}, durable=True)
                assert await client.pending_durable() == 0
                with pytest.raises(ValueError, match="ServerClient has none"):
                    await server_side[0].call("Reset", {}, durable=True)
            async with connect(server, "CP2", store=MemoryStore(), ping_interval=None) as client:
                with pytest.raises(ValueError, match="no_reply"):
                    await client.call("Heartbeat", {}, durable=True, no_reply=True)
    with pytest.raises(RuntimeError, match="async with"):
        await RPCClient("ws://x", "CP3", store=MemoryStore()).pending_durable()


class FlakyStore(MemoryStore):
    """A MemoryStore whose first removal fails, as a full or failing disk would."""

    failures = 1

    async def remove(self, key: int) -> None:
        if self.failures:
            self.failures -= 1
            raise StoreError("disk I/O error")
        await super().remove(key)


async def test_a_failing_store_is_retried_and_loses_nothing() -> None:
    """A removal that fails after delivery: the sender logs it, waits, and
    starts over from the store, so the call goes out again (the one
    duplicate a failing disk can cause) and its caller gets the result."""
    store = FlakyStore()
    with anyio.fail_after(LIMIT):
        async with RPCServer(ping_interval=None) as server:
            csms = Csms(server)
            csms.answer("StopTransaction", lambda call: {"n": len(csms.calls)})
            async with connect(server, "CP1", store=store, ping_interval=None) as client:
                result = await client.call("StopTransaction", {}, durable=True, timeout=LIMIT)
                assert await client.pending_durable() == 0
    assert result == {"n": 2}
    assert csms.times("StopTransaction") == pytest.approx([0, STORE_RETRY_DELAY])
