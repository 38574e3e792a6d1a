"""Durable calls against sentences of API.md "Durable calls (charge-point
side)" that an outside review found the code departing from (fixed since):
a real RPCServer on 127.0.0.1, an SQLite store in a temporary directory,
both backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from harness import free_port, serving

from ocpp_rpc import (
    NOREPLY,
    Call,
    ConnectionClosed,
    RPCClient,
    RPCGenericError,
    RPCOccurrenceConstraintViolationError,
    RPCTypeConstraintViolationError,
)
from ocpp_rpc.durable import SQLiteStore

pytestmark = pytest.mark.anyio


def charge_point(url: str, store: SQLiteStore, **options: Any) -> RPCClient:
    return RPCClient(url, "CP1", store=store, ping_interval=None, **options)


async def test_a_durable_call_without_an_answer_is_not_sent_again_before_the_interval(
    tmp_path: Path,
) -> None:
    """Contract: "One ... that gets no answer in time, stays queued". A CSMS
    that never answers sees the call once within the retry interval (30 s),
    not once per `call_timeout` (test_durable_timeouts.py: what comes after)."""
    async with serving() as (server, url):
        wire_ids: list[str] = []

        @server.handler("StopTransaction")
        def stop_transaction(call: Call) -> Any:
            wire_ids.append(call.message_id)
            return NOREPLY

        with anyio.fail_after(10):
            async with charge_point(url, SQLiteStore(tmp_path / "cp.db"),
                                    call_timeout=0.2) as client:
                with pytest.raises(TimeoutError):
                    await client.call("StopTransaction", {"transactionId": 1}, durable=True,
                                      timeout=1.0)  # five call_timeouts on one connection
                assert await client.pending_durable() == 1
    assert len(wire_ids) == 1, wire_ids


NOW = "2024-01-01T00:00:00Z"


async def test_a_durable_call_that_fails_strict_mode_is_raised_at_once_and_never_stored(
    tmp_path: Path,
) -> None:
    """Contract (strict mode): an invalid outbound call raises "the matching
    RPCError locally, nothing sent". A durable one too: it is not stored, so
    it neither waits out retry intervals nor holds up the calls behind it."""
    async with serving(protocols=["ocpp1.6"]) as (server, url):
        seen: list[Any] = []

        @server.handler("StopTransaction")
        def stop_transaction(call: Call) -> Any:
            seen.append(call.params["transactionId"])
            return {}

        with anyio.fail_after(10):
            async with charge_point(url, SQLiteStore(tmp_path / "cp.db", interval=30),
                                    protocols=["ocpp1.6"], strict_mode=True) as client:
                failures: list[Any] = []
                client.on("strict_validation_failure", failures.append)
                with pytest.raises(RPCOccurrenceConstraintViolationError):  # no meterStop
                    await client.call("StopTransaction", {"transactionId": 1}, durable=True,
                                      timeout=1)
                assert await client.pending_durable() == 0
                assert await client.call(
                    "StopTransaction", {"transactionId": 2, "meterStop": 0, "timestamp": NOW},
                    durable=True, timeout=1) == {}
    assert seen == [2]
    assert [(failure.outbound, failure.is_call) for failure in failures] == [(True, True)]


async def test_a_stored_call_that_fails_strict_mode_when_sent_is_dropped_at_once(
    tmp_path: Path,
) -> None:
    """A call stored without strict mode (before a restart) that strict mode
    refuses when it is sent: no resend could change that, so it is dropped at
    once and reported, and the calls behind it go out."""
    path = tmp_path / "cp.db"
    port = await free_port()
    with anyio.fail_after(10):
        async with charge_point(f"ws://127.0.0.1:{port}", SQLiteStore(path),
                                protocols=["ocpp1.6"]) as client:
            for params in [{"transactionId": 1},
                           {"transactionId": 2, "meterStop": 0, "timestamp": NOW}]:
                with pytest.raises(TimeoutError):
                    await client.call("StopTransaction", params, durable=True, timeout=0)
        async with serving(protocols=["ocpp1.6"]) as (server, url):
            seen: list[Any] = []

            @server.handler("StopTransaction")
            def stop_transaction(call: Call) -> Any:
                seen.append(call.params["transactionId"])
                return {}

            async with charge_point(url, SQLiteStore(path, interval=30), protocols=["ocpp1.6"],
                                    strict_mode=True) as client:
                results: list[Any] = []
                client.on("durable_result", results.append)
                assert await client.call(
                    "StopTransaction", {"transactionId": 3, "meterStop": 0, "timestamp": NOW},
                    durable=True, timeout=2) == {}
                assert await client.pending_durable() == 0
    assert seen == [2, 3]
    assert [type(event.error) for event in results] == [
        RPCOccurrenceConstraintViolationError, type(None), type(None)]


async def test_a_result_that_fails_strict_mode_is_not_sent_again(tmp_path: Path) -> None:
    """Contract: only a CALLERROR is an attempt to repeat. A CALLRESULT that
    fails the charge point's strict mode was delivered and answered: the
    call leaves the store and its caller gets the validation error."""
    async with serving(protocols=["ocpp1.6"]) as (server, url):
        seen: list[Any] = []

        @server.handler("StartTransaction")
        def start_transaction(call: Call) -> Any:
            seen.append(call.params["idTag"])
            return {"transactionId": "not-an-integer", "idTagInfo": {"status": "Accepted"}}

        with anyio.fail_after(10):
            async with charge_point(url, SQLiteStore(tmp_path / "cp.db", interval=0.05),
                                    protocols=["ocpp1.6"], strict_mode=True) as client:
                results: list[Any] = []
                client.on("durable_result", results.append)
                with pytest.raises(RPCTypeConstraintViolationError):
                    await client.call("StartTransaction", {
                        "connectorId": 1, "idTag": "TAG", "meterStart": 0, "timestamp": NOW,
                    }, durable=True, timeout=5)
                assert await client.pending_durable() == 0
    assert seen == ["TAG"]
    [result] = results
    assert isinstance(result.error, RPCTypeConstraintViolationError)


async def test_close_during_a_retry_interval_tells_waiting_callers_at_once(
    tmp_path: Path,
) -> None:
    """docs/durable.md: "After close() ... callers still waiting get
    ConnectionClosed". A call waiting out its retry interval (30 s here) is
    ended at once, not when the interval is over; it stays stored."""
    path = tmp_path / "cp.db"
    async with serving() as (server, url):

        @server.handler("StopTransaction")
        def stop_transaction(call: Call) -> Any:
            raise RPCGenericError("try again later")

        with anyio.fail_after(10):
            async with charge_point(url, SQLiteStore(path, interval=30)) as client:
                answered = anyio.Event()
                client.on("call_error", lambda event: answered.set())

                async def close_once_answered() -> None:
                    await answered.wait()  # the sender now waits 30 s before attempt 2
                    await client.close()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(close_once_answered)
                    with anyio.fail_after(2), pytest.raises(ConnectionClosed):
                        await client.call("StopTransaction", {"transactionId": 1}, durable=True,
                                          timeout=60)
    store = SQLiteStore(path)
    await store.open()
    kept = await store.first()
    await store.close()
    assert kept is not None and (kept.params, kept.attempts) == ({"transactionId": 1}, 1)
