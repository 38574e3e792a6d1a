"""`RedisCluster`: one node of a cluster (a server's, or a connection-less API
worker), and its event stream."""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._errors import ClusterUnavailable
from ._presence import Owner, Presence, PresenceHooks
from ._protocol import (
    Call,
    Cancel,
    ClusterEvent,
    Layout,
    Replace,
    Reply,
    check_node_id,
    decode,
    default_node_id,
)
from ._redis import RedisLink, redact
from ._routing import Caller, ClusterHost, Deliverer, run_hook

__all__ = ("ClusterEvent", "ClusterEvents", "RedisCluster")

logger = logging.getLogger("ocpp_rpc.cluster")

#: Events buffered per `events()` iterator before new ones are dropped (logged).
EVENT_BUFFER = 10_000


class ClusterEvents:
    """The live ``connected`` / ``disconnected`` events of the whole cluster,
    from the moment `RedisCluster.events` was called (nothing is replayed).

    An async iterator; close it with `aclose` (``contextlib.aclosing``) or use
    it as an async context manager. It ends when the cluster closes. Events
    published while this node's subscription is down are missed; an iterator
    that falls `EVENT_BUFFER` events behind drops new ones (logged).
    """

    def __init__(
        self,
        receive: MemoryObjectReceiveStream[ClusterEvent],
        on_close: Callable[[], None],
    ) -> None:
        self._receive = receive
        self._on_close = on_close

    def __aiter__(self) -> ClusterEvents:
        return self

    async def __anext__(self) -> ClusterEvent:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._receive.close()
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self._receive.close()
        self._on_close()

    async def __aenter__(self) -> ClusterEvents:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class RedisCluster:
    """A node of an `ocpp_rpc` cluster on Redis (or Valkey).

    ``async with RedisCluster(url) as cluster:`` joins (connects, takes this
    node's lease, subscribes to its inbox, and keeps renewing the lease in the
    background); leaving the block leaves cleanly (the lease and anything
    still registered go at once). Raises `ClusterUnavailable` on entry if
    Redis cannot be reached.

    On its own it is a node without connections (an HTTP API worker, a
    scheduler): `call`, `locate` and `events` reach chargers connected to
    any node. A server becomes a node by `attach`-ing itself (see
    `ClusterHost`) and calling `register` / `unregister` for its
    connections.

    Args:
        url: ``redis://[user:password@]host:port/db`` or ``rediss://...`` for
            TLS (verified against the system CAs unless the URL says
            otherwise, e.g. ``?ssl_ca_certs=/path/ca.pem``,
            ``ssl_cert_reqs=none``); a percent-encoded password works.
        node_id: unique per process (``A-Z a-z 0-9 _ . -``, at most 128);
            default ``<host>-<pid>-<random>``. Joining waits up to one lease
            while a previous process with the same id is still alive.
        prefix: every key and channel starts with ``prefix:`` so several
            CSMS share one Redis.
        lease: seconds a node counts as alive without renewing (renewed every
            ``lease / 3``). Also the time after which a node cut off from
            Redis gives up its chargers.
        ssl_context: for ``rediss://``: the TLS context to use (e.g. with a
            client certificate) instead of one built from the URL.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        node_id: str | None = None,
        prefix: str = "ocpp",
        lease: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not (isinstance(lease, (int, float)) and math.isfinite(lease) and lease > 0):
            raise ValueError(f"lease must be a positive number of seconds, not {lease!r}")
        self.node_id: str = default_node_id() if node_id is None else check_node_id(node_id)
        self.prefix: str = prefix
        self.lease: float = float(lease)
        self._layout = Layout(prefix)
        io_timeout = min(max(self.lease / 3, 0.05), 5.0)
        self._link = RedisLink(
            url,
            layout=self._layout,
            io_timeout=io_timeout,
            client_name=f"ocpp-rpc:{self.node_id}",
            ssl_context=ssl_context,
        )
        self._presence = Presence(
            self._link,
            self.node_id,
            self.lease,
            PresenceHooks(cut_off=self._on_cut_off, restored=self._on_restored, lost=self._on_lost),
        )
        self._caller = Caller(self.node_id, self._link, self._layout, self.lease, self._spawn)
        self._deliverer = Deliverer(self.node_id, self._link, self._layout, self._spawn)
        self._listeners: set[MemoryObjectSendStream[ClusterEvent]] = set()
        self._dropping = False
        self._state = "new"
        self._subscribed = False
        self._tg: TaskGroup | None = None
        self._stack: AsyncExitStack | None = None

    def __repr__(self) -> str:
        return (
            f"<RedisCluster {self.node_id} {redact(self._link.url)} prefix={self.prefix!r} "
            f"{self._state}>"
        )

    # -- lifetime ------------------------------------------------------------------

    async def __aenter__(self) -> RedisCluster:
        if self._state != "new":
            raise RuntimeError("a RedisCluster can be entered only once")
        self._state = "joining"
        stack = AsyncExitStack()
        try:
            await stack.enter_async_context(self._link)
            await self._presence.join()
            stack.push_async_callback(self._leave)
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            await self._tg.start(
                self._link.subscribe,
                [self._layout.inbox(self.node_id), self._layout.events],
                self._on_message,
                self._on_subscription,
                self.lease / 3,
            )
            self._tg.start_soon(self._presence.renew_forever)
            self._tg.start_soon(self._presence.watch_forever)
        except BaseException:
            self._state = "closed"
            if self._tg is not None:
                self._tg.cancel_scope.cancel()
            await stack.aclose()  # (its scopes were entered outside any new one)
            raise
        self._stack = stack
        self._state = "running"
        logger.info("node %s joined the cluster at %s", self.node_id, redact(self._link.url))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._state = "closing"
        self._caller.fail_all(ClusterUnavailable(f"node {self.node_id} left the cluster"))
        for send in self._listeners:
            send.close()
        self._listeners.clear()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        stack, self._stack = self._stack, None
        try:
            if stack is not None:
                return await stack.__aexit__(exc_type, exc, tb)
            return None
        finally:
            self._state = "closed"
            self._tg = None

    async def _leave(self) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._link.io_timeout * 2):
            try:
                await self._presence.leave()
            except ClusterUnavailable as exc:
                logger.warning("node %s could not leave cleanly: %s", self.node_id, exc)

    def _spawn(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        if self._tg is not None and self._state in ("joining", "running"):
            self._tg.start_soon(func, *args)

    def _check_running(self) -> None:
        if self._state != "running":
            raise RuntimeError(f"the RedisCluster is {self._state}: use it inside `async with`")

    # -- what any node can do ------------------------------------------------------

    async def call(
        self, identity: str, method: str, params: Any = None, *, timeout: float | None = 60.0
    ) -> Any:
        """Call the charger connected as `identity` to any node and return its
        result (`params` None sends ``{}``; `timeout` None means the default,
        60 s, as it does for `server.call`).

        Raises:
            NotConnected: at once, when `identity` is connected nowhere (or to
                a node whose lease lapsed).
            RPCError: the charger's CALLERROR (the subclass for its code;
                message and details intact).
            TimeoutError: no answer within `timeout` seconds (the outcome is
                unknown). The node holding the charger gets what is left of
                the deadline; the caller never waits longer.
            ConnectionClosed: the charger's connection ended before it
                answered (code 1006 if the node holding it was lost).
            ClusterUnavailable: Redis cannot be reached, or this node is not
                subscribed to it right now.

        The call is delivered at most once: never retried once a node may
        have received it. Cancelling the caller withdraws the call on the
        node holding the charger.
        """
        self._check_running()
        if not self._subscribed:
            raise ClusterUnavailable(f"node {self.node_id} is not subscribed to Redis right now")
        return await self._caller.call(
            identity, method, {} if params is None else params, 60.0 if timeout is None else timeout
        )

    async def locate(self, identity: str) -> str | None:
        """The id of the node holding `identity`, or `None` when it is
        connected nowhere (a node whose lease lapsed holds nothing)."""
        self._check_running()
        found = await self._link.locate(identity)
        return None if found is None else found[0]

    def events(self) -> ClusterEvents:
        """Live ``connected`` / ``disconnected`` events from every node, from
        now on (see `ClusterEvents`)::

            async with cluster.events() as events:
                async for event in events:
                    print(event.type, event.identity, event.node_id)
        """
        self._check_running()
        send, receive = anyio.create_memory_object_stream[ClusterEvent](EVENT_BUFFER)
        self._listeners.add(send)

        def close() -> None:
            self._listeners.discard(send)
            send.close()

        return ClusterEvents(receive, close)

    # -- what a server node does ------------------------------------------------------

    def attach(self, host: ClusterHost) -> None:
        """Make `host` (the server) receive calls routed to this node, close
        requests for connections another node took over, and the cut-off /
        restored notifications. Attach before registering anything."""
        if self._deliverer.host is not None and self._deliverer.host is not host:
            raise RuntimeError("this RedisCluster already serves another host")
        self._deliverer.host = host

    async def register(
        self, identity: str, connection_id: str, protocol: str | None = None
    ) -> Owner | None:
        """Register connection `connection_id` (unique within this node) as
        the one live connection of `identity` in the cluster. Atomic.

        Returns the previous live owner as `Owner(node_id, connection_id)`,
        or `None`. If it was another node, that node has been told to close
        it (`ClusterHost.replaced`); if it was this node, closing the old
        connection is up to the caller. Of two nodes registering one identity
        at the same moment, exactly one stays registered and the other is
        told to close its connection.

        Raises `ClusterUnavailable` if Redis cannot be reached (refuse the
        connection then, e.g. close it with 1013 "try again later"); the
        node cleans up whatever may have reached Redis.
        """
        self._check_running()
        return await self._presence.register(identity, connection_id, protocol or "")

    async def unregister(self, identity: str, connection_id: str) -> bool:
        """Remove the registration of `identity` if it is still
        `connection_id` on this node (compare-and-delete: a newer registration
        is never removed). Returns True if it was removed; never raises for
        Redis failures (the node removes it later, once Redis is back)."""
        if self._state not in ("running", "closing"):
            return False
        return await self._presence.unregister(identity, connection_id)

    @property
    def cut_off(self) -> bool:
        """True while this node has been unable to renew its lease for longer
        than `lease` (its chargers count as connected nowhere)."""
        return self._presence.cut_off

    # -- internals ------------------------------------------------------------------

    def _on_subscription(self, subscribed: bool) -> None:
        was, self._subscribed = self._subscribed, subscribed
        if was and not subscribed:
            self._caller.subscription_lost()
        if subscribed and not was and self._state == "running":
            # Messages may have been missed (a "replace"), or Redis restarted
            # (our lease and registrations are gone): check everything.
            self._presence.nudge()
            self._spawn(self._presence.resync)

    def _on_message(self, channel: str, data: str) -> None:
        try:
            if channel == self._layout.events:
                if self._listeners:
                    event = decode(data)
                    if isinstance(event, ClusterEvent):
                        self._publish_event(event)
                return
            message = decode(data)
            if isinstance(message, Call):
                self._deliverer.on_call(message)
            elif isinstance(message, Reply):
                self._caller.on_reply(message)
            elif isinstance(message, Cancel):
                self._deliverer.on_cancel(message)
            elif isinstance(message, Replace):
                self._on_lost(message.identity, message.connection_id)
        except Exception:
            logger.exception("handling a cluster message failed: %.200r", data)

    def _publish_event(self, event: ClusterEvent) -> None:
        for send in list(self._listeners):
            try:
                send.send_nowait(event)
            except anyio.WouldBlock:
                if not self._dropping:
                    logger.warning("an events() iterator is %d events behind: dropping",
                                   EVENT_BUFFER)
                    self._dropping = True
                continue
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._listeners.discard(send)
                continue
            self._dropping = False

    def _on_lost(self, identity: str, connection_id: str) -> None:
        self._presence.forget(identity, connection_id)
        host = self._deliverer.host
        if host is not None:
            run_hook(self._spawn, "replaced", host.replaced, identity, connection_id)

    def _on_cut_off(self) -> None:
        host = self._deliverer.host
        if host is not None:
            run_hook(self._spawn, "cut_off", host.cut_off)

    def _on_restored(self) -> None:
        host = self._deliverer.host
        if host is not None:
            run_hook(self._spawn, "restored", host.restored)
