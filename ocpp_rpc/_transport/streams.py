"""Leaner TCP byte streams under our WebSocket, for both backends.

anyio's asyncio `SocketStream` resumes and pauses reading around every
`receive` (two epoll_ctl syscalls each) and yields to the event loop after
every `send`; its trio `SocketStream` (trio's socket methods) yields after
every successful `recv`/`send` too. For a WebSocket that exchanges small
frames that is most of the cost of a round trip, so `adopt_socket_stream`
moves an accepted or connected plain-TCP anyio stream (or the TCP stream under
anyio's TLS) onto one of these classes:

- `AsyncioSocketStream`: the same asyncio (or uvloop) transport with its own
  protocol, reading continuously with flow control at `_HIGH_WATER` buffered
  bytes, writing without a round through the loop unless the transport's
  buffer is over its limit;
- `TrioSocketStream`: non-blocking `recv`/`send` on the socket first, waiting
  for readiness only when they would block, and a checkpoint every
  `_YIELD_EVERY` immediate receives so that a peer that never pauses cannot
  starve other tasks. After a read that emptied the kernel's buffer it waits
  before the next `recv` (libuv does the same), which spares a call that would
  fail with EAGAIN on every message of a peer that waits for its answers;
  `send_now` writes without a coroutine what the socket takes at once.

Every other stream (Unix sockets, in-memory streams, wrappers) is used as it is.
What this needs of anyio's and asyncio's private names is in `_internals`.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import math
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import Any, Protocol, cast

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSStream

from ._internals import (
    ANYIO_ASYNCIO,
    ANYIO_TRIO,
    RAW_SOCKET,
    adoptable_asyncio_stream,
    is_open_trio_stream,
    listening_sockets,
    set_read_size,
)

_HIGH_WATER = 256 * 1024  # buffered bytes received and not yet read: pause reading
_LOW_WATER = 64 * 1024
_READ_SIZE = 64 * 1024  # asyncio: bytes per read (under glibc's mmap threshold)
_WRITE_HIGH_WATER = 64 * 1024  # bytes the transport may buffer before send() waits
_FLUSH_TIMEOUT = 2.0  # aclose() with unsent data: bound on flushing it
_YIELD_EVERY = 16  # trio: receives in a row that found data waiting, then a checkpoint
_ACCEPT_BURST = 64  # connections accepted in a row, then our accept loop yields
_ACCEPT_RETRY = 0.1  # seconds before accepting again when out of descriptors or memory
# accept() errors of one connection (it went away already): go on with the next.
_ACCEPT_SKIP = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR})


async def connect_tcp(
    host: str, port: int, *, ssl_context: ssl.SSLContext | None = None
) -> anyio.abc.ByteStream:
    """`anyio.connect_tcp` (with TLS checked against `host` when `ssl_context`
    is given), cheaper for an IP address: one address needs none of the
    happy-eyeballs task group, task, event and timeout that anyio starts for
    every connection."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or getattr(address, "scope_id", None):  # a name, or fe80::1%eth0
        if ssl_context is None:
            return await anyio.connect_tcp(host, port)
        return await anyio.connect_tcp(
            host, port, tls=True, ssl_context=ssl_context, tls_hostname=host
        )
    sock = socket.socket(
        socket.AF_INET6 if address.version == 6 else socket.AF_INET, socket.SOCK_STREAM
    )
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.connect((host, port))
        except BlockingIOError:
            await anyio.wait_writable(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise OSError(error, os.strerror(error)) from None
        stream = await anyio.abc.SocketStream.from_socket(sock)
    except BaseException:
        sock.close()
        raise
    if ssl_context is None:
        return stream
    try:
        return await TLSStream.wrap(stream, hostname=host, ssl_context=ssl_context)
    except BaseException:
        await anyio.aclose_forcefully(stream)
        raise


logger = logging.getLogger("ocpp_rpc")


class Spawner(Protocol):
    """Where a connection's task starts: a task group, or a `TaskPool`."""

    def start_soon(self, func: Callable[..., Awaitable[Any]], *args: Any) -> None: ...


async def serve_listener(
    listener: anyio.abc.Listener[anyio.abc.SocketStream],
    handler: Callable[[anyio.abc.ByteStream | socket.socket], Coroutine[Any, Any, None]],
    tasks: Spawner,
) -> None:
    """`listener.serve(handler)` with each `handler` task started in `tasks`,
    where `handler` gets what `open_accepted` turns into the connection's
    stream, for an anyio TCP listener by our own accept loop: on asyncio and
    uvloop the accepted socket itself, which then goes straight onto an
    `AsyncioSocketStream` in the task that serves it; on trio a
    `TrioSocketStream` over the bare socket. anyio's accept loop takes a
    cancel scope, its own stream (and on asyncio a protocol) per connection,
    and makes each before it accepts the next."""
    wrap: Callable[[socket.socket], anyio.abc.ByteStream | socket.socket] | None = None
    sockets = listening_sockets(listener, ANYIO_ASYNCIO)
    if sockets is None:
        sockets = listening_sockets(listener, ANYIO_TRIO)
        wrap = TrioSocketStream  # made at once: it needs no await
    if sockets is None:  # a listener we do not know: anyio's accept loop hands over

        async def hand_over(stream: anyio.abc.SocketStream) -> None:
            tasks.start_soon(handler, stream)

        await listener.serve(hand_over)
        return
    async with anyio.create_task_group() as tg:
        for sock in sockets:
            tg.start_soon(_accept, sock, handler, tasks, wrap)


async def open_accepted(accepted: anyio.abc.ByteStream | socket.socket) -> anyio.abc.ByteStream:
    """The stream of a connection `serve_listener` handed over, on our own
    stream class where one applies (see `adopt_socket_stream`)."""
    if not isinstance(accepted, socket.socket):
        return adopt_socket_stream(accepted)
    try:
        accepted.setblocking(False)
        accepted.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return await AsyncioSocketStream.accepted(accepted)
    except BaseException:
        accepted.close()
        raise


async def _accept(
    sock: socket.socket,
    handler: Callable[[anyio.abc.ByteStream | socket.socket], Coroutine[Any, Any, None]],
    tasks: Spawner,
    wrap: Callable[[socket.socket], anyio.abc.ByteStream | socket.socket] | None,
) -> None:
    accepted = 0
    while True:
        # Cancelled (the server closing): accept nothing more, leave it in the backlog.
        await anyio.lowlevel.checkpoint_if_cancelled()
        try:
            client, _ = sock.accept()
        except BlockingIOError:
            accepted = 0
            await anyio.wait_readable(sock)
            continue
        except OSError as exc:
            if exc.errno in _ACCEPT_SKIP:
                continue
            # EMFILE, ENFILE, ENOBUFS, ENOMEM: the connection waits in the backlog.
            logger.error("accept() failed, retrying in %s s: %s", _ACCEPT_RETRY, exc)
            await anyio.sleep(_ACCEPT_RETRY)
            continue
        if wrap is None:
            tasks.start_soon(handler, client)
        else:
            try:
                client.setblocking(False)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                stream = wrap(client)
            except OSError:  # gone already
                client.close()
                continue
            tasks.start_soon(handler, stream)
        accepted += 1
        if accepted == _ACCEPT_BURST:  # a flood of connections must not starve the rest
            accepted = 0
            await anyio.lowlevel.checkpoint()


class _Accepting(asyncio.Protocol):
    """What arrives between a transport's making and its stream's (see
    `AsyncioSocketStream.accepted`)."""

    def __init__(self) -> None:
        self.pending: list[bytes] = []
        self.eof = False
        self.lost: tuple[Exception | None] | None = None

    def data_received(self, data: bytes) -> None:
        self.pending.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = (exc,)


def adopt_socket_stream(stream: anyio.abc.ByteStream) -> anyio.abc.ByteStream:
    """The same connection on our own stream class when `stream` is an open
    plain-TCP anyio stream (also the one under anyio's TLS, which is then kept):
    `AsyncioSocketStream` on asyncio and uvloop, `TrioSocketStream` on trio.
    Any other stream is returned as it is."""
    if isinstance(stream, TLSStream):
        inner = adopt_socket_stream(stream.transport_stream)  # type: ignore[arg-type]
        stream.transport_stream = inner
        return stream
    if is_open_trio_stream(stream):
        return TrioSocketStream(cast(anyio.abc.SocketStream, stream))
    adoptable = adoptable_asyncio_stream(stream)
    if adoptable is None:
        return stream
    return AsyncioSocketStream(*adoptable)


def _wake(waiter: asyncio.Future[None] | None) -> None:
    """Resume the task parked on `waiter`, if one is."""
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class _Protocol(asyncio.Protocol):
    __slots__ = ("stream",)

    def __init__(self, stream: AsyncioSocketStream) -> None:
        self.stream = stream

    def data_received(self, data: bytes) -> None:
        stream = self.stream
        consumer = stream.consumer
        waiter = stream._read_waiter
        # Not once the waiter is done (nudged, not yet returned): uvloop may
        # deliver several reads before the task in `receive` runs.
        if (
            consumer is not None
            and waiter is not None
            and not waiter.done()
            and not stream._buffer
            and consumer(data)
        ):
            return
        buffer = stream._buffer
        if buffer is None:
            stream._buffer = [data]
        else:
            buffer.append(data)
        stream._buffered += len(data)
        if stream._buffered > _HIGH_WATER and not stream._reading_paused:
            stream._reading_paused = True
            stream._transport.pause_reading()
        _wake(stream._read_waiter)

    def eof_received(self) -> bool:
        self.stream._eof = True
        _wake(self.stream._read_waiter)
        return True  # keep the transport open for writing (anyio does the same)

    def connection_lost(self, exc: Exception | None) -> None:
        stream = self.stream
        stream._lost = True
        stream._error = exc
        _wake(stream._read_waiter)
        _wake(stream._write_waiter)
        _wake(stream._drain_waiter)
        _wake(stream._close_waiter)

    def pause_writing(self) -> None:
        self.stream._can_write = False

    def resume_writing(self) -> None:
        self.stream._can_write = True
        _wake(self.stream._write_waiter)
        _wake(self.stream._drain_waiter)
        _wake(self.stream._close_waiter)


def _sockaddr(address: Any) -> tuple[str, int]:
    """(host, port) of a socket address, as anyio gives it: an IPv6 scope id,
    if any, joined to the host with ``%``."""
    if len(address) == 4 and address[3]:
        return f"{address[0].split('%')[0]}%{address[3]}", address[1]
    return address[0], address[1]


def _tcp_attributes(
    sock: socket.socket, peer: tuple[str, int]
) -> dict[Any, Callable[[], Any]]:
    """anyio's socket attributes of a connected TCP socket whose peer is `peer`."""
    return {
        SocketAttribute.family: lambda: sock.family,
        SocketAttribute.local_address: lambda: _sockaddr(sock.getsockname()),
        SocketAttribute.local_port: lambda: sock.getsockname()[1],
        SocketAttribute.raw_socket: lambda: sock,
        SocketAttribute.remote_address: lambda: peer,
        SocketAttribute.remote_port: lambda: peer[1],
    }


class AsyncioSocketStream(anyio.abc.SocketStream):
    """An anyio `SocketStream` over an asyncio transport (see the module doc)."""

    #: Seconds `send` may wait for the transport's buffer to drain, then
    #: TimeoutError (None: no bound). A send that does not wait costs nothing.
    send_timeout: float | None = None

    def __init__(self, transport: asyncio.Transport, pending: Iterable[bytes]) -> None:
        #: Called with bytes as they arrive while a `receive` waits and nothing
        #: is buffered; True: it took them (`receive` keeps waiting unless
        #: `nudge`d), False: they are buffered for `receive` as usual.
        self.consumer: Callable[[bytes], bool] | None = None
        self._nudged = False
        self._transport = transport
        # A list, not a deque (which is big for an idle connection): it holds a chunk
        # or two; None while empty, so that an idle connection holds no list at all.
        buffer = [bytes(chunk) for chunk in pending]
        self._buffer: list[bytes] | None = buffer or None
        self._buffered = sum(map(len, buffer))
        self._reading_paused = True  # anyio pauses reading between receives
        self._can_write = True
        self._eof = self._lost = self._closed = False
        self._error: Exception | None = None
        self._read_waiter: asyncio.Future[None] | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        self._close_waiter: asyncio.Future[None] | None = None  # aclose() flushing
        self._drain_waiter: asyncio.Future[None] | None = None  # drain() waiting
        transport.set_protocol(_Protocol(self))
        transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)
        # asyncio's selector transport reads into a fresh bytes object of its read
        # size each time; its default sits at glibc's mmap threshold, so depending
        # on the heap's history every read may cost mmap+mremap+munmap and page
        # faults.
        set_read_size(transport, _READ_SIZE)
        if self._buffered <= _HIGH_WATER:
            self._reading_paused = False
            transport.resume_reading()

    @classmethod
    async def accepted(cls, sock: socket.socket) -> AsyncioSocketStream:
        """The stream of `sock`, a connected non-blocking TCP socket."""
        loop = asyncio.get_running_loop()
        protocol = _Accepting()
        transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock)
        stream = cls(transport, protocol.pending)
        if protocol.eof:
            stream._eof = True
        if protocol.lost is not None:
            stream._lost = True
            stream._error = protocol.lost[0]
        return stream

    @property
    def _raw_socket(self) -> socket.socket:  # anyio's abstract property (see _internals)
        sock: socket.socket = self._transport.get_extra_info("socket")
        return sock

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        # anyio's table calls getpeername and converts the family to an enum
        # on every lookup; the transport knows the peer's address already.
        peer = self._transport.get_extra_info("peername")
        if self._closed or not isinstance(peer, tuple):
            return super().extra_attributes
        return _tcp_attributes(self._raw_socket, _sockaddr(peer))

    async def drain(self) -> None:
        """Wait until every byte sent so far went to the kernel (or the
        connection is lost or closed): what a send of anyio's own stream waits
        for, for a last frame before the TCP connection is dropped."""
        if not self._closed:
            await self._flushed("_drain_waiter")

    async def _flushed(self, slot: str) -> None:
        """Wait (parked in `slot`) until the transport's buffer is empty, or
        the connection is lost, or (but for aclose() itself) closed."""
        transport = self._transport
        closing = slot == "_close_waiter"
        if not transport.get_write_buffer_size() or self._lost:
            return
        transport.set_write_buffer_limits(high=0)  # resume_writing() once it is empty
        try:
            while transport.get_write_buffer_size() and not self._lost:
                if self._closed and not closing:
                    return
                await self._parked(slot)
        finally:
            if not self._lost and not transport.is_closing():
                transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)

    async def _parked(self, slot: str) -> None:
        """Wait on a new future kept in attribute `slot` until `_wake` resolves it."""
        waiter = asyncio.get_running_loop().create_future()
        setattr(self, slot, waiter)
        try:
            await waiter
        finally:
            setattr(self, slot, None)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if max_bytes < 1:
            raise ValueError("max_bytes must be a positive integer")
        while not self._buffer or self._nudged:  # a nudge goes before bytes that came after it
            if self._nudged:
                self._nudged = False
                return b""
            if self._closed:
                raise anyio.ClosedResourceError
            if self._eof:
                raise anyio.EndOfStream
            if self._lost:
                if self._error is not None:
                    raise anyio.BrokenResourceError from self._error
                raise anyio.EndOfStream
            if self._read_waiter is not None:
                raise anyio.BusyResourceError("reading from")
            # `_parked` inlined: an idle connection waits here, and a frame less
            # is a coroutine frame less held per connection.
            waiter = self._read_waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._read_waiter = None
        buffer = self._buffer
        chunk = buffer.pop(0)
        if len(chunk) > max_bytes:
            chunk, rest = chunk[:max_bytes], chunk[max_bytes:]
            buffer.insert(0, rest)
        elif not buffer:
            self._buffer = None
        self._buffered -= len(chunk)
        if self._reading_paused and self._buffered <= _LOW_WATER and not self._lost:
            self._reading_paused = False
            self._transport.resume_reading()
        return chunk

    def nudge(self) -> None:
        """Have the waiting (or next) `receive` return ``b""`` once, with
        nothing read: the consumer left it something to look at."""
        self._nudged = True
        _wake(self._read_waiter)

    def writable(self, size: int = 0) -> bool:
        """Whether `size` more bytes can be written without waiting (the
        transport takes them and stays under its limit)."""
        transport = self._transport
        return (
            self._can_write
            and not self._closed
            and not self._lost
            and transport.get_write_buffer_size() + size <= _WRITE_HIGH_WATER
            and not transport.is_closing()
        )

    def write_now(self, data: bytes) -> None:
        """Hand `data` to the transport (call it when `writable` said so)."""
        self._transport.write(data)

    async def send(self, item: bytes) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        if self._lost or self._transport.is_closing():
            raise anyio.BrokenResourceError from self._error
        self._transport.write(item)
        if not self._can_write and not self._lost:
            with anyio.fail_after(self.send_timeout):
                while not self._can_write and not self._lost:
                    if self._closed:  # aclose() woke us: the bytes may never go out
                        raise anyio.ClosedResourceError
                    if self._write_waiter is not None:
                        raise anyio.BusyResourceError("writing to")
                    await self._parked("_write_waiter")
        if self._lost and self._error is not None:
            raise anyio.BrokenResourceError from self._error

    async def send_eof(self) -> None:
        try:
            self._transport.write_eof()
        except OSError:
            pass

    async def aclose(self) -> None:
        """Let what is still unsent out (within a bound; not when cancelled, as
        by `anyio.aclose_forcefully`), then drop the connection."""
        if not self._closed:
            self._closed = True
            _wake(self._read_waiter)
            _wake(self._write_waiter)
            _wake(self._drain_waiter)
            # Waiting here, not in the background after transport.close(): whoever
            # owns the anyio stream we replaced (the server's `async with stream`)
            # aborts the transport once we return, and asyncio's transport breaks
            # on an abort() that follows a close() whose flush has completed.
            try:
                with anyio.move_on_after(_FLUSH_TIMEOUT):
                    await self._flushed("_close_waiter")
            finally:
                self._transport.abort()
        await anyio.lowlevel.checkpoint()


class TrioSocketStream(anyio.abc.SocketStream):
    """An anyio `SocketStream` over `inner`, a connected non-blocking TCP
    socket, or the socket of anyio's trio stream `inner` (see the module doc),
    which closing it then closes."""

    #: Seconds one `send` may wait for the socket to take bytes, then
    #: TimeoutError (None: no bound). A send that does not wait costs nothing.
    send_timeout: float | None = None

    def __init__(self, inner: anyio.abc.SocketStream | socket.socket) -> None:
        import trio

        if isinstance(inner, socket.socket):
            self._inner: anyio.abc.SocketStream | None = None
            sock = inner
        else:
            self._inner = inner
            # anyio's `_raw_socket` (see _internals): `extra` would build its whole table.
            raw = getattr(inner, RAW_SOCKET, None)
            sock = raw if isinstance(raw, socket.socket) else inner.extra(
                anyio.abc.SocketAttribute.raw_socket
            )
        self._sock: socket.socket = sock
        self._wait_readable = trio.lowlevel.wait_readable
        self._wait_writable = trio.lowlevel.wait_writable
        self._checkpoint = trio.lowlevel.checkpoint
        self._trio_closed = trio.ClosedResourceError
        self._closed = False
        self._broken = False  # a send was cancelled part-way: the byte stream is cut
        self._receiving = self._sending = False  # anyio's guards: one task each way
        self._unsent = 0  # bytes of the current send not yet taken by the socket
        self._immediate = 0  # receives in a row that did not wait
        self._drained = False  # the last recv was short: the kernel had no more
        self._partial = False  # send_now sent part of a buffer: send() sends the rest

    @property
    def _raw_socket(self) -> socket.socket:  # anyio's abstract property (see _internals)
        return self._sock

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        # anyio's table converts the family to an enum twice on every lookup.
        try:
            peer = _sockaddr(self._sock.getpeername())
        except OSError:  # not connected any more: anyio's table says what then
            return super().extra_attributes
        return _tcp_attributes(self._sock, peer)

    async def drain(self) -> None:
        """Nothing to wait for: a `send` returns once the kernel has every byte."""

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if max_bytes < 1:
            raise ValueError("max_bytes must be a positive integer")
        if self._receiving:
            raise anyio.BusyResourceError("reading from")
        self._receiving = True
        try:  # one coroutine, not two: an idle connection waits in it
            sock = self._sock
            if self._drained:
                # A recv now would most likely fail with EAGAIN. Waiting is also a
                # checkpoint; bytes that came in meanwhile end it at once.
                self._drained = False
                self._immediate = 0
                if self._closed:
                    raise anyio.ClosedResourceError
                if sock.fileno() >= 0:  # else (closed under us) the recv below says so
                    try:
                        await self._wait_readable(sock)
                    except self._trio_closed:
                        raise anyio.ClosedResourceError from None
            elif self._immediate >= _YIELD_EVERY:
                # Before the recv: a cancellation here loses no bytes.
                self._immediate = 0
                await self._checkpoint()
            while True:
                if self._closed:
                    raise anyio.ClosedResourceError
                try:
                    data = sock.recv(max_bytes)
                except BlockingIOError:
                    self._immediate = 0
                    try:
                        await self._wait_readable(sock)
                    except self._trio_closed:
                        raise anyio.ClosedResourceError from None
                    continue
                except OSError as exc:
                    raise self._error(exc) from exc
                break
            self._immediate += 1
            self._drained = len(data) < max_bytes
            if not data:
                raise anyio.EndOfStream
            return data

        finally:
            self._receiving = False

    def send_now(self, item: bytes) -> int:
        """Give the socket what it takes of `item` without waiting, and return
        how many bytes that was (0 also while a `send` is under way, after one
        broke off, or while the rest of an earlier item is due). The rest must
        go next, by `send`: until it has, the byte stream is cut mid-item."""
        if self._sending or self._broken or self._closed or self._partial:
            return 0
        try:
            sent = self._sock.send(item)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise self._error(exc) from exc
        self._partial = 0 < sent < len(item)
        return sent

    async def send(self, item: bytes) -> None:
        if self._sending:
            raise anyio.BusyResourceError("writing to")
        if self._broken:
            raise anyio.BrokenResourceError("an earlier send was cancelled part-way")
        self._sending = True
        view = memoryview(item)
        try:
            await self._send(view)
        except BaseException:
            # Cancelled (or timed out) after part of `item`, or of the item that
            # `send_now` began, went out: what follows would land mid-frame, so
            # nothing may follow.
            if self._unsent and (self._partial or self._unsent < len(view)):
                self._broken = True
            raise
        finally:
            self._sending = False
            self._partial = False

    async def _send(self, view: memoryview) -> None:
        sock = self._sock
        deadline = None  # set when the first wait starts
        self._unsent = len(view)
        while view:
            if self._closed:
                raise anyio.ClosedResourceError
            try:
                sent = sock.send(view)
            except BlockingIOError:
                if deadline is None:
                    timeout = self.send_timeout
                    deadline = math.inf if timeout is None else anyio.current_time() + timeout
                try:
                    with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
                        await self._wait_writable(sock)
                except self._trio_closed:
                    raise anyio.ClosedResourceError from None
                continue
            except OSError as exc:
                raise self._error(exc) from exc
            view = view[sent:]
            self._unsent = len(view)

    def _error(self, exc: OSError) -> Exception:
        if self._closed or self._sock.fileno() < 0:
            return anyio.ClosedResourceError()
        return anyio.BrokenResourceError()

    async def send_eof(self) -> None:
        if self._inner is not None:
            await self._inner.send_eof()
            return
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise self._error(exc) from exc
        await self._checkpoint()

    async def aclose(self) -> None:
        self._closed = True
        if self._inner is not None:
            await self._inner.aclose()  # trio wakes any task waiting on the socket
            return
        if self._sock.fileno() >= 0:
            import trio

            trio.lowlevel.notify_closing(self._sock)  # a task waiting on it is told
            self._sock.close()
        await self._checkpoint()
