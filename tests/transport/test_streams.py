"""The leaner TCP streams under our WebSocket: what `adopt_socket_stream` swaps in, and
that they keep every byte, bound what they buffer, report the ends of the
stream and (trio) yield to other tasks when data never stops coming."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import socket
import ssl
import sys
import termios
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import anyio.streams.stapled
import pytest
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSStream
from harness import tls_contexts, wait_until
from wsproto.connection import ConnectionType

from ocpp_rpc._transport.streams import (
    _HIGH_WATER,
    _READ_SIZE,
    _YIELD_EVERY,
    AsyncioSocketStream,
    TrioSocketStream,
    adopt_socket_stream,
    connect_tcp,
    open_accepted,
    serve_listener,
)
from ocpp_rpc._transport.websocket import WebSocket
from ocpp_rpc.transport import WebSocketClosed

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def tcp_pair() -> AsyncIterator[tuple[anyio.abc.SocketStream, anyio.abc.SocketStream]]:
    """(client, server) ends of one loopback TCP connection."""
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as multi:
        listener = multi.listeners[0]
        port = listener.extra(SocketAttribute.local_port)
        client = await anyio.connect_tcp("127.0.0.1", port)
        server = await listener.accept()
        async with client, server:
            yield client, server


async def test_each_backend_gets_its_own_stream_and_others_are_left_alone(
    anyio_backend: str,
) -> None:
    async with tcp_pair() as (client, _server):
        swapped = adopt_socket_stream(client)
        expected = AsyncioSocketStream if anyio_backend == "asyncio" else TrioSocketStream
        assert type(swapped) is expected
    send, receive = anyio.create_memory_object_stream[bytes](1)
    with send, receive:
        stapled = anyio.streams.stapled.StapledObjectStream(send, receive)
        assert adopt_socket_stream(stapled) is stapled  # type: ignore[arg-type]


ASYNCIO_AND_UVLOOP = pytest.mark.parametrize(
    "anyio_backend", ["asyncio", pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")]
)
EVERY_LOOP = pytest.mark.parametrize(
    "anyio_backend",
    ["asyncio", pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"), "trio"],
)


@EVERY_LOOP
async def test_bytes_read_before_the_swap_are_kept_and_attributes_work() -> None:
    async with tcp_pair() as (client, server):
        await client.send(b"first")
        await anyio.sleep(0.05)  # let anyio's protocol take it into its queue
        await server.receive(1)  # asyncio: anyio read it all, so "irst" waits in its queue
        fast = adopt_socket_stream(server)
        assert fast is not server
        assert fast.extra(SocketAttribute.remote_address) == client.extra(
            SocketAttribute.local_address
        )
        await client.send(b" second")
        received = b""
        with anyio.fail_after(2):
            while received != b"irst second":
                received += await fast.receive()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_socket_attributes_are_anyios(host: str) -> None:
    """Our streams answer `extra` from a table of their own (anyio rebuilds its
    table, with a getpeername, on every lookup): the same values as anyio's."""
    try:
        listener = await anyio.create_tcp_listener(local_host=host)
    except OSError:
        pytest.skip(f"no {host} here")
    async with listener:
        port = listener.extra(SocketAttribute.local_port)
        client = await anyio.connect_tcp(host, port)
        server = await listener.listeners[0].accept()
        async with client, server:
            names = [
                SocketAttribute.family, SocketAttribute.local_address,
                SocketAttribute.local_port, SocketAttribute.remote_address,
                SocketAttribute.remote_port,
            ]
            expected = {name: server.extra(name) for name in names}
            fast = adopt_socket_stream(server)
            assert fast is not server
            assert {name: fast.extra(name) for name in names} == expected
            assert fast.extra(SocketAttribute.raw_socket).fileno() == (
                server.extra(SocketAttribute.raw_socket).fileno()
            )
            assert expected[SocketAttribute.remote_address] == client.extra(
                SocketAttribute.local_address
            )
            await fast.aclose()
            assert fast.extra(SocketAttribute.remote_address, None) is None


@ASYNCIO_AND_UVLOOP
async def test_reading_pauses_when_the_reader_falls_behind_and_nothing_is_lost() -> None:
    total = 8 * _HIGH_WATER
    async with tcp_pair() as (client, server):
        fast = adopt_socket_stream(server)
        assert isinstance(fast, AsyncioSocketStream)
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.send, bytes(range(256)) * (total // 256))
            with anyio.fail_after(5):
                while not fast._reading_paused:  # noqa: ASYNC110 (a flag of the stream)
                    await anyio.sleep(0.01)
            assert fast._buffered <= _HIGH_WATER + 256 * 1024  # bounded by one read
            received = bytearray()
            with anyio.fail_after(5):
                while len(received) < total:
                    received += await fast.receive()
        assert received == bytes(range(256)) * (total // 256)


async def test_end_of_stream_and_close_are_reported() -> None:
    async with tcp_pair() as (client, server):
        fast = adopt_socket_stream(server)
        await client.send(b"bye")
        await client.send_eof()
        with anyio.fail_after(2):
            assert await fast.receive() == b"bye"
            with pytest.raises(anyio.EndOfStream):
                await fast.receive()
        await fast.send(b"still writable after the peer's EOF")
        assert await client.receive() == b"still writable after the peer's EOF"
        await fast.aclose()
        with pytest.raises(anyio.ClosedResourceError):
            await fast.receive()
        with pytest.raises(anyio.ClosedResourceError):
            await fast.send(b"x")


async def test_a_send_to_a_peer_that_stops_reading_waits_and_can_be_cancelled() -> None:
    async with tcp_pair() as (_client, server):
        fast = adopt_socket_stream(server)
        chunk = b"x" * 65536
        with anyio.move_on_after(0.5) as blocked:
            for _ in range(10_000):  # 640 MiB: far more than the socket buffers
                await fast.send(chunk)
        assert blocked.cancelled_caught


async def test_the_tcp_stream_under_tls_is_swapped_too() -> None:
    server_ssl, client_ssl = tls_contexts("localhost")
    async with tcp_pair() as (client, server):
        async with anyio.create_task_group() as tg:
            wrapped: list[TLSStream] = []

            async def accept() -> None:
                wrapped.append(await TLSStream.wrap(server, server_side=True,
                                                    ssl_context=server_ssl))

            tg.start_soon(accept)
            tls_client = await TLSStream.wrap(client, hostname="localhost",
                                              ssl_context=client_ssl)
        tls_server = adopt_socket_stream(wrapped[0])
        assert tls_server is wrapped[0]
        assert isinstance(wrapped[0].transport_stream, (AsyncioSocketStream, TrioSocketStream))
        await tls_client.send(b"secret")
        with anyio.fail_after(2):
            assert await tls_server.receive() == b"secret"
        await tls_server.send(b"answer")
        with anyio.fail_after(2):
            assert await tls_client.receive() == b"answer"


def unread(stream: anyio.abc.SocketStream) -> int:
    """Bytes waiting in the socket of `stream`, not yet read."""
    sock = stream.extra(SocketAttribute.raw_socket)
    return int.from_bytes(fcntl.ioctl(sock.fileno(), termios.FIONREAD, bytes(4)), sys.byteorder)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_receives_that_never_wait_still_yield_now_and_then() -> None:
    import trio

    class Steps(trio.abc.Instrument):
        """Counts the times the scheduler resumes `task`: each is one yield of it."""

        def __init__(self, task: trio.lowlevel.Task) -> None:
            self.task = task
            self.count = 0

        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            self.count += task is self.task

    async with tcp_pair() as (client, server):
        fast = adopt_socket_stream(server)
        assert isinstance(fast, TrioSocketStream)
        size = 4 * _YIELD_EVERY + 1
        await client.send(b"x" * size)
        with anyio.fail_after(2):
            await wait_until(lambda: unread(server) == size)  # all of it waits in the socket
        steps = Steps(trio.lowlevel.current_task())
        trio.lowlevel.add_instrument(steps)
        try:
            # A yield comes before the recv that follows 16 immediate ones
            # (a cancellation there loses no bytes), and nowhere else.
            for _ in range(size):
                assert await fast.receive(1) == b"x"
        finally:
            trio.lowlevel.remove_instrument(steps)
        assert steps.count == 4


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_a_receive_waiting_when_the_stream_is_closed_is_told_so() -> None:
    async with tcp_pair() as (_client, server):
        fast = adopt_socket_stream(server)
        async with anyio.create_task_group() as tg:
            failed: list[BaseException] = []

            async def reader() -> None:
                try:
                    await fast.receive()
                except anyio.ClosedResourceError as exc:
                    failed.append(exc)

            tg.start_soon(reader)
            await anyio.sleep(0.05)
            await fast.aclose()
        assert len(failed) == 1


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_stream_over_a_bare_socket_reads_writes_ends_and_closes() -> None:
    """The server's accept loop puts an accepted socket straight on a
    TrioSocketStream (no anyio stream under it)."""
    left, right = socket.socketpair()
    left.setblocking(False)
    fast = TrioSocketStream(left)
    with anyio.fail_after(5):
        right.sendall(b"hello")
        assert await fast.receive() == b"hello"
        await fast.send(b"back")
        assert right.recv(10) == b"back"
        await fast.send_eof()
        assert right.recv(10) == b""  # our EOF
        failed: list[BaseException] = []

        async def reader() -> None:
            try:
                await fast.receive()
            except anyio.ClosedResourceError as exc:
                failed.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await anyio.sleep(0.05)
            await fast.aclose()
        assert len(failed) == 1
        assert left.fileno() == -1
        await fast.aclose()  # again: nothing
        with pytest.raises(anyio.ClosedResourceError):
            await fast.send(b"late")
    right.close()


@pytest.mark.parametrize("timeout", [0.2, None])
async def test_send_timeout_bounds_only_a_send_that_waits(timeout: float | None) -> None:
    async with tcp_pair() as (_client, server):
        fast = adopt_socket_stream(server)
        assert isinstance(fast, (AsyncioSocketStream, TrioSocketStream))
        fast.send_timeout = timeout
        await fast.send(b"at once")  # nothing to wait for: never times out
        chunk = b"x" * 65536
        with anyio.move_on_after(1) as outer:
            with pytest.raises(TimeoutError) if timeout else contextlib.nullcontext():
                for _ in range(10_000):  # far more than the socket buffers take
                    await fast.send(chunk)
        assert outer.cancelled_caught == (timeout is None)


class Wrapped(anyio.abc.ByteStream):
    """A stream that is not one of ours: the WebSocket bounds its writes itself."""

    def __init__(self, inner: anyio.abc.ByteStream) -> None:
        self.inner = inner

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return await self.inner.receive(max_bytes)

    async def send(self, item: bytes) -> None:
        await self.inner.send(item)

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("wrapped", [False, True], ids=["our-stream", "other-stream"])
async def test_a_websocket_write_to_a_peer_that_stops_reading_ends_with_write_timeout(
    wrapped: bool,
) -> None:
    async with tcp_pair() as (_client, server):
        ws = WebSocket(Wrapped(server) if wrapped else server, ConnectionType.SERVER)
        assert (ws._bounded is None) == wrapped
        ws.write_timeout = 0.2
        ws.fail_timeout = 0.05  # the peer never reads our Close: do not wait for it long
        with anyio.fail_after(5), pytest.raises(WebSocketClosed) as closed:
            for _ in range(10_000):
                await ws.send(b"x" * 65536)
        assert (closed.value.code, closed.value.reason) == (1006, "write timeout")
        assert ws.close_code == 1006


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_reads_stay_under_the_malloc_mmap_threshold() -> None:
    # 256 KiB reads (asyncio's default) can cost mmap/mremap/munmap per read.
    async with tcp_pair() as (_client, server):
        fast = adopt_socket_stream(server)
        assert isinstance(fast, AsyncioSocketStream)
        assert fast._transport.max_size == _READ_SIZE <= 128 * 1024  # type: ignore[attr-defined]


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_cancelled_receive_does_not_lose_bytes() -> None:
    """A receive cancelled at its periodic checkpoint must not eat the bytes it read."""
    async with tcp_pair() as (client, server):
        fast = adopt_socket_stream(server)
        for i in range(_YIELD_EVERY + 4):
            await client.send(bytes([65 + i]))
            await anyio.sleep(0.005)  # separate segments
        await anyio.sleep(0.05)
        got = b""
        lost_on_cancel = False
        for _ in range(_YIELD_EVERY + 4):
            with anyio.CancelScope() as scope:
                scope.cancel()
                got += await fast.receive(1)
            if scope.cancelled_caught:
                lost_on_cancel = True
                break
        rest = b""
        with anyio.move_on_after(0.2):
            while True:
                rest += await fast.receive(1)
        sent = bytes(65 + i for i in range(_YIELD_EVERY + 4))
        assert got + rest == sent, (lost_on_cancel, got, rest)


@pytest.mark.parametrize(
    "anyio_backend",
    ["asyncio", pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"), "trio"],
)
async def test_a_send_waiting_when_the_stream_is_closed_is_told_so() -> None:
    """anyio's contract (and its own SocketStream): a send interrupted by aclose()
    raises ClosedResourceError; it must not return as if the bytes were sent."""
    async with tcp_pair() as (client, server):
        fast = adopt_socket_stream(server)
        outcome: list[object] = []
        told = anyio.Event()

        async def writer() -> None:
            sends = 0
            try:
                for _ in range(10_000):
                    await fast.send(b"x" * 65536)
                    sends += 1
                    if fast._closed:
                        outcome.append(f"send #{sends} returned after aclose()")
                        return
            except anyio.ClosedResourceError as exc:
                outcome.append(exc)
            except Exception as exc:
                outcome.append(exc)
            finally:
                told.set()

        def send_waits() -> bool:
            if isinstance(fast, AsyncioSocketStream):
                return fast._write_waiter is not None
            assert isinstance(fast, TrioSocketStream)
            return fast._sending  # a send that does not wait never yields to this task

        async def peer_reads() -> None:  # so that aclose() flushes at once, not in 2 s
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while True:
                    await client.receive()

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            with anyio.fail_after(5):
                await wait_until(send_waits)  # the writer now waits for the peer to read
            tg.start_soon(peer_reads)  # runs once aclose() waits: its wake-up came first
            await fast.aclose()
            with anyio.fail_after(1):
                await told.wait()
        assert len(outcome) == 1 and isinstance(outcome[0], anyio.ClosedResourceError), outcome


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_a_send_cancelled_part_way_breaks_the_stream_for_later_sends() -> None:
    async with tcp_pair() as (_client, server):
        fast = adopt_socket_stream(server)
        with anyio.move_on_after(0.2) as scope:
            await fast.send(b"x" * 64 * 1024 * 1024)  # far more than the buffers take
        assert scope.cancelled_caught
        with pytest.raises(anyio.BrokenResourceError):
            await fast.send(b"next frame")  # it would land in the middle of the first


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_two_tasks_sending_at_once_is_refused_like_anyio_does() -> None:
    async with tcp_pair() as (_client, server):
        fast = adopt_socket_stream(server)
        async with anyio.create_task_group() as tg:
            tg.start_soon(fast.send, b"x" * 64 * 1024 * 1024)  # blocks: nobody reads
            await anyio.sleep(0.05)
            with pytest.raises(anyio.BusyResourceError):
                await fast.send(b"y")
            tg.start_soon(fast.receive)  # waits: the peer sends nothing
            await anyio.sleep(0.05)
            with pytest.raises(anyio.BusyResourceError):
                await fast.receive()
            tg.cancel_scope.cancel()


class CountingSocket(socket.socket):
    """A socket that counts its `recv` calls that found nothing to read."""

    empty = 0

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        try:
            return super().recv(bufsize, flags)
        except BlockingIOError:
            self.empty += 1
            raise


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_after_a_read_that_emptied_the_socket_the_next_receive_waits_first() -> None:
    """A peer that waits for each answer costs no recv that fails with EAGAIN
    per message; bytes that came while nobody read are still read at once,
    and after a read that filled what was asked for, the recv comes first."""
    left, right = socket.socketpair()
    sock = CountingSocket(fileno=left.detach())
    sock.setblocking(False)
    fast = TrioSocketStream(sock)

    async def receive_when_sent(data: bytes, max_bytes: int = 65536) -> bytes:
        got: list[bytes] = []

        async def reader() -> None:
            got.append(await fast.receive(max_bytes))

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await anyio.wait_all_tasks_blocked()  # the reader waits for bytes
            right.sendall(data)
        return got[0]

    with anyio.fail_after(5):
        right.sendall(b"one")
        assert await fast.receive() == b"one"  # shorter than asked: the socket is empty
        assert await receive_when_sent(b"two") == b"two"
        assert sock.empty == 0
        right.sendall(b"three")  # before the receive: its wait ends at once
        assert await fast.receive() == b"three"
        assert sock.empty == 0
        right.sendall(b"abcd")
        assert await fast.receive(2) == b"ab"  # all it asked for: there may be more
        assert await fast.receive(2) == b"cd"
        assert await receive_when_sent(b"z", 2) == b"z"
        assert sock.empty == 1  # the recv after "cd" found nothing, then it waited
    await fast.aclose()
    right.close()


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_a_socket_closed_under_the_stream_after_a_short_read_is_reported() -> None:
    left, right = socket.socketpair()
    left.setblocking(False)
    fast = TrioSocketStream(left)
    right.send(b"x")
    assert await fast.receive() == b"x"  # shorter than asked: the next receive waits first
    left.close()  # by its owner, not by aclose()
    with anyio.fail_after(1), pytest.raises(anyio.ClosedResourceError):
        await fast.receive()
    right.close()


def small_buffers(left: socket.socket, right: socket.socket) -> None:
    """Shrink the kernel's buffers between `left` (sending) and `right`."""
    left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    right.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_send_now_takes_what_the_socket_takes_and_send_sends_the_rest() -> None:
    left, right = socket.socketpair()
    small_buffers(left, right)
    left.setblocking(False)
    fast = TrioSocketStream(left)
    big = bytes(range(256)) * 4096  # 1 MiB: far more than the buffers take
    with anyio.fail_after(5):
        assert fast.send_now(b"small") == 5
        assert right.recv(10) == b"small"
        sent = fast.send_now(big)
        assert 0 < sent < len(big)
        assert fast.send_now(b"other") == 0  # the rest of `big` is due first

        def read_all() -> bytes:
            got = bytearray()
            while len(got) < len(big):
                got += right.recv(65536)
            return bytes(got)

        async with anyio.create_task_group() as tg:
            received: list[bytes] = []

            async def reader() -> None:
                received.append(await anyio.to_thread.run_sync(read_all))

            tg.start_soon(reader)
            await fast.send(big[sent:])
        assert received == [big]  # what send_now took, then the rest
        assert fast.send_now(b"next") == 4  # whole again
        assert right.recv(10) == b"next"
    await fast.aclose()
    right.close()


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_a_cancelled_send_of_what_send_now_left_breaks_the_stream() -> None:
    """The rest was due mid-item: even if none of it went out, what follows
    would land in the middle of that item."""
    left, right = socket.socketpair()
    small_buffers(left, right)
    left.setblocking(False)
    fast = TrioSocketStream(left)
    big = b"x" * 1024 * 1024
    sent = fast.send_now(big)
    assert 0 < sent < len(big)
    with anyio.move_on_after(0.1) as scope:
        await fast.send(big[sent:])  # nobody reads: nothing more goes out
    assert scope.cancelled_caught
    with anyio.fail_after(1), pytest.raises(anyio.BrokenResourceError):
        await fast.send(b"next frame")
    assert fast.send_now(b"next frame") == 0
    await fast.aclose()
    right.close()


# -- connect_tcp: anyio.connect_tcp without happy eyeballs for an IP address ------


@asynccontextmanager
async def echo_listener(host: str, ssl_context: ssl.SSLContext | None = None
                        ) -> AsyncIterator[int]:
    """A listener on `host` that echoes one chunk per connection; its port."""
    async def echo(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            wrapped: anyio.abc.ByteStream = stream
            if ssl_context is not None:
                with contextlib.suppress(Exception):
                    wrapped = await TLSStream.wrap(stream, server_side=True,
                                                   ssl_context=ssl_context)
            with contextlib.suppress(Exception):
                await wrapped.send(await wrapped.receive())
                await wrapped.receive()  # until the client is done

    async with await anyio.create_tcp_listener(local_host=host) as listener, \
            anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, echo)
        yield listener.extra(SocketAttribute.local_port)
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
async def test_connect_tcp_reaches_addresses_and_names(anyio_backend: str, host: str) -> None:
    listen = "127.0.0.1" if host == "localhost" else host
    try:
        listener_cm = echo_listener(listen)
        port = await listener_cm.__aenter__()
    except OSError:
        pytest.skip(f"no {listen} on this machine")
    try:
        with anyio.fail_after(5):
            stream = await connect_tcp(host, port)
            async with stream:
                assert stream.extra(SocketAttribute.remote_port) == port
                nodelay = stream.extra(SocketAttribute.raw_socket).getsockopt(
                    socket.IPPROTO_TCP, socket.TCP_NODELAY)
                assert nodelay
                await stream.send(b"ping")
                assert await stream.receive() == b"ping"
                expected = AsyncioSocketStream if anyio_backend == "asyncio" else TrioSocketStream
                assert type(adopt_socket_stream(stream)) is expected
    finally:
        await listener_cm.__aexit__(None, None, None)


async def test_connect_tcp_to_a_closed_port_raises_oserror() -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with anyio.fail_after(5), pytest.raises(OSError) as caught:
        await connect_tcp("127.0.0.1", port)
    assert caught.value.errno == errno.ECONNREFUSED


async def test_connect_tcp_checks_tls_against_the_ip_address() -> None:
    server_context, client_context = tls_contexts("127.0.0.1")
    async with echo_listener("127.0.0.1", server_context) as port:
        with anyio.fail_after(5):
            stream = await connect_tcp("127.0.0.1", port, ssl_context=client_context)
            assert isinstance(stream, TLSStream)
            await stream.send(b"secret")
            assert await stream.receive() == b"secret"
            await anyio.aclose_forcefully(stream)
    server_context, client_context = tls_contexts("10.0.0.1")  # not who answers
    async with echo_listener("127.0.0.1", server_context) as port:
        with anyio.fail_after(5), pytest.raises(ssl.SSLCertVerificationError):
            await connect_tcp("127.0.0.1", port, ssl_context=client_context)


# -- the server's accept loop (serve_listener) ---------------------------------------------


@EVERY_LOOP
async def test_serve_listener_hands_each_connection_over_on_our_stream(
    anyio_backend: object,
) -> None:
    """Bytes sent before the server accepted, and the EOF after them, arrive;
    a burst of connections at once is served whole."""
    expected = TrioSocketStream if anyio_backend == "trio" else AsyncioSocketStream
    received: dict[bytes, bytes] = {}
    done = anyio.Event()
    count = 150

    async def handler(accepted: anyio.abc.ByteStream | socket.socket) -> None:
        stream = await open_accepted(accepted)
        assert type(stream) is expected
        data = b""
        async with stream:
            while True:
                try:
                    data += await stream.receive()
                except anyio.EndOfStream:
                    break
            await stream.send(b"bye " + data)
        received[data] = data
        if len(received) == count:
            done.set()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve_listener, listener, handler, tg)
            clients = []
            for i in range(count):  # connected and written to before any is accepted
                sock = socket.create_connection(("127.0.0.1", port))
                sock.sendall(b"hello %d" % i)
                sock.shutdown(socket.SHUT_WR)
                clients.append(sock)
            await done.wait()
            for i, sock in enumerate(clients):
                answer = b""
                while chunk := sock.recv(100):
                    answer += chunk
                assert answer == b"bye hello %d" % i
                sock.close()
            tg.cancel_scope.cancel()
    await listener.aclose()
    assert len(received) == count


async def test_serve_listener_hands_over_what_a_listener_it_does_not_know_accepts() -> None:
    """A listener whose sockets it cannot reach (here a bare TCP listener, not
    in the `MultiListener` that `anyio.create_tcp_listener` makes) is served by
    the listener's own accept loop: each connection still runs in `tasks`, and
    gets the listener's stream, not a bare socket."""
    got: list[object] = []
    done = anyio.Event()

    async def handler(accepted: anyio.abc.ByteStream | socket.socket) -> None:
        got.append(accepted)
        stream = await open_accepted(accepted)
        async with stream:
            await stream.send(b"echo " + await stream.receive())
        done.set()

    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = tcp.extra(SocketAttribute.local_port)
    listener = tcp.listeners[0]
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks, anyio.create_task_group() as tg:
            tg.start_soon(serve_listener, listener, handler, tasks)
            async with await anyio.connect_tcp("127.0.0.1", port) as client:
                await client.send(b"hi")
                assert await client.receive() == b"echo hi"
            await done.wait()
            tg.cancel_scope.cancel()
    await listener.aclose()
    assert len(got) == 1 and isinstance(got[0], anyio.abc.SocketStream)
    assert type(got[0]) not in (AsyncioSocketStream, TrioSocketStream)  # anyio's own
