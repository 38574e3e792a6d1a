"""Calls by identity across nodes: the caller's side (`Caller`) and the side
of the node that holds the charger (`Deliverer`).

A call goes out in one Redis step (the ROUTE script looks the identity up,
checks the owner's lease and publishes to the owner's inbox) and comes back
as a `Reply` on the caller's inbox. It is published at most once: only a
publication nobody received (``PUBLISH`` counted 0 subscribers) or an
"absent" answer (the owner no longer holds the charger: nothing was sent to
it) is routed again, and never past the caller's deadline.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

from ..errors import ConnectionClosed, RPCError, create_rpc_error
from ._errors import ClusterUnavailable, NotConnected
from ._protocol import Call, Cancel, Layout, Reply, encode
from ._redis import RedisLink

__all__ = ("Caller", "ClusterHost", "Deliverer")

logger = logging.getLogger("ocpp_rpc.cluster")

Spawn = Callable[..., None]

#: How long a node lets a delivery overrun its deadline before abandoning it.
_GRACE = 1.0
#: At most this many "absent" answers (the registration moved under us).
_MAX_ABSENT = 3


class ClusterHost(Protocol):
    """What a server implements to be a cluster node (`RedisCluster.attach`).

    The cluster calls these from its own tasks; an exception other than the
    ones documented is logged and never breaks the cluster.
    """

    async def deliver(self, identity: str, method: str, params: Any, timeout: float) -> Any:
        """Make a call routed here from another node (or an API worker) to the
        charger connected here as `identity`, within `timeout` seconds (what is
        left of the caller's deadline), and return its result.

        Raise `NotConnected` if `identity` is not connected here (the caller
        looks it up again), the charger's `RPCError`, `TimeoutError`, or
        `ConnectionClosed` if its connection ends first: each reaches the
        caller as the same exception. The task is cancelled if the caller
        gives up (is cancelled) first.
        """
        ...

    async def replaced(self, identity: str, connection_id: str) -> None:
        """Another node registered `identity`: close connection
        `connection_id` (if it is still open) with 1000 "replaced". It does
        not matter whether `unregister` is called for it afterwards."""
        ...

    async def cut_off(self) -> None:
        """This node could not renew its lease for `lease` seconds: the rest
        of the cluster counts its chargers as connected nowhere. Close every
        charger connection with 1001 (going away) so that they reconnect to a
        node that is not cut off."""
        ...

    async def restored(self) -> None:
        """Redis is reachable again after `cut_off` (the node has re-joined
        and re-registered whatever is still registered). Informational."""
        ...


@dataclass
class _Pending:
    event: anyio.Event = field(default_factory=anyio.Event)
    reply: Reply | None = None
    failure: BaseException | None = None
    #: When Redis was last seen gone while the call was out (`subscription_lost`, or
    #: a failed lease check): Redis may have restarted, losing every lease.
    unsure_since: float | None = None


def _unwrap(reply: Reply, identity: str) -> Any:
    if reply.outcome == "result":
        return reply.value
    if reply.outcome == "error":
        raise create_rpc_error(str(reply.code), reply.message, reply.details)
    if reply.outcome == "timeout":
        raise TimeoutError(f"{identity!r} did not answer in time")
    if reply.outcome == "closed":
        raise ConnectionClosed(int(reply.code or 1006), reply.message)
    raise NotConnected(identity)  # pragma: no cover - "absent" is handled by the loop


class Caller:
    """This node's outgoing calls by identity."""

    def __init__(
        self, node_id: str, link: RedisLink, layout: Layout, lease: float, spawn: Spawn
    ) -> None:
        self._node_id = node_id
        self._link = link
        self._layout = layout
        self._lease = lease
        self._spawn = spawn
        self._pending: dict[str, _Pending] = {}
        self._ids = itertools.count()
        self._tag = secrets.token_hex(4)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def on_reply(self, reply: Reply) -> None:
        pending = self._pending.get(reply.id)
        if pending is not None and pending.reply is None:
            pending.reply = reply
            pending.event.set()

    def subscription_lost(self) -> None:
        """This node's subscription dropped: Redis may have restarted and lost
        every lease, so a node holding one of the calls out may be alive and
        re-joining under a new lease (see `_wait`)."""
        now = anyio.current_time()
        for pending in self._pending.values():
            pending.unsure_since = now

    def fail_all(self, failure: BaseException) -> None:
        for pending in self._pending.values():
            if pending.reply is None and pending.failure is None:
                pending.failure = failure
                pending.event.set()

    async def call(
        self, identity: str, method: str, params: Any, timeout: float
    ) -> Any:
        call_id = f"{self._tag}-{next(self._ids):x}"
        pending = _Pending()
        self._pending[call_id] = pending
        deadline = anyio.current_time() + timeout
        # None: nothing can have been delivered; "?": maybe (a routing step was
        # interrupted); else the (node, instance) it was delivered to.
        delivered: tuple[str, str] | str | None = None
        timed_out = False
        try:
            with anyio.fail_after(timeout) as scope:
                absent = 0
                backoff = 0.01
                while True:
                    remaining = max(0.0, deadline - anyio.current_time())
                    message = encode(
                        Call(call_id, self._node_id, identity, method, params, remaining)
                    )
                    delivered = "?"
                    routed = await self._link.route(identity, message)
                    delivered = None
                    if routed is None:
                        raise NotConnected(identity)
                    node, instance, receivers = routed
                    if receivers == 0:
                        # The owner's lease is alive but it is not subscribed
                        # (it died a moment ago, or is reconnecting to Redis):
                        # nothing was delivered, so trying again is safe.
                        await anyio.sleep(backoff)
                        backoff = min(backoff * 2, max(self._lease / 8, 0.05))
                        continue
                    delivered = (node, instance)
                    reply = await self._wait(pending, node, instance)
                    delivered = None
                    if reply.outcome != "absent":
                        return _unwrap(reply, identity)
                    absent += 1
                    if absent >= _MAX_ABSENT:
                        raise NotConnected(identity)
                    pending.event = anyio.Event()
                    pending.reply = None
        except TimeoutError:
            timed_out = scope.cancel_called
            raise
        finally:
            del self._pending[call_id]
            # A call that timed out is not withdrawn: the node holding it works
            # to the same deadline and ends it itself, and a Cancel coming after
            # that would only be kept there as one that overtook its call.
            if delivered is not None and not timed_out:
                self._spawn(self._withdraw, identity, call_id, delivered)

    async def _wait(self, pending: _Pending, node: str, instance: str) -> Reply:
        """The reply; meanwhile, every half lease, check that the node that
        got the call still holds the lease it had (it may die with the call).

        After Redis was seen gone (it may have restarted and lost every
        lease), a live node re-joins under a new lease within a lease or so:
        that lease is then the one to check, and a node without one is lost
        only once that time has passed since Redis was last seen gone."""
        while True:
            with anyio.move_on_after(max(self._lease / 2, 0.05)):
                await pending.event.wait()
            if pending.failure is None and pending.reply is None:
                try:
                    holder = await self._link.lease_holder(node)
                except ClusterUnavailable:  # unknown: keep waiting (the deadline still holds)
                    pending.unsure_since = anyio.current_time()
                    holder = instance
                if holder != instance and pending.reply is None:
                    unsure = pending.unsure_since
                    if unsure is not None and holder is not None:
                        instance = holder  # re-joined after a Redis restart
                    elif unsure is None or anyio.current_time() - unsure > 1.5 * self._lease:
                        raise ConnectionClosed(
                            1006, f"cluster node {node} was lost before the charger answered"
                        )
            if pending.failure is not None:
                raise pending.failure
            if pending.reply is not None:
                return pending.reply

    async def _withdraw(
        self, identity: str, call_id: str, delivered: tuple[str, str] | str
    ) -> None:
        """Tell the node that may hold call `call_id` that nobody waits for it
        any more (the caller was cancelled, or failed otherwise)."""
        text = encode(Cancel(call_id, self._node_id))
        try:
            with anyio.move_on_after(self._link.io_timeout):
                if isinstance(delivered, tuple):
                    await self._link.publish(self._layout.inbox(delivered[0]), text)
                else:
                    await self._link.route(identity, text)
        except ClusterUnavailable as exc:
            logger.debug("could not withdraw call %s: %s", call_id, exc)


class Deliverer:
    """Calls routed to this node, handed to the `ClusterHost`."""

    def __init__(self, node_id: str, link: RedisLink, layout: Layout, spawn: Spawn) -> None:
        self._node_id = node_id
        self._link = link
        self._layout = layout
        self._spawn = spawn
        self.host: ClusterHost | None = None
        self._inflight: dict[tuple[str, str], anyio.CancelScope] = {}
        self._early_cancels: dict[tuple[str, str], float] = {}

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def on_call(self, call: Call) -> None:
        key = (call.sender, call.id)
        if self._early_cancels.pop(key, None) is not None or key in self._inflight:
            return
        scope = anyio.CancelScope()
        self._inflight[key] = scope
        self._spawn(self._deliver, call, scope)

    def on_cancel(self, cancel: Cancel) -> None:
        key = (cancel.sender, cancel.id)
        scope = self._inflight.get(key)
        if scope is not None:
            scope.cancel()
            return
        # The cancel overtook its call (they can travel on different Redis
        # connections): remember it for a while.
        now = anyio.current_time()
        if len(self._early_cancels) > 1000:
            for stale in [k for k, t in self._early_cancels.items() if now - t > 60]:
                del self._early_cancels[stale]
        self._early_cancels[key] = now

    async def _deliver(self, call: Call, scope: anyio.CancelScope) -> None:
        key = (call.sender, call.id)
        try:
            with scope:
                reply = await self._outcome(call)
        finally:
            self._inflight.pop(key, None)
        if scope.cancelled_caught:
            return  # withdrawn: nobody is waiting
        try:
            text = encode(reply)
        except (TypeError, ValueError) as exc:
            logger.error("the result of %s for %r is not JSON: %s", call.method, call.identity, exc)
            text = encode(
                Reply(call.id, self._node_id, "error", code="InternalError",
                      message="the result could not be encoded", details={})
            )
        try:
            with anyio.move_on_after(self._link.io_timeout):
                await self._link.publish(self._layout.inbox(call.sender), text)
        except ClusterUnavailable as exc:
            logger.warning("could not return the outcome of a routed call: %s", exc)

    async def _outcome(self, call: Call) -> Reply:
        def reply(outcome: Any, **fields: Any) -> Reply:
            return Reply(call.id, self._node_id, outcome, **fields)

        host = self.host
        if host is None:
            return reply("absent")
        try:
            with anyio.fail_after(call.timeout + _GRACE):
                value = await host.deliver(call.identity, call.method, call.params, call.timeout)
        except NotConnected:
            return reply("absent")
        except RPCError as exc:
            return reply("error", code=exc.code, message=exc.message, details=exc.details)
        except TimeoutError:
            return reply("timeout")
        except ConnectionClosed as exc:
            return reply("closed", code=exc.code, message=exc.reason)
        except Exception:
            logger.exception("delivering %s to %r failed", call.method, call.identity)
            return reply(
                "error", code="InternalError", message="the call could not be delivered",
                details={},
            )
        return reply("result", value=value)


def run_hook(spawn: Spawn, name: str, hook: Callable[..., Awaitable[None]], *args: Any) -> None:
    """Run a host hook in the background; a failing hook is logged."""

    async def run() -> None:
        try:
            await hook(*args)
        except Exception:
            logger.exception("cluster host hook %s failed", name)

    spawn(run)
