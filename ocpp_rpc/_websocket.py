"""WebSocket transport: wsproto frames + h11 HTTP/1.1 upgrade over an anyio ByteStream.

Knows nothing of OCPP.  Works the same on anyio's asyncio and trio backends.
No extensions are negotiated (permessage-deflate offers are ignored).
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import cast
from urllib.parse import urlsplit

import anyio
import anyio.abc
import h11
from anyio.abc import SocketAttribute
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import generate_accept_token, generate_nonce

__all__ = [
    "HandshakeAborted",
    "HandshakeError",
    "HandshakeRefused",
    "UpgradeRequest",
    "WebSocket",
    "WebSocketClosed",
    "accept_upgrade",
    "connect",
    "read_upgrade_request",
    "reject_upgrade",
]

_RECEIVE_SIZE = 65536
_MAX_ERROR_BODY = 65536
_STREAM_CLOSE_TIMEOUT = 2.0  # bound on a graceful TCP/TLS close once the WebSocket is done
_OPEN = ConnectionState.OPEN
_REMOTE_CLOSING = ConnectionState.REMOTE_CLOSING
_CLOSED = ConnectionState.CLOSED
# Exceptions meaning "the transport is gone" (ssl.SSLError is an OSError).
_STREAM_ERRORS = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
)
# Close codes an endpoint may put in a Close frame (RFC 6455 7.4).
_SENDABLE_CODES = frozenset(int(c) for c in CloseReason if c not in (1005, 1006, 1015)) | frozenset(
    range(3000, 5000)
)


class WebSocketClosed(Exception):
    """The WebSocket is closed (or closing); ``.code`` and ``.reason`` of the close.

    1006 = the TCP connection dropped without a close frame.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"WebSocket closed ({self.code}{': ' + self.reason if self.reason else ''})"


class HandshakeError(Exception):
    """Client side: the upgrade failed.

    ``.status`` is the HTTP status when the server answered without upgrading (else
    None), ``.body`` the (truncated) response body.
    """

    def __init__(self, message: str, *, status: int | None = None, body: bytes = b"") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class HandshakeRefused(Exception):
    """Server side: the request was not a valid upgrade and has already been answered.

    ``.status`` is the HTTP status sent (400/404/431).  The caller just closes the
    stream (it is not closed here).
    """

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"{self.status} {self.message}".rstrip()


class HandshakeAborted(HandshakeRefused):
    """Server side: the peer went away before sending a full request (nothing answered).

    ``.status`` is 400.
    """


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    """A client's WebSocket upgrade request, as read by :func:`read_upgrade_request`."""

    method: str
    target: str
    path: str
    query_string: str
    headers: tuple[tuple[str, str], ...]
    subprotocols: tuple[str, ...]
    key: str
    _trailing: bytes = field(default=b"", repr=False, compare=False)

    def header(self, name: str, default: str | None = None) -> str | None:
        """First value of header ``name`` (case-insensitive), else ``default``."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return default


def _tokens(headers: Sequence[tuple[str, str]], name: str) -> list[str]:
    """Comma-split, stripped, non-empty values of every header called ``name``."""
    return [
        token.strip()
        for key, value in headers
        if key == name
        for token in value.split(",")
        if token.strip()
    ]


def _http_response(
    status: int, headers: Sequence[tuple[str, str]], body: bytes | None = None
) -> bytes:
    """Serialize an HTTP/1.1 response (with Content-Length when ``body`` is given)."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [f"HTTP/1.1 {status} {phrase}"]
    for name, value in headers:
        if any(c in name or c in value for c in "\r\n\0") or not name or ":" in name:
            raise ValueError(f"invalid HTTP header {name!r}: {value!r}")
        lines.append(f"{name}: {value}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if body else head


async def reject_upgrade(
    stream: anyio.abc.ByteStream,
    status: int,
    body: str | bytes = b"",
    *,
    headers: Sequence[tuple[str, str]] = (),
) -> None:
    """Answer a plain HTTP response (text/plain, ``Connection: close``).

    Does not close the stream and does not raise if the peer already went away.
    """
    payload = body.encode("utf-8") if isinstance(body, str) else body
    all_headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Connection", "close"),
        *headers,
    ]
    data = _http_response(status, all_headers, payload)
    try:
        await stream.send(data)
    except _STREAM_ERRORS:
        pass


async def _refuse(
    stream: anyio.abc.ByteStream,
    status: int,
    message: str,
    headers: Sequence[tuple[str, str]] = (),
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
    request raises :exc:`HandshakeAborted` (nothing answered).  The stream is
    never closed here.  Bytes read past the request are kept for
    :func:`accept_upgrade`.  Apply your own timeout around this call.
    """
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_header_size)
    eof = False
    received = 0
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            if eof:
                raise HandshakeAborted(400, "connection closed during the request") from None
            raise await _refuse(stream, exc.error_status_hint, str(exc) or "bad request") from None
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive(_RECEIVE_SIZE)
            except anyio.EndOfStream:
                data = b""
                eof = True
            except _STREAM_ERRORS:
                raise HandshakeAborted(400, "connection lost during the request") from None
            received += len(data)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            break
        raise HandshakeAborted(400, "connection closed before a request")

    # h11 only bounds an incomplete head; one that arrived whole is checked here.
    if received - len(conn.trailing_data[0]) > max_header_size:
        raise await _refuse(stream, 431, "request header fields too large")
    headers = tuple(
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in event.headers
    )
    upgrade = [t.lower() for t in _tokens(headers, "upgrade")]
    connection = [t.lower() for t in _tokens(headers, "connection")]
    if "websocket" not in upgrade or "upgrade" not in connection:
        raise await _refuse(stream, 404, "not a WebSocket endpoint")
    method = event.method.decode("ascii")
    if method != "GET":
        raise await _refuse(stream, 400, "WebSocket upgrade requires GET")
    try:
        end = conn.next_event()
    except h11.RemoteProtocolError:
        end = None
    if not isinstance(end, h11.EndOfMessage):
        raise await _refuse(stream, 400, "WebSocket upgrade request must not have a body")
    versions = [v for k, v in headers if k == "sec-websocket-version"]
    if versions != ["13"]:
        raise await _refuse(
            stream, 400, "unsupported WebSocket version", [("Sec-WebSocket-Version", "13")]
        )
    keys = [v for k, v in headers if k == "sec-websocket-key"]
    try:
        if len(keys) != 1 or len(base64.b64decode(keys[0].strip(), validate=True)) != 16:
            raise ValueError
    except (ValueError, binascii.Error):
        raise await _refuse(stream, 400, "missing or invalid Sec-WebSocket-Key") from None
    target = event.target.decode("latin-1")
    path, _, query = target.partition("?")
    return UpgradeRequest(
        method=method,
        target=target,
        path=path,
        query_string=query,
        headers=headers,
        subprotocols=tuple(_tokens(headers, "sec-websocket-protocol")),
        key=keys[0].strip(),
        _trailing=conn.trailing_data[0],
    )


async def accept_upgrade(
    stream: anyio.abc.ByteStream,
    request: UpgradeRequest,
    *,
    subprotocol: str | None = None,
    extra_headers: Sequence[tuple[str, str]] = (),
    max_message_size: int = 2**24,
) -> WebSocket:
    """Answer ``101 Switching Protocols`` and return the server-side :class:`WebSocket`.

    ``subprotocol`` must be one the client offered (else ValueError).  Raises
    :exc:`WebSocketClosed` (1006) if the peer went away.
    """
    if subprotocol is not None and subprotocol not in request.subprotocols:
        raise ValueError(f"subprotocol {subprotocol!r} was not offered by the client")
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", generate_accept_token(request.key.encode("ascii")).decode()),
    ]
    if subprotocol is not None:
        headers.append(("Sec-WebSocket-Protocol", subprotocol))
    headers.extend(extra_headers)
    try:
        await stream.send(_http_response(101, headers))
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
    headers: Sequence[tuple[str, str]] = (),
    ssl_context: ssl.SSLContext | None = None,
    max_message_size: int = 2**24,
    handshake_timeout: float = 30.0,
) -> WebSocket:
    """Open a client WebSocket to a ``ws://`` or ``wss://`` URL.

    Raises :exc:`HandshakeError` if the server does not upgrade properly,
    OSError for TCP/TLS failures (ConnectionError if the connection drops during
    the handshake) and TimeoutError after ``handshake_timeout`` seconds (covering
    TCP connect, TLS and HTTP exchange).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
    host = parts.hostname
    default_port = 443 if scheme == "wss" else 80
    port = parts.port or default_port
    host_header = f"[{host}]" if ":" in host else host
    if port != default_port:
        host_header += f":{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    key = generate_nonce().decode("ascii")
    request_headers: list[tuple[str, str]] = [
        ("Host", host_header),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
    ]
    if subprotocols:
        request_headers.append(("Sec-WebSocket-Protocol", ", ".join(subprotocols)))
    request_headers.extend(headers)

    with anyio.fail_after(handshake_timeout):
        if scheme == "wss":
            stream: anyio.abc.ByteStream = await anyio.connect_tcp(
                host,
                port,
                tls=True,
                ssl_context=ssl_context or ssl.create_default_context(),
                tls_hostname=host,
            )
        else:
            stream = await anyio.connect_tcp(host, port)
        try:
            subprotocol, trailing = await _client_handshake(
                stream, target, request_headers, key, subprotocols
            )
        except BaseException:
            await anyio.aclose_forcefully(stream)
            raise
    return WebSocket(
        stream,
        ConnectionType.CLIENT,
        subprotocol=subprotocol,
        max_message_size=max_message_size,
        trailing_data=trailing,
    )


async def _client_handshake(
    stream: anyio.abc.ByteStream,
    target: str,
    headers: list[tuple[str, str]],
    key: str,
    offered: Sequence[str],
) -> tuple[str | None, bytes]:
    """Send the upgrade request; return (subprotocol, bytes read past the 101)."""
    conn = h11.Connection(h11.CLIENT)
    try:
        data = conn.send(h11.Request(method="GET", target=target, headers=headers))
    except h11.LocalProtocolError as exc:
        raise ValueError(f"invalid request: {exc}") from None
    eof = False
    try:
        await stream.send(data + conn.send(h11.EndOfMessage()))
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                if eof:
                    raise ConnectionError(
                        "connection closed during the WebSocket handshake"
                    ) from None
                raise
            if event is h11.NEED_DATA:
                try:
                    conn.receive_data(await stream.receive(_RECEIVE_SIZE))
                except anyio.EndOfStream:
                    conn.receive_data(b"")
                    eof = True
            elif isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                break
            elif isinstance(event, h11.Response):
                body = await _read_body(stream, conn)
                raise HandshakeError(
                    f"server answered HTTP {event.status_code} instead of upgrading",
                    status=event.status_code,
                    body=body,
                )
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("connection closed during the WebSocket handshake")
    except h11.RemoteProtocolError as exc:
        raise HandshakeError(f"invalid HTTP response: {exc}") from None
    except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
        raise ConnectionError("connection lost during the WebSocket handshake") from exc

    response_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers]
    if "websocket" not in [t.lower() for t in _tokens(response_headers, "upgrade")]:
        raise HandshakeError("101 response without 'Upgrade: websocket'")
    accept = [v for k, v in response_headers if k == "sec-websocket-accept"]
    if accept != [generate_accept_token(key.encode("ascii")).decode()]:
        raise HandshakeError("101 response with a missing or wrong Sec-WebSocket-Accept")
    protocols = _tokens(response_headers, "sec-websocket-protocol")
    if len(protocols) > 1 or (protocols and protocols[0] not in offered):
        raise HandshakeError(f"server selected a subprotocol we did not offer: {protocols}")
    return (protocols[0] if protocols else None), conn.trailing_data[0]


async def _read_body(stream: anyio.abc.ByteStream, conn: h11.Connection) -> bytes:
    """Read up to ``_MAX_ERROR_BODY`` bytes of a non-101 response body (best effort)."""
    body = bytearray()
    try:
        while len(body) < _MAX_ERROR_BODY:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    conn.receive_data(await stream.receive(_RECEIVE_SIZE))
                except anyio.EndOfStream:
                    conn.receive_data(b"")
            elif isinstance(event, h11.Data):
                body += event.data
            else:
                break
    except (h11.RemoteProtocolError, *_STREAM_ERRORS):
        pass
    return bytes(body[:_MAX_ERROR_BODY])


class WebSocket:
    """One open WebSocket (client or server side) over an anyio ByteStream.

    One task at a time may call :meth:`receive` (others get RuntimeError);
    :meth:`send`, :meth:`ping` and :meth:`close` may be called from any task.

    ``close_code``/``close_reason`` are None/"" while open.  When the peer closes,
    they are the peer's code/reason (1005 if its Close had no code).  When we
    close, they are the code/reason we sent, unless the peer's answering Close
    carries a code of its own (not 1005).  1006 means the transport dropped
    without a closing handshake (or our Close could not be sent).
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
        self.stream = stream
        self.subprotocol = subprotocol
        self.close_code: int | None = None
        self.close_reason = ""
        self.remote_address = _address(stream, SocketAttribute.remote_address)
        self.local_address = _address(stream, SocketAttribute.local_address)
        self._conn = Connection(connection_type, trailing_data=trailing_data)
        self._events = self._conn.events()
        self._max_message_size = max_message_size
        self._parts: list[str | bytes] = []
        self._message_size = 0
        self._write_lock = anyio.Lock()
        self._pings: dict[bytes, anyio.Event] = {}
        self._pending_close: tuple[int, str] | None = None  # sent or received, not final
        self._close_sent: tuple[int, str] | None = None
        self._receiving = False
        self._draining = False  # close() itself is reading
        self._idle: anyio.Event | None = None  # set when the current receive() exits
        self._stream_closing = False
        self._closed = anyio.Event()  # set once the stream is closed

    def __repr__(self) -> str:
        side = "client" if self._conn.client else "server"
        state = "open" if self.close_code is None else f"closed {self.close_code}"
        return f"<WebSocket {side} {self.remote_address} {state}>"

    # -- receiving ---------------------------------------------------------

    async def receive(self) -> str | bytes:
        """Return the next whole message (str for text, bytes for binary).

        Answers pings, resolves :meth:`ping` waiters and completes the closing
        handshake.  Raises :exc:`WebSocketClosed` once the WebSocket is closed.
        """
        if self._receiving:
            if self._draining:  # close() in progress: wait for its end
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
        while True:
            if self.close_code is not None:
                raise self._closed_error()
            for event in self._events:
                if isinstance(event, (TextMessage, BytesMessage)):
                    data = cast("str | bytes", event.data)
                    if isinstance(data, str) and not data.isascii():
                        size = self._message_size + len(data.encode("utf-8"))
                    else:
                        size = self._message_size + len(data)
                    if size > self._max_message_size:
                        await self._fail(1009, "message too big")
                        raise self._closed_error()
                    if event.message_finished:
                        self._message_size = 0
                        if self._parts:
                            self._parts.append(data)
                            parts, self._parts = self._parts, []
                            if isinstance(data, str):
                                return "".join(cast("list[str]", parts))
                            return b"".join(cast("list[bytes]", parts))
                        return data
                    self._message_size = size
                    if data:
                        self._parts.append(data)
                elif isinstance(event, Ping):
                    await self._send_control(event.response())
                elif isinstance(event, Pong):
                    self._resolve_pings(event.payload)
                elif isinstance(event, CloseConnection):
                    await self._on_close_event(event)
                    raise self._closed_error()
            if self.close_code is not None:
                raise self._closed_error()
            try:
                data = await self.stream.receive(_RECEIVE_SIZE)
            except _STREAM_ERRORS:
                await self._finish(1006, "")
                raise self._closed_error() from None
            self._conn.receive_data(data)
            self._events = self._conn.events()

    async def _on_close_event(self, event: CloseConnection) -> None:
        state = self._conn.state
        if state is _REMOTE_CLOSING:  # the peer starts the closing handshake
            self._pending_close = (event.code, event.reason or "")
            await self._send_control(event.response())
            await self._finish(event.code, event.reason or "")
        elif state is _CLOSED:  # the peer answers our Close
            code, reason = event.code, event.reason or ""
            if code == CloseReason.NO_STATUS_RCVD and self._close_sent is not None:
                code, reason = self._close_sent
            await self._finish(code, reason)
        else:  # wsproto turned a protocol violation (1002/1007) into this event
            await self._fail(event.code, event.reason or "")

    def _resolve_pings(self, payload: bytes) -> None:
        """A Pong resolves the matching ping and every earlier one."""
        if payload not in self._pings:
            return
        while self._pings:
            key = next(iter(self._pings))
            self._pings.pop(key).set()
            if key == payload:
                break

    # -- sending -----------------------------------------------------------

    async def send(self, message: str | bytes) -> None:
        """Send one text (str) or binary (bytes) message."""
        event = (
            TextMessage(data=message) if isinstance(message, str) else BytesMessage(data=message)
        )
        async with self._write_lock:
            if self._conn.state is not _OPEN:
                raise self._closed_error()
            data = self._conn.send(event)
            try:
                await self.stream.send(data)
            except _STREAM_ERRORS:
                await self._finish(1006, "")
                raise self._closed_error() from None

    async def _send_control(self, event: Event) -> bool:
        """Send a Ping/Pong/Close if the state still allows; False if it did not."""
        async with self._write_lock:
            state = self._conn.state
            if state is not _OPEN and not (
                state is _REMOTE_CLOSING and isinstance(event, CloseConnection)
            ):
                return False
            data = self._conn.send(event)
            if isinstance(event, CloseConnection):
                self._close_sent = (event.code, event.reason or "")
                if self._pending_close is None:
                    self._pending_close = self._close_sent
            try:
                await self.stream.send(data)
            except _STREAM_ERRORS:
                await self._finish(1006, "")
                raise self._closed_error() from None
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
        waiter = anyio.Event()
        self._pings[payload] = waiter
        try:
            if not await self._send_control(Ping(payload=payload)):
                raise self._closed_error()
            await waiter.wait()
        finally:
            pending = self._pings.get(payload) is waiter
            if pending:
                del self._pings[payload]
        if pending:  # woken by the close, not by a Pong
            raise self._closed_error()

    # -- closing -----------------------------------------------------------

    async def close(self, code: int = 1000, reason: str = "", *, timeout: float = 5.0) -> None:
        """Close: send Close(code, reason), wait up to ``timeout`` for the peer's, close TCP.

        Idempotent, never raises for a broken transport.  If another task is in
        :meth:`receive`, that task processes the peer's Close (and gets
        :exc:`WebSocketClosed`); otherwise incoming messages are discarded here.
        """
        if code not in _SENDABLE_CODES:
            raise ValueError(f"invalid close code {code}")
        if self.close_code is None:
            with anyio.move_on_after(timeout):
                await self._send_close(code, reason)
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
                code, reason = self._close_sent or (1006, "")
                await self._finish(code, reason, force=True)
        await self._closed.wait()

    async def _send_close(self, code: int, reason: str) -> None:
        try:
            await self._send_control(CloseConnection(code=code, reason=reason))
        except WebSocketClosed:
            pass

    async def _fail(self, code: int, reason: str) -> None:
        """Fail the connection: send Close(code) if still possible, then drop TCP."""
        if self._pending_close is None:
            self._pending_close = (code, reason)
        try:
            await self._send_control(CloseConnection(code=code, reason=reason))
        except WebSocketClosed:
            pass
        await self._finish(code, reason)

    async def abort(self) -> None:
        """Drop the TCP connection now, without a closing handshake (close_code 1006)."""
        await self._finish(1006, "", force=True)
        await self._closed.wait()

    async def _finish(self, code: int, reason: str, *, force: bool = False) -> None:
        """Record the final close code (first one wins), close the stream, wake waiters."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        for waiter in self._pings.values():
            waiter.set()
        if self._stream_closing:
            return
        self._stream_closing = True
        try:
            with anyio.CancelScope(shield=True):
                if not force:
                    with anyio.move_on_after(_STREAM_CLOSE_TIMEOUT):
                        try:
                            await self.stream.aclose()
                            return
                        except Exception:
                            pass
                await anyio.aclose_forcefully(self.stream)
        finally:
            self._closed.set()

    def _closed_error(self) -> WebSocketClosed:
        if self.close_code is not None:
            return WebSocketClosed(self.close_code, self.close_reason)
        if self._pending_close is not None:
            return WebSocketClosed(*self._pending_close)
        return WebSocketClosed(1006, "")


def _address(stream: anyio.abc.ByteStream, attribute: object) -> tuple[str, int] | None:
    """(host, port) of a socket attribute, or None (not a TCP stream)."""
    address = stream.extra(attribute, None)
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return None
