"""Durable calls against sentences of API.md "Durable calls (charge-point
side)" that an outside review found the code departing from (fixed since):
a real RPCServer on 127.0.0.1, an SQLite store in a temporary directory,
both backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from harness import serving

from ocpp_rpc import NOREPLY, Call, RPCClient
from ocpp_rpc.durable import SQLiteStore

pytestmark = pytest.mark.anyio


def charge_point(url: str, store: SQLiteStore, **options: Any) -> RPCClient:
    return RPCClient(url, "CP1", store=store, ping_interval=None, **options)


async def test_a_durable_call_without_an_answer_waits_for_the_next_connection(
    tmp_path: Path,
) -> None:
    """Contract: "One whose connection drops, or that gets no answer in time,
    stays queued and goes out again on the next connection". A CSMS that
    never answers sees the call once on its connection, not once per
    `call_timeout` under ids it cannot match."""
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
