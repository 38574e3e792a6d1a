"""``ocpp-rpc serve --workers N --redis URL``: N worker processes on one
port, one CSMS.

The parent process (this module) is a supervisor and the console:

- it picks the port (``--port 0``: a free one) and holds it with a bound,
  never listening ``SO_REUSEPORT`` socket, so that nothing else takes it
  while workers come and go;
- it joins the cluster itself as a connection-less node (`RedisCluster`):
  that checks Redis before any worker starts, and serves the stdin console,
  which calls any charger by identity through the cluster and follows the
  cluster's events to know which chargers are connected;
- it starts worker 1, then the others once worker 1 listens (so that a bad
  option fails once, with one message): each is ``python -m ocpp_rpc
  <the same arguments> --port P --workers 1 --no-stdin --worker-of
  PID:FD:INDEX``, an `RPCServer` cluster node listening on P with
  ``reuse_port``, that reports on the pipe FD once it listens and prints its
  own connections and frames (tagged with its index) to the shared stdout;
- a worker that dies while serving is started again (its chargers reconnect
  to the others at once meanwhile); one that fails before it listens stops
  everything with its exit status;
- SIGINT and SIGTERM are forwarded to every worker (as SIGTERM); the parent
  exits once every worker has (killing any still running after
  `STOP_GRACE` seconds), with 0 if all stopped cleanly.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import Process

from .common import EXIT_BROKEN_PIPE, EXIT_CONNECT_FAILED, UsageError
from .output import BOLD, DIM, RED, YELLOW, Output
from .serve import (
    Console,
    _run_console,
    _wait_for_signal,
    make_cluster,
    server_ssl_context,
)

#: Seconds a worker gets to close its connections after SIGTERM before SIGKILL.
STOP_GRACE = 20.0
#: Seconds before a worker that died is started again (then doubling, up to 30).
RESTART_DELAY = 1.0


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound (not listening) ``SO_REUSEPORT`` socket on `host:port`: it
    picks the port when `port` is 0 and keeps it ours; connections only ever
    go to the workers' listening sockets."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = info[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc}") from None
    return sock


async def _read_line(fd: int) -> str:
    """One line from pipe `fd` ("" if it is closed first)."""
    data = b""
    while not data.endswith(b"\n"):
        await anyio.wait_readable(fd)
        chunk = os.read(fd, 256)
        if not chunk:
            return ""
        data += chunk
    return data.decode()


@dataclass
class Worker:
    index: int
    process: Process | None = None
    node_id: str = ""
    exit_codes: list[int] = field(default_factory=list)


class ClusterConsole(Console):
    """The console of ``serve --workers``: calls by identity go through the
    cluster; ``list`` and ``*`` cover the chargers the cluster reported
    connected (to any node) since this ``serve`` started."""

    def __init__(self, cluster: Any, out: Output) -> None:
        self.cluster = cluster
        self.out = out
        self.quit = False
        self.chargers: dict[str, tuple[str, str]] = {}  # identity -> (protocol, node)

    async def follow(self) -> None:
        """Keep `chargers` up to date from the cluster's events."""
        async with self.cluster.events() as events:
            async for event in events:
                if event.type == "connected":
                    self.chargers[event.identity] = (event.protocol, event.node_id)
                elif self.chargers.get(event.identity, ("", ""))[1] == event.node_id:
                    del self.chargers[event.identity]

    def connected(self) -> list[tuple[str, str | None, str | None]]:
        return [(identity, protocol or None, node)
                for identity, (protocol, node) in sorted(self.chargers.items())]

    async def call_identity(self, identity: str, action: str, params: Any) -> Any:
        return await self.cluster.call(identity, action, params)


class Supervisor:
    def __init__(self, args: argparse.Namespace, out: Output, cluster: Any, port: int) -> None:
        self.args = args
        self.out = out
        self.cluster = cluster
        self.port = port
        self.workers = [Worker(index) for index in range(1, args.workers + 1)]
        self.stopping = False
        self.changed = anyio.Event()

    def command(self, index: int, ready_fd: int) -> list[str]:
        return [
            sys.executable, "-m", "ocpp_rpc", *self.args.argv, "--port", str(self.port),
            "--workers", "1", "--no-stdin", "--worker-of", f"{os.getpid()}:{ready_fd}:{index}",
        ]

    async def start(self, worker: Worker) -> bool:
        """Start `worker` and wait until it listens; False if it exited first."""
        read_fd, write_fd = os.pipe()
        try:
            try:
                worker.process = await anyio.open_process(
                    self.command(worker.index, write_fd), stdin=subprocess.DEVNULL,
                    stdout=None, stderr=None, pass_fds=(write_fd,),
                )
            finally:
                os.close(write_fd)
            line = await _read_line(read_fd)
        finally:
            os.close(read_fd)
        if not line:
            worker.exit_codes.append(await worker.process.wait())
            return False
        worker.node_id = line.split()[1]
        return True

    async def run(self) -> int:
        stop = anyio.Event()
        self.out.on_reader_gone = stop.set  # as a worker does (see serve_command)
        console = ClusterConsole(self.cluster, self.out)
        status = 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(_wait_for_signal, stop, self.out)
            tg.start_soon(console.follow)
            with anyio.CancelScope() as starting:
                tg.start_soon(_cancel_when_set, stop, starting)
                status = await self.start_all()
            if status == 0 and not stop.is_set():
                self.announce()
                for worker in self.workers:
                    tg.start_soon(self.supervise, worker)
                if not self.args.no_stdin:
                    tg.start_soon(_run_console, console, stop)
                await stop.wait()
            self.stopping = True
            codes = await self.stop_all()
            tg.cancel_scope.cancel()
        if status != 0:  # a worker failed to start (it said why on stderr)
            return status
        self.out.emit("stopped", self.out.style("stopped", DIM), exit_codes=codes)
        if self.out.reader_gone:
            return EXIT_BROKEN_PIPE
        # Stopped by our SIGTERM before it could handle it (still starting): clean too.
        return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1

    async def start_all(self) -> int:
        """Worker 1, then the others together; -> 0, or the exit status of a
        worker that failed to start."""
        first, *others = self.workers
        if not await self.start(first):
            return first.exit_codes[-1] or 1
        async with anyio.create_task_group() as tg:
            for worker in others:
                tg.start_soon(self.start, worker)
        for worker in others:
            if not worker.node_id:
                return worker.exit_codes[-1] or 1
        return 0

    def announce(self) -> None:
        args, out = self.args, self.out
        scheme = "wss" if args.tls_cert else "ws"
        host = f"[{args.host}]" if ":" in args.host else args.host
        url = f"{scheme}://{host}:{self.port}"
        protocols = ", ".join(args.protocols) or "any"
        out.emit("listening", out.style(
            f"listening on {url} with {len(self.workers)} workers (chargers connect to "
            f"{url}/ocpp/<identity>; protocols: {protocols})", BOLD),
            host=args.host, port=self.port, url=url, protocols=list(args.protocols),
            workers=[self.describe(worker) for worker in self.workers])
        if not args.no_stdin and not args.json:
            out.write(out.style("type 'CP1 Reset {\"type\": \"Soft\"}' to call a charger on "
                                "any worker, 'help' for more", DIM))

    @staticmethod
    def describe(worker: Worker) -> dict[str, Any]:
        pid = worker.process.pid if worker.process is not None else None
        return {"index": worker.index, "pid": pid, "node": worker.node_id}

    async def supervise(self, worker: Worker) -> None:
        """Start `worker` again whenever it dies while serving."""
        delay = RESTART_DELAY
        while True:
            assert worker.process is not None
            code = await worker.process.wait()
            if self.stopping:
                return
            worker.exit_codes.append(code)
            self.out.emit("worker_exited", self.out.style(
                f"worker {worker.index} (pid {worker.process.pid}) exited with {code}; "
                f"starting it again in {delay:g} s", RED),
                **self.describe(worker), code=code)
            await anyio.sleep(delay)
            if self.stopping:
                return
            if await self.start(worker):
                delay = RESTART_DELAY
                self.out.emit("worker_started", self.out.style(
                    f"worker {worker.index} started again (pid {worker.process.pid})", YELLOW),
                    **self.describe(worker))
            else:
                delay = min(delay * 2, 30.0)

    async def stop_all(self) -> list[int]:
        """SIGTERM every worker, wait (SIGKILL after `STOP_GRACE`); -> exit codes."""
        running = [w.process for w in self.workers if w.process is not None]
        for process in running:
            if process.returncode is None:
                try:
                    process.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        with anyio.move_on_after(STOP_GRACE):
            for process in running:
                await process.wait()
        for process in running:
            if process.returncode is None:
                process.kill()
        codes = []
        with anyio.CancelScope(shield=True):
            for process in running:
                codes.append(await process.wait())
                await process.aclose()
        return codes


async def _cancel_when_set(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def serve_workers(args: argparse.Namespace) -> int:
    """``ocpp-rpc serve --workers N --redis URL`` (N > 1)."""
    out = Output(json_lines=args.json)
    server_ssl_context(args)  # bad TLS options fail here, before any worker starts
    cluster = make_cluster(args)
    with reserve_port(args.host, args.port) as reservation:
        port = reservation.getsockname()[1]
        async with AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(cluster)
            except OSError as exc:  # ClusterUnavailable
                print(f"ocpp-rpc serve: error: cannot join the cluster: {exc}", file=sys.stderr)
                return EXIT_CONNECT_FAILED
            return await Supervisor(args, out, cluster, port).run()
