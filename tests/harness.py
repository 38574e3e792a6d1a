"""Shared helpers of the fault, stateful and fuzz tests: one of our endpoints
facing the raw peer of `rawpeer`, handler bookkeeping, task and memory gauges."""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import SocketAttribute
from rawpeer import RawPeer, raw_client, raw_server

from ocpp_rpc import Call, RPCClient, RPCServer, ServerClient

ENDS = ["server", "client"]  # which of our endpoints faces the raw peer

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """This process's resident set size, from /proc/self/statm."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE_SIZE


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
