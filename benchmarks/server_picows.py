"""The picows + uvloop floor for the raw driver (driver.py): a WebSocket
library compiled with Cython on uvloop, decoding each CALL and answering its
CALLRESULT inline in the frame callback, with no RPC layer and no task per
message: what a Python server can reach.

    python benchmarks/server_picows.py --port P

Heartbeat gets ``{"currentTime": ...}``, anything else ``{}``; JSON by orjson
when installed (stdlib json otherwise). End of input stops it. It makes no
calls of its own (no ``call`` command).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime, timezone
from typing import Any

import uvloop
from picows import (
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

try:
    import orjson

    loads: Any = orjson.loads
    dumps: Any = orjson.dumps
except ImportError:
    loads = json.loads

    def dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Listener(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            message = loads(frame.get_payload_as_bytes())
            if message[0] == 2:
                result = {"currentTime": now()} if message[2] == "Heartbeat" else {}
                transport.send(WSMsgType.TEXT, dumps([3, message[1], result]))
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif frame.msg_type == WSMsgType.PING:
            transport.send_pong(frame.get_payload_as_bytes())


def route(request: WSUpgradeRequest) -> WSUpgradeResponseWithListener:
    offered = request.headers.get("Sec-WebSocket-Protocol", "")
    headers = {"Sec-WebSocket-Protocol": "ocpp1.6"} if "ocpp1.6" in offered else {}
    return WSUpgradeResponseWithListener(WSUpgradeResponse.create_101_response(headers),
                                         Listener())


async def main(port: int, max_seconds: float) -> None:
    server = await ws_create_server(route, "127.0.0.1", port)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.read), max_seconds)
    finally:
        server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=900)
    args = parser.parse_args()
    uvloop.run(main(args.port, args.max_seconds))
