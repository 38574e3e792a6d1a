"""The ASGI 3 adapter behind `ocpp_rpc.asgi` (documented there): it serves
any server with a public `serve_upgrade`, `running` and ``async with``."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Protocol
from urllib.parse import quote, unquote

import anyio

from .._wire.handshake import Handshake, make_handshake
from ..transport import Transport, UpgradeServer, WebSocketClosed

__all__ = ("ASGIApp", "ASGIWebSocket")

logger = logging.getLogger("ocpp_rpc")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApplication = Callable[[Scope, Receive, Send], Awaitable[None]]

_DENIAL = "websocket.http.response"
# Characters left as they are when re-encoding a decoded path (RFC 3986 pchar + "/").
_PATH_SAFE = "/!$&'()*+,;=:@~"
_MAX_REASON = 123  # bytes of a close reason that fit a control frame


class HostedServer(UpgradeServer, Protocol):
    """What the ASGI application needs of the server it serves (an `RPCServer`)."""

    @property
    def running(self) -> bool: ...

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc_info: Any) -> Any: ...


class ASGIApp:
    """The ASGI 3 application of an `RPCServer` (``server.asgi_app``).

    ``fallback``, if given, receives every scope that is not a WebSocket
    (``http``, ``lifespan``), so that ``ASGIApp(server, fallback=app)`` can
    wrap a whole application.
    """

    def __init__(self, server: HostedServer, *, fallback: ASGIApplication | None = None) -> None:
        self.server = server
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif self.fallback is not None:
            await self.fallback(scope, receive, send)
        elif kind == "http":
            await _not_found(send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            raise ValueError(f"unsupported ASGI scope type {kind!r}")

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":  # the client left before anything
            return
        await self.server.serve_upgrade(_ASGIUpgrade(scope, receive, send))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        if self.server.running:  # already run by someone else
            await send({"type": "lifespan.startup.complete"})
            await _until_shutdown(receive)
            await send({"type": "lifespan.shutdown.complete"})
            return
        started = False
        try:
            async with self.server:
                await send({"type": "lifespan.startup.complete"})
                started = True
                await _until_shutdown(receive)
        except Exception as exc:
            logger.exception("the RPC server failed in the ASGI lifespan")
            failed = "lifespan.shutdown.failed" if started else "lifespan.startup.failed"
            await send({"type": failed, "message": str(exc)})
            return
        await send({"type": "lifespan.shutdown.complete"})


async def _until_shutdown(receive: Receive) -> None:
    while (await receive())["type"] != "lifespan.shutdown":
        pass


async def _not_found(send: Send) -> None:
    body = b"Not Found: this endpoint only speaks WebSocket (OCPP-J)\n"
    await send({
        "type": "http.response.start",
        "status": 404,
        "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode("ascii")),
        ],
    })
    await send({"type": "http.response.body", "body": body})


class _ASGIUpgrade:
    """A ``websocket`` scope after ``websocket.connect``, as the server's `Upgrade`."""

    keepalive = False  # the host pings

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._scope = scope
        self._receive = receive
        self._send = send

    def handshake(self) -> Handshake:
        scope = self._scope
        client = scope.get("client")
        remote = (str(client[0]), int(client[1])) if client else None
        query = scope.get("query_string", b"")
        return make_handshake(
            path=_request_path(scope),
            query_string=query.decode("latin-1") if isinstance(query, bytes) else str(query),
            headers=[
                (bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
                for name, value in scope.get("headers", ())
            ],
            protocols=tuple(scope.get("subprotocols") or ()),
            remote_address=remote,
            peer_certificate_der=_client_certificate_der(scope),
        )

    async def accept(self, subprotocol: str | None, *, max_message_size: int) -> Transport:
        try:
            await self._send({"type": "websocket.accept", "subprotocol": subprotocol})
        except Exception as exc:  # the host reports a client gone its own way
            logger.debug("ASGI accept failed: %r", exc)
            raise WebSocketClosed(1006, "") from None
        return ASGIWebSocket(
            self._receive, self._send, subprotocol=subprotocol,
            max_message_size=max_message_size,
        )

    async def reject(self, status: int, message: str) -> None:
        body = message.encode("utf-8")
        try:
            if _DENIAL in (self._scope.get("extensions") or {}):
                await self._send({
                    "type": "websocket.http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", str(len(body)).encode("ascii")),
                    ],
                })
                await self._send({"type": "websocket.http.response.body", "body": body})
            else:  # closing before accepting: the host answers 403
                code = 1011 if status >= 500 else 1008
                await self._send({"type": "websocket.close", "code": code,
                                  "reason": _truncate(message)})
        except Exception as exc:
            logger.debug("ASGI refusal could not be sent: %r", exc)


def _request_path(scope: Scope) -> str:
    """The percent-encoded request path of an ASGI scope, mount prefix included.

    The identity segment comes from ``raw_path`` when the host provides it, so
    that an identity with an encoded "/" (``CP%2F1``) stays one segment.
    """
    root = str(scope.get("root_path") or "")
    path = str(scope.get("path") or "")
    # ASGI servers disagree on whether `path` includes `root_path`.
    below = path[len(root):] if root and path.startswith(root) else path
    full = root + below
    raw_path = scope.get("raw_path")
    if not raw_path:
        return quote(full, safe=_PATH_SAFE)
    raw_identity = bytes(raw_path).decode("latin-1").partition("?")[0].rpartition("/")[2]
    suffix = "/" + unquote(raw_identity)
    endpoint = full[: -len(suffix)] if full.endswith(suffix) else full.rpartition("/")[0]
    return quote(endpoint, safe=_PATH_SAFE) + "/" + raw_identity


def _client_certificate_der(scope: Scope) -> bytes | None:
    """The client certificate from the ASGI TLS extension, if the host gives it."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or ()
    try:
        return ssl.PEM_cert_to_DER_cert(chain[0]) if chain else None
    except (ValueError, TypeError):
        return None


def _truncate(reason: str) -> str:
    data = reason.encode("utf-8")[:_MAX_REASON]
    return data.decode("utf-8", errors="ignore")


class ASGIWebSocket:
    """An accepted ASGI WebSocket as an `ocpp_rpc.transport.Transport`.

    `receive`/`send` raise `WebSocketClosed` once it is closed. `ping` returns at
    once: ASGI has no pings, the host server does keep-alive. `abort` marks it
    closed (1006) and wakes the reader; the connection then ends the ASGI call,
    and the host drops or closes the socket as it sees fit.
    """

    def __init__(
        self,
        receive: Receive,
        send: Send,
        *,
        subprotocol: str | None = None,
        max_message_size: int = 2**24,
    ) -> None:
        self._receive = receive
        self._send = send
        self._subprotocol = subprotocol
        self._max_message_size = max_message_size
        #: Seconds the host may take to accept one message (None: no bound).
        self.write_timeout: float | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self._close_sent: tuple[int, str] | None = None
        self._receiving = False
        self._receive_scope: anyio.CancelScope | None = None
        self._idle: anyio.Event | None = None  # set when the current receive() exits
        self._write_lock = anyio.Lock()

    @property
    def subprotocol(self) -> str | None:
        return self._subprotocol

    async def receive(self) -> str | bytes:
        """The next whole message; WebSocketClosed once closed."""
        if self.close_code is not None:
            raise self._closed_error()
        if self._receiving:
            raise RuntimeError("another task is already receiving")
        self._receiving = True
        try:
            with anyio.CancelScope() as scope:  # abort() cancels it
                self._receive_scope = scope
                while self.close_code is None:
                    message = await self._receive()
                    kind = message.get("type")
                    if kind == "websocket.receive":
                        data: str | bytes | None = message.get("text")
                        if data is None:
                            data = bytes(message.get("bytes") or b"")
                        if _size(data) > self._max_message_size:
                            await self._fail(1009, "message too big")
                            break
                        return data
                    if kind == "websocket.disconnect":
                        if self._close_sent is not None:
                            # Hosts differ in what they report after our close
                            # (ours, the peer's echo, or 1000): ours is what counts.
                            self._finish(*self._close_sent)
                        else:
                            code = int(message.get("code") or 1005)
                            self._finish(code, str(message.get("reason") or ""))
            raise self._closed_error()
        finally:
            self._receiving = False
            self._receive_scope = None
            if self._idle is not None:
                self._idle.set()
                self._idle = None

    async def send(self, message: str | bytes) -> None:
        """Send one text (str) or binary (bytes) message."""
        if isinstance(message, str):
            event: Message = {"type": "websocket.send", "text": message}
        else:
            event = {"type": "websocket.send", "bytes": bytes(message)}
        async with self._write_lock:
            if self.close_code is not None or self._close_sent is not None:
                raise self._closed_error()
            try:
                with anyio.fail_after(self.write_timeout):
                    await self._send(event)
            except TimeoutError:
                self._finish(1006, "write timeout")
                raise self._closed_error() from None
            except Exception as exc:  # OSError per ASGI 2.4; hosts differ
                logger.debug("ASGI send failed: %r", exc)
                self._finish(1006, "")
                raise self._closed_error() from None

    async def send_many(self, messages: Sequence[str | bytes]) -> None:
        """Send `messages` in order."""
        for message in messages:
            await self.send(message)

    async def ping(self, payload: bytes | None = None) -> None:
        """No-op: ASGI has no pings (the host server's keep-alive covers it)."""
        if self.close_code is not None:
            raise self._closed_error()

    async def close(self, code: int = 1000, reason: str = "", *, timeout: float = 5.0) -> None:
        """Send a close, then wait up to `timeout` for the host to report the end."""
        if self.close_code is None:
            with anyio.move_on_after(timeout):
                await self._send_close(code, reason)
                while self.close_code is None:
                    if self._receiving:  # the reader will see the disconnect
                        if self._idle is None:
                            self._idle = anyio.Event()
                        await self._idle.wait()
                        continue
                    try:
                        await self.receive()
                    except WebSocketClosed:
                        pass
            if self.close_code is None:
                self._finish(*(self._close_sent or (code, reason)))

    async def abort(self) -> None:
        """Give up on the connection without a closing handshake (close_code 1006)."""
        self._finish(1006, "")

    async def _send_close(self, code: int, reason: str) -> None:
        async with self._write_lock:
            if self._close_sent is not None or self.close_code is not None:
                return
            self._close_sent = (code, reason)
            try:
                await self._send({"type": "websocket.close", "code": code,
                                  "reason": _truncate(reason)})
            except Exception as exc:
                logger.debug("ASGI close failed: %r", exc)
                self._finish(1006, "")

    async def _fail(self, code: int, reason: str) -> None:
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(2.0):
                await self._send_close(code, reason)
        self._finish(code, reason)

    def _finish(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        if self._receive_scope is not None:
            self._receive_scope.cancel()

    def _closed_error(self) -> WebSocketClosed:
        if self.close_code is not None:
            return WebSocketClosed(self.close_code, self.close_reason)
        return WebSocketClosed(*(self._close_sent or (1006, "")))

    def __repr__(self) -> str:
        state = "open" if self.close_code is None else f"closed {self.close_code}"
        return f"<ASGIWebSocket {state}>"


def _size(data: str | bytes) -> int:
    if isinstance(data, str) and not data.isascii():
        return len(data.encode("utf-8"))
    return len(data)
