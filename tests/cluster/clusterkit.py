"""Helpers of the cluster tests: a scripted `ClusterHost` standing in for a
server, a pausable TCP proxy between a node and Redis, and small waits."""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
from anyio.abc import SocketStream, TaskGroup

from ocpp_rpc import ConnectionClosed, create_rpc_error
from ocpp_rpc.cluster import NotConnected, Owner, RedisCluster

_conn_ids = itertools.count(1)


class FakeHost:
    """A `ClusterHost` with scripted chargers. Methods a charger "answers":

    - ``echo``: ``{"params": params, "timeout": timeout}``
    - ``error``: raises the CALLERROR in params (``code``, ``message``, ``details``)
    - ``hang``: never answers (records when it starts and when it is cancelled)
    - ``sleep``: answers after ``params["delay"]`` seconds
    - ``expire``: waits out the timeout it was given, then raises TimeoutError
      (what a server does when the charger does not answer)
    - ``closed``: the connection ends: ConnectionClosed(1001, "going away")
    - ``boom``: a bug (RuntimeError)
    """

    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster
        cluster.attach(self)
        self.connected: dict[str, str] = {}
        self.calls: list[tuple[str, str, Any, float]] = []
        self.replaced_connections: list[tuple[str, str]] = []
        self.changed = anyio.Event()
        self.hanging = anyio.Event()
        self.withdrawn = anyio.Event()
        self.cut = anyio.Event()
        self.back = anyio.Event()
        self.unregister_results: list[bool] = []

    def _changed(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    async def connect(
        self, identity: str, protocol: str | None = "ocpp2.0.1"
    ) -> tuple[str, Owner | None]:
        connection_id = f"{self.cluster.node_id}/{next(_conn_ids)}"
        self.connected[identity] = connection_id
        previous = await self.cluster.register(identity, connection_id, protocol)
        return connection_id, previous

    async def disconnect(self, identity: str) -> bool:
        connection_id = self.connected.pop(identity)
        return await self.cluster.unregister(identity, connection_id)

    # -- ClusterHost ---------------------------------------------------------------

    async def deliver(self, identity: str, method: str, params: Any, timeout: float) -> Any:
        self.calls.append((identity, method, params, timeout))
        if identity not in self.connected:
            raise NotConnected(identity)
        if method == "echo":
            return {"params": params, "timeout": timeout}
        if method == "error":
            raise create_rpc_error(params["code"], params["message"], params["details"])
        if method == "hang":
            self.hanging.set()
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                self.withdrawn.set()
                raise
        if method == "sleep":
            await anyio.sleep(params["delay"])
            return "slept"
        if method == "expire":
            await anyio.sleep(timeout)
            raise TimeoutError
        if method == "closed":
            raise ConnectionClosed(1001, "going away")
        if method == "boom":
            raise RuntimeError("a bug")
        raise create_rpc_error("NotImplemented", f"no {method}")

    async def replaced(self, identity: str, connection_id: str) -> None:
        self.replaced_connections.append((identity, connection_id))
        if self.connected.get(identity) == connection_id:
            del self.connected[identity]
            self.unregister_results.append(await self.cluster.unregister(identity, connection_id))
        self._changed()

    async def cut_off(self) -> None:
        self.cut.set()
        for identity in list(self.connected):  # close them all with 1001
            await self.disconnect(identity)

    async def restored(self) -> None:
        self.back.set()


async def wait_for(
    predicate: Callable[[], Any], *, timeout: float = 5.0, interval: float = 0.01
) -> float:
    """Poll `predicate` (sync) until true; -> seconds it took."""
    start = anyio.current_time()
    with anyio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(interval)
    return anyio.current_time() - start


async def wait_for_async(
    predicate: Callable[[], Any], *, timeout: float = 5.0, interval: float = 0.01
) -> float:
    """Poll an async `predicate` (errors count as false) until true; -> seconds."""
    start = anyio.current_time()
    with anyio.fail_after(timeout):
        while True:
            try:
                if await predicate():
                    break
            except (OSError, LookupError):
                pass
            await anyio.sleep(interval)
    return anyio.current_time() - start


@asynccontextmanager
async def nodes(
    url: str, prefix: str, count: int, **options: Any
) -> AsyncIterator[list[RedisCluster]]:
    """`count` running nodes."""
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(RedisCluster(url, prefix=prefix, **options))
            for _ in range(count)
        ]


class Proxy:
    """A TCP proxy to Redis. `pause()` holds every byte in both directions
    (new connections wait too) until `resume()`; `cut()` drops every
    connection and refuses new ones, as if the node's host vanished."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._open = anyio.Event()
        self._open.set()
        self._streams: set[SocketStream] = set()
        self._serving = anyio.CancelScope()
        self._tg: TaskGroup | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    async def __aenter__(self) -> Proxy:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()

        async def serve() -> None:
            with self._serving:
                async with listener:
                    await listener.serve(self._handle, task_group=self._tg)

        self._tg.start_soon(serve)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)

    def pause(self) -> None:
        if self._open.is_set():
            self._open = anyio.Event()

    def resume(self) -> None:
        self._open.set()

    async def drop(self) -> None:
        """Close every connection (a network blip) and hold new ones until
        `resume`."""
        self.pause()
        for stream in list(self._streams):
            await stream.aclose()

    async def cut(self) -> None:
        self._serving.cancel()
        self.resume()
        for stream in list(self._streams):
            await stream.aclose()

    async def _handle(self, client: SocketStream) -> None:
        async with client:
            await self._open.wait()
            try:
                upstream = await anyio.connect_tcp("127.0.0.1", self.upstream_port)
            except OSError:
                return
            self._streams |= {client, upstream}
            try:
                async with upstream, anyio.create_task_group() as tg:
                    tg.start_soon(self._pump, client, upstream, tg)
                    tg.start_soon(self._pump, upstream, client, tg)
            finally:
                self._streams -= {client, upstream}

    async def _pump(self, source: SocketStream, sink: SocketStream, tg: TaskGroup) -> None:
        try:
            while True:
                data = await source.receive()
                while not self._open.is_set():
                    await self._open.wait()
                await sink.send(data)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        tg.cancel_scope.cancel()


def close_to(value: float, target: float, slack: float) -> bool:
    return math.isclose(value, target, abs_tol=slack)
