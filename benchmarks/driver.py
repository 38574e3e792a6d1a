"""Servers fed by the neutral raw driver (``../shared/bench-driver``): each server
in its own process, its CPU time read from ``/proc`` around the driver's timed
window. A library for bench.py and a small CLI:

    python benchmarks/driver.py install
    python benchmarks/driver.py run -- python benchmarks/server_ours.py --backend trio
    python benchmarks/driver.py run --mode seq --conc 100 -- node benchmarks/server_node.js
    python benchmarks/driver.py run --mode conns --n 10000 --collector \
        -- python benchmarks/server_ours.py --gc-stats [--gc-threshold 0,0,0]

The server command gets ``--port P`` appended (unless it contains ``{port}``,
which is replaced); it must bind 127.0.0.1:P. Servers of benchmarks/server_*
read JSON commands on stdin and stop at end of input; any other command (e.g.
``ocpp-rpc serve --no-stdin``) is stopped with SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = Path(os.environ.get("OCPP_RPC_SHARED", ROOT.parent / "shared"))
SHARED_DRIVER = SHARED / "bench-driver"
SHARED_NODE = SHARED / "interop" / "node"
#: Git-ignored, writable: the driver (and, without .interop, Node ocpp-rpc) with node_modules.
DRIVER_DIR = Path(os.environ.get("OCPP_RPC_BENCH_DRIVER", HERE / ".driver"))
INTEROP_NODE_MODULES = Path(os.environ.get(
    "OCPP_RPC_NODE_MODULES", ROOT / ".interop" / "node" / "node_modules"))

CLK_TCK = os.sysconf("SC_CLK_TCK")
#: Open files a benchmark process may use (soft limit, raised in the children only).
NOFILE = 20_000
START_TIMEOUT = 30.0  # seconds for a server to accept
STOP_TIMEOUT = 30.0  # seconds for a server to leave after end of input / SIGTERM


# -- installation ------------------------------------------------------------

def _npm_ci(source: Path, target: Path, marker: str) -> Path:
    """Copy `source` to `target` (writable) and ``npm ci`` there once."""
    if (target / "node_modules" / marker).exists():
        return target
    if not (source / "package-lock.json").exists():
        raise FileNotFoundError(f"nothing to install: no {source}/package-lock.json")
    if shutil.which("npm") is None:
        raise FileNotFoundError("no npm on PATH")
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file():
            dest = target / path.name
            shutil.copyfile(path, dest)  # copyfile: the copy is writable, the source is not
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                   cwd=target, check=True, timeout=600)
    return target


def install_driver() -> Path:
    """The raw driver, installed (idempotent); returns its directory."""
    return _npm_ci(SHARED_DRIVER, DRIVER_DIR / "raw", "ws")


def install_node_server() -> Path:
    """node_modules holding ocpp-rpc: the interop copy nox made, else one of our own."""
    if (INTEROP_NODE_MODULES / "ocpp-rpc").exists():
        return INTEROP_NODE_MODULES
    return _npm_ci(SHARED_NODE, DRIVER_DIR / "node", "ocpp-rpc") / "node_modules"


def driver_dir() -> Path | None:
    """The installed driver's directory, or None (nothing is installed here)."""
    path = DRIVER_DIR / "raw"
    return path if (path / "node_modules" / "ws").exists() and shutil.which("node") else None


def node_modules() -> Path | None:
    for path in (INTEROP_NODE_MODULES, DRIVER_DIR / "node" / "node_modules"):
        if (path / "ocpp-rpc").exists():
            return path
    return None


# -- /proc -------------------------------------------------------------------

def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return text[text.rindex(")") + 2:].split()  # fields from 3 (state) on


def children(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with suppress(OSError, ValueError):
                parents.setdefault(int(_stat(int(entry))[1]), []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += parents.get(p, [])
    return tree


def cpu_seconds(pid: int, tree: bool = True) -> float:
    """utime + stime of `pid` (and of its living descendants), in seconds."""
    total = 0
    for p in children(pid) if tree else [pid]:
        with suppress(OSError):
            fields = _stat(p)
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def rss_kib(pid: int, tree: bool = True) -> int:
    """VmRSS of `pid` (and its descendants), KiB."""
    total = 0
    for p in children(pid) if tree else [pid]:
        with suppress(OSError):
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
    return total


def listeners(port: int) -> int:
    """How many sockets listen on 127.0.0.1:`port` (several with SO_REUSEPORT)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        return sum(1 for line in f.readlines()[1:]
                   if line.split()[1] == want and line.split()[3] == "0A")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _raise_nofile() -> None:
    """In a child before exec: soft open-file limit up to NOFILE, under the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


# -- a server process ----------------------------------------------------------

@dataclass
class Server:
    """A server command running in its own session, bound to 127.0.0.1:port."""

    argv: Sequence[str]
    listeners: int = 1  # sockets that must listen before it counts as started
    env: dict[str, str] | None = None
    commands: bool = True  # reads JSON commands on stdin (else: output ignored, SIGTERM stops it)
    #: Seconds after which `timeout` stops a server that does not end by itself
    #: at end of input (e.g. ``ocpp-rpc serve --no-stdin``, redis-server).
    deadline: float | None = None
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[str] | None = None
    _stderr: IO[str] | None = None
    _pid: int | None = None

    @property
    def pid(self) -> int:
        """The server's first process (under `timeout` with a deadline)."""
        assert self.proc is not None
        return self._pid or self.proc.pid

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp"

    def start(self) -> None:
        argv = [a.replace("{port}", str(self.port)) for a in self.argv]
        if not any("{port}" in a for a in self.argv):
            argv += ["--port", str(self.port)]
        if self.deadline is not None:
            argv = ["timeout", "-k", "10", str(int(self.deadline)), *argv]
        # stderr to a file: a chatty server must never block on a full pipe
        self._stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE if self.commands else subprocess.DEVNULL,
            stderr=self._stderr, text=True,
            env=None if self.env is None else os.environ | self.env,
            start_new_session=True, preexec_fn=_raise_nofile)
        deadline = time.monotonic() + START_TIMEOUT
        while self.deadline is not None and self._pid is None:
            self._pid = next((p for p in children(self.proc.pid) if p != self.proc.pid), None)
            if self._pid is None:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"{' '.join(argv)} did not start")
                time.sleep(0.01)
        while listeners(self.port) < self.listeners:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{' '.join(argv)} exited {self.proc.returncode}:\n"
                                   f"{self.stderr_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{' '.join(argv)} did not listen on {self.port}")
            time.sleep(0.05)

    def command(self, **command: Any) -> dict[str, Any]:
        """Send a JSON command line, return the JSON line it answers."""
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"server ended: {self.stderr_tail()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read()[-2000:]

    def stop(self) -> None:
        """End of input, then SIGTERM, then SIGKILL to its process group."""
        proc, self.proc, self._pid = self.proc, None, None
        if proc is None:
            return
        with suppress(OSError):
            if proc.stdin:
                proc.stdin.close()
        signals = (None, signal.SIGTERM) if self.commands else (signal.SIGTERM,)
        for sig in signals:
            if sig is not None:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
            try:
                proc.wait(STOP_TIMEOUT / 2)
                break
            except subprocess.TimeoutExpired:
                continue
        # workers of a multi-process server may outlive their parent
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.stdout:
            proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the driver ----------------------------------------------------------------

class Driver:
    """One run of ``node driver.js MODE``; JSON lines out, commands in."""

    def __init__(self, mode: str, url: str, *args: str, max_seconds: float = 120) -> None:
        path = driver_dir()
        if path is None:
            raise FileNotFoundError("the raw driver is not installed (driver.py install)")
        self.proc = subprocess.Popen(
            ["node", str(path / "driver.js"), mode, "--url", url, *args,
             "--max-seconds", str(int(max_seconds))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_raise_nofile)
        assert self.proc.stdout is not None
        self.out: IO[str] = self.proc.stdout

    def line(self) -> dict[str, Any]:
        text = self.out.readline()
        if not text:
            self.proc.wait(10)
            err = self.proc.stderr.read()[-2000:] if self.proc.stderr else ""
            raise RuntimeError(f"driver ended ({self.proc.returncode}): {err}")
        obj: dict[str, Any] = json.loads(text)
        if obj.get("event") in ("error", "deadline"):
            raise RuntimeError(f"driver: {obj}")
        return obj

    def say(self, text: str = "next") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        with suppress(OSError):
            if self.proc.stdin:
                self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe:
                pipe.close()

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cpu(server: Server, extra: Sequence[int]) -> tuple[float, float, float]:
    return (cpu_seconds(server.pid), cpu_seconds(server.pid, tree=False),
            sum(cpu_seconds(p) for p in extra))


def timed(server: Server, mode: str, *args: str, extra: Sequence[int] = ()
          ) -> tuple[dict[str, Any], tuple[float, float, float]]:
    """Run a self-timing mode (seq, fanin); returns its final line and the CPU
    seconds from the ``{"mark":"start"}`` line to that final line of: the
    server with its descendants, its first process alone, the `extra` pids."""
    with Driver(mode, server.url, *args) as d:
        while d.line().get("mark") != "start":
            pass
        cpu0 = _cpu(server, extra)
        final = d.line()
        cpu1 = _cpu(server, extra)
    return final, (cpu1[0] - cpu0[0], cpu1[1] - cpu0[1], cpu1[2] - cpu0[2])


def fanin(server: Server, clients: int = 200, seconds: float = 5, msg: str = "hb",
          extra: Sequence[int] = ()) -> dict[str, float]:
    """`clients` driver clients, each making sequential calls for `seconds`:
    calls/s and server CPU µs per call (all its processes; ``parent_us``: its
    first process alone; ``extra_us``: the `extra` pids, e.g. Redis)."""
    final, (cpu, parent, other) = timed(
        server, "fanin", "--clients", str(clients), "--seconds", str(seconds), "--msg", msg,
        extra=extra)
    if final["failed"] or final["errors"]:
        raise RuntimeError(f"fanin: {final}")
    calls = final["calls"]
    return {"rate": final["calls_per_s"], "cpu_us": 1e6 * cpu / calls,
            "parent_us": 1e6 * parent / calls, "extra_us": 1e6 * other / calls,
            "driver_cpu": final["cpu_s"] / seconds}


def seq(server: Server, n: int = 20_000, conc: int = 100, msg: str = "hb") -> dict[str, float]:
    """One driver client, `n` calls with `conc` in flight: calls/s, CPU µs/call."""
    final, (cpu, _, _) = timed(server, "seq", "--n", str(n), "--conc", str(conc), "--msg", msg)
    return {"rate": final["calls_per_s"], "cpu_us": 1e6 * cpu / n,
            "driver_cpu": final["cpu_s"] / final["seconds"]}


def conns(server: Server, n: int = 10_000, warm: int = 200, parallel: int = 50,
          settle: float = 1.0, collector: bool = False) -> dict[str, float]:
    """Open `warm` connections, then `n` more: conn/s and server CPU per
    connection of the `n`, and the server's RSS growth per connection (KiB)
    while they are idle. With `collector` (server_ours.py ``--gc-stats``), the
    cyclic collector's share in the window too: µs per connection in all its
    collections (``gc_us``) and in full ones (``full_us``), the ``longest``
    full one (ms), how many ``full_passes``, and the objects it tracks per
    connection at the end (``tracked``)."""
    with Driver("conns", server.url, "--stages", f"{warm},{warm + n}",
                "--parallel", str(parallel), max_seconds=300) as d:
        first = d.line()
        if first["failed"]:
            raise RuntimeError(f"conns: {first}")
        time.sleep(settle)
        gc0 = server.command(op="gc") if collector else {}
        rss0, cpu0 = rss_kib(server.pid), cpu_seconds(server.pid)
        d.say()
        stage = d.line()
        cpu = cpu_seconds(server.pid) - cpu0
        gc1 = server.command(op="gc") if collector else {}
        time.sleep(settle)
        rss1 = rss_kib(server.pid)
    if stage["failed"]:
        raise RuntimeError(f"conns: {stage}")
    opened = stage["opened"]
    result = {"rate": stage["conn_per_s"], "cpu_us": 1e6 * cpu / opened,
              "kib": (rss1 - rss0) / opened, "opened": opened}
    if collector:
        result |= {
            "gc_us": 1e6 * (gc1["seconds"] - gc0["seconds"]) / opened,
            "full_us": 1e6 * (gc1["full_seconds"] - gc0["full_seconds"]) / opened,
            "longest": 1e3 * gc1["longest"],  # the window's (the warm-up's are short)
            "full_passes": gc1["collections"][2] - gc0["collections"][2],
            "tracked": (gc1["tracked"] - gc0["tracked"]) / opened,
        }
    return result


def answer(server: Server, clients: int = 200, calls: int = 20, msg: str = "gc"
           ) -> dict[str, float]:
    """The server calls each of `clients` driver clients `calls` times in
    sequence (all clients at once); the server times it (its ``call`` command)."""
    with Driver("answer", server.url, "--clients", str(clients)) as d:
        hello = d.line()
        if hello["failed"]:
            raise RuntimeError(f"answer: {hello}")
        cpu0 = cpu_seconds(server.pid)
        done = server.command(op="call", clients=clients, calls=calls, msg=msg)
        cpu = cpu_seconds(server.pid) - cpu0
    return {"rate": done["calls"] / done["seconds"], "cpu_us": 1e6 * cpu / done["calls"]}


MODES: dict[str, Callable[..., dict[str, float]]] = {
    "fanin": fanin, "seq": seq, "conns": conns, "answer": answer}


@contextmanager
def serving(argv: Sequence[str], **options: Any) -> Iterator[Server]:
    with Server(argv, **options) as server:
        yield server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install", help="install the raw driver and Node ocpp-rpc (once)")
    run = sub.add_parser("run", help="feed one server command")
    run.add_argument("--mode", choices=sorted(MODES), default="fanin")
    run.add_argument("--msg", default=None, help="hb, mv (fanin, seq); gc, gcall (answer)")
    run.add_argument("--clients", type=int, default=200)
    run.add_argument("--seconds", type=float, default=5)
    run.add_argument("--n", type=int, default=20_000, help="seq: calls; conns: connections")
    run.add_argument("--conc", type=int, default=100)
    run.add_argument("--listeners", type=int, default=1)
    run.add_argument("--collector", action="store_true",
                     help="conns: the collector's share too (server_ours.py --gc-stats)")
    run.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.cmd == "install":  # a part that cannot be installed is skipped by bench.py
        for what, install in (("raw driver", install_driver),
                              ("Node ocpp-rpc", install_node_server)):
            try:
                print(f"{what}: {install()}")
            except (OSError, subprocess.SubprocessError) as exc:
                print(f"{what} not installed: {exc}", file=sys.stderr)
        return
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    with serving(argv, listeners=args.listeners) as server:
        if args.mode == "fanin":
            result = fanin(server, args.clients, args.seconds, args.msg or "hb")
        elif args.mode == "seq":
            result = seq(server, args.n, args.conc, args.msg or "hb")
        elif args.mode == "conns":
            result = conns(server, args.n, collector=args.collector)
        else:
            result = answer(server, args.clients, msg=args.msg or "gc")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
