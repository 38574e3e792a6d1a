"""The websockets floor for the raw driver (driver.py): a bare ``websockets``
server (asyncio) that decodes each CALL and answers its CALLRESULT, with no RPC
layer: the least a Python server on websockets can do per call.

    python benchmarks/server_websockets.py --port P

Heartbeat gets ``{"currentTime": ...}``, anything else ``{}`` (stdlib json).
End of input stops it. It makes no calls of its own (no ``call`` command).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime, timezone
from typing import Any

from websockets.asyncio.server import ServerConnection, serve


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def handler(ws: ServerConnection) -> None:
    async for text in ws:
        message = json.loads(text)
        if message[0] == 2:
            result: dict[str, Any] = {"currentTime": now()} if message[2] == "Heartbeat" else {}
            await ws.send(json.dumps([3, message[1], result], separators=(",", ":")))


async def main(port: int, max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    async with serve(handler, "127.0.0.1", port, subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                     compression=None, max_size=None):
        stdin = loop.run_in_executor(None, sys.stdin.read)
        await asyncio.wait_for(stdin, max_seconds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=900)
    args = parser.parse_args()
    asyncio.run(main(args.port, args.max_seconds))
