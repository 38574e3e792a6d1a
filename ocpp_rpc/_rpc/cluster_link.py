"""What an `RPCServer` does as a node of a cluster (``RPCServer(cluster=...)``).

The server knows the cluster only through `ClusterNode` (what
`ocpp_rpc.cluster.RedisCluster` offers a server). `ClusterLink` joins it for
the server's lifetime (``async with``), registers each accepted client
under its identity before ``on_client`` runs (`admit`), unregisters it with
a compare-and-delete when it ends, and answers the cluster as its host:
calls routed here, "replaced" closes, and the cut-off that hands its
chargers to other nodes.

Two rules keep exactly one live connection per identity:

- Registrations of one identity on this node run one at a time, in the
  order the connections arrived, so that Redis and the server's `clients`
  agree on which one is the newest.
- A close requested while a client is still being registered (it was
  replaced by another node, or the node was cut off) is not lost: `admit`
  returns it, and the server closes the connection instead of serving it.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, MutableMapping
from typing import Any, Generic, Protocol, TypeVar

import anyio

from ..errors import NotConnected
from .client import RPCClient

logger = logging.getLogger("ocpp_rpc.cluster")

#: How a client refused by the cluster is closed: (code, reason).
Refusal = tuple[int, str]

_REPLACED: Refusal = (1000, "replaced")
_CUT_OFF: Refusal = (1001, "cut off from the cluster")
_UNAVAILABLE: Refusal = (1013, "cluster unavailable")


class ClusterNode(Protocol):
    """What a server needs of a cluster (`ocpp_rpc.cluster.RedisCluster`)."""

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc_info: Any) -> Any: ...

    def attach(self, host: Any) -> None: ...

    async def register(
        self, identity: str, connection_id: str, protocol: str | None = None
    ) -> Any: ...

    async def unregister(self, identity: str, connection_id: str) -> bool: ...

    async def call(
        self, identity: str, method: str, params: Any = None, *, timeout: float | None = 60.0
    ) -> Any: ...


class _Turn:
    """Registrations of one identity on this node, one at a time (FIFO)."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = anyio.Lock()
        self.users = 0


#: The server's kind of client.
C = TypeVar("C", bound=RPCClient)


class ClusterLink(Generic[C]):
    """The server's side of its cluster node: one per running server.

    ``async with link:`` attaches the server and joins the cluster
    (`ClusterUnavailable`, an OSError, if Redis cannot be reached); leaving
    the block leaves it.
    """

    def __init__(
        self,
        cluster: ClusterNode,
        clients: MutableMapping[str, C],
        close_all: Callable[[int, str], Any],
    ) -> None:
        self.cluster = cluster
        self._clients = clients  # the server's identity -> served client (`replaced` removes one)
        self._close_all = close_all
        # Connection ids are unique within this node (the cluster adds the node id).
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid():x}-"
        self._connection_ids: dict[RPCClient, str] = {}
        self._by_connection_id: dict[str, RPCClient] = {}
        #: Clients being registered -> the close requested meanwhile (or None).
        self._admitting: dict[RPCClient, Refusal | None] = {}
        self._turns: dict[str, _Turn] = {}

    async def __aenter__(self) -> ClusterLink[C]:
        self.cluster.attach(self)
        await self.cluster.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await self.cluster.__aexit__(*exc_info)

    async def admit(self, client: RPCClient) -> Refusal | None:
        """Register `client` as its identity's one live connection in the
        cluster (the older one, on any node, is closed "replaced"). -> None
        to serve it, else how to close it instead: Redis unreachable (1013,
        so that it tries again, maybe on another node), replaced by another
        node meanwhile, or this node cut off."""
        identity = client.identity
        turn = self._turns.get(identity)
        if turn is None:
            turn = self._turns[identity] = _Turn()
        turn.users += 1
        try:
            async with turn.lock:
                return await self._register(client)
        finally:
            turn.users -= 1
            if not turn.users:
                del self._turns[identity]

    async def _register(self, client: RPCClient) -> Refusal | None:
        connection_id = f"{self._prefix}{next(self._ids)}"
        self._connection_ids[client] = connection_id
        self._by_connection_id[connection_id] = client
        self._admitting[client] = None
        registered = False
        try:
            await self.cluster.register(client.identity, connection_id, client.protocol)
            registered = True
        except OSError as exc:  # ClusterUnavailable
            logger.warning("cannot register %r in the cluster: %s", client.identity, exc)
            return _UNAVAILABLE
        finally:
            refusal = self._admitting.pop(client, None)
            if not registered:
                del self._connection_ids[client], self._by_connection_id[connection_id]
        return refusal

    async def unregister(self, client: RPCClient) -> None:
        """Remove `client`'s registration unless a newer one replaced it."""
        connection_id = self._connection_ids.pop(client, None)
        if connection_id is not None:
            del self._by_connection_id[connection_id]
            with anyio.CancelScope(shield=True):
                await self.cluster.unregister(client.identity, connection_id)

    async def call(self, identity: str, method: str, params: Any, timeout: float) -> Any:
        """A call by identity to a charger that is not connected here."""
        return await self.cluster.call(identity, method, params, timeout=timeout)

    # -- the cluster's host interface (ocpp_rpc.cluster.ClusterHost) -----------------

    async def deliver(self, identity: str, method: str, params: Any, timeout: float) -> Any:
        client = self._clients.get(identity)
        turn = self._turns.get(identity) if client is None else None
        if turn is not None:
            # Being admitted here: Redis routes to it from the moment it is
            # registered, before the server serves it (which it does as the
            # admission ends, before anything else runs).
            async with turn.lock:
                pass
            client = self._clients.get(identity)
        if client is None:
            raise NotConnected(identity)
        return await client.call(method, params, timeout=timeout)

    async def replaced(self, identity: str, connection_id: str) -> None:
        client = self._by_connection_id.get(connection_id)
        if client is None or client.identity != identity:
            return  # closed already
        logger.info("%r connected to another node: closing it here", identity)
        if client in self._admitting:  # not served yet: admit() refuses it
            self._admitting[client] = _REPLACED
            return
        # Out of `clients` at once, as a single server does with the older of
        # two connections: its close may take the whole close timeout (a
        # half-open socket), and calls by identity meanwhile go to the newer one.
        if identity in self._clients and self._clients[identity] is client:
            del self._clients[identity]
        await client.close(code=_REPLACED[0], reason=_REPLACED[1])

    async def cut_off(self) -> None:
        logger.warning(
            "cut off from the cluster for longer than the lease: closing every"
            " charger with 1001 so that they reconnect to another node"
        )
        for client in self._admitting:
            self._admitting[client] = _CUT_OFF
        await self._close_all(*_CUT_OFF)

    async def restored(self) -> None:
        logger.warning("the cluster is reachable again")
