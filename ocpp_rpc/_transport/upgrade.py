"""The HTTP/1.1 upgrade to a WebSocket (RFC 6455 section 4), both sides, on h11.

Server side: `read_upgrade_request` reads and checks a request (answering the
bad ones), `send_accept` answers 101, `reject_upgrade` answers anything else.
Client side: `open_upgraded` dials a ``ws://``/``wss://`` URL and checks the
server's answer against every requirement of RFC 6455 4.1.  Either way the
upgraded stream is what `websocket.WebSocket` then runs on; this module knows
nothing of frames.  No extensions are negotiated (a client's offers are
ignored; we offer none).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import NamedTuple
from urllib.parse import urlsplit

import anyio
import anyio.abc
import h11
from wsproto.utilities import generate_nonce

from .._wire.handshake import Headers, header_block_items, headers_from_block
from ..transport import WebSocketClosed
from .streams import connect_tcp

_RECEIVE_SIZE = 65536
_MAX_ERROR_BODY = 65536
# Exceptions meaning "the transport is gone" (ssl.SSLError is an OSError).
STREAM_ERRORS = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)

_Headers = Sequence[tuple[str, str]]


class HandshakeError(Exception):
    """Client side: the upgrade failed.

    ``.status`` is the HTTP status when the server answered without upgrading (else
    None: its 101 broke the protocol), ``.body`` the start (at most 64 KiB) of its
    response body.
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
    headers: Headers  # raw_items(): (lower-cased name, value), in order
    subprotocols: tuple[str, ...]
    key: str
    #: Bytes the client sent after the request (its first frames), read with it.
    trailing: bytes = field(default=b"", repr=False, compare=False)

    def header(self, name: str, default: str | None = None) -> str | None:
        """First value of header ``name`` (case-insensitive), else ``default``."""
        name = name.lower()
        return next((value for key, value in self.headers.raw_items() if key == name), default)


class Upgraded(NamedTuple):
    """A client connection the server agreed to upgrade."""

    stream: anyio.abc.ByteStream
    subprotocol: str | None
    trailing: bytes  # bytes the server sent after its 101 (its first frames)


def _tokens(headers: _Headers, name: str) -> list[str]:
    """Comma-split, stripped, non-empty values of every header called ``name``."""
    return _split_tokens([v for k, v in headers if k == name])


def _split_tokens(values: Sequence[str]) -> list[str]:
    """Comma-split, stripped, non-empty tokens of header `values`."""
    return [t.strip() for v in values for t in v.split(",") if t.strip()]


_PHRASES = {status.value: status.phrase for status in HTTPStatus}
_NOT_IN_HEADERS = re.compile(r"[\r\n\0]")


def _http_response(status: int, headers: _Headers, body: bytes | None = None) -> bytes:
    """Serialize an HTTP/1.1 response head (+ Content-Length and body if given)."""
    lines = [f"HTTP/1.1 {status} {_PHRASES.get(status, 'Unknown')}"]
    lines += _header_lines(headers)
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def _header_lines(headers: _Headers) -> list[str]:
    """``name: value`` lines; ValueError for a header that cannot be sent as is."""
    lines = []
    for name, value in headers:
        if not name or ":" in name or _NOT_IN_HEADERS.search(name + value):
            raise ValueError(f"invalid HTTP header {name!r}: {value!r}")
        lines.append(f"{name}: {value}")
    return lines


# -- server side ----------------------------------------------------------------


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
    except STREAM_ERRORS:
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
    closed here.  Bytes read past the request are kept in ``.trailing``.
    Apply your own timeout around this call.
    """
    data = await _receive_request_bytes(stream)
    # Nearly every request is a plain head in one read: `_simple_head` takes
    # those (a strict subset of what h11 accepts, read the same way); h11
    # reads everything else.
    simple = _simple_head(data) if data else None
    if simple is not None:
        method, raw_target, block, trailing = simple
        received, http_version, has_body = len(data), b"1.1", False
        # The connection keeps the block; the items are only for the checks below.
        headers = header_block_items(block)
        header_map = headers_from_block(block)
    else:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_header_size)
        conn.receive_data(data)
        received = len(data)
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                if conn.trailing_data[1]:  # EOF
                    raise HandshakeAborted(400, "connection closed during the request") from None
                status, message = exc.error_status_hint, str(exc) or "bad request"
                raise await _refuse(stream, status, message) from None
            if isinstance(event, h11.Request):
                break
            if event is not h11.NEED_DATA:  # ConnectionClosed
                raise HandshakeAborted(400, "connection closed before a request")
            data = await _receive_request_bytes(stream)
            received += len(data)
            conn.receive_data(data)
        method = event.method.decode("ascii")
        raw_target, http_version = event.target, event.http_version
        headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers)
        header_map = Headers(headers)
        try:
            end: object = conn.next_event()
        except h11.RemoteProtocolError:
            end = None
        has_body = not isinstance(end, h11.EndOfMessage)
        trailing = conn.trailing_data[0]

    # h11 only bounds an incomplete head; one that arrived whole is checked here.
    if received - len(trailing) > max_header_size:
        raise await _refuse(stream, 431, "request header fields too large")
    checked: dict[str, list[str]] = {}  # the values of each header checked here
    for name, value in headers:
        if name in _CHECKED:
            checked.setdefault(name, []).append(value)
    upgrade = [t.lower() for t in _split_tokens(checked.get("upgrade", ()))]
    connection = [t.lower() for t in _split_tokens(checked.get("connection", ()))]
    if "websocket" not in upgrade or "upgrade" not in connection:
        raise await _refuse(stream, 404, "not a WebSocket endpoint")
    if method != "GET" or http_version != b"1.1":
        raise await _refuse(stream, 400, "WebSocket upgrade requires GET and HTTP/1.1")
    if has_body:
        raise await _refuse(stream, 400, "WebSocket upgrade request must not have a body")
    if checked.get("sec-websocket-version") != ["13"]:
        version = [("Sec-WebSocket-Version", "13")]
        raise await _refuse(stream, 400, "unsupported WebSocket version", version)
    keys = checked.get("sec-websocket-key", ())
    key = keys[0].strip() if len(keys) == 1 else ""
    if not _valid_key(key):
        raise await _refuse(stream, 400, "missing or invalid Sec-WebSocket-Key")
    target = raw_target.decode("latin-1")
    path, _, query = target.partition("?")
    scheme, absolute, rest = path.partition("://")
    if absolute and scheme.lower() in _ABSOLUTE_SCHEMES:
        # The absolute form, which a server must accept (RFC 7230 5.3.2; RFC
        # 6455 4.1 allows it): the resource is its path.
        slash = rest.find("/")
        path = rest[slash:] if slash >= 0 else "/"
    elif not path.startswith("/"):  # "*" or "host:port" (OPTIONS, CONNECT), or garbage
        raise await _refuse(stream, 400, "the request target must be a path or an absolute URI")
    subprotocols = tuple(_split_tokens(checked.get("sec-websocket-protocol", ())))
    return UpgradeRequest(method, target, path, query, header_map, subprotocols, key, trailing)


_ABSOLUTE_SCHEMES = frozenset(("http", "https", "ws", "wss"))
_CHECKED = frozenset((
    "upgrade", "connection", "sec-websocket-version", "sec-websocket-key",
    "sec-websocket-protocol",
))
_KEY = re.compile("[A-Za-z0-9+/]{22}==")  # base64 of 16 bytes, as every client sends it


def _valid_key(key: str) -> bool:
    """Whether `key` is the base64 of 16 bytes (RFC 6455 4.2.1 (5))."""
    if _KEY.fullmatch(key):
        return True
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except ValueError:  # binascii.Error included
        return False


async def _receive_request_bytes(stream: anyio.abc.ByteStream) -> bytes:
    """The next bytes of a request (b"" at its end)."""
    try:
        return await stream.receive(_RECEIVE_SIZE)
    except anyio.EndOfStream:
        return b""
    except STREAM_ERRORS:
        raise HandshakeAborted(400, "connection lost during the request") from None


_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# A request line with a plain origin-form or absolute target, HTTP/1.1 only.
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/1\.1")
# name ":" OWS value OWS, the value visible ASCII with inner spaces/tabs (or
# empty): after the colon, any visible ASCII, spaces and tabs. A block is such
# lines joined by CRLF.
_HEADER_FIELD = _TOKEN + rb":[\x20-\x7e\t]*"
_HEADER_BLOCK = re.compile(_HEADER_FIELD + rb"(?:\r\n" + _HEADER_FIELD + rb")*")


def _simple_head(data: bytes) -> tuple[str, bytes, bytes, bytes] | None:
    """(method, target, header block, bytes after the head) of a request head
    that is whole in `data` and plain: ASCII, one line per header (no
    folding), one Host and no body headers; the block is its header lines
    (as `headers_from_block` takes them). None for anything else, which h11
    then reads: this accepts only what h11 accepts, and reads it as h11 does."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    line_end = data.find(b"\r\n")
    request = _REQUEST_LINE.fullmatch(data, 0, line_end)
    if request is None or line_end == end:  # h11 refuses an HTTP/1.1 request without Host
        return None
    block = data[line_end + 2 : end]
    if _HEADER_BLOCK.fullmatch(block) is None:
        return None
    # Every line is a header, so each name starts a line and ends at its colon.
    names = b"\r\n" + block.lower()
    if names.count(b"\r\nhost:") != 1 or b"\r\ncontent-length:" in names:
        return None
    if b"\r\ntransfer-encoding:" in names:  # anything with a body is h11's to read
        return None
    return request[1].decode("ascii"), request[2], block, data[end + 4 :]


async def send_accept(
    stream: anyio.abc.ByteStream,
    request: UpgradeRequest,
    *,
    subprotocol: str | None = None,
    extra_headers: _Headers = (),
) -> None:
    """Answer ``101 Switching Protocols``.

    ``subprotocol`` must be one the client offered (else ValueError).  Raises
    :exc:`WebSocketClosed` (1006) if the peer went away.
    """
    if subprotocol is not None and subprotocol not in request.subprotocols:
        raise ValueError(f"subprotocol {subprotocol!r} was not offered by the client")
    response = accept_response(request.key, subprotocol, extra_headers)
    try:
        await stream.send(response)
    except STREAM_ERRORS:
        raise WebSocketClosed(1006, "") from None


_ACCEPT_HEAD = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: "
)
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3


def accept_token(key: str) -> bytes:
    """The Sec-WebSocket-Accept value for Sec-WebSocket-Key `key` (RFC 6455 4.2.2)."""
    digest = hashlib.sha1(key.encode("ascii") + _ACCEPT_GUID).digest()
    return binascii.b2a_base64(digest, newline=False)


def accept_response(key: str, subprotocol: str | None, extra_headers: _Headers = ()) -> bytes:
    """The ``101 Switching Protocols`` answering Sec-WebSocket-Key `key`."""
    response = _ACCEPT_HEAD + accept_token(key)
    if subprotocol is not None:
        extra_headers = [("Sec-WebSocket-Protocol", subprotocol), *extra_headers]
    if extra_headers:
        lines = _header_lines(extra_headers)
        response += ("\r\n" + "\r\n".join(lines)).encode("latin-1")
    return response + b"\r\n\r\n"


# -- client side ----------------------------------------------------------------


async def open_upgraded(
    url: str,
    *,
    subprotocols: Sequence[str] = (),
    headers: _Headers = (),
    ssl_context: ssl.SSLContext | None = None,
    handshake_timeout: float = 30.0,
) -> Upgraded:
    """Dial a ``ws://`` or ``wss://`` URL and upgrade the connection.

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
            subprotocol = check_response(response, key, subprotocols)
        except BaseException:
            await anyio.aclose_forcefully(stream)
            raise
    return Upgraded(stream, subprotocol, conn.trailing_data[0])


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
                except (h11.RemoteProtocolError, *STREAM_ERRORS):
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


def check_response(
    response: h11.InformationalResponse, key: str, offered: Sequence[str]
) -> str | None:
    """The subprotocol a 101 response agrees to, once it meets every MUST of
    RFC 6455 4.1 for a client (else HandshakeError, status None: the client must
    fail the connection).  h11 gives header names lower-cased and values
    without surrounding whitespace (which 4.1 says to ignore)."""
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers]
    # 4.1 (2): Upgrade is "websocket", case-insensitively, and nothing else.
    if [t.lower() for t in _tokens(headers, "upgrade")] != ["websocket"]:
        raise HandshakeError("101 response without 'Upgrade: websocket'")
    # 4.1 (3): Connection holds the token "Upgrade", case-insensitively.
    if "upgrade" not in [t.lower() for t in _tokens(headers, "connection")]:
        raise HandshakeError("101 response without 'Connection: Upgrade'")
    # 4.1 (4): one Sec-WebSocket-Accept (4.3: never repeated), for our key.
    accept = accept_token(key).decode("ascii")
    if [v for k, v in headers if k == "sec-websocket-accept"] != [accept]:
        raise HandshakeError("101 response with a missing or wrong Sec-WebSocket-Accept")
    # 4.1 (5): only extensions we offered, and we offer none.
    extensions = _tokens(headers, "sec-websocket-extensions")
    if extensions:
        raise HandshakeError(f"server selected extensions we did not offer: {extensions}")
    # 4.1 (6): only a subprotocol we offered; 4.2.2 and 4.3: one value, one header.
    # An empty header names none (servers send it; it agrees to no subprotocol).
    protocols = [v for k, v in headers if k == "sec-websocket-protocol" and v.strip()]
    if not protocols:
        return None
    if len(protocols) > 1 or protocols[0] not in offered:
        raise HandshakeError(f"server selected a subprotocol we did not offer: {protocols}")
    return protocols[0]
