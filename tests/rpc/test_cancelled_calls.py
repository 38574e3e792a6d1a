"""Calls made in a scope that is cancelled already (Trio's rule: an operation
that raises Cancelled did not happen): the caller is cancelled and nothing
reaches the peer, on both of our ends, for CALL, CALL without reply and SEND."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest
from harness import ENDS, facing, make_client, serving

from ocpp_rpc import Call

pytestmark = pytest.mark.anyio

MARKER = [2, "marker", "Marker", {}]


@contextmanager
def cancelled_scope(how: str) -> Iterator[anyio.CancelScope]:
    """A scope cancelled before anything runs in it: by `cancel()`, or by a
    deadline that has passed (``move_on_after(0)``)."""
    if how == "cancel":
        with anyio.CancelScope() as scope:
            scope.cancel()
            yield scope
    else:
        with anyio.move_on_after(0) as scope:
            yield scope


@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("how", ["cancel", "deadline"])
@pytest.mark.parametrize("operation", ["call", "no_reply", "send"])
async def test_an_operation_in_a_cancelled_scope_sends_nothing(
    end: str, how: str, operation: str
) -> None:
    with anyio.fail_after(5):
        async with facing(end, "ocpp2.1") as pair:
            calls: list[Any] = []
            pair.ours.on("call", calls.append)
            with cancelled_scope(how) as scope:
                if operation == "send":
                    await pair.ours.send("NotifyEvent", {"n": 1})
                else:
                    await pair.ours.call("RemoteStop", {"n": 1}, no_reply=operation == "no_reply")
                pytest.fail("returned normally in a cancelled scope")
            assert scope.cancelled_caught
            assert calls == []  # not even the `call` event of a call that did not happen
            # Sent after it: the first frame the peer gets if nothing went before.
            await pair.ours.send_raw(json.dumps(MARKER))
            assert await pair.peer.receive_json() == MARKER


async def test_server_call_in_a_cancelled_scope_runs_no_handler() -> None:
    with anyio.fail_after(5):
        async with serving() as (server, url):
            received: list[Any] = []
            client = make_client(url, "cp")
            client.handle("RemoteStop", lambda call: received.append(call.params) or {})
            client.handle("Echo", lambda call: call.params)
            async with client:
                with anyio.CancelScope() as scope:
                    scope.cancel()
                    await server.call("cp", "RemoteStop", {"n": 1})
                assert scope.cancelled_caught
                # A round trip after it: anything the first call sent has arrived.
                assert await server.call("cp", "Echo", {"n": 2}) == {"n": 2}
                assert received == []


async def test_a_handler_calling_back_in_a_cancelled_scope_sends_nothing() -> None:
    """The same from a handler's own task (a server's ServerClient calling its charger)."""
    with anyio.fail_after(5):
        async with serving() as (server, url):
            received: list[Any] = []

            async def boot(call: Call) -> dict[str, Any]:
                with anyio.move_on_after(0):
                    await call.client.call("RemoteStop", {"n": 1})
                return await call.client.call("Echo", {"n": 2})

            server.handle("Boot", boot)
            client = make_client(url, "cp")
            client.handle("RemoteStop", lambda call: received.append(call.params) or {})
            client.handle("Echo", lambda call: call.params)
            async with client:
                assert await client.call("Boot") == {"n": 2}
                assert received == []
