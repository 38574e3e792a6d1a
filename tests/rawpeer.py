"""A tiny raw WebSocket peer for wire tests, written directly on wsproto's
`WSConnection` over anyio TCP streams. It shares no code with ocpp_rpc's own
WebSocket layer, so what the tests see on the wire is checked independently."""

from __future__ import annotations

import json
import os
import ssl
import struct
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import anyio
from anyio.abc import ByteStream, ObjectReceiveStream, SocketAttribute
from wsproto import ConnectionType, WSConnection
from wsproto import events as ev
from wsproto.connection import ConnectionState

_STREAM_ERRORS = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


class PeerClosed(Exception):
    """The WebSocket closed (1006: TCP ended without a close frame)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed: {code} {reason!r}")
        self.code, self.reason = code, reason


class RawPeer:
    """One end of a WebSocket, driven by the test task only."""

    def __init__(self, stream: ByteStream, ws: WSConnection) -> None:
        self.stream, self.ws = stream, ws
        self.subprotocol: str | None = None
        self.status: int | None = None  # 101 once upgraded, else the refusal's HTTP status
        self.body = b""  # the refusal's body
        self.request: ev.Request | None = None  # the client's upgrade request (raw server side)
        self.closed: tuple[int, str] | None = None
        self._events: deque[ev.Event] = deque()
        self._parts: list[Any] = []

    async def _event(self) -> ev.Event:
        while not self._events:
            try:
                data: bytes | None = await self.stream.receive()
            except _STREAM_ERRORS:
                data = None
            if data is None and self.ws.connection is None:
                raise PeerClosed(1006, "EOF during the handshake")
            self.ws.receive_data(data)
            self._events.extend(self.ws.events())
        return self._events.popleft()

    async def _send(self, event: ev.Event) -> None:
        await self.stream.send(self.ws.send(event))

    async def send_text(self, text: str) -> None:
        await self._send(ev.TextMessage(data=text))

    async def send_bytes(self, data: bytes) -> None:
        await self._send(ev.BytesMessage(data=data))

    async def send_json(self, value: Any) -> None:
        await self.send_text(json.dumps(value))

    async def receive(self, timeout: float = 5.0) -> str | bytes:
        """The next whole message; answers pings, raises `PeerClosed` on close."""
        if self.closed is not None:
            raise PeerClosed(*self.closed)
        with anyio.fail_after(timeout):
            while True:
                event = await self._event()
                if isinstance(event, (ev.TextMessage, ev.BytesMessage)):
                    self._parts.append(event.data)
                    if event.message_finished:
                        parts, self._parts = self._parts, []
                        return (
                            "".join(parts) if isinstance(event, ev.TextMessage) else b"".join(parts)
                        )
                elif isinstance(event, ev.Ping):
                    await self._send(event.response())
                elif isinstance(event, ev.CloseConnection):
                    self.closed = (event.code, event.reason or "")
                    if self.ws.state is ConnectionState.REMOTE_CLOSING:
                        try:
                            await self._send(event.response())
                        except _STREAM_ERRORS:
                            pass
                    await anyio.aclose_forcefully(self.stream)
                    raise PeerClosed(*self.closed)

    async def receive_json(self, timeout: float = 5.0) -> Any:
        message = await self.receive(timeout)
        assert isinstance(message, str), f"expected a text message, got {message!r}"
        return json.loads(message)

    async def expect_close(self, timeout: float = 5.0) -> tuple[int, str]:
        """Wait for the close (answering it); fails if a message comes first."""
        try:
            message = await self.receive(timeout)
        except PeerClosed as exc:
            return exc.code, exc.reason
        raise AssertionError(f"expected the connection to close, got {message!r}")

    async def expect_nothing(self, timeout: float = 0.2) -> None:
        """Assert that no message (and no close) arrives within `timeout`."""
        with anyio.move_on_after(timeout):
            try:
                message = await self.receive(timeout + 5.0)
            except PeerClosed as exc:
                raise AssertionError(f"expected nothing, the connection closed: {exc}") from None
            raise AssertionError(f"expected nothing, got {message!r}")

    async def drain(self, timeout: float = 5.0) -> None:
        """Ignore messages until the peer closes (answering its close)."""
        with anyio.move_on_after(timeout), suppress(PeerClosed):
            while True:
                await self.receive(timeout)

    async def close(self, code: int = 1000, reason: str = "") -> tuple[int, str]:
        """Close handshake started by us; returns the peer's answering close."""
        await self._send(ev.CloseConnection(code=code, reason=reason))
        await self.drain()
        assert self.closed is not None, "no close came back"
        return self.closed

    async def drop(self) -> None:
        """Close TCP without any close frame."""
        self.closed = (1006, "")
        with anyio.CancelScope(shield=True):
            await anyio.aclose_forcefully(self.stream)


def masked_text_frame(text: str) -> bytes:
    """One final, masked text frame, framed by hand (wsproto frames nothing
    before the handshake is done, nor after a Close)."""
    data = text.encode()
    mask = os.urandom(4)
    if len(data) < 126:
        head = bytes([0x81, 0x80 | len(data)])
    elif len(data) < 1 << 16:
        head = bytes([0x81, 0x80 | 126]) + struct.pack("!H", len(data))
    else:
        head = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", len(data))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def _split(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname or "127.0.0.1", parts.port or 80, target


@asynccontextmanager
async def raw_client(
    url: str,
    subprotocols: Sequence[str] = (),
    headers: Sequence[tuple[str, str]] = (),
    *,
    early: Sequence[str] = (),
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[RawPeer]:
    """Connect to `url`; a refused upgrade still yields a peer (check `.status`).
    `early`: text messages sent in the upgrade request's write, before the 101.
    `ssl_context`: over TLS (a wss:// server)."""
    host, port, target = _split(url)
    stream: ByteStream = await anyio.connect_tcp(
        host, port, ssl_context=ssl_context, tls_hostname=host if ssl_context else None
    )
    peer = RawPeer(stream, WSConnection(ConnectionType.CLIENT))
    try:
        with anyio.fail_after(5):
            request = ev.Request(
                host=f"{host}:{port}",
                target=target,
                subprotocols=list(subprotocols),
                extra_headers=[(k.encode(), v.encode()) for k, v in headers],
            )
            await stream.send(peer.ws.send(request) + b"".join(map(masked_text_frame, early)))
            while True:
                event = await peer._event()
                if isinstance(event, ev.AcceptConnection):
                    peer.status, peer.subprotocol = 101, event.subprotocol
                    break
                if isinstance(event, ev.RejectConnection):
                    peer.status = event.status_code
                    if not event.has_body:
                        break
                elif isinstance(event, ev.RejectData):
                    peer.body += event.data
                    if event.body_finished:
                        break
        yield peer
    finally:
        with anyio.CancelScope(shield=True):  # must not replace an exception in flight
            await anyio.aclose_forcefully(stream)


@dataclass
class RawServer:
    url: str
    _peers: ObjectReceiveStream[RawPeer]
    streams: list[ByteStream] = field(default_factory=list)

    async def accept(self, timeout: float = 5.0) -> RawPeer:
        """The next client that completed its upgrade."""
        with anyio.fail_after(timeout):
            return await self._peers.receive()


@asynccontextmanager
async def raw_server(subprotocol: str | None = "ocpp1.6") -> AsyncIterator[RawServer]:
    """Accept every upgrade, agreeing to `subprotocol` when the client offers it."""
    send, receive = anyio.create_memory_object_stream[RawPeer](16)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    server = RawServer(f"ws://127.0.0.1:{port}/ocpp", receive)

    async def handshake(stream: ByteStream) -> None:
        server.streams.append(stream)
        peer = RawPeer(stream, WSConnection(ConnectionType.SERVER))
        with anyio.move_on_after(5):
            event = await peer._event()
            if isinstance(event, ev.Request):
                peer.request = event
                chosen = subprotocol if subprotocol in event.subprotocols else None
                await peer._send(ev.AcceptConnection(subprotocol=chosen))
                peer.status, peer.subprotocol = 101, chosen
                await send.send(peer)

    async with listener, send, receive, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handshake)
        try:
            yield server
        finally:
            with anyio.CancelScope(shield=True):  # must not replace an exception in flight
                for stream in server.streams:
                    await anyio.aclose_forcefully(stream)
            tg.cancel_scope.cancel()


class HttpResponse(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


async def http_request(
    url: str, method: str = "GET", headers: Sequence[tuple[str, str]] = ()
) -> HttpResponse:
    """Send one plain HTTP/1.1 request and read the whole response (until EOF)."""
    host, port, target = _split(url)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in headers]
    data = b""
    with anyio.fail_after(5):
        async with await anyio.connect_tcp(host, port) as stream:
            await stream.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            while True:
                try:
                    data += await stream.receive()
                except _STREAM_ERRORS:
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (li.partition(":") for li in lines)}
    body = body[: int(fields.get("content-length", len(body)))]
    return HttpResponse(int(status_line.split()[1]), fields, body)
