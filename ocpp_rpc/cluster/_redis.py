"""Everything that touches the Redis client (coredis): connecting, the
scripts, publishing, the inbox subscription, and turning Redis failures into
`ClusterUnavailable`.

coredis is imported here only, and only when a `RedisCluster` is created, so
``import ocpp_rpc`` never needs it.

Choices that matter for the guarantees:

- The command client never retries (``NoRetryPolicy``): a routed call is
  published at most once. (EVALSHA's reload after ``NOSCRIPT`` is safe: the
  script did not run.)
- Every request has a response timeout (`io_timeout`), so nothing waits on a
  stalled Redis forever; the renewal loop also drops the whole pool when a
  renewal times out, so a half-open socket is not reused.
- The subscription is not coredis's self-healing one: each attempt uses a
  fresh client and fails loudly, so the node knows when it was unsubscribed
  (coredis would resubscribe silently) and re-synchronises its presence.
"""

from __future__ import annotations

import logging
import math
import os
import ssl
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from . import _scripts
from ._errors import ClusterUnavailable
from ._protocol import Layout

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    import coredis
    from coredis.commands.script import Script

__all__ = ("RedisLink", "redact")

logger = logging.getLogger("ocpp_rpc.cluster")

_SCRIPT_NAMES = (
    "JOIN", "RENEW", "REGISTER", "UNREGISTER", "REASSERT", "PRUNE", "LOCATE", "ROUTE", "LEAVE",
)


def _import_coredis() -> Any:
    try:
        import coredis
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            'ocpp_rpc.cluster.RedisCluster needs coredis: pip install "ocpp-rpc[redis]"'
        ) from exc
    return coredis


def redact(url: str) -> str:
    """`url` without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return parts._replace(netloc=netloc).geturl()


def tls_context(url: str) -> ssl.SSLContext:
    """The TLS context for a ``rediss://`` URL: the server's certificate and
    host name are verified (against the system CAs, or ``ssl_ca_certs``);
    the query may relax that explicitly (``ssl_cert_reqs=none``,
    ``ssl_check_hostname=false``) or add a client certificate
    (``ssl_certfile``, ``ssl_keyfile``)."""
    query = {key: values[-1] for key, values in parse_qs(urlsplit(url).query).items()}
    ca = query.get("ssl_ca_certs")
    if ca and os.path.isdir(ca):
        context = ssl.create_default_context(capath=ca)
    else:
        context = ssl.create_default_context(cafile=ca or None)
    if query.get("ssl_certfile"):
        context.load_cert_chain(query["ssl_certfile"], query.get("ssl_keyfile") or None)
    if query.get("ssl_check_hostname", "").lower() in ("0", "false", "no", "off"):
        context.check_hostname = False
    requirement = query.get("ssl_cert_reqs", "required").lower()
    if requirement not in ("required", "optional", "none"):
        raise ValueError(f"ssl_cert_reqs must be required, optional or none, not {requirement!r}")
    if requirement != "required":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_OPTIONAL if requirement == "optional" else ssl.CERT_NONE
    return context


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _is_redis_failure(exc: BaseException) -> bool:
    module = _import_coredis()
    return isinstance(
        exc,
        (
            module.exceptions.RedisError,
            OSError,  # refused, reset, TLS, timeouts
            EOFError,
            anyio.BrokenResourceError,  # a connection torn down under a request
            anyio.ClosedResourceError,
            anyio.EndOfStream,
        ),
    )


def unavailable_cause(exc: BaseException) -> BaseException | None:
    """The Redis failure inside `exc` (possibly an exception group made only of
    Redis failures), or `None` when `exc` is something else."""
    leaves = list(_leaves(exc))
    if leaves and all(isinstance(leaf, Exception) and _is_redis_failure(leaf) for leaf in leaves):
        return leaves[0]
    return None


class RedisLink:
    """One node's connections to Redis: a command client (a pool shared by
    every task of the node), a small one of its own for the lease renewal,
    and, separately, the subscription."""

    def __init__(
        self,
        url: str,
        *,
        layout: Layout,
        io_timeout: float,
        client_name: str,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        module = _import_coredis()
        scheme = urlsplit(url).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"unsupported Redis URL scheme {scheme!r} (redis://, rediss://)")
        if ssl_context is not None and scheme != "rediss":
            raise ValueError("ssl_context needs a rediss:// URL")
        if scheme == "rediss" and ssl_context is None:
            ssl_context = tls_context(url)
        self.url = url
        self.layout = layout
        self.io_timeout = io_timeout
        #: How long a lookup, registration or publication may take before it
        #: fails with ClusterUnavailable (a routed call has its own deadline).
        self.op_timeout = 2 * io_timeout
        self._client_name = client_name
        self._ssl_context = ssl_context
        self._coredis = module
        self._stack: AsyncExitStack | None = None
        self._client: coredis.Redis[str] | None = None
        self._control: coredis.Redis[str] | None = None
        self._scripts: dict[str, Script[str]] = {}

    def _new_client(self, stream_timeout: float, **extra: Any) -> coredis.Redis[str]:
        if self._ssl_context is not None:
            extra["ssl_context"] = self._ssl_context
        return cast(
            "coredis.Redis[str]",
            self._coredis.Redis.from_url(
                self.url,
                decode_responses=True,
                decode_components=True,  # a percent-encoded password works
                retry_policy=self._coredis.retry.NoRetryPolicy(),
                stream_timeout=stream_timeout,
                connect_timeout=self.io_timeout,
                client_name=self._client_name,
                **extra,
            ),
        )

    @asynccontextmanager
    async def _failures(self, what: str) -> AsyncIterator[None]:
        try:
            yield
        except ClusterUnavailable:
            raise
        except Exception as exc:
            cause = unavailable_cause(exc)
            if cause is None:
                raise
            # coredis turns a cancellation while it connects into a connection
            # error (on trio the Cancelled is lost): the cancellation wins.
            await anyio.lowlevel.checkpoint_if_cancelled()
            raise ClusterUnavailable(
                f"{what}: Redis at {redact(self.url)} failed: {cause}"
            ) from cause

    # -- lifetime -----------------------------------------------------------

    async def __aenter__(self) -> RedisLink:
        stack = AsyncExitStack()
        # Requests on the shared pool may queue behind a burst of calls: a
        # generous response timeout, as a backstop (operations have their
        # own; a stall is caught by the lease renewal, on its own pool, which
        # then drops every connection).
        client = self._new_client(max(self.io_timeout, 10.0))
        control = self._new_client(self.io_timeout, max_connections=2)
        try:
            tg = await stack.enter_async_context(anyio.create_task_group())
            stop = anyio.Event()
            stack.callback(stop.set)  # (run first on the way out)
            failure = await tg.start(self._keep, client, control, stop)
            if failure is not None:
                raise failure
            self._stack, self._client, self._control = stack, client, control
            # Also proves that Redis answers: within the operations' bound, not
            # the shared pool's generous response timeout.
            async with self._failures("loading scripts"):
                with anyio.fail_after(self.op_timeout):
                    for name in _SCRIPT_NAMES:
                        source = getattr(_scripts, name)
                        self._scripts[name] = client.register_script(source)
                        await client.script_load(source)
        except BaseException:
            self._stack = None
            self._client = self._control = None
            await self._close(stack)
            raise
        return self

    async def _keep(
        self,
        client: coredis.Redis[str],
        control: coredis.Redis[str],
        stop: anyio.Event,
        *,
        task_status: TaskStatus[BaseException | None],
    ) -> None:
        """Hold both clients open until `stop`. A pool's connections are tasks
        of its own task group, in the scope it was entered in: entered here,
        shielded, a cancelled `async with` around the node does not cut them
        before the node has left (which it does shielded, on its way out)."""
        with anyio.CancelScope(shield=True):
            async with AsyncExitStack() as stack:
                try:
                    async with self._failures("connecting"):
                        await stack.enter_async_context(client)
                        await stack.enter_async_context(control)
                except Exception as exc:
                    task_status.started(exc)
                    return
                task_status.started(None)
                await stop.wait()

    async def __aexit__(self, *exc_info: object) -> None:
        stack, self._stack = self._stack, None
        self._client = self._control = None
        if stack is not None:
            await self._close(stack)

    @staticmethod
    async def _close(stack: AsyncExitStack) -> None:
        try:
            await stack.aclose()
        except Exception as exc:  # the pool's own clean-up failing: nothing to do
            logger.debug("closing the Redis client: %r", exc)

    @property
    def client(self) -> coredis.Redis[str]:
        if self._client is None:
            raise ClusterUnavailable("the cluster is not running")
        return self._client

    def reset(self) -> None:
        """Drop every pooled connection (after a stall: they may be half-open)."""
        for client in (self._client, self._control):
            if client is not None:
                client.connection_pool.disconnect()

    async def _run(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[str | int],
        *,
        control: bool = False,
        bounded: bool = True,
    ) -> Any:
        """Run script `name`, failing with `ClusterUnavailable` after
        `op_timeout` unless not `bounded` (a routed call: its own deadline
        bounds it). `control` uses the node's own small pool, so that the
        lease renewal never queues behind a burst of calls."""
        client = self._control if control else self._client
        if client is None:
            raise ClusterUnavailable("the cluster is not running")
        async with self._failures(name.lower()):
            with anyio.fail_after(self.op_timeout if bounded else None):
                return await self._scripts[name](keys=list(keys), args=list(args), client=client)

    # -- presence ---------------------------------------------------------------

    async def join(self, node_id: str, instance: str, lease_ms: int, expected: str) -> bool:
        layout = self.layout
        result = await self._run(
            "JOIN", [layout.lease(node_id), layout.nodes], [instance, lease_ms, expected]
        )
        return bool(result)

    async def renew(self, node_id: str, instance: str, lease_ms: int) -> tuple[bool, int]:
        layout = self.layout
        renewed, reaped = await self._run(
            "RENEW",
            [layout.lease(node_id), layout.nodes],
            [instance, lease_ms, layout.prefix, 5000],
            control=True,
        )
        return bool(renewed), int(reaped)

    async def register(
        self, node_id: str, instance: str, identity: str, connection_id: str, protocol: str
    ) -> tuple[str, str] | bool | None:
        """-> the live previous owner (node, connection), `None`, or `False`
        when this instance's lease is gone."""
        layout = self.layout
        result = await self._run(
            "REGISTER",
            [layout.registration(identity), layout.lease(node_id), layout.instance(instance)],
            [node_id, instance, connection_id, protocol, layout.prefix, identity],
        )
        if result[0] == "nolease":
            return False
        if len(result) == 3:
            return str(result[1]), str(result[2])
        return None

    async def unregister(self, node_id: str, identity: str, connection_id: str) -> bool:
        layout = self.layout
        result = await self._run(
            "UNREGISTER",
            [layout.registration(identity)],
            [node_id, connection_id, layout.prefix, identity],
        )
        return bool(result)

    async def reassert(
        self, node_id: str, instance: str, entries: Sequence[tuple[str, str, str]]
    ) -> list[tuple[str, str]] | None:
        """Re-register `entries` (identity, connection, protocol); -> the ones
        another live owner holds now, or `None` when the lease is gone."""
        layout = self.layout
        args: list[str | int] = [node_id, instance, layout.prefix]
        for entry in entries:
            args.extend(entry)
        result = await self._run(
            "REASSERT", [layout.lease(node_id), layout.instance(instance)], args
        )
        if result[0] == "nolease":
            return None
        return [(str(result[i]), str(result[i + 1])) for i in range(1, len(result), 2)]

    async def members(self, instance: str) -> set[str]:
        async with self._failures("members"):
            with anyio.fail_after(self.op_timeout):
                return set(await self.client.smembers(self.layout.instance(instance)))

    async def prune(self, node_id: str, instance: str, identities: Sequence[str]) -> int:
        layout = self.layout
        result = await self._run(
            "PRUNE",
            [layout.instance(instance)],
            [node_id, instance, layout.prefix, *identities],
        )
        return int(result)

    async def leave(self, node_id: str, instance: str) -> None:
        layout = self.layout
        await self._run(
            "LEAVE",
            [layout.lease(node_id), layout.nodes, layout.instance(instance)],
            [node_id, instance, layout.prefix],
        )

    async def locate(self, identity: str) -> tuple[str, str] | None:
        layout = self.layout
        result = await self._run("LOCATE", [layout.registration(identity)], [layout.prefix])
        if not result:
            return None
        return str(result[0]), str(result[1])

    async def lease_holder(self, node_id: str) -> str | None:
        """The instance holding node `node_id`'s lease, or None (no live node)."""
        async with self._failures("lease check"):
            with anyio.fail_after(self.op_timeout):
                return await self.client.get(self.layout.lease(node_id))

    # -- messages ------------------------------------------------------------------

    async def route(self, identity: str, message: str) -> tuple[str, str, int] | None:
        """Publish `message` to the inbox of the node holding `identity`, in
        one step with the lookup. -> (node, instance, receivers) or `None`."""
        result = await self._run(
            "ROUTE",
            [self.layout.registration(identity)],
            [self.layout.prefix, message],
            bounded=False,
        )
        if not result:
            return None
        return str(result[0]), str(result[1]), int(result[2])

    async def publish(self, channel: str, message: str) -> int:
        async with self._failures("publish"):
            with anyio.fail_after(self.op_timeout):
                return int(await self.client.publish(channel, message))

    async def subscribe(
        self,
        channels: Sequence[str],
        on_message: Callable[[str, str], None],
        on_state: Callable[[bool], None],
        max_delay: float,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Stay subscribed to `channels` until cancelled: `on_state(True)` once
        every subscription is confirmed (again), `on_state(False)` when it is
        lost; reconnects with a capped backoff. The first attempt's failure is
        raised (as `ClusterUnavailable`) instead."""
        module = self._coredis
        delay = 0.05
        started = False
        while True:
            failure: BaseException
            try:
                client = self._new_client(self.io_timeout)
                async with client, client.pubsub(
                    channels=list(channels),
                    ignore_subscribe_messages=True,
                    retry_policy=module.retry.NoRetryPolicy(),
                    subscription_timeout=self.io_timeout,
                    max_idle_seconds=max(1.0, min(max_delay, 15.0)),
                ) as pubsub:
                    delay = 0.05
                    on_state(True)
                    if not started:
                        started = True
                        task_status.started()
                    async for message in pubsub:
                        if message["type"] == "message":
                            on_message(str(message["channel"]), str(message["data"]))
                failure = ClusterUnavailable("the subscription ended")
            except anyio.get_cancelled_exc_class():
                raise
            except (Exception, BaseExceptionGroup) as exc:
                # coredis can turn its own cancellation into an error while it
                # unsubscribes (mixed with the cancellation in a group): if we
                # are being cancelled, the checkpoint below raises it afresh.
                failure = exc
            await anyio.lowlevel.checkpoint()
            cause = unavailable_cause(failure)
            if not started:
                if cause is None:
                    raise failure
                raise ClusterUnavailable(
                    f"subscribing: Redis at {redact(self.url)} failed: {cause}"
                ) from cause
            on_state(False)
            logger.warning("cluster subscription lost (%s); reconnecting", cause or failure)
            await anyio.sleep(delay)
            delay = min(delay * 2, max_delay) if math.isfinite(max_delay) else delay * 2
