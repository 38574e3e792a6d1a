"""Answers to the messages of one read go out in one write ("corked"), in
order with everything else the WebSocket sends: the task in `receive` writes
them all before it reads again (the asyncio sink batches its own)."""

from __future__ import annotations

import socket
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute
from test_websocket_control import TEXT, RawClient, frame, server_and_client
from wsproto.events import CloseConnection, Ping, Pong, TextMessage

from ocpp_rpc._transport.streams import TrioSocketStream
from ocpp_rpc._transport.websocket import _CORK_LIMIT, WebSocket, WebSocketClosed

pytestmark = pytest.mark.anyio

EVERY_LOOP = pytest.mark.parametrize(
    "anyio_backend",
    ["asyncio", pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"), "trio"],
)


def count_writes(ws: WebSocket) -> list[int]:
    """Sizes of the writes to `ws`'s stream, from now on (a `send_now` that the
    socket took whole, or a `send`)."""
    sizes: list[int] = []
    stream = ws.stream
    send = stream.send

    async def counting(data: bytes) -> None:
        sizes.append(len(data))
        await send(data)

    stream.send = counting  # type: ignore[method-assign]
    if isinstance(stream, TrioSocketStream):
        send_now = stream.send_now

        def counting_now(data: bytes) -> int:
            sent = send_now(data)
            if sent == len(data):
                sizes.append(sent)
            return sent

        stream.send_now = counting_now  # type: ignore[method-assign]
    return sizes


async def echo_n(ws: WebSocket, n: int) -> None:
    """Answer `n` messages, each as the reader's own task would."""
    for _ in range(n):
        message = await ws.receive()
        await ws.send(f"re {message!s}")


async def texts(client: RawClient, n: int) -> list[str]:
    out = []
    while len(out) < n:
        event = await client.event()
        assert isinstance(event, TextMessage), event
        out.append(str(event.data))
    return out


@EVERY_LOOP
async def test_the_answers_to_one_read_go_out_in_one_write(anyio_backend: Any) -> None:
    with anyio.fail_after(5):
        async with server_and_client() as (ws, client), anyio.create_task_group() as tg:
            writes = count_writes(ws)
            tg.start_soon(echo_n, ws, 1_000)
            await client.send(*(frame(TEXT, b"m%d" % i) for i in range(5)))
            # Written when the reader came back for more, all five at once.
            assert await texts(client, 5) == [f"re m{i}" for i in range(5)]
            assert len(writes) == 1, writes
            await client.send(frame(TEXT, b"alone"))
            assert await texts(client, 1) == ["re alone"]
            assert len(writes) == 2  # a lone message's answer is written at once
            tg.cancel_scope.cancel()


@EVERY_LOOP
async def test_a_long_read_is_written_every_cork_limit_frames(anyio_backend: Any) -> None:
    n = _CORK_LIMIT + 44
    with anyio.fail_after(5):
        async with server_and_client() as (ws, client):
            writes = count_writes(ws)
            await client.send(*(frame(TEXT, b"%d" % i) for i in range(n)))
            async with anyio.create_task_group() as tg:
                tg.start_soon(echo_n, ws, n)
                assert await texts(client, _CORK_LIMIT) == [f"re {i}" for i in range(_CORK_LIMIT)]
                with anyio.move_on_after(0.2):
                    await ws.receive()  # the rest goes out before this reads
                assert await texts(client, 44) == [f"re {i}" for i in range(_CORK_LIMIT, n)]
            assert len(writes) <= 3, writes  # one per read and per limit, never one each


@EVERY_LOOP
async def test_corked_answers_go_before_a_pong_and_a_close_echo(anyio_backend: Any) -> None:
    with anyio.fail_after(5):
        async with server_and_client() as (ws, client):
            close = frame(0x8, (1000).to_bytes(2, "big") + b"bye")
            await client.send(frame(TEXT, b"a"), frame(0x9, b"p"), frame(TEXT, b"b"), close)
            got_a = await ws.receive()
            await ws.send(f"re {got_a!s}")
            got_b = await ws.receive()  # answers the Ping on the way
            await ws.send(f"re {got_b!s}")
            with pytest.raises(WebSocketClosed) as closed:
                await ws.receive()
            assert closed.value.code == 1000
            events = [await client.event() for _ in range(4)]
            assert [type(e) for e in events] == [TextMessage, Pong, TextMessage, CloseConnection]
            assert [e.data for e in events if isinstance(e, TextMessage)] == ["re a", "re b"]
            assert not isinstance(events[1], Ping)


@EVERY_LOOP
async def test_a_send_from_another_task_while_corked_keeps_its_place(anyio_backend: Any) -> None:
    with anyio.fail_after(5):
        async with server_and_client() as (ws, client):
            await client.send(frame(TEXT, b"1"), frame(TEXT, b"2"))
            first = await ws.receive()
            await ws.send(f"re {first!s}")

            async def other() -> None:
                await ws.send("from another task")

            async with anyio.create_task_group() as tg:
                tg.start_soon(other)
            second = await ws.receive()
            await ws.send(f"re {second!s}")
            with anyio.move_on_after(0.2):
                await ws.receive()
            assert await texts(client, 3) == ["re 1", "from another task", "re 2"]


@EVERY_LOOP
async def test_a_sink_takes_each_read_as_the_receiving_task_until_it_leaves_one(
    anyio_backend: Any,
) -> None:
    """On plain TCP the sink takes the messages of each read as they come
    (asyncio: in the stream's callback; trio: in the task in `receive`
    itself), as the task in `receive`. A message it leaves, and all after
    it, `receive` returns in order, and every answer keeps its place."""
    taken: list[tuple[str | bytes, int]] = []
    returned: list[str | bytes] = []
    reader_id: list[int] = []

    def sink(message: str | bytes) -> bool:
        taken.append((message, anyio.get_current_task().id))
        if message == "stop":
            return False
        assert ws.send_nowait(f"re {message!s}")
        return True

    async def reader() -> None:  # the sink runs as the task that set it
        reader_id.append(anyio.get_current_task().id)
        ws.set_sink(sink)
        while True:
            message = await ws.receive()
            returned.append(message)
            await ws.send(f"re {message!s}")

    with anyio.fail_after(5):
        async with server_and_client() as (ws, client), anyio.create_task_group() as tg:
            writes = count_writes(ws)
            tg.start_soon(reader)
            await anyio.wait_all_tasks_blocked()  # the reader waits for bytes
            await client.send(*(frame(TEXT, m) for m in (b"m0", b"m1", b"stop", b"m3")))
            assert await texts(client, 4) == ["re m0", "re m1", "re stop", "re m3"]
            await client.send(frame(TEXT, b"last"))
            assert await texts(client, 1) == ["re last"]
            tg.cancel_scope.cancel()
    assert taken == [("m0", reader_id[0]), ("m1", reader_id[0]), ("stop", reader_id[0]),
                     ("last", reader_id[0])]
    assert returned == ["stop", "m3"]  # after a message left, the rest is returned
    if anyio_backend == "trio":  # the first read's four answers went out in one write
        assert writes == [sum(2 + len(f"re {m}") for m in ("m0", "m1", "stop", "m3")), 9]


async def whole_texts(client: RawClient, n: int) -> list[str]:
    """`n` text messages, each joined from the parts wsproto hands out."""
    out: list[str] = []
    part = ""
    while len(out) < n:
        event = await client.event()
        assert isinstance(event, TextMessage), event
        part += event.data
        if event.message_finished:
            out.append(part)
            part = ""
    return out


@EVERY_LOOP
async def test_answers_more_than_the_socket_takes_at_once_arrive_whole_and_in_order(
    anyio_backend: Any,
) -> None:
    """On trio the first part of such a write goes out at once, without the
    write lock, and the rest waits for the peer under the lock."""
    n, filler = 40, "x" * 20_000  # 800 KB of answers to one read

    def sink(message: str | bytes) -> bool:
        assert ws.send_nowait(f"{message!s} {filler}")
        return True

    async def reader() -> None:
        ws.set_sink(sink)
        await ws.receive()  # the sink takes every message

    with anyio.fail_after(10):
        async with server_and_client() as (ws, client), anyio.create_task_group() as tg:
            ws.stream.extra(SocketAttribute.raw_socket).setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            parts: list[tuple[int, int]] = []
            stream = ws.stream
            if isinstance(stream, TrioSocketStream):
                send_now = stream.send_now

                def recording(data: bytes) -> int:
                    sent = send_now(data)
                    parts.append((sent, len(data)))
                    return sent

                stream.send_now = recording  # type: ignore[method-assign]
            tg.start_soon(reader)
            await anyio.wait_all_tasks_blocked()
            await client.send(*(frame(TEXT, b"%d" % i) for i in range(n)))
            assert await whole_texts(client, n) == [f"{i} {filler}" for i in range(n)]
            if anyio_backend == "trio":  # the socket took part, the locked send the rest
                assert any(0 < sent < size for sent, size in parts), parts
            await client.send(frame(TEXT, b"after"))
            assert await whole_texts(client, 1) == [f"after {filler}"]
            tg.cancel_scope.cancel()
