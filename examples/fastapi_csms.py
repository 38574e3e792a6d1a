"""An HTTP API in one process calling chargers connected to a CSMS in another,
through a cluster on Redis: the API holds no charger connections, only a
connection-less `RedisCluster`.

    pip install "ocpp-rpc[redis]" fastapi uvicorn        # hypercorn too, for --backend trio
    python examples/fastapi_csms.py csms --redis redis://127.0.0.1:6379/0 --port 9000
    python examples/fastapi_csms.py api  --redis redis://127.0.0.1:6379/0 --port 8000
    curl -X POST localhost:8000/chargers/CP001/reset -H 'content-type: application/json' \\
         -d '{"type": "OnIdle"}'

`POST /chargers/{identity}/reset` answers with the charger's answer, 404 when
the charger is connected to no CSMS node, 504 when it does not answer in
time, 502 when it answers with a CALLERROR or its connection closes first,
503 when Redis cannot be reached. `GET /chargers/{identity}` says which node
holds it. Run as many `csms` and `api` processes as you like.

FastAPI runs on asyncio under uvicorn (the usual way), or on Trio under
hypercorn (`--backend trio`): ocpp_rpc and its cluster run on both.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from ocpp_rpc import ConnectionClosed, RPCError, RPCServer, ServerClient
from ocpp_rpc.cluster import ClusterUnavailable, NotConnected, RedisCluster


class ResetRequest(BaseModel):
    type: Literal["Immediate", "OnIdle"] = "OnIdle"  # OCPP 2.0.1 ResetRequest


def create_app(redis_url: str, *, call_timeout: float = 30.0) -> FastAPI:
    """The API: one `RedisCluster` for the app's lifetime (joined on startup)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with RedisCluster(redis_url) as cluster:
            app.state.cluster = cluster
            yield

    app = FastAPI(title="CSMS API", lifespan=lifespan)

    @app.get("/chargers/{identity}")
    async def locate(identity: str) -> dict[str, str]:
        node = await app.state.cluster.locate(identity)
        if node is None:
            raise HTTPException(404, f"{identity} is not connected")
        return {"identity": identity, "node": node}

    @app.post("/chargers/{identity}/reset")
    async def reset(identity: str, request: ResetRequest | None = None) -> Any:
        params = (request or ResetRequest()).model_dump()
        try:
            return await app.state.cluster.call(identity, "Reset", params, timeout=call_timeout)
        except NotConnected:
            raise HTTPException(404, f"{identity} is not connected") from None
        except TimeoutError:  # the charger may still reset: the outcome is unknown
            raise HTTPException(504, f"{identity} did not answer in {call_timeout} s") from None
        except RPCError as error:
            detail = {"code": error.code, "message": error.message, "details": error.details}
            raise HTTPException(502, detail) from None
        except ConnectionClosed as closed:
            raise HTTPException(502, f"{identity} went away ({closed.code})") from None
        except ClusterUnavailable:
            raise HTTPException(503, "the cluster cannot be reached") from None

    return app


async def run_csms(redis_url: str, host: str, port: int) -> None:
    """A CSMS node: chargers connect here; calls from the API reach them."""
    async with RPCServer(protocols=["ocpp2.0.1"], cluster=RedisCluster(redis_url)) as server:

        @server.on_client
        async def on_client(client: ServerClient) -> None:
            print(f"CSMS: {client.identity} connected", flush=True)

        listening = await server.listen(port, host, reuse_port=True)
        print(f"listening on ws://{listening.host}:{listening.port}/ocpp", flush=True)
        await anyio.sleep_forever()


def run_api(redis_url: str, host: str, port: int, backend: str, call_timeout: float) -> None:
    """The API: uvicorn on asyncio, or hypercorn on Trio."""
    app = create_app(redis_url, call_timeout=call_timeout)
    if backend == "trio":
        import trio
        from hypercorn.config import Config
        from hypercorn.trio import serve

        config = Config()
        config.bind = [f"{host}:{port}"]
        trio.run(serve, app, config)
    else:
        import uvicorn

        uvicorn.run(app, host=host, port=port, log_level="warning")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=["csms", "api"])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="csms: 9000, api: 8000")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--call-timeout", type=float, default=30.0, help="api: seconds")
    options = parser.parse_args()
    default_port = 9000 if options.role == "csms" else 8000
    port = default_port if options.port is None else options.port  # 0: any free port
    if options.role == "csms":
        anyio.run(run_csms, options.redis, options.host, port, backend=options.backend)
    else:
        run_api(options.redis, options.host, port, options.backend, options.call_timeout)


if __name__ == "__main__":
    main()
