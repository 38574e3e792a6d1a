"""Shared helpers of the tests: a running server and clients for it, one of our
endpoints facing the raw peer of `rawpeer`, handler bookkeeping, task and
memory gauges, TLS contexts."""

from __future__ import annotations

import json
import os
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import SocketAttribute
from hypothesis import strategies as st
from rawpeer import RawPeer, raw_client, raw_server

from ocpp_rpc import Call, Handshake, RPCClient, RPCServer, ServerClient

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

ENDS = ["server", "client"]  # which of our endpoints faces the raw peer

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """This process's resident set size, from /proc/self/statm."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE_SIZE


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions in `error`, however deeply its groups nest them."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def task_count() -> int:
    """Tasks running in the current event loop (ours and the test's)."""
    return len(anyio.get_running_tasks())


async def free_port() -> int:
    """A local TCP port nobody listens on."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = int(listener.extra(SocketAttribute.local_port))
    await listener.aclose()
    return port


async def wait_until(predicate: Callable[[], bool], interval: float = 0.005) -> None:
    """Poll `predicate` (state of many endpoints at once, which no one event tells)."""
    while not predicate():  # noqa: ASYNC110
        await anyio.sleep(interval)


@asynccontextmanager
async def serving(
    ssl_context: ssl.SSLContext | None = None, *, path: str = "", **options: Any
) -> AsyncIterator[tuple[RPCServer, str]]:
    """A running RPCServer (keep-alive off unless asked) on 127.0.0.1 and its
    URL: ws://, or wss:// with `ssl_context`, ending in `path`."""
    options.setdefault("ping_interval", None)
    async with RPCServer(**options) as server:
        listening = await server.listen(ssl_context=ssl_context)
        scheme = "ws" if ssl_context is None else "wss"
        yield server, f"{scheme}://{listening.host}:{listening.port}{path}"


@asynccontextmanager
async def recording(**options: Any) -> AsyncIterator[tuple[str, list[Handshake]]]:
    """`serving`, with an auth hook that accepts every upgrade: the server's
    URL and the Handshakes the hook saw."""
    async with serving(**options) as (server, url):
        handshakes: list[Handshake] = []

        @server.auth
        async def auth(handshake: Handshake) -> None:
            handshakes.append(handshake)

        yield url, handshakes


def make_client(url: str, identity: str = "cp1", **options: Any) -> RPCClient:
    """An RPCClient of `url`: keep-alive off and no reconnecting unless asked."""
    options.setdefault("ping_interval", None)
    options.setdefault("reconnect", False)
    return RPCClient(url, identity, **options)


def offered(protocol: str | None) -> list[str]:
    return [protocol] if protocol else []


@dataclass
class Pair:
    """One of our endpoints (`ours`: an RPCClient, or an RPCServer's ServerClient)
    and the raw peer facing it."""

    ours: RPCClient
    peer: RawPeer


@asynccontextmanager
async def served(protocol: str | None = "ocpp2.0.1", **options: Any) -> AsyncIterator[Pair]:
    """Our RPCServer; its ServerClient faces a raw client."""
    options.setdefault("ping_interval", None)
    async with RPCServer(protocols=offered(protocol), **options) as server:
        accepted: list[ServerClient] = []
        ready = anyio.Event()

        @server.on_client
        async def on_client(client: ServerClient) -> None:
            accepted.append(client)
            ready.set()

        listening = await server.listen()
        url = f"ws://{listening.host}:{listening.port}/ocpp/CP1"
        async with raw_client(url, offered(protocol)) as peer:
            assert peer.status == 101
            with anyio.fail_after(5):
                await ready.wait()
            try:
                yield Pair(accepted[0], peer)
            finally:
                await _part(peer)


@asynccontextmanager
async def connected(protocol: str | None = "ocpp2.0.1", **options: Any) -> AsyncIterator[Pair]:
    """Our RPCClient (no reconnects) connected to a raw server."""
    options.setdefault("ping_interval", None)
    options.setdefault("reconnect", False)
    async with raw_server(subprotocol=protocol) as srv:
        client = RPCClient(srv.url, "CP1", protocols=offered(protocol), **options)
        async with client:
            peer = await srv.accept()
            try:
                yield Pair(client, peer)
            finally:
                await _part(peer)


def facing(end: str, protocol: str | None = "ocpp2.0.1", **options: Any) -> Any:
    """`served` or `connected`, so that a test runs against both of our ends."""
    return served(protocol, **options) if end == "server" else connected(protocol, **options)


async def _part(peer: RawPeer) -> None:
    """Leaving the block: a peer still connected is dropped, so that our side's
    exit never waits for a close handshake the test did not script."""
    await peer.drop()


class Accepted:
    """The server's accepted clients, in order (from its `client` event)."""

    def __init__(self, server: RPCServer) -> None:
        self.clients: list[ServerClient] = []
        self._changed = anyio.Event()
        server.on("client", self._on_client)

    def _on_client(self, client: ServerClient) -> None:
        self.clients.append(client)
        self._changed.set()
        self._changed = anyio.Event()

    async def nth(self, n: int) -> ServerClient:
        """The `n`-th accepted client (from 1), once there is one."""
        while len(self.clients) < n:
            await self._changed.wait()
        return self.clients[n - 1]


class Outcome:
    """The result or exception of an awaitable run in a task."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    async def run(self, func: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> None:
        try:
            self.value = await func(*args, **kwargs)
        except Exception as exc:
            self.error = exc
        finally:
            self.done.set()


class Blocker:
    """A handler that blocks until released (or cancelled), counting the
    handlers running at once."""

    def __init__(self, result: Any = None) -> None:
        self.result = result
        self.started = anyio.Event()
        self.release = anyio.Event()
        self.cancelled = anyio.Event()
        self.running = 0
        self.most_running = 0
        self.calls: list[Call] = []

    async def __call__(self, call: Call) -> Any:
        self.calls.append(call)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        self.started.set()
        try:
            await self.release.wait()
        except anyio.get_cancelled_exc_class():
            self.cancelled.set()
            raise
        finally:
            self.running -= 1
        return self.result


def echo(call: Call) -> Any:
    return call.params


def tls_contexts(host: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) TLS contexts: a fresh trustme CA, a certificate for `host`."""
    import trustme

    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(host).configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


# -- hostile messages, and the wire table's verdict on them ------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=4),
    max_leaves=8,
)
TEMPLATES: list[list[Any]] = [
    [2, "c1", "Echo", {"a": 1}],
    [2, "c2", "Nope", {}],
    [3, "r1", {"x": 1}],
    [4, "e1", "GenericError", "oops", {}],
    [5, "e2", "GenericError", "oops", {}],
    [6, "s1", "Echo", {}],
]


@st.composite
def mutated_frames(draw: st.DrawFn) -> str:
    """A valid OCPP-J frame, changed in one way."""
    frame = list(draw(st.sampled_from(TEMPLATES)))
    how = draw(st.sampled_from(["none", "drop", "insert", "replace", "truncate", "type"]))
    if how == "drop":
        del frame[draw(st.integers(0, len(frame) - 1))]
    elif how == "insert":
        frame.insert(draw(st.integers(0, len(frame))), draw(json_values))
    elif how == "replace":
        frame[draw(st.integers(0, len(frame) - 1))] = draw(json_values)
    elif how == "type":
        frame[0] = draw(st.sampled_from([0, 1, 2.0, 7, -1, 2**64, "2", None]))
    text = json.dumps(frame)
    if how == "truncate":
        text = text[: draw(st.integers(0, len(text) - 1))]
    return text


#: WebSocket messages a hostile peer sends: bytes, text, JSON, mutated OCPP-J frames.
hostile_messages: st.SearchStrategy[str | bytes] = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=40),
    json_values.map(json.dumps),
    mutated_frames(),
    mutated_frames(),
)


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def is_good(message: str | bytes, protocol: str | None) -> bool | None:
    """The wire table's verdict, modelled without ocpp_rpc: True for a good
    message (a well-formed CALL, or SEND from 2.1 on), None for an empty one,
    False for a bad one (with no call of ours pending, every response is bad)."""
    if not message:
        return None
    try:
        text = message.decode() if isinstance(message, bytes) else message
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return False
    if type(value) is not list or not value:
        return False
    kind = value[0]
    if type(kind) is float and kind.is_integer():
        kind = int(kind)
    rpc21 = protocol in ("ocpp2.1", None)
    if type(kind) is not int or not (kind == 2 or (kind == 6 and rpc21)):
        return False
    return len(value) == 4 and type(value[1]) is str and type(value[2]) is str
