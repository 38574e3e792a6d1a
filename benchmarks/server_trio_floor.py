"""The Trio floor for the raw driver (driver.py): what one Trio task per
connection costs with no RPC layer and no WebSocket library, read and
written the way our Trio stream does it (non-blocking ``recv``/``send`` on the
socket, ``wait_readable`` only when a read would block).

    python benchmarks/server_trio_floor.py --port P

Enough of RFC 6455 for the driver: the upgrade, whole masked frames (one or
several per read, 7- and 16-bit lengths), Close answered and the socket
closed. Each CALL is decoded and answered: Heartbeat with
``{"currentTime": ...}``, anything else with ``{}``; JSON by orjson when
installed (stdlib json otherwise). End of input stops it; it makes no calls
of its own (no ``call`` command).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import socket
import sys
from datetime import datetime, timezone
from typing import Any

import trio

try:
    import orjson

    loads: Any = orjson.loads
    dumps: Any = orjson.dumps
except ImportError:
    loads = json.loads

    def dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()


GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def recv(sock: socket.socket) -> bytes:
    while True:
        try:
            return sock.recv(65536)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)


async def send(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)


def unmask(key: bytes, payload: bytes) -> bytes:
    n = len(payload)
    mask = int.from_bytes((key * ((n >> 2) + 1))[:n], "little")
    return (int.from_bytes(payload, "little") ^ mask).to_bytes(n, "little")


def frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big") + payload


async def serve(sock: socket.socket) -> None:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        data = await recv(sock)
        if not data:
            return
        buffer += data
    head, _, buffer = buffer.partition(b"\r\n\r\n")
    key = b""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            key = value.strip()
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    await send(sock, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept
               + b"\r\nSec-WebSocket-Protocol: ocpp1.6\r\n\r\n")
    while True:
        out = []
        pos, end = 0, len(buffer)
        while end - pos >= 6:
            opcode, n = buffer[pos] & 0x0F, buffer[pos + 1] & 0x7F
            start = pos + 6
            if n == 126:
                if end - pos < 8:
                    break
                n, start = int.from_bytes(buffer[pos + 2 : pos + 4], "big"), pos + 8
            if start + n > end:
                break
            payload = unmask(buffer[start - 4 : start], buffer[start : start + n])
            pos = start + n
            if opcode == 0x8:  # Close: echo it, then drop the connection
                await send(sock, frame(0x8, payload[:2]))
                return
            if opcode == 0x9:
                out.append(frame(0xA, payload))
                continue
            message = loads(payload)
            if message[0] == 2:
                result = {"currentTime": now()} if message[2] == "Heartbeat" else {}
                out.append(frame(0x1, dumps([3, message[1], result])))
        buffer = buffer[pos:]
        if out:
            await send(sock, b"".join(out))
        data = await recv(sock)
        if not data:
            return
        buffer += data


async def main(port: int, max_seconds: float) -> None:
    listener = trio.socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await listener.bind(("127.0.0.1", port))
    listener.listen(4096)

    async def connection(raw: socket.socket) -> None:
        with raw:
            try:
                await serve(raw)
            except OSError:
                pass

    async with trio.open_nursery() as nursery:

        async def accept() -> None:
            while True:
                accepted, _ = await listener.accept()
                raw = socket.socket(fileno=accepted.detach())
                raw.setblocking(False)
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                nursery.start_soon(connection, raw)

        nursery.start_soon(accept)
        with trio.move_on_after(max_seconds):
            await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=900)
    args = parser.parse_args()
    trio.run(main, args.port, args.max_seconds)
