"""WebSocket transport: wsproto frames + h11 HTTP/1.1 upgrade over an anyio ByteStream.

Whole data frames are read and written by `_frames` directly; wsproto handles
every other frame, and the closing handshake.

Knows nothing of OCPP.  Works the same on anyio's asyncio and trio backends.
No extensions are negotiated (permessage-deflate offers are ignored).
"""

from __future__ import annotations

import base64
import os
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import cast
from urllib.parse import urlsplit

import anyio
import anyio.abc
import h11
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSStream
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import generate_accept_token, generate_nonce

from .._concurrency.latch import Signal
from .._concurrency.slots import CallSlots
from ..transport import WebSocketClosed as WebSocketClosed
from .close_codes import check_close_code
from .frames import Splitter, encode
from .streams import AsyncioSocketStream, TrioSocketStream, connect_tcp, faster

_RECEIVE_SIZE = 65536
_MAX_ERROR_BODY = 65536
_FAIL_TIMEOUT = 2.0  # bound on sending a last Close and on a graceful TCP/TLS close
_OPEN = ConnectionState.OPEN
_REMOTE_CLOSING = ConnectionState.REMOTE_CLOSING
_CLOSED = ConnectionState.CLOSED
# Exceptions meaning "the transport is gone" (ssl.SSLError is an OSError).
_STREAM_ERRORS = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)

_Headers = Sequence[tuple[str, str]]


class HandshakeError(Exception):
    """Client side: the upgrade failed.

    ``.status`` is the HTTP status when the server answered without upgrading (else
    None), ``.body`` the start (at most 64 KiB) of its response body.
    """

    def __init__(self, message: str, *, status: int | None = None, body: bytes = b"") -> None:
        super().__init__(message)
        self.status, self.body = status, body


class HandshakeRefused(Exception):
    """Server side: the request was not a valid upgrade and was answered ``.status``.

    The caller just closes the stream (it is not closed here).
    """

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(status, message)
        self.status, self.message = status, message

    def __str__(self) -> str:
        return f"{self.status} {self.message}".rstrip()


class HandshakeAborted(HandshakeRefused):
    """Server side: the peer went away before a full request; nothing answered (status 400)."""


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    """A client's WebSocket upgrade request, as read by :func:`read_upgrade_request`."""

    method: str
    target: str  # raw request target, e.g. "/ocpp/CP%2F1?x=1"
    path: str  # target before "?", still percent-encoded
    query_string: str
    headers: tuple[tuple[str, str], ...]  # (lower-cased name, value), in order
    subprotocols: tuple[str, ...]
    key: str
    _trailing: bytes = field(default=b"", repr=False, compare=False)  # bytes read past it

    def header(self, name: str, default: str | None = None) -> str | None:
        """First value of header ``name`` (case-insensitive), else ``default``."""
        name = name.lower()
        return next((value for key, value in self.headers if key == name), default)


def _tokens(headers: _Headers, name: str) -> list[str]:
    """Comma-split, stripped, non-empty values of every header called ``name``."""
    return [t.strip() for k, v in headers if k == name for t in v.split(",") if t.strip()]


def _http_response(status: int, headers: _Headers, body: bytes | None = None) -> bytes:
    """Serialize an HTTP/1.1 response head (+ Content-Length and body if given)."""
    try:
        lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
    except ValueError:
        lines = [f"HTTP/1.1 {status} Unknown"]
    for name, value in headers:
        if not name or any(c in name + value for c in "\r\n\0") or ":" in name:
            raise ValueError(f"invalid HTTP header {name!r}: {value!r}")
        lines.append(f"{name}: {value}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


async def reject_upgrade(
    stream: anyio.abc.ByteStream, status: int, body: str | bytes = b"", *, headers: _Headers = ()
) -> None:
    """Send a plain HTTP response (text/plain, ``Connection: close``) + ``headers``.

    Does not close the stream; does not raise if the peer already went away.
    """
    payload = body.encode("utf-8") if isinstance(body, str) else body
    head = [("Content-Type", "text/plain; charset=utf-8"), ("Connection", "close"), *headers]
    try:
        await stream.send(_http_response(status, head, payload))
    except _STREAM_ERRORS:
        pass


async def _refuse(
    stream: anyio.abc.ByteStream, status: int, message: str, headers: _Headers = ()
) -> HandshakeRefused:
    await reject_upgrade(stream, status, message + "\n", headers=headers)
    return HandshakeRefused(status, message)


async def read_upgrade_request(
    stream: anyio.abc.ByteStream, *, max_header_size: int = 16384
) -> UpgradeRequest:
    """Read and validate one HTTP/1.1 WebSocket upgrade request.

    Invalid requests are answered here (404 if not an upgrade at all, 400 if a
    malformed upgrade, 431 if the head exceeds ``max_header_size``) and
    :exc:`HandshakeRefused` is raised; EOF or a transport error before a complete
    request raises :exc:`HandshakeAborted` (nothing answered).  The stream is never
    closed here.  Bytes read past the request are kept for :func:`accept_upgrade`.
    Apply your own timeout around this call.
    """
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_header_size)
    received = 0
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            if conn.trailing_data[1]:  # EOF
                raise HandshakeAborted(400, "connection closed during the request") from None
            raise await _refuse(stream, exc.error_status_hint, str(exc) or "bad request") from None
        if isinstance(event, h11.Request):
            break
        if event is not h11.NEED_DATA:  # ConnectionClosed
            raise HandshakeAborted(400, "connection closed before a request")
        try:
            data = await stream.receive(_RECEIVE_SIZE)
        except anyio.EndOfStream:
            data = b""
        except _STREAM_ERRORS:
            raise HandshakeAborted(400, "connection lost during the request") from None
        received += len(data)
        conn.receive_data(data)

    # h11 only bounds an incomplete head; one that arrived whole is checked here.
    if received - len(conn.trailing_data[0]) > max_header_size:
        raise await _refuse(stream, 431, "request header fields too large")
    headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers)
    upgrade = [t.lower() for t in _tokens(headers, "upgrade")]
    connection = [t.lower() for t in _tokens(headers, "connection")]
    if "websocket" not in upgrade or "upgrade" not in connection:
        raise await _refuse(stream, 404, "not a WebSocket endpoint")
    method = event.method.decode("ascii")
    if method != "GET" or event.http_version != b"1.1":
        raise await _refuse(stream, 400, "WebSocket upgrade requires GET and HTTP/1.1")
    try:
        end: object = conn.next_event()
    except h11.RemoteProtocolError:
        end = None
    if not isinstance(end, h11.EndOfMessage):
        raise await _refuse(stream, 400, "WebSocket upgrade request must not have a body")
    if [v for k, v in headers if k == "sec-websocket-version"] != ["13"]:
        version = [("Sec-WebSocket-Version", "13")]
        raise await _refuse(stream, 400, "unsupported WebSocket version", version)
    keys = [v.strip() for k, v in headers if k == "sec-websocket-key"]
    try:
        if len(keys) != 1 or len(base64.b64decode(keys[0], validate=True)) != 16:
            raise ValueError
    except ValueError:  # binascii.Error included
        raise await _refuse(stream, 400, "missing or invalid Sec-WebSocket-Key") from None
    target = event.target.decode("latin-1")
    path, _, query = target.partition("?")
    subprotocols = tuple(_tokens(headers, "sec-websocket-protocol"))
    trailing = conn.trailing_data[0]
    return UpgradeRequest(method, target, path, query, headers, subprotocols, keys[0], trailing)


async def accept_upgrade(
    stream: anyio.abc.ByteStream,
    request: UpgradeRequest,
    *,
    subprotocol: str | None = None,
    extra_headers: _Headers = (),
    max_message_size: int = 2**24,
) -> WebSocket:
    """Answer ``101 Switching Protocols`` and return the server-side :class:`WebSocket`.

    ``subprotocol`` must be one the client offered (else ValueError).  Raises
    :exc:`WebSocketClosed` (1006) if the peer went away.
    """
    if subprotocol is not None and subprotocol not in request.subprotocols:
        raise ValueError(f"subprotocol {subprotocol!r} was not offered by the client")
    accept = generate_accept_token(request.key.encode("ascii")).decode("ascii")
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept),
    ]
    if subprotocol is not None:
        headers.append(("Sec-WebSocket-Protocol", subprotocol))
    try:
        await stream.send(_http_response(101, [*headers, *extra_headers]))
    except _STREAM_ERRORS:
        raise WebSocketClosed(1006, "") from None
    return WebSocket(
        stream,
        ConnectionType.SERVER,
        subprotocol=subprotocol,
        max_message_size=max_message_size,
        trailing_data=request._trailing,
    )


async def connect(
    url: str,
    *,
    subprotocols: Sequence[str] = (),
    headers: _Headers = (),
    ssl_context: ssl.SSLContext | None = None,
    max_message_size: int = 2**24,
    handshake_timeout: float = 30.0,
) -> WebSocket:
    """Open a client WebSocket to a ``ws://`` or ``wss://`` URL.

    Raises :exc:`HandshakeError` if the server does not upgrade properly, OSError
    for TCP/TLS failures (ConnectionError if the connection drops during the
    handshake), TimeoutError after ``handshake_timeout`` seconds (TCP connect, TLS
    and HTTP exchange together) and ValueError for a bad URL or header.
    """
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in ("ws", "wss") or not host:
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
    default_port = 443 if scheme == "wss" else 80
    port = parts.port or default_port
    host_header = f"[{host}]" if ":" in host else host
    if port != default_port:
        host_header += f":{port}"
    key = generate_nonce().decode("ascii")
    request_headers = [
        ("Host", host_header),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
    ]
    if subprotocols:
        request_headers.append(("Sec-WebSocket-Protocol", ", ".join(subprotocols)))
    conn = h11.Connection(h11.CLIENT)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        request = h11.Request(method="GET", target=target, headers=[*request_headers, *headers])
        data = conn.send(request) + conn.send(h11.EndOfMessage())
    except h11.LocalProtocolError as exc:
        raise ValueError(f"invalid upgrade request: {exc}") from None

    with anyio.fail_after(handshake_timeout):
        if scheme == "wss":
            context = ssl_context or ssl.create_default_context()
            try:
                stream = await connect_tcp(host, port, ssl_context=context)
            except anyio.BrokenResourceError as exc:  # EOF during the TLS handshake
                raise ConnectionError("connection lost during the TLS handshake") from exc
        else:
            stream = await connect_tcp(host, port)
        try:
            await stream.send(data)
            response = await _read_response(stream, conn)
            subprotocol = _check_response(response, key, subprotocols)
        except BaseException:
            await anyio.aclose_forcefully(stream)
            raise
    return WebSocket(
        stream,
        ConnectionType.CLIENT,
        subprotocol=subprotocol,
        max_message_size=max_message_size,
        trailing_data=conn.trailing_data[0],
    )


async def _read_response(
    stream: anyio.abc.ByteStream, conn: h11.Connection
) -> h11.InformationalResponse:
    """Read the server's answer up to its 101; raise HandshakeError for anything else."""
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                await _feed(stream, conn)
            elif isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                return event
            elif isinstance(event, h11.Response):
                body = bytearray()
                try:  # best effort, bounded
                    while len(body) < _MAX_ERROR_BODY:
                        data = conn.next_event()
                        if data is h11.NEED_DATA:
                            await _feed(stream, conn)
                        elif isinstance(data, h11.Data):
                            body += data.data
                        else:
                            break
                except (h11.RemoteProtocolError, *_STREAM_ERRORS):
                    pass
                raise HandshakeError(
                    f"server answered HTTP {event.status_code} instead of upgrading",
                    status=event.status_code,
                    body=bytes(body[:_MAX_ERROR_BODY]),
                )
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("connection closed during the WebSocket handshake")
    except h11.RemoteProtocolError as exc:
        if conn.trailing_data[1]:  # EOF in the middle of the response
            raise ConnectionError("connection closed during the WebSocket handshake") from None
        raise HandshakeError(f"invalid HTTP response: {exc}") from None
    except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
        raise ConnectionError("connection lost during the WebSocket handshake") from exc


async def _feed(stream: anyio.abc.ByteStream, conn: h11.Connection) -> None:
    try:
        conn.receive_data(await stream.receive(_RECEIVE_SIZE))
    except anyio.EndOfStream:
        conn.receive_data(b"")


def _check_response(
    response: h11.InformationalResponse, key: str, offered: Sequence[str]
) -> str | None:
    """Validate a 101 response; return the agreed subprotocol."""
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers]
    if "websocket" not in [t.lower() for t in _tokens(headers, "upgrade")]:
        raise HandshakeError("101 response without 'Upgrade: websocket'")
    accept = generate_accept_token(key.encode("ascii")).decode("ascii")
    if [v for k, v in headers if k == "sec-websocket-accept"] != [accept]:
        raise HandshakeError("101 response with a missing or wrong Sec-WebSocket-Accept")
    protocols = _tokens(headers, "sec-websocket-protocol")
    if len(protocols) > 1 or (protocols and protocols[0] not in offered):
        raise HandshakeError(f"server selected a subprotocol we did not offer: {protocols}")
    return protocols[0] if protocols else None


class WebSocket:
    """One open WebSocket (client or server side) over an anyio ByteStream.

    One task at a time may call :meth:`receive` (others get RuntimeError);
    :meth:`send`, :meth:`ping` and :meth:`close` may be called from any task.

    ``close_code``/``close_reason`` are None/"" while open.  When the peer closes
    first, they are the peer's (1005 if its Close had no code).  When we close
    first, they are what we sent, unless the peer's answering Close carries a code
    of its own (not 1005); this holds even if the peer never answers.  1006 means
    the transport dropped without any Close (or ours could not be sent); 1009,
    1007 and 1002 mean we failed the connection (too big, bad UTF-8, protocol).
    """

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        connection_type: ConnectionType,
        *,
        subprotocol: str | None = None,
        max_message_size: int = 2**24,
        trailing_data: bytes = b"",
    ) -> None:
        self.stream = faster(stream)
        # Our own TCP stream (under TLS too), which bounds a send that waits.
        inner = self.stream.transport_stream if isinstance(self.stream, TLSStream) else self.stream
        self._bounded: AsyncioSocketStream | TrioSocketStream | None = (
            inner if isinstance(inner, (AsyncioSocketStream, TrioSocketStream)) else None
        )
        self._write_timeout: float | None = None
        self.subprotocol = subprotocol
        self.close_code: int | None = None
        self.close_reason = ""
        self.remote_address = _address(stream, SocketAttribute.remote_address)
        self.local_address = _address(stream, SocketAttribute.local_address)
        self._conn = Connection(connection_type)
        self._splitter = Splitter(self._conn, max_message_size)
        self._events: Iterator[str | bytes | Event] = iter(self._splitter.feed(trailing_data))
        self._max_message_size = max_message_size
        self._parts: list[str | bytes] = []
        self._message_size = 0
        self._write_lock = CallSlots(1)  # a lock; its waiter queue is made on first use
        self._pings: dict[bytes, anyio.Event] = {}
        self._close_sent: tuple[int, str] | None = None
        self._close_hint: tuple[int, str] | None = None  # peer's Close, or our failure code
        self._receiving = False
        self._draining = False  # close() itself is reading
        self._idle: anyio.Event | None = None  # set when the current receive() exits
        self._stream_closing = False
        self._closed = Signal()  # set once the stream is closed

    def __repr__(self) -> str:
        side = "client" if self._conn.client else "server"
        state = "open" if self.close_code is None else f"closed {self.close_code}"
        return f"<WebSocket {side} {self.remote_address} {state}>"

    async def receive(self) -> str | bytes:
        """Return the next whole message (str for text, bytes for binary).

        Answers pings, resolves :meth:`ping` waiters and completes the closing
        handshake.  Raises :exc:`WebSocketClosed` once the WebSocket is closed.
        """
        if self._receiving:
            if self._draining:  # close() is reading: wait for its end
                await self._closed.wait()
                raise self._closed_error()
            raise RuntimeError("another task is already in WebSocket.receive()")
        self._receiving = True
        try:
            return await self._receive()
        finally:
            self._receiving = False
            if self._idle is not None:
                self._idle.set()
                self._idle = None

    async def _receive(self) -> str | bytes:
        while self.close_code is None:
            for event in self._events:
                if type(event) is str or type(event) is bytes:  # a whole frame
                    return event
                if isinstance(event, (TextMessage, BytesMessage)):
                    data = cast("str | bytes", event.data)
                    if isinstance(data, str) and not data.isascii():
                        size = self._message_size + len(data.encode("utf-8"))
                    else:
                        size = self._message_size + len(data)
                    if size > self._max_message_size:
                        await self._fail(1009, "message too big")
                        raise self._closed_error()
                    if not event.message_finished:
                        self._message_size = size
                        if data:
                            self._parts.append(data)
                        continue
                    self._message_size = 0
                    if not self._parts:
                        return data
                    parts, self._parts = self._parts, []
                    parts.append(data)
                    if isinstance(data, str):
                        return "".join(cast("list[str]", parts))
                    return b"".join(cast("list[bytes]", parts))
                elif isinstance(event, Ping):
                    if not await self._send_control(event.response()) and self.close_code:
                        raise self._closed_error()
                elif isinstance(event, Pong):
                    self._resolve_pings(event.payload)
                elif isinstance(event, CloseConnection):
                    await self._on_close(event.code, event.reason or "")
                    raise self._closed_error()
            try:
                data = await self.stream.receive(_RECEIVE_SIZE)
            except _STREAM_ERRORS:
                await self._finish(*self._end_state())
                break
            self._events = iter(self._splitter.feed(data))
        raise self._closed_error()

    async def _on_close(self, code: int, reason: str) -> None:
        state = self._conn.state
        if state is _REMOTE_CLOSING:  # the peer starts the closing handshake: echo it
            self._close_hint = (code, reason)
            with anyio.CancelScope(shield=True, deadline=anyio.current_time() + _FAIL_TIMEOUT):
                await self._send_control(CloseConnection(code=code, reason=reason))
                await self._finish(code, reason)
        elif state is _CLOSED:  # the peer answers our Close
            if code == CloseReason.NO_STATUS_RCVD and self._close_sent is not None:
                code, reason = self._close_sent
            await self._finish(code, reason)
        else:  # wsproto turned a protocol violation (1002, 1007) into this event
            await self._fail(code, reason)

    def _resolve_pings(self, payload: bytes) -> None:
        """A Pong resolves the matching ping and every earlier one."""
        if payload in self._pings:
            while self._pings:
                key = next(iter(self._pings))
                self._pings.pop(key).set()
                if key == payload:
                    break

    @property
    def write_timeout(self) -> float | None:
        """Seconds one write may wait for the peer to take bytes (None: no bound);
        on expiry the connection is dropped: 1006 "write timeout"."""
        return self._write_timeout

    @write_timeout.setter
    def write_timeout(self, timeout: float | None) -> None:
        self._write_timeout = timeout
        if self._bounded is not None:
            self._bounded.send_timeout = timeout

    async def _write(self, data: bytes) -> None:
        """`stream.send` within `write_timeout` (call it holding the write lock).

        Our own TCP streams bound only a send that has to wait, so a write that
        completes at once costs no cancel scope.
        """
        try:
            if self._bounded is not None or self._write_timeout is None:
                await self.stream.send(data)
            else:
                with anyio.fail_after(self._write_timeout):
                    await self.stream.send(data)
        except TimeoutError:  # before _STREAM_ERRORS: it is an OSError too
            await self._finish(1006, "write timeout", force=True)
            raise self._closed_error() from None

    async def send(self, message: str | bytes) -> None:
        """Send one text (str) or binary (bytes) message."""
        await self.send_many((message,))

    async def send_many(self, messages: Sequence[str | bytes]) -> None:
        """Send several messages, in order, in one write to the stream."""
        async with self._write_lock:
            if self._conn.state is not _OPEN:
                raise self._closed_error()
            data = encode(messages, mask=self._conn.client)
            try:
                await self._write(data)
            except _STREAM_ERRORS:
                await self._finish(*self._end_state())
                raise self._closed_error() from None

    async def _send_control(self, event: Event) -> bool:
        """Send a Ping/Pong/Close if the state still allows it (else return False).

        A broken transport (or one that took nothing for `write_timeout`) closes
        the WebSocket; that is reported by the caller's next operation, not
        raised here.
        """
        async with self._write_lock:
            state = self._conn.state
            is_close = isinstance(event, CloseConnection)
            if state is not _OPEN and not (is_close and state is _REMOTE_CLOSING):
                return False
            data = self._conn.send(event)
            if isinstance(event, CloseConnection):
                self._close_sent = (event.code, event.reason or "")
            try:
                await self._write(data)
            except (WebSocketClosed, *_STREAM_ERRORS):
                if is_close:
                    self._close_sent = None
                await self._finish(*self._end_state())
                return False
            return True

    async def ping(self, payload: bytes | None = None) -> None:
        """Send a Ping and wait for its Pong (a :meth:`receive` loop must be running).

        ``payload`` defaults to 4 random bytes; it must be unique among pending
        pings (ValueError).  Raises :exc:`WebSocketClosed` if the WebSocket closes.
        """
        if payload is None:
            payload = os.urandom(4)
            while payload in self._pings:
                payload = os.urandom(4)
        elif payload in self._pings:
            raise ValueError(f"a ping with payload {payload!r} is already pending")
        waiter = self._pings[payload] = anyio.Event()
        try:
            if await self._send_control(Ping(payload=payload)):
                await waiter.wait()
        finally:
            pending = self._pings.get(payload) is waiter
            if pending:
                del self._pings[payload]
        if pending:  # not resolved by a Pong: the WebSocket closed
            raise self._closed_error()

    async def close(self, code: int = 1000, reason: str = "", *, timeout: float = 5.0) -> None:
        """Send Close(code, reason), wait up to ``timeout`` for the peer's, close TCP.

        Idempotent; never raises for a broken transport.  If another task is in
        :meth:`receive`, that task processes the peer's Close (and gets
        :exc:`WebSocketClosed`); otherwise incoming messages are discarded here.
        The reason is truncated to fit the frame.
        """
        check_close_code(code)
        if self.close_code is None:
            with anyio.move_on_after(timeout):
                await self._send_control(CloseConnection(code=code, reason=reason))
                while self.close_code is None:
                    if self._receiving:
                        if self._idle is None:
                            self._idle = anyio.Event()
                        await self._idle.wait()
                        continue
                    self._draining = True
                    try:
                        await self.receive()
                    except WebSocketClosed:
                        pass
                    finally:
                        self._draining = False
            if self.close_code is None:  # the peer did not answer in time
                await self._finish(*self._end_state(), force=True)
        await self._closed.wait()

    async def abort(self) -> None:
        """Drop the TCP connection now, without a closing handshake (close_code 1006)."""
        await self._finish(1006, "", force=True)
        await self._closed.wait()

    async def _fail(self, code: int, reason: str) -> None:
        """Fail the connection: send Close(code) if still possible, then drop TCP."""
        self._close_hint = (code, reason)
        with anyio.CancelScope(shield=True, deadline=anyio.current_time() + _FAIL_TIMEOUT):
            if await self._send_control(CloseConnection(code=code, reason=reason)) and (
                isinstance(self._bounded, AsyncioSocketStream)
            ):
                await self._bounded.drain()  # it may wait in the transport's buffer yet
        await self._finish(code, reason, force=True)

    async def _finish(self, code: int, reason: str, *, force: bool = False) -> None:
        """Record the final close code (first one wins), close the stream, wake waiters.

        The stream gets a graceful close (TLS close_notify) bounded in time, unless
        ``force``; this is shielded from cancellation.
        """
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        for waiter in self._pings.values():
            waiter.set()
        if self._stream_closing and not force:
            return
        graceful = not (self._stream_closing or force)
        self._stream_closing = True
        try:
            with anyio.CancelScope(shield=True):
                if graceful:
                    with anyio.move_on_after(_FAIL_TIMEOUT):
                        try:
                            await self.stream.aclose()
                            return
                        except Exception:
                            pass
                await anyio.aclose_forcefully(self.stream)
        finally:
            self._closed.set()

    def _end_state(self) -> tuple[int, str]:
        """The code/reason to end with if the transport goes away now."""
        return self._close_hint or self._close_sent or (1006, "")

    def _closed_error(self) -> WebSocketClosed:
        if self.close_code is not None:
            return WebSocketClosed(self.close_code, self.close_reason)
        return WebSocketClosed(*self._end_state())


def _address(stream: anyio.abc.ByteStream, attribute: object) -> tuple[str, int] | None:
    """(host, port) of a socket attribute, or None (not a TCP stream)."""
    address = stream.extra(attribute, None)
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return None
