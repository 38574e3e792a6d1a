"""Presence: this node's lease and its registrations.

The node keeps its own record of what it registered (`entries`), so that it
can put every registration back on its own whenever Redis may have lost or
missed something (the lease lapsed, Redis restarted, the subscription
dropped, a registration's outcome is unknown). The server only calls
`register` / `unregister`.

The lease: a key holding this node's *instance* token, with a TTL of `lease`
seconds, renewed every `lease / 3`. A registration is alive only while its
node's lease holds the instance that wrote it, so a new instance (after the
lease lapsed) never revives stale registrations: it re-registers what it
still holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import anyio

from ._errors import ClusterUnavailable
from ._protocol import new_instance
from ._redis import RedisLink

__all__ = ("Owner", "Presence", "PresenceHooks")

logger = logging.getLogger("ocpp_rpc.cluster")

_CHUNK = 500
#: REGISTER scripts in flight at once. A burst of connections (a reconnect
#: storm) waits its turn here: run all at once, thousands of registrations
#: share the event loop and the pool, every one of them outlives its timeout
#: together, and the lease renewal with them.
_REGISTERING = 64
T = TypeVar("T")


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Owner(NamedTuple):
    """Who held an identity: a node and that node's connection id."""

    node_id: str
    connection_id: str


@dataclass(frozen=True)
class PresenceHooks:
    cut_off: Callable[[], None]
    restored: Callable[[], None]
    lost: Callable[[str, str], None]  # (identity, connection_id) taken by another node


class Presence:
    def __init__(
        self, link: RedisLink, node_id: str, lease: float, hooks: PresenceHooks
    ) -> None:
        self._link = link
        self.node_id = node_id
        self.lease = lease
        self._lease_ms = max(1, int(lease * 1000))
        self._hooks = hooks
        self.instance = ""
        #: identity -> (connection id, protocol or "")
        self.entries: dict[str, tuple[str, str]] = {}
        self._dirty = False
        self._join_lock = anyio.Lock()
        self._resync_lock = anyio.Lock()
        self._last_renewal = 0.0
        self._renewed = anyio.Event()
        self._renew_now = anyio.Event()
        self.cut_off = False
        self._registering = anyio.Semaphore(_REGISTERING)

    # -- lease ------------------------------------------------------------------

    async def join(self) -> None:
        """Take the lease for `node_id`. Another live process holding it (a
        previous run with the same node id that did not leave) is waited for,
        at most for one lease."""
        instance = new_instance()
        give_up = anyio.current_time() + self.lease + self._link.io_timeout
        while True:
            sent = anyio.current_time()
            if await self._link.join(self.node_id, instance, self._lease_ms, ""):
                break
            if anyio.current_time() > give_up:
                raise ClusterUnavailable(
                    f"node id {self.node_id!r} is held by another live node"
                )
            await anyio.sleep(min(0.1, self.lease / 5))
        self.instance = instance
        self._mark_renewed(sent)

    async def rejoin(self, stale: str) -> None:
        """The lease held by instance `stale` is gone: take it again under a
        new instance and re-register everything still held."""
        async with self._join_lock:
            if self.instance != stale:
                return  # another task did it already
            sent = anyio.current_time()
            instance = new_instance()
            if not await self._link.join(self.node_id, instance, self._lease_ms, stale):
                raise ClusterUnavailable(
                    f"node id {self.node_id!r} was taken by another live node"
                )
            logger.warning("node %s re-joined the cluster (its lease had lapsed)", self.node_id)
            self.instance = instance
            self._mark_renewed(sent)
        await self.resync()

    def _mark_renewed(self, sent: float) -> None:
        self._last_renewal = max(self._last_renewal, sent)
        self._renewed.set()
        self._renewed = anyio.Event()
        if self.cut_off:
            self.cut_off = False
            logger.warning("node %s reaches Redis again", self.node_id)
            self._hooks.restored()

    def nudge(self) -> None:
        """Renew (and so find out about a lapsed lease) now."""
        self._renew_now.set()

    async def renew_forever(self) -> None:
        interval = self.lease / 3
        while True:
            sent = anyio.current_time()
            instance = self.instance
            ok = False
            try:
                with anyio.fail_after(self._link.io_timeout):
                    renewed, _reaped = await self._link.renew(
                        self.node_id, instance, self._lease_ms
                    )
                if renewed:
                    self._mark_renewed(sent)
                else:
                    await self.rejoin(instance)
                if self._dirty:
                    await self.resync()
                ok = True
            except TimeoutError:
                # Redis is stalled or the socket is half-open: start afresh.
                logger.warning("lease renewal timed out; reconnecting to Redis")
                self._link.reset()
            except ClusterUnavailable as exc:
                logger.info("lease renewal failed: %s", exc)
            self._renew_now = anyio.Event()
            wait = interval if ok else min(interval, 0.25)
            with anyio.move_on_after(max(0.0, sent + wait - anyio.current_time())):
                await self._renew_now.wait()

    async def watch_forever(self) -> None:
        """Report `cut_off` when no renewal went through for `lease` seconds
        (measured from when the last successful renewal was sent)."""
        while True:
            renewed = self._renewed
            remaining = self._last_renewal + self.lease - anyio.current_time()
            if remaining > 0:
                with anyio.move_on_after(remaining):
                    await renewed.wait()
                continue
            if not self.cut_off:
                self.cut_off = True
                logger.error(
                    "node %s could not reach Redis for %.1f s (its lease): it counts as gone",
                    self.node_id, self.lease,
                )
                self._hooks.cut_off()
            await renewed.wait()

    # -- registrations ------------------------------------------------------------

    async def register(self, identity: str, connection_id: str, protocol: str) -> Owner | None:
        async with self._registering:
            if self.cut_off:
                raise ClusterUnavailable(f"node {self.node_id} is cut off from the cluster")
            return await self._register(identity, connection_id, protocol)

    async def _register(self, identity: str, connection_id: str, protocol: str) -> Owner | None:
        for attempt in (1, 2):
            instance = self.instance
            done = False
            try:
                result = await self._link.register(
                    self.node_id, instance, identity, connection_id, protocol
                )
                done = True
            finally:
                if not done:
                    self._dirty = True  # it may have gone through: check later
            if result is False:
                if attempt == 2:
                    break
                await self.rejoin(instance)
                continue
            self.entries[identity] = (connection_id, protocol)
            if result is None or result is True or result == (self.node_id, connection_id):
                return None
            return Owner(*result)
        raise ClusterUnavailable(f"node {self.node_id} could not keep its lease")

    async def unregister(self, identity: str, connection_id: str) -> bool:
        self.forget(identity, connection_id)
        done = False
        try:
            removed = await self._link.unregister(self.node_id, identity, connection_id)
            done = True
            return removed
        except ClusterUnavailable as exc:
            logger.info("unregistering %r deferred: %s", identity, exc)
            return False
        finally:
            if not done:
                self._dirty = True

    def forget(self, identity: str, connection_id: str) -> None:
        if self.entries.get(identity, ("",))[0] == connection_id:
            del self.entries[identity]

    async def leave(self) -> None:
        await self._link.leave(self.node_id, self.instance)

    async def resync(self) -> bool:
        """Make Redis hold exactly this node's `entries` (for its instance).
        -> False if that could not be done (the node stays dirty)."""
        async with self._resync_lock:
            self._dirty = False
            try:
                return await self._resync()
            except ClusterUnavailable as exc:
                logger.info("re-synchronising presence failed: %s", exc)
                self._dirty = True
                return False
            except BaseException:
                self._dirty = True
                raise

    async def _resync(self) -> bool:
        instance = self.instance
        items = [(identity, *entry) for identity, entry in self.entries.items()]
        if not await self._reassert(instance, items):
            return False
        # Entries closed or replaced locally while they were re-asserted.
        for identity, connection_id, _ in items:
            if self.entries.get(identity, ("",))[0] != connection_id:
                await self._link.unregister(self.node_id, identity, connection_id)
        # Registrations Redis holds for this instance that this node does not.
        extras = sorted(await self._link.members(instance) - self.entries.keys())
        for chunk in _chunks(extras):
            await self._link.prune(self.node_id, instance, chunk)
        # ... unless registered meanwhile: put those back.
        back = [(i, *self.entries[i]) for i in extras if i in self.entries]
        return await self._reassert(instance, back)

    async def _reassert(self, instance: str, items: Sequence[tuple[str, str, str]]) -> bool:
        for chunk in _chunks(items):
            lost = await self._link.reassert(self.node_id, instance, chunk)
            if lost is None:
                self._dirty = True
                self.nudge()
                return False
            for identity, connection_id in lost:
                self.forget(identity, connection_id)
                self._hooks.lost(identity, connection_id)
        return True
