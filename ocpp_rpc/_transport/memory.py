"""An in-memory WebSocket: two connected `Transport`s over anyio memory object
streams, with no socket, no thread and no real time (it runs under Trio's
`MockClock`). `ocpp_rpc.testing` connects clients to a server with it.

It keeps the WebSocket behaviour the RPC layer relies on, so that a
connection behaves over it as over `websocket.WebSocket`:

- messages are whole ``str`` (text) or ``bytes`` (binary); a str that is not
  UTF-8 text raises UnicodeEncodeError on send, as the frame encoder does;
- each direction holds at most `buffer_size` frames (data, ping, pong or
  close): a peer that stops reading blocks its sender, whose `write_timeout`
  then drops the connection with 1006 "write timeout", like a full TCP window;
- a message larger than the receiver's `max_message_size` fails the connection
  with 1009 "message too big" (the Close reaches the sender);
- `close()` is a closing handshake: the peer's `receive` raises
  `WebSocketClosed(code, reason)` and echoes the Close; `abort()` drops both
  ends without one (1006); `ping()` waits for the pong that the peer's reader
  sends back; `close_code` / `close_reason` follow `WebSocket`'s rules;
- a side that finds its peer gone on a write still learns why if the peer's
  Close is already waiting for it (a WebSocket that drains before closing).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..transport import WebSocketClosed
from .close_codes import check_close_code
from .draining import CloseDrain

__all__ = ("MemoryWebSocket", "memory_pair")

#: Default frames one direction buffers before its sender waits.
DEFAULT_BUFFER_SIZE = 64
_FAIL_TIMEOUT = 2.0  # bound on sending a last Close (as WebSocket's)
_MAX_REASON = 123  # bytes of a close reason that fit a Close frame


@dataclass(frozen=True, slots=True)
class _Ping:
    payload: bytes


@dataclass(frozen=True, slots=True)
class _Pong:
    payload: bytes


@dataclass(frozen=True, slots=True)
class _Close:
    code: int
    reason: str


_Frame = str | bytes | _Ping | _Pong | _Close
_GONE = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError)


def memory_pair(
    *,
    subprotocol: str | None = None,
    max_message_size: int = 2**24,
    peer_max_message_size: int | None = None,
    buffer_size: int = DEFAULT_BUFFER_SIZE,
) -> tuple[MemoryWebSocket, MemoryWebSocket]:
    """Two connected in-memory WebSockets (a, b): what one sends, the other receives.

    `max_message_size` bounds what `a` receives, `peer_max_message_size` (default
    the same) what `b` receives; `buffer_size` is how many frames each
    direction holds before its sender waits.
    """
    if buffer_size < 1:
        raise ValueError("buffer_size must be at least 1")
    a_to_b = anyio.create_memory_object_stream[_Frame](buffer_size)
    b_to_a = anyio.create_memory_object_stream[_Frame](buffer_size)
    a = MemoryWebSocket(
        a_to_b[0], b_to_a[1], subprotocol=subprotocol, max_message_size=max_message_size
    )
    b = MemoryWebSocket(
        b_to_a[0], a_to_b[1], subprotocol=subprotocol,
        max_message_size=max_message_size if peer_max_message_size is None
        else peer_max_message_size,
    )
    return a, b


class MemoryWebSocket(CloseDrain):
    """One end of a `memory_pair`: a `ocpp_rpc.transport.Transport`.

    One task at a time may call `receive` (others get RuntimeError); `send`,
    `ping` and `close` may be called from any task. `close_code`/`close_reason`
    are None/"" while open; when the peer closes first they are the peer's;
    when we close first, what the peer's answering Close says (ours echoed),
    or ours if it never answers; 1006 when the connection was dropped without
    a Close (``"write timeout"`` when our write timed out); 1009 when we
    received a message over `max_message_size`.
    """

    def __init__(
        self,
        send_stream: MemoryObjectSendStream[_Frame],
        receive_stream: MemoryObjectReceiveStream[_Frame],
        *,
        subprotocol: str | None = None,
        max_message_size: int = 2**24,
    ) -> None:
        self._send_stream = send_stream
        self._receive_stream = receive_stream
        self._subprotocol = subprotocol
        self.max_message_size = max_message_size
        #: Seconds one write may wait for the peer to take it (None: no bound);
        #: on expiry the connection is dropped: 1006 "write timeout".
        self.write_timeout: float | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self._write_lock = anyio.Lock()
        self._pings: dict[bytes, anyio.Event] = {}
        self._close_sent: tuple[int, str] | None = None
        self._close_hint: tuple[int, str] | None = None  # peer's Close, or our failure code
        self._peer_closing = False  # the peer's Close arrived
        self._receiving = False
        self._draining = False  # close() itself is reading
        self._idle: anyio.Event | None = None  # set when the current receive() exits
        self._closed = anyio.Event()

    def __repr__(self) -> str:
        state = "open" if self.close_code is None else f"closed {self.close_code}"
        return f"<MemoryWebSocket {state}>"

    @property
    def subprotocol(self) -> str | None:
        """The agreed subprotocol (None: none)."""
        return self._subprotocol

    # -- receiving -------------------------------------------------------------------

    async def receive(self) -> str | bytes:
        """The next whole message (str for text, bytes for binary).

        Answers pings, resolves `ping` waiters and completes the closing
        handshake. Raises `WebSocketClosed` once the WebSocket is closed.
        """
        if self._receiving:
            if self._draining:  # close() is reading: wait for its end
                await self._closed.wait()
                raise self._closed_error()
            raise RuntimeError("another task is already in MemoryWebSocket.receive()")
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
            try:
                frame = await self._receive_stream.receive()
            except _GONE:
                self._finish(*self._end_state())
                break
            if type(frame) is str or type(frame) is bytes:
                if _size(frame) > self.max_message_size:
                    await self._fail(1009, "message too big")
                    break
                return frame
            if type(frame) is _Ping:
                answered = await self._send_control(_Pong(frame.payload))
                if not answered and self.close_code is not None:
                    break
            elif type(frame) is _Pong:
                self._resolve_pings(frame.payload)
            elif type(frame) is _Close:
                await self._on_close(frame.code, frame.reason)
                break
        raise self._closed_error()

    async def _on_close(self, code: int, reason: str) -> None:
        self._peer_closing = True
        if self._close_sent is None:  # the peer starts the closing handshake: echo it
            self._close_hint = (code, reason)
            with anyio.CancelScope(shield=True, deadline=anyio.current_time() + _FAIL_TIMEOUT):
                await self._send_control(_Close(code, reason))
        self._finish(code, reason)  # else the peer answers ours

    def _resolve_pings(self, payload: bytes) -> None:
        """A pong resolves the matching ping and every earlier one."""
        if payload in self._pings:
            while self._pings:
                key = next(iter(self._pings))
                self._pings.pop(key).set()
                if key == payload:
                    break

    # -- sending ---------------------------------------------------------------------

    @property
    def _open(self) -> bool:
        """Whether data may still be sent (no Close sent or received)."""
        return self.close_code is None and self._close_sent is None and not self._peer_closing

    async def _write(self, frame: _Frame) -> None:
        """Put one frame in the peer's buffer within `write_timeout` (holding the
        write lock); WebSocketClosed if the peer is gone or took nothing in time."""
        try:
            with anyio.fail_after(self.write_timeout):
                await self._send_stream.send(frame)
        except TimeoutError:
            self._finish(1006, "write timeout")
            raise self._closed_error() from None
        except _GONE:
            self._finish(*self._peer_gone_state())
            raise self._closed_error() from None

    async def send(self, message: str | bytes) -> None:
        """Send one text (str) or binary (bytes) message."""
        await self.send_many((message,))

    async def send_many(self, messages: Sequence[str | bytes]) -> None:
        """Send several messages, in order."""
        frames = [_message(message) for message in messages]
        async with self._write_lock:
            for frame in frames:
                if not self._open:
                    raise self._closed_error()
                await self._write(frame)

    async def _send_control(self, frame: _Ping | _Pong | _Close) -> bool:
        """Send a ping, pong or Close if the state still allows it (else False).

        A peer that is gone (or took nothing for `write_timeout`) closes the
        WebSocket; that is reported by the caller's next operation."""
        async with self._write_lock:
            is_close = type(frame) is _Close
            if self.close_code is not None or self._close_sent is not None or (
                self._peer_closing and not is_close
            ):
                return False
            if isinstance(frame, _Close):
                self._close_sent = (frame.code, frame.reason)
                frame = _Close(frame.code, _truncate(frame.reason))
            try:
                await self._write(frame)
            except WebSocketClosed:
                if is_close:
                    self._close_sent = None
                return False
            return True

    async def ping(self, payload: bytes | None = None) -> None:
        """Send a ping and wait for its pong (a `receive` loop must be running).

        `payload` defaults to 4 random bytes; it must be unique among pending
        pings (ValueError). Raises `WebSocketClosed` if the WebSocket closes.
        """
        if payload is None:
            payload = os.urandom(4)
            while payload in self._pings:
                payload = os.urandom(4)
        elif payload in self._pings:
            raise ValueError(f"a ping with payload {payload!r} is already pending")
        waiter = self._pings[payload] = anyio.Event()
        try:
            if await self._send_control(_Ping(bytes(payload))):
                await waiter.wait()
        finally:
            pending = self._pings.get(payload) is waiter
            if pending:
                del self._pings[payload]
        if pending:  # not resolved by a pong: the WebSocket closed
            raise self._closed_error()

    # -- closing ---------------------------------------------------------------------

    async def close(self, code: int = 1000, reason: str = "", *, timeout: float = 5.0) -> None:
        """Send Close(code, reason), wait up to `timeout` for the peer's, then drop.

        Idempotent. If another task is in `receive`, that task processes the
        peer's Close (and gets `WebSocketClosed`); otherwise incoming messages
        are discarded here. The reason is truncated to fit a Close frame.
        """
        check_close_code(code)
        try:
            if self.close_code is None:
                with anyio.move_on_after(timeout):
                    await self._send_control(_Close(code, reason))
                    await self._read_until_closed()
                if self.close_code is None:  # the peer did not answer in time
                    self._finish(*self._end_state())
            await anyio.lowlevel.checkpoint()
        except BaseException:  # cancelled halfway: dropped, as a socket's WebSocket is
            if self.close_code is None:
                self._finish(1006, "")
            raise

    async def abort(self) -> None:
        """Drop the connection now, without a closing handshake (close_code 1006)."""
        self._finish(1006, "")
        await anyio.lowlevel.checkpoint()

    async def _fail(self, code: int, reason: str) -> None:
        """Fail the connection: send Close(code) if still possible, then drop."""
        self._close_hint = (code, reason)
        with anyio.CancelScope(shield=True, deadline=anyio.current_time() + _FAIL_TIMEOUT):
            await self._send_control(_Close(code, reason))
        self._finish(code, reason)

    def _finish(self, code: int, reason: str) -> None:
        """Record the final close code (the first one wins), drop both
        directions (the peer reads what is buffered, then the end) and wake
        every waiter."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        for waiter in self._pings.values():
            waiter.set()
        self._send_stream.close()
        self._receive_stream.close()
        self._closed.set()

    def _end_state(self) -> tuple[int, str]:
        """The code/reason to end with if the connection goes away now."""
        return self._close_hint or self._close_sent or (1006, "")

    def _peer_gone_state(self) -> tuple[int, str]:
        """Why the peer went away, as found on a write: its Close, if one is
        waiting to be read (it failed the connection), else `_end_state`."""
        while True:
            try:
                frame = self._receive_stream.receive_nowait()
            except (anyio.WouldBlock, *_GONE):
                return self._end_state()
            if type(frame) is _Close:
                return self._close_hint or (frame.code, frame.reason)

    def _closed_error(self) -> WebSocketClosed:
        if self.close_code is not None:
            return WebSocketClosed(self.close_code, self.close_reason)
        return WebSocketClosed(*self._end_state())


def _message(message: str | bytes) -> str | bytes:
    """The frame for `message`: bytes-like is copied; a str must be UTF-8 text."""
    if isinstance(message, str):
        if not message.isascii():
            message.encode("utf-8")  # UnicodeEncodeError for lone surrogates, as on a socket
        return message
    if isinstance(message, (bytes, bytearray, memoryview)):
        return bytes(message)
    raise TypeError(f"a message is str or bytes, not {type(message).__name__}")


def _size(data: str | bytes) -> int:
    if isinstance(data, str) and not data.isascii():
        return len(data.encode("utf-8"))
    return len(data)


def _truncate(reason: str) -> str:
    data = reason.encode("utf-8")
    if len(data) <= _MAX_REASON:
        return reason
    return data[:_MAX_REASON].decode("utf-8", errors="ignore")
