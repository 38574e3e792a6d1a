"""Inbound calls once a local close has begun: they run no handler (as in
ocpp-rpc, which handles no call unless OPEN), so a peer that keeps calling
cannot hold a close open. While a close awaits pending work our Close is not
sent yet and a CALL is refused at once with a GenericError; once the Close is
out nothing is sent. A SEND is never answered. Answers to our own pending
calls are still taken (that is what `await_pending` waits for).

Each test runs through the transport's sink (ws://) and through the reader
task (wss://), on both backends, against a raw peer."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from harness import Outcome, serving, tls_contexts, wait_until
from rawpeer import PeerClosed, RawPeer, masked_text_frame, raw_client
from wsproto import events as ev

from ocpp_rpc import Call, CloseResult, RPCNotSupportedError, RPCServer, ServerClient, State

pytestmark = pytest.mark.anyio

PATHS = [pytest.param(False, id="sink"), pytest.param(True, id="reader")]


@dataclass
class Setup:
    server: RPCServer
    ours: ServerClient
    peer: RawPeer
    ran: list[str]  # the ids whose handler ran, in order
    called: list[str]  # the ids of the `call` events of inbound calls
    release: anyio.Event  # lets the handler of "old" return
    end: anyio.Event  # lets Slow's other calls return
    closing: anyio.Event  # our client's `closing` event


@asynccontextmanager
async def facing_peer(tls: bool, protocol: str, **options: Any) -> AsyncIterator[Setup]:
    """Our server's client facing a raw peer, over TLS (the reader task) or
    not (the sink). Handlers: Slow ("old" returns once `release` is set, any
    other call once `end` is set) and Record (returns at once)."""
    server_ctx, client_ctx = tls_contexts("127.0.0.1") if tls else (None, None)
    ran: list[str] = []
    called: list[str] = []
    release, end, closing, ready = anyio.Event(), anyio.Event(), anyio.Event(), anyio.Event()
    accepted: list[ServerClient] = []

    async def slow(call: Call) -> Any:
        ran.append(call.message_id)
        if call.message_id == "old":
            await release.wait()
            return {"slow": "old"}
        await end.wait()  # (a close awaiting it would wait as long: it must not)
        return {}

    def record(call: Call) -> Any:
        ran.append(call.message_id)
        return {}

    async with serving(server_ctx, protocols=[protocol], **options) as (server, url):

        @server.on_client
        async def on_client(client: ServerClient) -> None:
            client.handle("Slow", slow)
            client.handle("Record", record)
            client.on("closing", lambda _: closing.set())
            client.on("call", lambda e: None if e.outbound else called.append(e.payload[1]))
            accepted.append(client)
            ready.set()

        async with raw_client(f"{url}/CP1", [protocol], ssl_context=client_ctx) as peer:
            with anyio.fail_after(5):
                await ready.wait()
            try:
                yield Setup(server, accepted[0], peer, ran, called, release, end, closing)
            finally:
                release.set()
                end.set()
                await peer.drop()


async def uncancelled(outcome: Outcome, close: Any, **options: Any) -> None:
    """`outcome.run(close, **options)`, which a failing test must not cancel:
    a server.close() cancelled half-way leaves the server's exit waiting."""
    with anyio.CancelScope(shield=True):
        await outcome.run(close, **options)


async def replies_until_closed(peer: RawPeer) -> tuple[dict[str, list[Any]], tuple[int, str]]:
    """Every answer the peer gets, by message id, and the close that ends them."""
    replies: dict[str, list[Any]] = {}
    try:
        while True:
            message = await peer.receive_json()
            assert message[1] not in replies, message
            replies[message[1]] = message
    except PeerClosed as closed:
        return replies, (closed.code, closed.reason)


@pytest.mark.parametrize("tls", PATHS)
@pytest.mark.parametrize(
    ("protocol", "closer"),
    [("ocpp1.6", "client"), ("ocpp2.0.1", "server"), ("ocpp2.1", "client")],
)
async def test_with_await_pending_calls_that_come_while_closing_are_refused_unhandled(
    tls: bool, protocol: str, closer: str
) -> None:
    """The peer keeps calling while the close waits for a handler: each CALL
    is refused at once and runs nothing, and the close ends as soon as that
    handler does. `closer`: the client's close(), or the server's (which
    closes every client so)."""
    with anyio.fail_after(10):
        async with facing_peer(tls, protocol) as setup, anyio.create_task_group() as tg:
            ours, peer = setup.ours, setup.peer
            await peer.send_json([2, "old", "Slow", {}])
            await wait_until(lambda: bool(setup.ran))  # the handler of "old" runs, awaited
            closed = Outcome()
            tg.start_soon(functools.partial(
                uncancelled, closed, ours.close if closer == "client" else setup.server.close,
                code=4000, reason="bye", await_pending=True,
            ))
            try:
                await setup.closing.wait()
                assert ours.state is State.CLOSING
                # Slow would not end for these, Record would at once.
                await peer.send_json([2, "new1", "Slow", {}])
                await peer.send_json([2, "new2", "Record", {}])
                if protocol == "ocpp2.1":
                    await peer.send_json([6, "send1", "Record", {}])  # a SEND: never answered
                first = await peer.receive_json()
                assert first[:3] == [4, "new1", "GenericError"], first
                assert first[4] == {}
                assert await peer.receive_json() == [
                    4, "new2", "GenericError",
                    "The connection is closing; no new calls are accepted", {},
                ]
                await peer.expect_nothing(0.05)  # not the SEND; "old" still runs
                assert not closed.done.is_set()
                setup.release.set()
                for n in range(3, 6):  # still calling: refused until our Close goes, then dropped
                    await peer.send_json([2, f"new{n}", "Slow", {}])
                replies, close = await replies_until_closed(peer)
                assert replies.pop("old") == [3, "old", {"slow": "old"}]
                for message in replies.values():
                    assert message[0] == 4 and message[2] == "GenericError", message
                assert set(replies) <= {"new3", "new4", "new5"}
                assert close == (4000, "bye")
                await closed.done.wait()
                assert closed.error is None
                assert await ours.wait_closed() == CloseResult(4000, "bye")
                assert setup.ran == ["old"]
                # A refused call emits no `call` event, as one refused when busy.
                assert setup.called == ["old"]
            finally:
                setup.release.set()  # failing, let the close end (see `uncancelled`)
                setup.end.set()


@pytest.mark.parametrize("tls", PATHS)
async def test_without_await_pending_a_call_after_our_close_runs_no_handler(tls: bool) -> None:
    """Our Close is out, unanswered, and the peer's CALL and SEND sent
    meanwhile (before its answering Close) run no handler and get nothing."""
    with anyio.fail_after(10):
        async with facing_peer(tls, "ocpp2.1") as setup, anyio.create_task_group() as tg:
            ours, peer = setup.ours, setup.peer
            tg.start_soon(ours.close)
            while True:  # our Close, left unanswered for now
                event = await peer._event()
                if isinstance(event, ev.CloseConnection):
                    break
            assert ours.state is State.CLOSING
            # wsproto frames no message once a Close came in: by hand, then the answer.
            late = [[2, "late", "Record", {}], [6, "late-send", "Record", {}]]
            await peer.stream.send(
                b"".join(masked_text_frame(json.dumps(frame)) for frame in late)
                + peer.ws.send(event.response())
            )
            # Read in order: the CALL and the SEND were dealt with before the close ended.
            assert await ours.wait_closed() == CloseResult(1000, "")
            assert setup.ran == []
            with anyio.move_on_after(0.05):  # nothing came after our Close
                try:
                    data = await peer.stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    data = b""
                assert data == b"", data


@pytest.mark.parametrize("tls", PATHS)
async def test_answers_to_our_calls_are_taken_during_an_await_pending_close(tls: bool) -> None:
    """The close waits for our calls in flight, and their answers (a result,
    an error) still settle them, a CALL the peer sends meanwhile
    notwithstanding."""
    with anyio.fail_after(10):
        async with facing_peer(tls, "ocpp2.0.1", call_concurrency=2) as setup, \
                anyio.create_task_group() as tg:
            ours, peer = setup.ours, setup.peer
            first, second, closed = Outcome(), Outcome(), Outcome()
            tg.start_soon(first.run, ours.call, "Out", {"n": 1})
            tg.start_soon(second.run, ours.call, "Out", {"n": 2})
            calls = {}
            for _ in range(2):
                call = await peer.receive_json()
                calls[call[3]["n"]] = call[1]
            tg.start_soon(functools.partial(
                closed.run, ours.close, code=4001, reason="later", await_pending=True
            ))
            await setup.closing.wait()
            await peer.send_json([2, "new", "Slow", {}])  # handled, it would hold the close
            assert (await peer.receive_json())[:3] == [4, "new", "GenericError"]
            await peer.send_json([3, calls[1], {"ok": 1}])
            await first.done.wait()
            assert first.value == {"ok": 1}
            assert not closed.done.is_set()  # the second is pending still
            await peer.send_json([4, calls[2], "NotSupported", "no", {}])
            await second.done.wait()
            assert isinstance(second.error, RPCNotSupportedError)
            assert await peer.expect_close() == (4001, "later")
            await closed.done.wait()
            assert closed.value == CloseResult(4001, "later")
            assert setup.ran == []
