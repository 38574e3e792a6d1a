"""The private names of anyio and asyncio that `_transport/_internals.py`
relies on still hold.  Each failure names the dependency, its version and what
changed: the library then quietly falls back to anyio's own (slower) streams,
so without this test nobody would notice."""

from __future__ import annotations

import platform
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

import anyio
import anyio.abc
import pytest
from anyio.abc import SocketAttribute

from ocpp_rpc._transport import _internals
from ocpp_rpc._transport.streams import AsyncioSocketStream, TrioSocketStream, adopt_socket_stream

pytestmark = pytest.mark.anyio

ANYIO = f"anyio {version('anyio')}"
PYTHON = f"Python {platform.python_version()}"
SEE = "update ocpp_rpc/_transport/_internals.py"


@asynccontextmanager
async def tcp_pair() -> AsyncIterator[tuple[anyio.abc.SocketStream, anyio.abc.SocketStream]]:
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as multi:
        listener = multi.listeners[0]
        assert isinstance(listener, anyio.abc.SocketListener)
        client = await anyio.connect_tcp("127.0.0.1", listener.extra(SocketAttribute.local_port))
        server = await listener.accept()
        async with client, server:
            yield client, server


async def test_anyio_socket_streams_are_where_and_what_we_expect(anyio_backend: str) -> None:
    async with tcp_pair() as (client, _):
        cls = type(client)
        module = _internals.ANYIO_ASYNCIO if anyio_backend == "asyncio" else _internals.ANYIO_TRIO
        assert (cls.__module__, cls.__name__) == (module, "SocketStream"), (
            f"{ANYIO}: its {anyio_backend} socket stream is {cls.__module__}.{cls.__name__},"
            f" no longer {module}.SocketStream; {SEE}"
        )
        assert getattr(client, "_closed", None) is False, (
            f"{ANYIO}: {cls.__module__}.SocketStream has no `_closed` flag any more; {SEE}"
        )
        if anyio_backend == "asyncio":
            protocol = getattr(client, "_protocol", None)
            missing = [
                name for name, present in [
                    ("SocketStream._transport", hasattr(client, "_transport")),
                    ("SocketStream._protocol", protocol is not None),
                    ("StreamProtocol.read_queue", hasattr(protocol, "read_queue")),
                    ("StreamProtocol.exception", hasattr(protocol, "exception")),
                    ("StreamProtocol.is_at_eof", hasattr(protocol, "is_at_eof")),
                ] if not present
            ]
            assert not missing, f"{ANYIO}: the asyncio backend lost {missing}; {SEE}"
            assert _internals.adoptable_asyncio_stream(client) is not None, (
                f"{ANYIO}: the asyncio SocketStream's internals changed shape; {SEE}"
            )
            assert type(adopt_socket_stream(client)) is AsyncioSocketStream
        else:
            assert _internals.is_open_trio_stream(client)
            assert type(adopt_socket_stream(client)) is TrioSocketStream


async def test_anyio_socket_streams_still_take_their_socket_from_raw_socket() -> None:
    async with tcp_pair() as (client, _):
        sock = client.extra(SocketAttribute.raw_socket)
        ours = adopt_socket_stream(client)
        assert isinstance(ours, (AsyncioSocketStream, TrioSocketStream))
        try:
            extra = (ours.extra(SocketAttribute.raw_socket),
                     ours.extra(SocketAttribute.remote_port))
        except Exception as exc:
            raise AssertionError(
                f"{ANYIO}: anyio.abc.SocketStream no longer gives its socket attributes from"
                f" the property `{_internals.RAW_SOCKET}` our streams define ({exc!r}); {SEE}"
            ) from exc
        assert extra == (sock, client.extra(SocketAttribute.remote_port))


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_selector_transports_still_have_a_read_size() -> None:
    async with tcp_pair() as (client, _):
        transport = getattr(client, "_transport", None)
        if type(transport).__module__ != "asyncio.selector_events":
            pytest.skip(f"no selector transport on {sys.platform}")
        assert isinstance(getattr(transport, "max_size", None), int), (
            f"{PYTHON}: asyncio's selector transport no longer reads `max_size` bytes at a"
            f" time; {SEE}"
        )


@pytest.mark.parametrize(
    "anyio_backend", ["asyncio", pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")]
)
async def test_asyncio_still_lets_a_callback_run_as_a_task() -> None:
    """`as_task` (the inline path's handlers run as the reader task) needs
    asyncio.tasks._enter_task/_leave_task; without them the inline path is
    off and every message goes through the reader task."""
    import asyncio

    task = asyncio.current_task()
    assert task is not None
    seen: list[object] = []
    done = anyio.Event()

    def callback() -> None:
        ran = _internals.as_task(task, lambda _: seen.append(asyncio.current_task()) or True, None)
        seen.append(ran)
        seen.append(asyncio.current_task())
        done.set()

    asyncio.get_running_loop().call_soon(callback)
    await done.wait()
    assert seen == [task, True, None], (
        f"{PYTHON}: asyncio.tasks._enter_task/_leave_task changed; "
        "the inline path (docs/architecture.md) is off"
    )
