"""Messages dealt with as they arrive, by the transport's sink (on asyncio in
the stream's callback, on trio in the WebSocket's own read loop) rather than
one at a time by the reader task (see `Connection.__call__`): to a handler
and to the peer this must look exactly like the reader's way, on both
backends. Real sockets, a raw peer."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import json
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.abc
import pytest
from harness import serving, tls_contexts, wait_until
from rawpeer import PeerClosed, RawPeer, masked_text_frame, raw_client
from wsproto import ConnectionType, WSConnection
from wsproto import events as ev

from ocpp_rpc import NOREPLY, Call, RPCSecurityError, ServerClient
from ocpp_rpc._transport import websocket
from ocpp_rpc._transport.streams import AsyncioSocketStream, adopt_socket_stream

pytestmark = pytest.mark.anyio

STREAM_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


@pytest.fixture(
    params=["asyncio", pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"), "trio"]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Every loop: uvloop delivers reads differently from asyncio's own."""
    return request.param

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


async def test_the_answers_to_one_long_read_go_out_cork_limit_frames_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read of many calls: their answers are written every so many frames
    (each write with its own write timeout), never all in one buffer."""
    batches: list[int] = []
    encode = websocket.encode

    def counting(messages: Any, *, mask: bool) -> bytes:
        batches.append(len(messages))
        return encode(messages, mask=mask)

    monkeypatch.setattr(websocket, "encode", counting)
    n = 1000
    async with serving(protocols=["ocpp1.6"]) as (server, url):
        server.handle("Heartbeat", lambda call: {"currentTime": "x" * 100})
        async with raw_client(f"{url}/CP1", ["ocpp1.6"]) as peer:
            await burst(peer, [[2, str(i), "Heartbeat", {}] for i in range(n)])
            replies = [await peer.receive_json() for _ in range(n)]
    assert [r[1] for r in replies] == [str(i) for i in range(n)]
    assert max(batches) <= websocket._CORK_LIMIT, batches


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


# -- hostile review: more than one read's worth at once, every loop ----------------------

@pytest.mark.parametrize("interrupt", ["ping", "bad"])
async def test_a_burst_bigger_than_a_read_with_a_frame_for_the_reader_early_on(
    interrupt: str,
) -> None:
    """A Ping or a bad frame early in a burst much bigger than one read: the
    sink leaves it and what follows to the reader task; the loop may deliver
    the next read before that task has run (uvloop reads up to 32 times in a
    row), and those messages must wait their turn, not overtake or replace
    the ones left to the reader."""
    blob = "y" * 10_000
    async with serving(protocols=["ocpp2.0.1"]) as (server, url):
        server.handle("Echo", lambda call: {"n": call.params["n"]})
        async with raw_client(f"{url}/CP1", ["ocpp2.0.1"]) as peer:
            count = 150  # 1.5 MB: several reads of 256 kB (uvloop) or 64 kB (asyncio)
            items: list[Any] = [[2, str(n), "Echo", {"n": n, "b": blob}] for n in range(count)]
            bad = [9, "bad", "Echo", {}]  # answered MessageTypeNotSupported, by the reader
            items.insert(5, ev.Ping(payload=b"p") if interrupt == "ping" else bad)
            await peer.stream.send(b"".join(_frame(peer.ws, item) for item in items))
            answered = count + (interrupt == "bad")
            replies = [await peer.receive_json(timeout=3) for _ in range(answered)]
    ids = [r[1] for r in replies]
    expected = [str(n) for n in range(count)]
    if interrupt == "bad":
        expected.insert(5, "bad")
    assert ids == expected


# -- the same script over ws:// (the sink) and wss:// (the reader) -----------------------


@asynccontextmanager
async def raw_tls_client(
    url: str, subprotocols: list[str], context: ssl.SSLContext
) -> AsyncIterator[RawPeer]:
    """`rawpeer.raw_client` over TLS (the upgrade written the same way)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    stream = await anyio.connect_tcp(host, port, ssl_context=context, tls_hostname=host)
    peer = RawPeer(stream, WSConnection(ConnectionType.CLIENT))
    try:
        with anyio.fail_after(5):
            await peer.stream.send(peer.ws.send(ev.Request(
                host=f"{host}:{port}", target=parts.path, subprotocols=subprotocols
            )))
            while not isinstance(event := await peer._event(), ev.AcceptConnection):
                assert not isinstance(event, ev.RejectConnection), event
            peer.status, peer.subprotocol = 101, event.subprotocol
        yield peer
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.aclose_forcefully(stream)


def _plain(value: Any) -> Any:
    """An event payload as plain data (exceptions as their type and text)."""
    if isinstance(value, BaseException):
        return (type(value).__name__, str(value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, *(
            _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
        ))
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


OBSERVED = ("message", "call", "response", "call_result", "call_error", "bad_message",
            "unexpected_response", "strict_validation_failure", "close", "disconnect")


@dataclasses.dataclass
class Run:
    wire: list[Any]  # what the peer received, in order
    events: list[Any]  # the server client's events, in order
    seen: list[Any]  # what handlers saw
    outcomes: list[Any]  # the server's outbound calls


async def play(
    tls: bool,
    script: Callable[[list[str]], list[list[Any]]],
    *,
    outbound: int = 0,
    out: tuple[str, Any] = ("Out", {}),
    before_close: tuple[str, ...] = (),
    protocol: str = "ocpp2.1",
    **options: Any,
) -> Run:
    """Serve one raw peer (over TLS or not), make `outbound` calls `out` to
    it, then send each burst `script(ids of those calls)` makes in one TCP
    write, the last once answers to `before_close` came (it should hold the
    peer's Close). The answer to a call "release" releases Slow, Slow's
    answer to s1 releases Later, Later's to l1 releases Last. Handlers: Echo, Boom (raises),
    Refuse (RPCSecurityError), Quiet (NOREPLY), Slow (async, waits for the
    end), Later (returns an awaitable that waits too), Set/Get (a context
    variable), Where (task name, cancel scope)."""
    run = Run([], [], [], [])
    server_ctx, client_ctx = tls_contexts("127.0.0.1")
    release, release_later, release_last = anyio.Event(), anyio.Event(), anyio.Event()
    accepted: list[ServerClient] = []
    ready = anyio.Event()

    async def slow(call: Call) -> Any:
        await release.wait()
        return {"slow": call.message_id}

    async def waiting(call: Call) -> Any:
        await release_later.wait()
        return {"later": call.message_id}

    async def last(call: Call) -> Any:
        await release_last.wait()
        return {"last": call.message_id}

    def boom(call: Call) -> Any:
        raise ValueError("boom")

    def refuse(call: Call) -> Any:
        raise RPCSecurityError("no", {"why": "test"})

    def set_var(call: Call) -> Any:
        who.set(call.params["v"])
        return {}

    def where(call: Call) -> Any:
        with anyio.CancelScope() as scope:  # noqa: ASYNC100 (entering it needs a task)
            run.seen.append(("where", anyio.get_current_task().name, scope.cancel_called))
        return {}

    handlers: dict[str, Any] = {
        "Echo": lambda call: call.params,
        "Boom": boom,
        "Refuse": refuse,
        "Quiet": lambda call: NOREPLY,
        "Slow": slow,
        "Later": lambda call: waiting(call),
        "Last": last,
        "Set": set_var,
        "Get": lambda call: {"v": who.get()},
        "Where": where,
        "Heartbeat": lambda call: {"currentTime": "2026-01-01T00:00:00Z"},
        "BootNotification": lambda call: {"bad": True},  # invalid in strict mode
    }
    def record(name: str, payload: Any) -> None:
        run.events.append((name, _plain(payload)))

    who.set("outer")
    async with serving(server_ctx if tls else None, protocols=[protocol], **options) as (
        server, url
    ):

        @server.on_client
        async def on_client(client: ServerClient) -> None:
            for method, handler in handlers.items():  # before the first await: every call
                client.handle(method, handler)
            for name in OBSERVED:
                client.on(name, functools.partial(record, name))
            accepted.append(client)
            ready.set()

        opening = (
            raw_tls_client(f"{url}/CP1", [protocol], client_ctx)
            if tls else raw_client(f"{url}/CP1", [protocol])
        )
        async with opening as peer, anyio.create_task_group() as tg:
            with anyio.fail_after(5):
                await ready.wait()
            client = accepted[0]
            calls: list[Any] = []

            async def call_out(n: int) -> None:
                try:
                    run.outcomes.append((n, await client.call(*out)))
                except Exception as exc:
                    run.outcomes.append((n, _plain(exc)))

            for n in range(outbound):
                tg.start_soon(call_out, n)
                calls.append(await peer.receive_json())
            *bursts, last = script([c[1] for c in calls])
            for burst in bursts:  # each in one TCP write
                await peer.stream.send(b"".join(_frame(peer.ws, item) for item in burst))
            waiting_for = set(before_close)
            with anyio.fail_after(5):
                while waiting_for:
                    run.wire.append(await peer.receive_json())
                    waiting_for.discard(run.wire[-1][1])
                    if run.wire[-1][1] == "release":
                        release.set()
                    elif run.wire[-1][1] == "s1" and run.wire[-1][0] == 3:
                        release_later.set()  # one at a time: trio runs tasks in any order
                    elif run.wire[-1][1] == "l1" and run.wire[-1][0] == 3:
                        release_last.set()
                await peer.stream.send(b"".join(_frame(peer.ws, item) for item in last))
                try:
                    while True:
                        run.wire.append(await peer.receive_json())
                except PeerClosed as exc:
                    run.wire.append(("closed", exc.code, exc.reason))
                await client.wait_closed()
    ids = {c: f"<out{n}>" for n, c in enumerate(c[1] for c in calls)}

    def unrandom(value: Any) -> Any:
        if isinstance(value, str):
            for real, fake in ids.items():
                value = value.replace(real, fake)
            return value
        if isinstance(value, (list, tuple)):
            return type(value)(unrandom(v) for v in value)
        if isinstance(value, dict):
            return {k: unrandom(v) for k, v in value.items()}
        return value

    run.events, run.wire = unrandom(run.events), unrandom(run.wire)
    run.outcomes = sorted(unrandom(run.outcomes))
    return run


def _frame(ws: WSConnection, item: Any) -> bytes:
    """A script's item on the wire: a wsproto event, bytes as they are, a
    str as a text message, anything else as JSON text."""
    if isinstance(item, ev.Event):
        return ws.send(item)
    if isinstance(item, bytes):
        return item
    return ws.send(ev.TextMessage(data=item if isinstance(item, str) else json.dumps(item)))


def mixed(out: list[str]) -> list[list[Any]]:
    """Every kind of message, in one read, then a Close among calls."""
    return [
        [
            [2, "e1", "Echo", {"a": 1}],
            [3, out[0], {"r": 0}],
            [2, "b1", "Boom", {}],
            [2, "r1", "Refuse", {}],
            [2, "q1", "Quiet", {}],
            [2, "s1", "Slow", {}],
            [2, "s1", "Slow", {}],  # still being handled
            [4, out[1], "GenericError", "nope", {"d": 1}],
            [2, "l1", "Later", {}],
            [3, "zzz", {}],  # unexpected
            [2, "m1", "Missing", {}],
            "",
            [2, "set", "Set", {"v": "set by a handler"}],
            [2, "g1", "Get", {}],
            [6, "send1", "Echo", {}],
            "not json",
            [5, out[2], "GenericError", "oops", {}],
            [2, "w1", "Where", {}],
            [2, "e2", "Echo", {"a": 2}],
        ],
        [[2, "e3", "Echo", {"a": 3}], [2, "release", "Echo", {}]],
        [
            [2, "e4", "Echo", {}],
            ev.CloseConnection(code=1000, reason="bye"),
            masked_text_frame(json.dumps([2, "e5", "Echo", {}])),  # after its Close: ignored
        ],
    ]


def is_caller(event: Any) -> bool:
    """An event of the task that made an outbound call (after the call)."""
    return event[0] in ("call_result", "call_error") and event[1][1] is True


def callers(events: list[Any]) -> list[str]:
    return sorted(repr(e) for e in events if is_caller(e))


async def test_the_sink_and_the_reader_give_the_same_wire_and_events() -> None:
    """Everything the peer gets, every event the server's client emits and
    everything handlers see are the same whether the messages go through
    the sink (ws://) or the reader task (wss://)."""
    done = ("s1", "l1", "release")
    inline = await play(False, mixed, outbound=3, before_close=done, call_concurrency=3)
    reader = await play(True, mixed, outbound=3, before_close=done, call_concurrency=3)
    assert inline.wire == reader.wire
    assert inline.seen == reader.seen
    assert inline.outcomes == reader.outcomes
    # The callers of outbound calls are tasks of their own, woken as answers
    # come: where their events fall among the reader's is up to the scheduler.
    assert callers(inline.events) == callers(reader.events)
    assert [e for e in inline.events if not is_caller(e)] == [
        e for e in reader.events if not is_caller(e)
    ]
    assert inline.wire[-1] == ("closed", 1000, "bye")
    # (e4's answer is queued for the writer, which our outbound calls started,
    # and the peer's Close, in the same read, is answered first: e4 gets none.)
    assert [m[1] for m in inline.wire[:-1]] == [
        "e1", "b1", "r1", "s1", "m1", "set", "g1", "-1", "w1", "e2", "e3", "release", "s1",
        "l1",
    ]


def busy(out: list[str]) -> list[list[Any]]:
    """max_inbound_calls 3: two awaiting handlers, then more than fits."""
    return [
        [
            [2, "s1", "Slow", {}],
            [2, "l1", "Later", {}],
            [2, "e1", "Echo", {}],  # the third: fits, and ends at once
            [2, "z1", "Last", {}],  # the third again
            [2, "e2", "Echo", {}],  # refused
            [6, "send1", "Echo", {}],  # refused, silently
            [2, "e3", "Echo", {}],  # refused
            [2, "release", "Echo", {}],  # refused: "release" comes next
        ],
        [[2, "release", "Echo", {}]],
        [[2, "e4", "Echo", {}], ev.CloseConnection(code=1000, reason="")],
    ]


def strict(out: list[str]) -> list[list[Any]]:
    """Strict mode: valid and invalid calls, results and handler results."""
    return [
        [
            [2, "h1", "Heartbeat", {}],
            [2, "h2", "Heartbeat", {"extra": 1}],
            [3, out[0], {"currentTime": 5}],  # invalid: 2.1 tells the peer
            [2, "b1", "BootNotification", {"reason": "PowerUp", "chargingStation": {
                "model": "m", "vendorName": "v"}}],  # its handler's result is invalid
            [3, out[1], {"currentTime": "2026-01-01T00:00:00Z"}],
            [2, "x1", "Echo", {}],  # no schema
            [2, "release", "Heartbeat", {}],
        ],
        [ev.CloseConnection(code=1000, reason="")],
    ]


@pytest.mark.parametrize(
    ("script", "options"),
    [
        pytest.param(busy, {"max_inbound_calls": 3}, id="max_inbound_calls"),
        pytest.param(strict, {"strict_mode": True, "call_concurrency": 2,
                              "out": ("Heartbeat", {}), "outbound": 2}, id="strict"),
    ],
)
async def test_limits_and_strict_mode_are_the_same_through_the_sink(
    script: Callable[[list[str]], list[list[Any]]], options: dict[str, Any]
) -> None:
    done = ("release",) if script is strict else ("release", "s1", "l1", "z1")
    inline = await play(False, script, before_close=done, **options)
    reader = await play(True, script, before_close=done, **options)
    assert inline.wire == reader.wire
    assert inline.outcomes == reader.outcomes
    assert callers(inline.events) == callers(reader.events)
    assert [e for e in inline.events if not is_caller(e)] == [
        e for e in reader.events if not is_caller(e)
    ]
    if script is strict:
        assert [m[:3] for m in inline.wire[:-1]] == [
            [3, "h1", {"currentTime": "2026-01-01T00:00:00Z"}],
            [4, "h2", "FormatViolation"],
            [5, "<out0>", "TypeConstraintViolation"],
            [4, "b1", "InternalError"],
            [4, "x1", "NotImplemented"],
            [3, "release", {"currentTime": "2026-01-01T00:00:00Z"}],
        ]
    else:
        assert [m[1] for m in inline.wire[:-1]] == [
            "e1", "e2", "e3", "release", "release", "s1", "l1", "z1", "e4"
        ]


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
async def test_a_peer_that_sends_calls_and_stops_reading_is_dropped_after_the_write_timeout(
    tls: bool,
) -> None:
    """Answers written at once (the sink's, the reader's) fill the socket;
    what follows must still be bounded by write_timeout."""
    server_ctx, client_ctx = tls_contexts("127.0.0.1")
    blob = "z" * 50_000
    closed: list[Any] = []
    ended = anyio.Event()
    async with serving(server_ctx if tls else None, protocols=["ocpp1.6"], write_timeout=0.3) as (
        server, url
    ):
        server.handle("Big", lambda call: {"blob": blob})

        @server.on_client
        async def on_client(client: ServerClient) -> None:
            client.on("close", lambda result: (closed.append(result), ended.set()))

        opening = (
            raw_tls_client(f"{url}/CP1", ["ocpp1.6"], client_ctx)
            if tls else raw_client(f"{url}/CP1", ["ocpp1.6"])
        )
        async with opening as peer, anyio.create_task_group() as tg:

            async def flood() -> None:  # calls, and never a read
                n = 0
                with contextlib.suppress(*STREAM_ERRORS):
                    while True:
                        await burst(peer, [[2, str(n + i), "Big", {}] for i in range(20)])
                        n += 20

            tg.start_soon(flood)
            with anyio.fail_after(10):
                await ended.wait()
            tg.cancel_scope.cancel()
    assert [(c.code, c.reason) for c in closed] == [(1006, "write timeout")]


@pytest.mark.parametrize(
    "anyio_backend", ["asyncio", pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")]
)
async def test_a_nudged_receive_returns_before_bytes_that_came_after_the_nudge() -> None:
    """Two reads delivered before the task in `receive` runs again (uvloop
    reads up to 32 times in a row): the first is the consumer's, which
    nudges; the second must neither go to the consumer (the task has not
    looked at what the first left) nor be returned before the nudge."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with await anyio.connect_tcp("127.0.0.1", port) as ours:
            stream = adopt_socket_stream(ours)
            assert isinstance(stream, AsyncioSocketStream)
            taken: list[bytes] = []

            def consumer(data: bytes) -> bool:
                taken.append(data)
                stream.nudge()
                return True

            stream.consumer = consumer
            protocol = stream._transport.get_protocol()
            got: list[bytes] = []

            async def read_two() -> None:
                got.append(await stream.receive())
                got.append(await stream.receive())

            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(read_two)
                    await wait_until(lambda: stream._read_waiter is not None)
                    protocol.data_received(b"first")  # what one callback of the loop does
                    protocol.data_received(b"second")  # the next, before read_two runs
            assert taken == [b"first"]
            assert got == [b"", b"second"]


@pytest.mark.parametrize(
    "anyio_backend",
    ["asyncio", pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"), "trio"],
)
async def test_a_context_variable_a_handler_sets_is_seen_alike_by_later_handlers() -> None:
    def script(out: list[str]) -> list[list[Any]]:
        return [
            [[2, "set", "Set", {"v": "by a handler"}], ev.Ping(payload=b"x"), [2, "g1", "Get", {}]],
            [[2, "g2", "Get", {}], ev.CloseConnection(code=1000, reason="")],
        ]

    inline = await play(False, script, before_close=("g1",))
    reader = await play(True, script, before_close=("g1",))
    assert reader.wire[1:3] == [[3, "g1", {"v": "by a handler"}], [3, "g2", {"v": "by a handler"}]]
    assert inline.wire == reader.wire
