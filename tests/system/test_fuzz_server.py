"""A live RPCServer (both backends) under fire: several raw peers at once send
random bytes instead of (or before) an HTTP upgrade, random bytes after the
upgrade (broken WebSocket framing), and random text, random JSON and mutated
OCPP frames as WebSocket messages. Whatever they send, the server must answer
what it can, close a connection (1002) exactly when the wire table's count of
bad messages says so, log no error, leak no task, and afterwards serve a
normal RPCClient correctly, both ways."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from harness import echo, hostile_messages, is_good, task_count, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rawpeer import PeerClosed, raw_client

from ocpp_rpc import Call, RPCClient, RPCServer

_STREAM_ERRORS = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)

# -- what the peers send -----------------------------------------------------------------------

UPGRADE = (
    b"GET /ocpp/fuzz HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@dataclass(frozen=True)
class TcpGarbage:
    """Bytes instead of an HTTP request (maybe a valid or cut upgrade first)."""

    prefix: bytes
    data: bytes


@dataclass(frozen=True)
class FramingGarbage:
    """A completed upgrade, then bytes that are no WebSocket frame."""

    data: bytes


@dataclass(frozen=True)
class Messages:
    """A completed upgrade, then WebSocket messages, then a probe CALL."""

    messages: list[str | bytes]


peers = st.lists(
    st.one_of(
        st.builds(
            TcpGarbage,
            st.sampled_from([b"", UPGRADE[:20], UPGRADE[:-2], b"GET / HTTP/1.1\r\n\r\n"]),
            st.binary(max_size=200),
        ),
        st.builds(FramingGarbage, st.binary(min_size=1, max_size=200)),
        st.builds(Messages, st.lists(hostile_messages, min_size=1, max_size=8)),
        st.builds(Messages, st.lists(hostile_messages, min_size=1, max_size=8)),
    ),
    min_size=1,
    max_size=6,
)

# -- the peers -------------------------------------------------------------------------------------


async def read_until_eof(stream: Any, timeout: float = 5.0) -> bytes:
    data = b""
    with anyio.fail_after(timeout):
        while True:
            try:
                data += await stream.receive()
            except _STREAM_ERRORS:
                return data


async def tcp_garbage(port: int, peer: TcpGarbage) -> None:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        try:
            await stream.send(peer.prefix + peer.data)
            await stream.send_eof()
        except _STREAM_ERRORS:
            return
        await read_until_eof(stream)  # the server hangs up; it must not hang


async def framing_garbage(url: str, peer: FramingGarbage) -> None:
    async with raw_client(f"{url}/fuzz-framing", ["ocpp2.1"]) as raw:
        assert raw.status == 101
        try:
            await raw.stream.send(peer.data)
            await raw.stream.send_eof()
        except _STREAM_ERRORS:
            return
        await read_until_eof(raw.stream)


async def fuzz_messages(url: str, number: int, peer: Messages, max_bad: float) -> None:
    bad_in_a_row, too_many_bad = 0, False  # the wire table's count, modelled
    for message in peer.messages:
        verdict = is_good(message, "ocpp2.1")
        bad_in_a_row = bad_in_a_row + 1 if verdict is False else 0 if verdict else bad_in_a_row
        too_many_bad = too_many_bad or bad_in_a_row > max_bad
    async with raw_client(f"{url}/fuzz{number}", ["ocpp2.1"]) as raw:
        assert raw.status == 101
        try:
            for message in peer.messages:
                if isinstance(message, bytes):
                    await raw.send_bytes(message)
                else:
                    await raw.send_text(message)
            await raw.send_text('[2,"probe-fuzz","Echo",{"probe":true}]')
            while True:  # answers to earlier frames, then the probe's
                answer = json.loads(await raw.receive())
                assert type(answer) is list and answer[0] in (3, 4), answer
                if answer[1] == "probe-fuzz":
                    assert answer == [3, "probe-fuzz", {"probe": True}]
                    break
        except PeerClosed as exc:
            closed: tuple[int, str] | None = (exc.code, exc.reason)
        except _STREAM_ERRORS:
            closed = (1006, "")
        else:
            closed = None
        # Too many bad frames in a row close the connection (with 1002), and nothing else does.
        if too_many_bad:
            assert closed is not None and closed[0] in (1002, 1006), closed
        else:
            assert closed is None, closed


# -- the test ------------------------------------------------------------------------------------


class ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def hostile_peers_then_a_normal_client(script: list[Any], max_bad: float) -> None:
    errors = ErrorLog()
    logging.getLogger("ocpp_rpc").addHandler(errors)
    tasks_before = task_count()
    try:
        with anyio.fail_after(20):
            async with RPCServer(
                protocols=["ocpp2.1"], ping_interval=None, max_bad_messages=max_bad,
                handshake_timeout=5,
            ) as server:
                server.handle("Echo", echo)
                listening = await server.listen()
                url = f"ws://{listening.host}:{listening.port}/ocpp"
                async with anyio.create_task_group() as tg:
                    for number, peer in enumerate(script):
                        if isinstance(peer, TcpGarbage):
                            tg.start_soon(tcp_garbage, listening.port, peer)
                        elif isinstance(peer, FramingGarbage):
                            tg.start_soon(framing_garbage, url, peer)
                        else:
                            tg.start_soon(fuzz_messages, url, number, peer, max_bad)
                await wait_until(lambda: not server.clients)

                client = RPCClient(url, "normal", protocols=["ocpp2.1"], ping_interval=None)

                @client.handler("Back")
                async def back(call: Call) -> Any:
                    return {"back": call.params}

                async with client:
                    assert await client.call("Echo", {"n": 1}) == {"n": 1}
                    assert list(server.clients) == ["normal"]
                    answer = await server.clients["normal"].call("Back", {"m": 2})
                    assert answer == {"back": {"m": 2}}
    finally:
        logging.getLogger("ocpp_rpc").removeHandler(errors)
    assert [r.getMessage() for r in errors.records] == []
    assert task_count() == tasks_before


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(script=peers, max_bad=st.sampled_from([math.inf, math.inf, 2]))
def test_hostile_peers_never_break_the_server(
    backend: str, script: list[Any], max_bad: float
) -> None:
    anyio.run(hostile_peers_then_a_normal_client, script, max_bad, backend=backend)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_many_hostile_peers_at_once(backend: str) -> None:
    # A fixed, larger mix: 60 peers of every kind at the same time.
    script: list[Any] = []
    for n in range(20):
        script.append(TcpGarbage(UPGRADE[: n * 7], bytes(range(n, n + 50))))
        script.append(FramingGarbage(bytes([0x81 + n % 4, 0xFF - n]) * (n + 1)))
        script.append(Messages([
            "[2,", b"\xff\xfe", json.dumps([2, f"m{n}", "Echo", {}]), '[3,"x",{}]', "[]",
            json.dumps([7, "t", {}]),
        ]))
    anyio.run(hostile_peers_then_a_normal_client, script, math.inf, backend=backend)
