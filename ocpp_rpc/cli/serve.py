"""``ocpp-rpc serve``: a development CSMS.

It accepts charge points, answers the common 1.6 / 2.0.1 actions with valid
defaults (`CSMSDefaults`), prints every frame, and reads commands from stdin
to call a connected charger: ``CP1 Reset {"type": "Soft"}``.

With ``--redis URL`` the server is a node of a cluster (`ocpp_rpc.cluster`):
calls by identity reach a charger on any node. ``--workers N`` runs N such
nodes as worker processes on one port under a supervisor (`.workers`); a
worker is this same command with ``--worker-of`` (see `WorkerOf`).

User handlers come from ``--handlers MODULE`` (a module name on the current
directory or ``sys.path``, or a ``.py`` file), each of which may define, in
the order they are applied (later ones win, and all win over the defaults):

- functions named after OCPP actions: ``def BootNotification(call): ...``
  (sync or async, one `Call` argument, returning the CALLRESULT payload);
- ``HANDLERS = {"Action": handler, ...}``;
- ``register(server)`` (sync or async), called with the `RPCServer` before it
  listens: it may add handlers, an auth hook, ``on_client``, events.
"""

from __future__ import annotations

import argparse
import functools
import hmac
import importlib
import importlib.util
import inspect
import os
import re
import signal
import ssl
import stat
import sys
import time
import traceback
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .. import Handshake, Reject, RPCServer, ServerClient
from .answers import CSMSDefaults
from .call import error_fields, parse_call_line
from .common import EXIT_BROKEN_PIPE, EXIT_CONNECT_FAILED, UsageError
from .output import BOLD, DIM, GREEN, RED, YELLOW, Output, pretty_json

#: A module-level function with such a name handles that action.
ACTION_NAME = re.compile(r"[A-Z][A-Za-z0-9]*")

HELP = """\
commands (one per line):
  IDENTITY ACTION [JSON]   call a connected charger, e.g. CP1 Reset {"type": "Soft"}
  * ACTION [JSON]          call every connected charger
  IDENTITY ["Action", {}]  the same, with the call as JSON
  list                     the connected chargers
  help                     this text
  quit                     stop the server (so does Ctrl-D, or closing a stdin pipe)"""


def server_ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS context for ``--tls-cert/--tls-key`` (None: plain ws://)."""
    if args.tls_cert is None:
        if args.tls_key or args.tls_client_ca:
            raise UsageError("--tls-key and --tls-client-ca need --tls-cert")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.tls_cert, args.tls_key)
        if args.tls_client_ca:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(args.tls_client_ca)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load the TLS certificate/key: {exc}") from None
    return context


def password_auth(password: str) -> Any:
    """An auth hook requiring `password` (HTTP Basic, user = the identity),
    compared in constant time."""
    expected = password.encode()

    async def auth(handshake: Handshake) -> None:
        if handshake.password is None or not hmac.compare_digest(handshake.password, expected):
            raise Reject(401, "Unauthorized")

    return auth


def import_handlers_module(spec: str) -> ModuleType:
    """Import ``--handlers`` `spec`: a ``.py`` path, or a module name looked up
    from the current directory first."""
    path = Path(spec)
    if spec.endswith(".py") or path.is_file():
        if not path.is_file():
            raise UsageError(f"--handlers {spec}: no such file")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        if module_spec is None or module_spec.loader is None:
            raise UsageError(f"--handlers {spec}: cannot load it as Python")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[path.stem] = module
        module_spec.loader.exec_module(module)
        return module
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return importlib.import_module(spec)


async def install_handlers(module: ModuleType, server: RPCServer) -> list[str]:
    """Register `module`'s handlers on `server` (see the module docstring);
    returns the action names it registered directly."""
    actions: list[str] = []
    for name, value in vars(module).items():
        if (
            ACTION_NAME.fullmatch(name)
            and inspect.isfunction(value)
            and value.__module__ == module.__name__
        ):
            server.handle(name, value)
            actions.append(name)
    table = getattr(module, "HANDLERS", None)
    if table is not None:
        if not isinstance(table, dict):
            raise UsageError(f"{module.__name__}.HANDLERS must be a dict of action -> handler")
        for name, value in table.items():
            server.handle(name, value)
            actions.append(name)
    register = getattr(module, "register", None)
    if callable(register):
        outcome = register(server)
        if inspect.isawaitable(outcome):
            await outcome
    return actions


async def stdin_lines() -> AsyncIterator[str]:
    """Lines of stdin, read without blocking the event loop; ends at EOF."""
    if sys.platform == "win32":  # pragma: no cover - no pollable pipes there
        while line := await anyio.to_thread.run_sync(
            sys.stdin.readline, abandon_on_cancel=True
        ):
            yield line
        return
    fd = sys.stdin.fileno()
    pending = b""
    while True:
        try:
            await anyio.wait_readable(fd)
        except OSError:  # a regular file or /dev/null cannot be polled, and never blocks
            pass
        chunk = os.read(fd, 65536)
        if not chunk:
            if pending:
                yield pending.decode("utf-8", "replace")
            return
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            yield line.decode("utf-8", "replace")


class Console:
    """What ``serve`` prints, and its stdin commands.

    A call by identity goes through `RPCServer.call`: with ``--redis`` it
    reaches a charger connected to any node of the cluster. ``*`` and
    ``list`` cover this server's own chargers.
    """

    def __init__(self, server: RPCServer, out: Output, *, frames: bool,
                 name: str = "CSMS") -> None:
        self.server = server
        self.out = out
        self.frames = frames
        self.name = name
        self.quit = False
        server.on("client", self.on_client)
        server.on("upgrade_aborted", self.on_refused)

    def on_client(self, client: ServerClient) -> None:
        out = self.out
        identity = client.identity
        address = client.handshake.remote_address
        source = f" from {address[0]}:{address[1]}" if address else ""
        out.emit("connected",
                 out.style(f"{identity} connected ({client.protocol}){source}", BOLD, GREEN),
                 identity=identity, protocol=client.protocol,
                 remote_address=list(address) if address else None)
        if self.frames:
            name = self.name
            client.on("message",
                      lambda e: out.frame(name, identity, e.outbound, e.message))

        def on_close(result: Any) -> None:
            reason = f" {result.reason}" if result.reason else ""
            out.emit("disconnected",
                     out.style(f"{identity} disconnected ({result.code}{reason})", YELLOW),
                     identity=identity, code=result.code, reason=result.reason)

        client.on("close", on_close)

    def on_refused(self, event: Any) -> None:
        who = event.identity or "a client"
        self.out.emit("refused",
                      self.out.style(f"refused {who}: HTTP {event.status} {event.reason}", RED),
                      identity=event.identity, status=event.status, reason=event.reason)

    async def run(self, lines: AsyncIterator[str]) -> None:
        """Execute stdin commands until ``quit`` or end of input, then wait for
        the calls still in flight."""
        async with anyio.create_task_group() as calls:
            async for line in lines:
                command = line.strip()
                if not command or command.startswith("#"):
                    continue
                word = command.split()[0]
                if word in ("quit", "exit"):
                    self.quit = True
                    break
                if word == "help":
                    self.out.emit("help", HELP, text=HELP)
                elif word in ("list", "clients"):
                    self.list_clients()
                else:
                    self.start_call(calls, command)

    def connected(self) -> list[tuple[str, str | None, str | None]]:
        """(identity, protocol, node id or None) of the chargers ``*`` and
        ``list`` cover."""
        return [(identity, client.protocol, None)
                for identity, client in sorted(self.server.clients.items())]

    async def call_identity(self, identity: str, action: str, params: Any) -> Any:
        return await self.server.call(identity, action, params)

    def list_clients(self) -> None:
        clients = self.connected()
        if self.out.json_lines:
            self.out.emit("clients", "", clients=[
                {"identity": identity, "protocol": protocol}
                | ({"node": node} if node is not None else {})
                for identity, protocol, node in clients])
            return
        if not clients:
            self.out.write("no charger connected")
        for identity, protocol, node in clients:
            self.out.write(f"{identity} ({protocol})" + (f" on {node}" if node else ""))

    def start_call(self, calls: TaskGroup, command: str) -> None:
        identity, _, rest = command.partition(" ")
        try:
            parsed = parse_call_line(rest)
            if parsed is None:
                raise ValueError("missing ACTION")
        except ValueError as exc:
            self.out.emit("usage", self.out.style(f"cannot read {command!r}: {exc} (try help)",
                                                   RED), command=command, message=str(exc))
            return
        action, params = parsed
        targets = [entry[0] for entry in self.connected()] if identity == "*" else [identity]
        if not targets:
            self.out.emit("error", self.out.style("no charger connected", RED),
                          identity=identity, action=action, code="NotConnected",
                          message="no charger connected", details={})
        for target in targets:
            calls.start_soon(self.call, target, action, params)

    async def call(self, identity: str, action: str, params: Any) -> None:
        out = self.out
        started = time.perf_counter()
        try:
            result = await self.call_identity(identity, action, params)
        except Exception as exc:  # RPCError, TimeoutError, ConnectionClosed, NotConnected...
            fields = error_fields(exc)
            ms = (time.perf_counter() - started) * 1000
            out.emit("error",
                     out.style(f"{identity} {action} failed: {fields['code']}: "
                               f"{fields['message']}", RED),
                     identity=identity, action=action, ms=round(ms, 3), **fields)
            return
        ms = (time.perf_counter() - started) * 1000
        out.emit("result",
                 f"{identity} {action} -> {pretty_json(result, indent=False)}  "
                 + out.style(f"{ms:.1f} ms", DIM),
                 identity=identity, action=action, result=result, ms=round(ms, 3))


async def _wait_for_signal(stop: anyio.Event, out: Output | None, *, keep: bool = False) -> None:
    """Set `stop` at SIGTERM or SIGINT. With `keep`, go on receiving (and
    ignoring) them until cancelled: a worker may get one from its terminal's
    process group and one forwarded by its parent, and must not die of the
    second while it closes its connections."""
    if sys.platform == "win32":  # pragma: no cover - Ctrl-C raises KeyboardInterrupt there
        return
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if out is not None and not stop.is_set():
                out.emit("signal", out.style(f"{signal.Signals(signum).name}: stopping", DIM),
                         signal=signal.Signals(signum).name)
            stop.set()
            if not keep:
                return


@dataclass(frozen=True)
class WorkerOf:
    """``--worker-of PARENT_PID:READY_FD:INDEX``: this ``serve`` is worker
    `index` of ``serve --workers`` (see `ocpp_rpc.cli.workers`): it listens
    with ``reuse_port``, reports ``"<index> <node id> <pid>"`` on `ready_fd`
    once it listens, and stops when its parent does."""

    parent: int
    ready_fd: int
    index: int

    @classmethod
    def parse(cls, text: str) -> WorkerOf:
        try:
            parent, ready_fd, index = (int(part) for part in text.split(":"))
        except ValueError:
            raise UsageError(f"--worker-of {text!r}: expected PID:FD:INDEX") from None
        return cls(parent, ready_fd, index)

    def report_ready(self, node_id: str) -> None:
        try:
            os.write(self.ready_fd, f"{self.index} {node_id} {os.getpid()}\n".encode())
        finally:
            os.close(self.ready_fd)

    async def watch_parent(self, stop: anyio.Event) -> None:
        """Set `stop` once the parent is gone (killed without forwarding)."""
        while os.getppid() == self.parent:  # noqa: ASYNC110 - no event to wait for
            await anyio.sleep(0.5)
        stop.set()


class WorkerOutput(Output):
    """A worker's output: every event says which worker it comes from."""

    def __init__(self, index: int, *, json_lines: bool) -> None:
        super().__init__(json_lines=json_lines)
        self.index = index

    def emit(self, kind: str, text: str, /, **fields: Any) -> None:
        super().emit(kind, f"[worker {self.index}] {text}", worker=self.index, **fields)


def make_cluster(args: argparse.Namespace) -> Any:
    """The `RedisCluster` of ``--redis`` (None without it)."""
    if not args.redis:
        return None
    try:
        from ..cluster import RedisCluster

        return RedisCluster(args.redis, prefix=args.redis_prefix, lease=args.lease)
    except (ImportError, ValueError) as exc:
        raise UsageError(f"--redis: {exc}") from None


async def serve_command(args: argparse.Namespace) -> int:
    """``ocpp-rpc serve``: one server (a cluster node with ``--redis``), or a
    worker of ``--workers N`` (``--worker-of``; the supervisor is
    `ocpp_rpc.cli.workers.serve_workers`)."""
    worker = None if args.worker_of is None else WorkerOf.parse(args.worker_of)
    stop = anyio.Event()
    failure: BaseException | None = None
    status = 0
    async with anyio.create_task_group() as watchers:
        out: Output = Output(json_lines=args.json)
        if worker is not None:
            out = WorkerOutput(worker.index, json_lines=args.json)
            watchers.start_soon(worker.watch_parent, stop)
        # Stop, as on SIGTERM, when stdout's reader goes away: that output is
        # the server's log, and a CSMS serving on unseen is a silent failure;
        # stopped, a supervisor sees it and restarts it, and chargers reconnect.
        out.on_reader_gone = stop.set
        # Signals are watched for the whole run, the closing included.
        watchers.start_soon(functools.partial(
            _wait_for_signal, stop, None if worker else out, keep=worker is not None))
        try:
            status = await _serve(args, out, worker, stop)
        except Exception as exc:  # raised out of the task group below, not in a group
            failure = exc
        finally:
            watchers.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return EXIT_BROKEN_PIPE if out.reader_gone else status


async def _serve(
    args: argparse.Namespace, out: Output, worker: WorkerOf | None, stop: anyio.Event
) -> int:
    ssl_context = server_ssl_context(args)
    cluster = make_cluster(args)
    try:
        server = RPCServer(protocols=args.protocols, strict_mode=args.strict,
                           respond_with_detailed_errors=True, cluster=cluster)
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise UsageError(str(exc) or type(exc).__name__) from None
    CSMSDefaults(heartbeat_interval=args.heartbeat_interval).register(server)
    if args.password:
        server.auth(password_auth(args.password))
    name = "CSMS" if worker is None else f"CSMS/{worker.index}"
    console = Console(server, out, frames=not args.quiet, name=name)
    for spec in args.handlers:
        try:
            module = import_handlers_module(spec)
            actions = await install_handlers(module, server)
        except UsageError:
            raise
        except Exception as exc:
            traceback.print_exc()
            raise UsageError(f"--handlers {spec}: {type(exc).__name__}: {exc}") from None
        if worker is None or worker.index == 1:
            out.emit("handlers", out.style(
                f"handlers from {spec}: {', '.join(actions) or 'register(server)'}", DIM),
                module=spec, actions=actions)

    async with AsyncExitStack() as stack:
        try:
            await stack.enter_async_context(server)
        except OSError as exc:  # ClusterUnavailable: Redis cannot be reached
            print(f"ocpp-rpc serve: error: cannot join the cluster: {exc}", file=sys.stderr)
            return EXIT_CONNECT_FAILED
        try:
            listening = await server.listen(args.port, args.host, ssl_context=ssl_context,
                                            reuse_port=worker is not None)
        except OSError as exc:
            raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc}") from None
        if worker is not None:
            try:
                worker.report_ready(cluster.node_id)
            except OSError:  # the parent is gone
                stop.set()
        else:
            _announce(args, out, listening, ssl_context, cluster)
        async with anyio.create_task_group() as tasks:
            if not args.no_stdin and worker is None:
                tasks.start_soon(_run_console, console, stop)
            await stop.wait()
            tasks.cancel_scope.cancel()
    if worker is None:
        out.emit("stopped", out.style("stopped", DIM))
    return 0


def _announce(
    args: argparse.Namespace, out: Output, listening: Any, ssl_context: ssl.SSLContext | None,
    cluster: Any,
) -> None:
    scheme = "wss" if ssl_context else "ws"
    host = f"[{listening.host}]" if ":" in listening.host else listening.host
    url = f"{scheme}://{host}:{listening.port}"
    protocols = ", ".join(args.protocols) or "any"
    node = {} if cluster is None else {"node": cluster.node_id}
    text = (f"listening on {url} (chargers connect to {url}/ocpp/<identity>; "
            f"protocols: {protocols})")
    if cluster is not None:
        text += f"; cluster node {cluster.node_id}"
    out.emit("listening", out.style(text, BOLD), host=listening.host, port=listening.port,
             url=url, protocols=list(args.protocols), **node)
    if not args.no_stdin and not args.json:
        out.write(out.style("type 'CP1 Reset {\"type\": \"Soft\"}' to call a charger, "
                            "'help' for more", DIM))


def stdin_is_interactive() -> bool:
    """Whether the end of stdin means "stop": a terminal (Ctrl-D) or a pipe or
    socket that a controlling program closes. /dev/null and regular files (a
    detached service, ``docker run`` without ``-i``, ``nohup``) only feed
    their commands, then the server runs until a signal."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return sys.stdin.isatty() or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def stdin_is_background_terminal() -> bool:
    """Whether stdin is a terminal this process does not own (``serve &`` from
    a shell): reading it would stop the process with SIGTTIN."""
    try:
        fd = sys.stdin.fileno()
        return os.isatty(fd) and os.tcgetpgrp(fd) != os.getpgrp()
    except (OSError, ValueError, AttributeError):
        return False


async def _run_console(console: Console, stop: anyio.Event) -> None:
    if sys.platform != "win32" and stdin_is_background_terminal():
        return  # no prompt; SIGTERM or Ctrl-C after `fg` stops the server
    stop_at_eof = stdin_is_interactive()
    await console.run(stdin_lines())
    if stop_at_eof or console.quit:
        stop.set()
