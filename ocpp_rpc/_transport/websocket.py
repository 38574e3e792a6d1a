"""One WebSocket (RFC 6455) over an anyio byte stream, client or server side.

Whole data frames, Pings and Pongs are read and written by `frames` directly;
wsproto, made on first need, handles every other frame and the closing
handshake.  The HTTP upgrade before it is `upgrade`'s; `connect` and
`accept_upgrade` put the two together (and this module re-exports the rest of
`upgrade` that the RPC layer uses).

Knows nothing of OCPP.  Works the same on anyio's asyncio and trio backends.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import ssl
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import anyio
import anyio.abc
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSStream
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage
from wsproto.frame_protocol import CloseReason

from .._concurrency.latch import Latch
from .._concurrency.lock import Lock
from ..transport import WebSocketClosed as WebSocketClosed
from ._internals import as_task
from .close_codes import check_close_code
from .draining import CloseDrain
from .frames import Splitter, encode, encode_control
from .streams import AsyncioSocketStream, TrioSocketStream, adopt_socket_stream
from .upgrade import STREAM_ERRORS as _STREAM_ERRORS
from .upgrade import HandshakeAborted as HandshakeAborted
from .upgrade import HandshakeError as HandshakeError
from .upgrade import HandshakeRefused as HandshakeRefused
from .upgrade import UpgradeRequest as UpgradeRequest
from .upgrade import open_upgraded, send_accept
from .upgrade import read_upgrade_request as read_upgrade_request
from .upgrade import reject_upgrade as reject_upgrade

_RECEIVE_SIZE = 65536
_CORK_LIMIT = 256  # frames corked (see WebSocket.receive) before they are written anyway
# Bound on failing a connection (last Close, draining the peer) and on a graceful close.
_FAIL_TIMEOUT = 2.0
# A peer that takes no byte for `write_timeout` is sent this Close (it may read
# again before the end); the WebSocket itself ends with 1006 "write timeout".
_WRITE_TIMEOUT_CLOSE = 1008
_WRITE_TIMED_OUT = (1006, "write timeout")
_OPEN = ConnectionState.OPEN
_REMOTE_CLOSING = ConnectionState.REMOTE_CLOSING
_CLOSED = ConnectionState.CLOSED
_NO_EVENTS: Iterator[str | bytes | Event] = iter(())  # exhausted: one for every WebSocket

_Headers = Sequence[tuple[str, str]]


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
    await send_accept(stream, request, subprotocol=subprotocol, extra_headers=extra_headers)
    return WebSocket(
        stream,
        ConnectionType.SERVER,
        subprotocol=subprotocol,
        max_message_size=max_message_size,
        trailing_data=request.trailing,
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
    upgraded = await open_upgraded(
        url,
        subprotocols=subprotocols,
        headers=headers,
        ssl_context=ssl_context,
        handshake_timeout=handshake_timeout,
    )
    return WebSocket(
        upgraded.stream,
        ConnectionType.CLIENT,
        subprotocol=upgraded.subprotocol,
        max_message_size=max_message_size,
        trailing_data=upgraded.trailing,
    )


class WebSocket(CloseDrain):
    """One open WebSocket (client or server side) over an anyio ByteStream.

    One task at a time may call :meth:`receive` (others get RuntimeError);
    :meth:`send`, :meth:`ping` and :meth:`close` may be called from any task.

    ``close_code``/``close_reason`` are None/"" while open.  When the peer closes
    first, they are the peer's (1005 if its Close had no code).  When we close
    first, they are what we sent, unless the peer's answering Close carries a code
    of its own (not 1005); this holds even if the peer never answers.  1006 means
    the transport dropped without any Close (or ours could not be sent); 1009,
    1007 and 1002 mean we failed the connection (too big, bad UTF-8, protocol),
    1006 "write timeout" that the peer took no byte for `write_timeout`.

    Failing a connection (`_fail`) sends our Close, then reads and drops what the
    peer still sends until its Close or EOF before the socket is closed: a TCP
    socket closed with received bytes unread resets the connection, and a peer
    that gets the reset drops what it has not read yet, our Close with it.
    """

    #: Seconds failing the connection may take (our last Close, then the peer's
    #: bytes until its Close), after which the stream is closed regardless.
    fail_timeout: float = _FAIL_TIMEOUT

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        connection_type: ConnectionType,
        *,
        subprotocol: str | None = None,
        max_message_size: int = 2**24,
        trailing_data: bytes = b"",
    ) -> None:
        self.stream = adopt_socket_stream(stream)
        # Our own TCP stream (under TLS too), which bounds a send that waits.
        inner = self.stream.transport_stream if isinstance(self.stream, TLSStream) else self.stream
        self._bounded: AsyncioSocketStream | TrioSocketStream | None = (
            inner if isinstance(inner, (AsyncioSocketStream, TrioSocketStream)) else None
        )
        # Our asyncio TCP stream when nothing is layered on it: received bytes
        # can then be handed to a sink as they arrive (`set_sink`).
        self._inline = self.stream if isinstance(self.stream, AsyncioSocketStream) else None
        # Our Trio TCP stream when nothing is layered on it: the task in
        # `receive` hands the messages of each read to the sink itself.
        self._flat = self._inline is None and isinstance(self.stream, TrioSocketStream)
        self._sink: Callable[[str | bytes], bool] | None = None
        self._sink_task: asyncio.Task[Any] | None = None  # the task the sink runs as
        self._sink_context: contextvars.Context | None = None  # ... and in this context
        self._batch: list[str | bytes] | None = None  # what the sink sends, while it runs
        # What is sent while the task in `receive` works through the messages of
        # one read: written together before it reads again (see `receive`).
        self._cork: list[str | bytes] | None = None
        self._write_timeout: float | None = None
        self.subprotocol = subprotocol
        self.close_code: int | None = None
        self.close_reason = ""
        # Holds the wsproto Connection too, made when a frame or our Close needs it.
        self._splitter = Splitter(connection_type, max_message_size)
        self._events = iter(self._splitter.feed(trailing_data)) if trailing_data else _NO_EVENTS
        self._max_message_size = max_message_size
        self._message_size = 0
        # Made on first use, as an idle connection may never need them:
        self._parts: list[str | bytes] | None = None  # a fragmented message so far
        self._lock: Lock | None = None  # the write lock: see _write_lock
        self._pings: dict[bytes, anyio.Event] | None = None  # pending ping() waiters
        self._close_sent: tuple[int, str] | None = None
        self._close_hint: tuple[int, str] | None = None  # peer's Close, or our failure code
        self._receiving = False
        self._draining = False  # close() or _fail() itself is reading
        self._idle: anyio.Event | None = None  # set when the current receive() exits
        self._failing = False  # _fail() has begun: no more writes, reads only drain
        self._drained: Latch | None = None  # made by _fail(): the peer's Close or EOF came
        self._stream_closing = False
        self._closed: Latch | None = None  # set once the stream is closed: see _closed_latch

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """The peer's (host, port), None if not TCP (or the socket is closed)."""
        return _address(self.stream, SocketAttribute.remote_address)

    @property
    def local_address(self) -> tuple[str, int] | None:
        """Our (host, port), None if not TCP (or the socket is closed)."""
        return _address(self.stream, SocketAttribute.local_address)

    def __repr__(self) -> str:
        side = "client" if self._splitter.client else "server"
        state = "open" if self.close_code is None else f"closed {self.close_code}"
        return f"<WebSocket {side} {self.remote_address} {state}>"

    def set_sink(self, sink: Callable[[str | bytes], bool] | None) -> None:
        """Have `sink` take whole messages as they arrive, while the task that
        calls this waits in `receive` (None: stop). `sink(message)` runs in
        an event-loop callback, as that task (its current task and a copy of
        its context), and returns True if it dealt with the message, False if
        `receive` is to return it after all (and everything after it, in
        order). On our plain-TCP Trio stream, the task in `receive` itself
        runs the sink on the messages of each read, in its own context, and
        writes what it sent in one write before it reads again. On any other
        stream nothing changes."""
        if self._inline is None:
            if self._flat:
                self._sink = sink
            return
        self._sink = sink
        if sink is None:
            self._inline.consumer = None
            self._sink_task = self._sink_context = None
            return
        task = asyncio.current_task()
        if task is None:
            return
        self._sink_task, self._sink_context = task, contextvars.copy_context()
        self._inline.consumer = self._consume

    @property
    def sink_context(self) -> contextvars.Context | None:
        """The context the sink runs in (None: no sink): the reader task runs
        what the sink would have run in it too, so that a context variable
        set by one handler is seen alike by the next, whichever ran it."""
        return self._sink_context

    def _consume(self, data: bytes) -> bool:
        """The stream's consumer: split `data` and give its messages to the
        sink, while the task in `receive` waits for bytes (so every message
        before these has been returned by `receive`, and order holds)."""
        task, context = self._sink_task, self._sink_context
        if (
            task is None
            or context is None
            or not self._receiving
            or self._draining
            or self._failing
            or self.close_code is not None
        ):
            return False
        taken = context.run(as_task, task, self._take, data)
        return taken is not None  # None: asyncio could not run it as the task

    def _take(self, data: bytes) -> bool:
        stream = self._inline
        assert stream is not None and self._sink is not None
        items = self._splitter.feed(data)
        if type(items) is not list:  # from a Close on: the task in `receive` takes it all
            self._events = iter(items)
            stream.nudge()
            return True
        sink = self._sink
        # What the sink sends meanwhile goes out in one write (`send_nowait`).
        batch: list[str | bytes] = []
        self._batch = batch
        try:
            for i, item in enumerate(items):
                if (type(item) is str or type(item) is bytes) and sink(item):
                    continue
                self._events = iter(items[i:])
                stream.nudge()
                break
        finally:
            self._batch = None
            if batch:
                stream.write_now(encode(batch, mask=self._splitter.client))
        return True

    async def receive(self) -> str | bytes:
        """Return the next whole message (str for text, bytes for binary).

        Answers pings, resolves :meth:`ping` waiters and completes the closing
        handshake.  Raises :exc:`WebSocketClosed` once the WebSocket is closed.
        """
        if self._receiving:
            if self._draining:  # close() or _fail() is reading: wait for the end
                await self._closed_latch().wait()
                raise self._closed_error()
            raise RuntimeError("another task is already in WebSocket.receive()")
        self._receiving = True
        # One coroutine, not two: an idle connection's reader waits in it.
        try:
            while self.close_code is None:
                if self._failing:  # another task fails the connection; the reading is this task's
                    await self._drain()
                    await self._closed_latch().wait()
                    break
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
                            await self._fail(1009, "message too big", reading=True)
                            raise self._closed_error()
                        if not event.message_finished:
                            self._message_size = size
                            if data:
                                if self._parts is None:
                                    self._parts = []
                                self._parts.append(data)
                            continue
                        self._message_size = 0
                        parts = self._parts
                        if not parts:
                            return data
                        self._parts = None
                        parts.append(data)
                        if isinstance(data, str):
                            return "".join(cast("list[str]", parts))
                        return b"".join(cast("list[bytes]", parts))
                    elif isinstance(event, Ping):
                        await self._send_control(event.response(), reading=True)
                        if self.close_code is not None or self._failing:
                            break
                    elif isinstance(event, Pong):
                        self._resolve_pings(event.payload)
                    elif isinstance(event, CloseConnection):
                        await self._on_close(event.code, event.reason or "")
                        raise self._closed_error()
                else:
                    self._events = _NO_EVENTS  # an idle connection holds no iterator of its own
                    if self._cork is not None:
                        await self._uncork()
                        continue  # it may have ended or failed the WebSocket
                    try:
                        data = await self.stream.receive(_RECEIVE_SIZE)
                    except _STREAM_ERRORS:
                        await self._finish(*self._end_state())
                        break
                    if not data:  # nudged: the sink left messages or events in _events
                        continue
                    if self._failing:
                        self._splitter.discard(data)
                    else:
                        items = self._splitter.feed(data)
                        sink = self._sink
                        if (
                            sink is not None
                            and self._flat  # see set_sink
                            and type(items) is list
                            and not self._draining  # close() reads on until the peer's Close
                        ):
                            await self._run_sink(sink, items)
                            continue
                        if type(items) is list and len(items) > 1:
                            # Several messages in one read (a peer with calls in
                            # flight): their answers go out in one write, not one
                            # each, before the next read.
                            self._cork = []
                        self._events = iter(items)
            raise self._closed_error()

        finally:
            self._receiving = False
            if self._idle is not None:
                self._idle.set()
                self._idle = None

    async def _run_sink(
        self, sink: Callable[[str | bytes], bool], items: list[str | bytes | Event]
    ) -> None:
        """Our Trio stream (see `set_sink`): give the messages of one read to
        the sink, here in the task in `receive`. What it sends is corked, and
        written every `_CORK_LIMIT` frames and before the next read. A message
        it leaves, and all after it, go to `_events`."""
        self._cork = []
        for i, item in enumerate(items):
            if (type(item) is str or type(item) is bytes) and sink(item):
                cork = self._cork
                if cork is not None and len(cork) >= _CORK_LIMIT:
                    await self._uncork()
                    if self.close_code is not None or self._failing:
                        self._events = iter(items[i + 1 :])  # `receive` ends it
                        return
                    self._cork = []
                continue
            self._events = iter(items[i:])
            return

    async def _uncork(self) -> None:
        """Write what was corked (see `receive`), from the task in `receive`."""
        cork, self._cork = self._cork, None
        if not cork:
            return
        data = None
        if self._flat and (self._lock is None or not self._lock.locked()):
            # Nothing else is writing: what the socket takes at once needs no
            # lock and no coroutine, and most of the time that is all of it.
            if self._splitter.state is not _OPEN or self._failing:
                return
            data = encode(cork, mask=self._splitter.client)
            try:
                sent = cast(TrioSocketStream, self.stream).send_now(data)
            except _STREAM_ERRORS:
                await self._finish(*self._end_state())
                return
            if sent == len(data):
                return
            data = data[sent:]  # it goes next: the lock is free and we did not yield
        async with self._write_lock:
            if data is None:
                if self._splitter.state is not _OPEN or self._failing:
                    return  # nothing more goes out: as if sent into a connection that ended
                data = encode(cork, mask=self._splitter.client)
            try:
                await self._write(data)
                return
            except TimeoutError:
                pass
            except _STREAM_ERRORS:
                await self._finish(*self._end_state())
                return
        await self._fail_write_timeout(reading=True)

    async def _on_close(self, code: int, reason: str) -> None:
        state = self._splitter.state
        if state is _REMOTE_CLOSING:  # the peer starts the closing handshake: echo it
            self._close_hint = (code, reason)
            with anyio.CancelScope(shield=True, deadline=anyio.current_time() + _FAIL_TIMEOUT):
                await self._send_control(CloseConnection(code=code, reason=reason), reading=True)
                await self._finish(code, reason)
        elif state is _CLOSED:  # the peer answers our Close
            if code == CloseReason.NO_STATUS_RCVD and self._close_sent is not None:
                code, reason = self._close_sent
            await self._finish(code, reason)
        else:  # wsproto turned a protocol violation (1002, 1007) into this event
            await self._fail(code, reason, reading=True)

    def _resolve_pings(self, payload: bytes) -> None:
        """A Pong resolves the matching ping and every earlier one."""
        pings = self._pings
        if pings and payload in pings:
            while pings:
                key = next(iter(pings))
                pings.pop(key).set()
                if key == payload:
                    break

    @property
    def _write_lock(self) -> Lock:
        """The lock every write but `send_nowait`'s holds (made on first use)."""
        lock = self._lock
        if lock is None:
            lock = self._lock = Lock()
        return lock

    @property
    def write_timeout(self) -> float | None:
        """Seconds one write may wait for the peer to take bytes (None: no bound);
        on expiry the connection fails (see `_fail_write_timeout`) and ends with
        1006 "write timeout"."""
        return self._write_timeout

    @write_timeout.setter
    def write_timeout(self, timeout: float | None) -> None:
        self._write_timeout = timeout
        if self._bounded is not None and not self._failing:
            self._bounded.send_timeout = timeout

    async def _write(self, data: bytes) -> None:
        """`stream.send` within `write_timeout`, else TimeoutError (call it
        holding the write lock; catch TimeoutError before the OSErrors).

        Our own TCP streams bound only a send that has to wait, so a write that
        completes at once costs no cancel scope.  Once failing, `_fail`'s
        deadline bounds the writes instead.
        """
        if self._bounded is not None or self._write_timeout is None or self._failing:
            await self.stream.send(data)
        else:
            with anyio.fail_after(self._write_timeout):
                await self.stream.send(data)

    def send_nowait(self, message: str | bytes) -> bool:
        """Send one message if that needs no waiting: into the cork or the
        sink's batch while one is open, else on our asyncio stream with no
        other write under way and room in the transport; False, sending
        nothing, otherwise: then `send` it."""
        if self._failing or self._splitter.state is not _OPEN:
            return False
        cork = self._cork
        if cork is not None:  # written after what is being written now, in order
            cork.append(message)
            return True
        stream = self._inline
        if stream is None or (self._lock is not None and self._lock.locked()):
            return False
        batch = self._batch
        if batch is not None:  # in the sink: written together when it returns
            if len(batch) >= _CORK_LIMIT:  # a long read: written every so many frames
                stream.write_now(encode(batch, mask=self._splitter.client))
                batch.clear()
            if not batch and not stream.writable():
                return False
            batch.append(message)
            return True
        data = encode((message,), mask=self._splitter.client)
        if not stream.writable(len(data)):
            return False
        stream.write_now(data)
        return True

    async def send(self, message: str | bytes) -> None:
        """Send one text (str) or binary (bytes) message."""
        await self.send_many((message,))

    async def send_many(self, messages: Sequence[str | bytes]) -> None:
        """Send several messages, in order, in one write to the stream."""
        cork = self._cork
        if cork is not None:
            if self._splitter.state is not _OPEN or self._failing:
                raise self._closed_error()
            cork.extend(messages)
            if len(cork) < _CORK_LIMIT:
                return
            messages, self._cork = cork, []
        async with self._write_lock:
            if self._splitter.state is not _OPEN or self._failing:
                raise self._closed_error()
            data = encode(messages, mask=self._splitter.client)
            try:
                await self._write(data)
                return
            except TimeoutError:
                pass
            except _STREAM_ERRORS:
                await self._finish(*self._end_state())
                raise self._closed_error() from None
        await self._fail_write_timeout()
        raise self._closed_error()

    async def _send_control(self, event: Event, *, reading: bool = False) -> bool:
        """Send a Ping/Pong/Close if the state still allows it (else return False).

        A broken transport closes the WebSocket, a write that times out fails it
        (`reading`: the caller is the task in `receive`); either is reported by
        the caller's next operation, not raised here.
        """
        async with self._write_lock:
            state = self._splitter.state
            is_close = isinstance(event, CloseConnection)
            if state is not _OPEN and not (is_close and state is _REMOTE_CLOSING):
                return False
            if self._failing and not is_close:
                return False
            if isinstance(event, CloseConnection):
                data = self._splitter.conn.send(event)
                self._close_sent = (event.code, event.reason or "")
            else:  # a Ping or Pong changes no state: wsproto is not needed for it
                data = encode_control(cast("Ping | Pong", event), mask=self._splitter.client)
            cork = self._cork
            if cork is not None:  # what was sent before goes out first, in the same write
                self._cork = [] if self._receiving and not is_close else None
                if cork:
                    data = encode(cork, mask=self._splitter.client) + data
            try:
                await self._write(data)
                return True
            except TimeoutError:  # the frame may go out yet: a Close counts as sent
                pass
            except _STREAM_ERRORS:
                if is_close:
                    self._close_sent = None
                await self._finish(*self._end_state())
                return False
        await self._fail_write_timeout(reading=reading)
        return False

    async def _fail_write_timeout(self, *, reading: bool = False) -> None:
        """A write timed out.  Our own streams end a write at a frame boundary
        (asyncio's transport took the frame whole; trio's stream refuses any
        byte after a frame cut short), so a Close may follow; on any other
        stream the frame may be cut anywhere, and nothing may follow.  A peer
        that took nothing for `write_timeout` gets no longer than that again."""
        await self._fail(
            _WRITE_TIMEOUT_CLOSE,
            "write timeout",
            ended=_WRITE_TIMED_OUT,
            reading=reading,
            send_close=self._bounded is not None,
            timeout=min(self.fail_timeout, self._write_timeout or self.fail_timeout),
        )

    async def ping(self, payload: bytes | None = None) -> None:
        """Send a Ping and wait for its Pong (a :meth:`receive` loop must be running).

        ``payload`` defaults to 4 random bytes; it must be unique among pending
        pings (ValueError).  Raises :exc:`WebSocketClosed` if the WebSocket closes.
        """
        pings = self._pings
        if pings is None:
            pings = self._pings = {}
        if payload is None:
            payload = os.urandom(4)
            while payload in pings:
                payload = os.urandom(4)
        elif payload in pings:
            raise ValueError(f"a ping with payload {payload!r} is already pending")
        waiter = pings[payload] = anyio.Event()
        try:
            if await self._send_control(Ping(payload=payload)):
                await waiter.wait()
        finally:
            pending = pings.get(payload) is waiter
            if pending:
                del pings[payload]
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
        try:
            if self.close_code is None and not self._failing:
                with anyio.move_on_after(timeout):
                    await self._send_control(CloseConnection(code=code, reason=reason))
                    await self._read_until_closed()
                if self.close_code is None and not self._failing:  # the peer did not answer
                    await self._finish(*self._end_state(), force=True)
            await self._closed_latch().wait()
        except BaseException:  # cancelled halfway: TCP is dropped, never left open
            with anyio.CancelScope(shield=True):
                await self.abort()
            raise

    async def abort(self) -> None:
        """Drop the TCP connection now, without a closing handshake (close_code 1006)."""
        await self._finish(1006, "", force=True)
        await self._closed_latch().wait()

    def _stop_draining(self) -> bool:
        return self._failing  # _fail() ends it, within its own bound

    async def _fail(
        self,
        code: int,
        reason: str,
        *,
        ended: tuple[int, str] | None = None,
        reading: bool = False,
        send_close: bool = True,
        timeout: float | None = None,
    ) -> None:
        """Fail the WebSocket connection (RFC 6455 7.1.7), the one way for every
        failure: send Close(code, reason) if the stream still takes one, write
        nothing more, read and drop what the peer sends until its Close has come
        or the stream ends, let our last bytes out, close the stream.  The
        WebSocket ends with `ended` (default: code, reason).

        `reading`: the caller is the task in `receive`; otherwise that task, if
        there is one, does the reading.  Without `send_close` it only ends the
        stream.  Shielded, and bounded by `timeout` (default `fail_timeout`).
        """
        if self.close_code is not None or (self._failing and not reading):
            return  # ended, or being ended by the first caller
        first = not self._failing
        if first:
            self._failing = True
            self._drained = Latch()
            self._close_hint = ended or (code, reason)
            if self._bounded is not None:
                self._bounded.send_timeout = None  # the deadline below bounds the writes
        bound = self.fail_timeout if timeout is None else timeout
        with anyio.CancelScope(shield=True, deadline=anyio.current_time() + bound):
            if first and send_close:
                await self._send_control(CloseConnection(code=code, reason=reason))
            if self._close_sent is not None:
                if reading:
                    await self._drain()
                elif self._receiving and self._drained is not None:
                    await self._drained.wait()  # the task in receive() reads
                else:
                    await self._drain_as_receiver()
                if self._bounded is not None:
                    await self._bounded.drain()
        await self._finish(*self._end_state(), force=True)

    async def _drain(self) -> None:
        """Read and drop what the peer sends until its Close has come or the stream ends."""
        self._events = _NO_EVENTS
        try:
            while not self._splitter.close_received:
                try:
                    data = await self.stream.receive(_RECEIVE_SIZE)
                except _STREAM_ERRORS:
                    return
                self._splitter.discard(data)
        finally:
            if self._drained is not None:
                self._drained.set()

    async def _drain_as_receiver(self) -> None:
        """`_drain` with no task in `receive`: one that comes meanwhile waits for the end."""
        self._receiving = self._draining = True
        try:
            await self._drain()
        finally:
            self._receiving = self._draining = False
            if self._idle is not None:
                self._idle.set()
                self._idle = None

    async def _finish(self, code: int, reason: str, *, force: bool = False) -> None:
        """Record the final close code (first one wins), close the stream, wake waiters.

        The stream gets a graceful close (TLS close_notify) bounded in time, unless
        ``force``; this is shielded from cancellation.
        """
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        if self._pings:
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
                try:
                    await anyio.aclose_forcefully(self.stream)
                except Exception:  # what is dropped has nothing left to report (a TLS
                    pass  # stream cut in its handshake raises here before anyio 4.16)
        finally:
            self._closed_latch().set()

    def _closed_latch(self) -> Latch:
        """The latch set once the stream is closed, made by its first waiter or
        setter (most connections never have one waiting before they end)."""
        latch = self._closed
        if latch is None:
            latch = self._closed = Latch()
        return latch

    def _end_state(self) -> tuple[int, str]:
        """The code/reason to end with if the transport goes away now."""
        return self._close_hint or self._close_sent or (1006, "")

    def _closed_error(self) -> WebSocketClosed:
        if self.close_code is not None:
            return WebSocketClosed(self.close_code, self.close_reason)
        return WebSocketClosed(*self._end_state())


def _address(stream: anyio.abc.ByteStream, attribute: object) -> tuple[str, int] | None:
    """(host, port) of a socket attribute, or None (not a TCP stream, or closed)."""
    try:
        address = stream.extra(attribute, None)
    except OSError:
        return None
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return None
