"""The client's check of the server's 101 response: every MUST of RFC 6455
section 4.1, one case each, against a fake server that answers as scripted."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import pytest
from anyio.abc import SocketAttribute
from wsproto.utilities import generate_accept_token

from ocpp_rpc import ConnectError, RPCClient
from ocpp_rpc._transport.websocket import HandshakeError, connect

pytestmark = pytest.mark.anyio

Answer = Callable[[bytes], bytes]  # the request's Sec-WebSocket-Key -> the response head's lines


def upgrade(*lines: bytes, status: bytes = b"101 Switching Protocols") -> Answer:
    """A response head; ``{accept}`` in a line becomes the right accept token."""

    def answer(key: bytes) -> bytes:
        accept = generate_accept_token(key)
        head = b"HTTP/1.1 " + status + b"\r\n"
        return head + b"".join(line.replace(b"{accept}", accept) + b"\r\n" for line in lines)

    return answer


GOOD = (b"Upgrade: websocket", b"Connection: Upgrade", b"Sec-WebSocket-Accept: {accept}")


def without(name: bytes, *lines: bytes) -> tuple[bytes, ...]:
    """GOOD without its `name` header, plus `lines`."""
    return (*(line for line in GOOD if not line.startswith(name)), *lines)


@asynccontextmanager
async def fake_server(answer: Answer) -> AsyncIterator[tuple[int, list[bytes]]]:
    """Answers every connection's request with `answer`; yields (port, requests)."""
    requests: list[bytes] = []

    async def serve(stream: anyio.abc.SocketStream) -> None:
        buf = b""
        with anyio.move_on_after(5):
            while b"\r\n\r\n" not in buf:
                try:
                    buf += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
            requests.append(buf)
            key = next(line.split(b":", 1)[1].strip() for line in buf.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))
            await stream.send(answer(key) + b"\r\n")
            try:  # until the client hangs up
                while await stream.receive():
                    pass
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass

    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, serve)
            yield listener.extra(SocketAttribute.local_port), requests
            tg.cancel_scope.cancel()


FAILS = {
    # 4.1 (1): not 101: handled as HTTP (we follow no redirect); .status says which
    "status-200": (upgrade(b"Content-Length: 0", status=b"200 OK"), "HTTP 200", ()),
    "status-302": (upgrade(b"Location: /x", b"Content-Length: 0", status=b"302 Found"),
                   "HTTP 302", ()),
    # 4.1 (2): Upgrade is "websocket", case-insensitively
    "upgrade-missing": (upgrade(*without(b"Upgrade")), "Upgrade", ()),
    "upgrade-other": (upgrade(*without(b"Upgrade", b"Upgrade: h2c")), "Upgrade", ()),
    "upgrade-more": (upgrade(*without(b"Upgrade", b"Upgrade: websocket, h2c")), "Upgrade", ()),
    # 4.1 (3): Connection holds the token "Upgrade", case-insensitively
    "connection-missing": (upgrade(*without(b"Connection")), "Connection", ()),
    "connection-other": (upgrade(*without(b"Connection", b"Connection: keep-alive")),
                         "Connection", ()),
    "connection-not-a-token": (upgrade(*without(b"Connection", b"Connection: upgraded")),
                               "Connection", ()),
    # 4.1 (4): Sec-WebSocket-Accept for our key (and, 4.3, only once)
    "accept-missing": (upgrade(*without(b"Sec-WebSocket-Accept")), "Accept", ()),
    "accept-wrong": (upgrade(*without(b"Sec-WebSocket-Accept",
                                      b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")),
                     "Accept", ()),
    "accept-twice": (upgrade(*GOOD, b"Sec-WebSocket-Accept: {accept}"), "Accept", ()),
    # 4.1 (5): only extensions we offered, and we offer none
    "extension": (upgrade(*GOOD, b"Sec-WebSocket-Extensions: permessage-deflate"),
                  "extension", ()),
    "extension-with-params": (
        upgrade(*GOOD, b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"),
        "extension", ()),
    # 4.1 (6): only a subprotocol we offered (4.2.2: one value; 4.3: one header)
    "protocol-not-offered": (upgrade(*GOOD, b"Sec-WebSocket-Protocol: ocpp2.0.1"),
                             "subprotocol", ("ocpp1.6",)),
    "protocol-none-offered": (upgrade(*GOOD, b"Sec-WebSocket-Protocol: ocpp1.6"),
                              "subprotocol", ()),
    "protocol-two-values": (upgrade(*GOOD, b"Sec-WebSocket-Protocol: ocpp1.6, ocpp2.0.1"),
                            "subprotocol", ("ocpp1.6", "ocpp2.0.1")),
    "protocol-two-headers": (upgrade(*GOOD, b"Sec-WebSocket-Protocol: ocpp1.6",
                                     b"Sec-WebSocket-Protocol: ocpp1.6"),
                             "subprotocol", ("ocpp1.6",)),
}

PASSES = {
    "as-sent": (upgrade(*GOOD), (), None),
    # An empty header names no subprotocol: the server agreed to none (which
    # the client then refuses itself if it needs one).
    "protocol-empty": (upgrade(*GOOD, b"Sec-WebSocket-Protocol: "), ("ocpp1.6",), None),
    "other-case": (upgrade(b"upgrade: WebSocket", b"CONNECTION: UPGRADE",
                           b"sec-websocket-accept: {accept}"), (), None),
    "connection-list": (upgrade(*without(b"Connection", b"Connection: keep-alive, Upgrade")),
                        (), None),
    "accept-padded": (upgrade(*without(b"Sec-WebSocket-Accept",
                                       b"Sec-WebSocket-Accept:   {accept}  ")), (), None),
    "no-extensions": (upgrade(*GOOD, b"Sec-WebSocket-Extensions: "), (), None),
    "protocol-agreed": (upgrade(*GOOD, b"Sec-WebSocket-Protocol: ocpp2.0.1"),
                        ("ocpp1.6", "ocpp2.0.1"), "ocpp2.0.1"),
    "protocol-none-agreed": (upgrade(*GOOD), ("ocpp1.6",), None),  # the caller decides
}


@pytest.mark.parametrize("case", list(FAILS))
async def test_a_response_breaking_a_must_of_4_1_fails_the_connection(case: str) -> None:
    answer, words, offered = FAILS[case]
    with anyio.fail_after(5):
        async with fake_server(answer) as (port, _):
            with pytest.raises(HandshakeError, match=words) as info:
                await connect(f"ws://127.0.0.1:{port}/", subprotocols=offered)
    expected_status = int(case.removeprefix("status-")) if case.startswith("status-") else None
    assert info.value.status == expected_status


@pytest.mark.parametrize("case", list(PASSES))
async def test_a_response_meeting_4_1_opens_the_websocket(case: str) -> None:
    answer, offered, agreed = PASSES[case]
    with anyio.fail_after(5):
        async with fake_server(answer) as (port, _):
            ws = await connect(f"ws://127.0.0.1:{port}/", subprotocols=offered)
            assert ws.subprotocol == agreed
            await ws.abort()


@pytest.mark.parametrize(
    "case",
    ["upgrade-other", "connection-missing", "accept-wrong", "extension", "protocol-not-offered"],
)
async def test_an_rpc_client_reports_a_broken_101_as_connect_error_and_does_not_retry(
    case: str,
) -> None:
    answer, _, offered = FAILS[case]
    with anyio.fail_after(5):
        async with fake_server(answer) as (port, requests):
            client = RPCClient(f"ws://127.0.0.1:{port}/ocpp", "CP1", protocols=offered,
                               ping_interval=None)
            with pytest.raises(ConnectError) as info:
                async with client:
                    pass
    assert info.value.status is None
    assert len(requests) == 1  # a protocol violation is not retried
