"""Messages dealt with as they arrive (on asyncio, by the stream's callback
rather than by the reader task; see `Connection._take_now`): to a handler
and to the peer this must look exactly like the reader's way, on both
backends. Real sockets, a raw peer."""

from __future__ import annotations

import contextvars
import json
from typing import Any

import anyio
import pytest
from harness import serving
from rawpeer import raw_client
from wsproto import events as ev

from ocpp_rpc import Call

pytestmark = pytest.mark.anyio

who = contextvars.ContextVar("who", default="nobody")


async def burst(peer: Any, frames: list[Any]) -> None:
    """Send `frames` in one TCP write: they arrive together."""
    data = b"".join(peer.ws.send(ev.TextMessage(data=json.dumps(f))) for f in frames)
    await peer.stream.send(data)


async def test_a_burst_is_answered_in_order_with_a_bad_frame_in_the_middle() -> None:
    async with serving(protocols=["ocpp2.0.1"]) as (server, url):
        server.handle("Echo", lambda call: {"n": call.params["n"]})
        async with raw_client(f"{url}/CP1", ["ocpp2.0.1"]) as peer:
            frames: list[Any] = [[2, f"m{n}", "Echo", {"n": n}] for n in range(40)]
            frames.insert(20, [9, "bad", "Echo", {}])  # no such message type
            frames.append([2, "nope", "Missing", {}])
            await burst(peer, frames)
            replies = [await peer.receive_json() for _ in range(len(frames))]
    assert [r[1] for r in replies] == [f[1] for f in frames]
    assert replies[0] == [3, "m0", {"n": 0}]
    assert replies[20][0] == 4 and replies[20][2] == "MessageTypeNotSupported"
    assert replies[-1][0] == 4 and replies[-1][2] == "NotImplemented"


async def test_sync_handlers_run_as_a_task_of_the_connection() -> None:
    """A synchronous handler can use what a task has: the current task, a
    cancel scope, the context the connection's tasks inherit."""
    seen: list[Any] = []

    def handler(call: Call) -> Any:
        with anyio.move_on_after(10) as scope:  # noqa: ASYNC100 (entering it needs a task)
            seen.append((anyio.get_current_task().name, who.get(), scope.cancel_called))
        return {}

    who.set("the test")
    async with serving(protocols=["ocpp1.6"]) as (server, url):
        server.handle("Heartbeat", handler)
        async with raw_client(f"{url}/CP1", ["ocpp1.6"]) as peer:
            await burst(peer, [[2, str(n), "Heartbeat", {}] for n in range(3)])
            replies = [await peer.receive_json() for _ in range(3)]
    assert replies == [[3, str(n), {}] for n in range(3)]
    assert len(seen) == 3
    assert all(name and person == "the test" and not called for name, person, called in seen)


async def test_answers_keep_their_order_when_the_peer_stops_reading() -> None:
    """Answers written at once fill the socket; then they queue for the
    writer, then the reader stops taking calls: once the peer reads again,
    every answer arrives, in order."""
    blob = "x" * 20_000
    async with serving(protocols=["ocpp1.6"]) as (server, url):
        server.handle("Big", lambda call: {"n": call.params["n"], "blob": blob})
        async with raw_client(f"{url}/CP1", ["ocpp1.6"]) as peer:
            count = 250  # 5 MB of answers: more than the socket buffers hold
            for start in range(0, count, 50):
                await burst(peer, [[2, str(n), "Big", {"n": n}] for n in range(start, start + 50)])
            replies = [await peer.receive_json() for _ in range(count)]
    assert [r[1] for r in replies] == [str(n) for n in range(count)]
    assert all(r[2] == {"n": n, "blob": blob} for n, r in enumerate(replies))
