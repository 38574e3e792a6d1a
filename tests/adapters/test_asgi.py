"""`server.asgi_app` inside real ASGI servers: Uvicorn (asyncio) and Hypercorn
(asyncio and Trio workers), mounted in Starlette/FastAPI (API.md: RPCServer.asgi_app)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from hypercorn.config import Config as HypercornConfig
from rawpeer import HttpResponse, http_request, raw_client
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from ocpp_rpc import (
    Call,
    CloseResult,
    ConnectError,
    Handshake,
    Reject,
    RPCClient,
    RPCServer,
    ServerClient,
)
from ocpp_rpc._transport.asgi import ASGIApp, ASGIWebSocket, _request_path

pytestmark = pytest.mark.anyio

HOSTS = [("uvicorn", "asyncio"), ("hypercorn-asyncio", "asyncio"), ("hypercorn-trio", "trio")]


#: Run a test under each real host (the host decides the backend: Uvicorn is asyncio only).
by_host = pytest.mark.parametrize(
    ("host", "anyio_backend"), HOSTS, ids=[host for host, _ in HOSTS]
)


# -- helpers -------------------------------------------------------------------------


def listening_socket() -> socket.socket:
    """A bound, listening loopback socket: clients may connect before the host runs."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


@asynccontextmanager
async def hosting(host: str, app: Any) -> AsyncIterator[int]:
    """Serve `app` with a real Uvicorn or Hypercorn on a free loopback port
    (`host`: "uvicorn", "hypercorn-asyncio" or "hypercorn-trio")."""
    sock = listening_socket()
    port = int(sock.getsockname()[1])
    if host == "uvicorn":
        import uvicorn

        config = uvicorn.Config(
            app, ws="wsproto", lifespan="on", log_config=None, log_level="warning",
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                yield port
            finally:
                server.should_exit = True
        sock.close()
        return
    config = HypercornConfig()
    config.bind = [f"fd://{sock.detach()}"]
    config.graceful_timeout = 2
    config.accesslog = None
    config.errorlog = None
    if host == "hypercorn-trio":
        from hypercorn.trio import serve
    else:
        from hypercorn.asyncio import serve  # type: ignore[assignment]
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_serve, serve, app, config, stop.wait)
        try:
            yield port
        finally:
            stop.set()


async def _serve(serve: Any, app: Any, config: Any, trigger: Callable[[], Any]) -> None:
    await serve(app, config, shutdown_trigger=trigger)


def starlette_app(server: RPCServer) -> Starlette:
    """A host application: a plain route, and the RPC server mounted at /ocpp,
    run for the application's lifetime by its lifespan."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with server:
            yield

    async def health(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[Route("/health", health), Mount("/ocpp", app=server.asgi_app)],
        lifespan=lifespan,
    )


async def get(port: int, path: str) -> HttpResponse:
    """GET over HTTP/1.1 (one request per connection: hosts keep connections alive)."""
    return await http_request(f"http://127.0.0.1:{port}{path}", headers=[("Connection", "close")])


def make_client(port: int, identity: str = "CP1", **options: Any) -> RPCClient:
    options.setdefault("ping_interval", None)
    options.setdefault("reconnect", False)
    return RPCClient(f"ws://127.0.0.1:{port}/ocpp", identity, **options)


# -- through real servers ------------------------------------------------------------------


@by_host
async def test_calls_both_ways_through_a_mounted_app(host: str) -> None:
    server = RPCServer(protocols=["ocpp2.0.1", "ocpp1.6"], ping_interval=None)
    seen: list[Handshake] = []
    results: list[Any] = []
    done = anyio.Event()

    @server.auth
    async def auth(handshake: Handshake) -> None:
        seen.append(handshake)

    @server.handler("Heartbeat")
    def heartbeat(call: Call) -> dict[str, Any]:
        return {"currentTime": "2024-01-01T00:00:00Z", "from": call.client.identity}

    @server.on_client
    async def on_client(client: ServerClient) -> None:
        results.append(await client.call("GetVariables", {"x": 1}))
        done.set()

    with anyio.fail_after(10):
        async with hosting(host, starlette_app(server)) as port:
            client = make_client(port, "CP 7", protocols=["ocpp1.6"], query={"a": "b"})
            client.handle("GetVariables", lambda call: {"echo": call.params})
            async with client:
                assert client.protocol == "ocpp1.6"
                assert await client.call("Heartbeat") == {
                    "currentTime": "2024-01-01T00:00:00Z", "from": "CP 7"
                }
                await done.wait()
                assert results == [{"echo": {"x": 1}}]
                assert list(server.clients) == ["CP 7"]
            assert len(seen) == 1
            handshake = seen[0]
            assert (handshake.identity, handshake.endpoint) == ("CP 7", "/ocpp")
            assert handshake.protocols == ("ocpp1.6",)
            assert dict(handshake.query) == {"a": "b"}
            assert handshake.remote_address is not None
            assert handshake.remote_address[0] == "127.0.0.1"
            assert handshake.headers["host"] == f"127.0.0.1:{port}"
            assert handshake.password is None and handshake.peer_certificate is None


@by_host
async def test_auth_rejection_is_the_http_status(host: str) -> None:
    server = RPCServer(protocols=["ocpp2.0.1"], ping_interval=None)
    aborted: list[Any] = []
    server.on("upgrade_aborted", aborted.append)

    @server.auth
    async def auth(handshake: Handshake) -> None:
        if handshake.password != b"s3cr:t\xff":
            raise Reject(401, "bad password")

    with anyio.fail_after(10):
        async with hosting(host, starlette_app(server)) as port:
            with pytest.raises(ConnectError) as info:
                async with make_client(port, protocols=["ocpp2.0.1"], password=b"wrong"):
                    pytest.fail("connected although rejected")
            assert info.value.status == 401
            async with raw_client(f"ws://127.0.0.1:{port}/ocpp/CP2", ["ocpp2.0.1"]) as peer:
                assert (peer.status, peer.body) == (401, b"bad password")
            password = b"s3cr:t\xff"
            async with make_client(port, "CP:3", protocols=["ocpp2.0.1"], password=password):
                pass
    assert [(a.identity, a.status, a.reason) for a in aborted] == [
        ("CP1", 401, "bad password"), ("CP2", 401, "bad password")
    ]


@by_host
async def test_malformed_identity_and_missing_subprotocol_are_400(host: str) -> None:
    server = RPCServer(protocols=["ocpp2.0.1"], ping_interval=None)
    with anyio.fail_after(10):
        async with hosting(host, starlette_app(server)) as port:
            base = f"ws://127.0.0.1:{port}/ocpp"
            async with raw_client(base + "/%ff%fe", ["ocpp2.0.1"]) as peer:
                assert peer.status == 400
            async with raw_client(base + "/CP1", ["ocpp1.6"]) as peer:
                assert (peer.status, peer.body) == (400, b"no mutually agreed subprotocol")


@by_host
async def test_identity_with_an_encoded_slash_is_one_segment(host: str) -> None:
    server = RPCServer(ping_interval=None)
    seen: list[Handshake] = []

    @server.auth
    async def auth(handshake: Handshake) -> None:
        seen.append(handshake)

    with anyio.fail_after(10):
        async with hosting(host, starlette_app(server)) as port:
            async with make_client(port, "CP/1 x"):
                pass
    assert [(h.identity, h.endpoint) for h in seen] == [("CP/1 x", "/ocpp")]


@by_host
async def test_http_under_the_mount_gets_404_and_other_routes_still_work(host: str) -> None:
    server = RPCServer(ping_interval=None)
    with anyio.fail_after(10):
        async with hosting(host, starlette_app(server)) as port:
            assert (await get(port, "/ocpp/CP1")).status == 404
            response = await get(port, "/health")
            assert (response.status, response.body) == (200, b"ok")


@by_host
async def test_server_close_closes_the_hosted_clients(host: str) -> None:
    server = RPCServer(ping_interval=None)
    closed: list[CloseResult] = []
    server.on("client", lambda client: client.on("close", closed.append))
    with anyio.fail_after(10):
        async with hosting(host, starlette_app(server)) as port:
            async with make_client(port) as client:
                await server.close(code=4001, reason="maintenance")
                assert await client.wait_closed() == CloseResult(4001, "maintenance")
                assert dict(server.clients) == {}
            assert closed == [CloseResult(4001, "maintenance")]
            with pytest.raises(ConnectError) as info:
                async with make_client(port):
                    pytest.fail("connected to a closed server")
            assert info.value.status == 503


@by_host
async def test_a_client_closing_leaves_the_server_clients(host: str) -> None:
    server = RPCServer(ping_interval=None)
    closed = anyio.Event()
    results: list[CloseResult] = []

    def on_client(client: ServerClient) -> None:
        def on_close(result: CloseResult) -> None:
            results.append(result)
            closed.set()

        client.on("close", on_close)

    server.on("client", on_client)
    with anyio.fail_after(10):
        async with hosting(host, starlette_app(server)) as port:
            async with make_client(port) as client:
                assert list(server.clients) == ["CP1"]
                await client.close(code=4002, reason="bye")
            await closed.wait()
            assert dict(server.clients) == {}
    # The close code as the host reports it: Hypercorn 0.18 turns every close
    # the client starts into 1006.
    assert results == [CloseResult(4002, "bye")] or (
        host.startswith("hypercorn") and results == [CloseResult(1006, "")]
    )


@by_host
async def test_oversized_message_closes_with_1009(host: str) -> None:
    server = RPCServer(ping_interval=None, max_message_size=100)
    with anyio.fail_after(10):
        async with hosting(host, starlette_app(server)) as port:
            async with make_client(port) as client:
                await client.send_raw("x" * 101)
                assert (await client.wait_closed()).code == 1009


@by_host
async def test_max_connections_applies_to_hosted_clients(host: str) -> None:
    server = RPCServer(ping_interval=None, max_connections=1)
    aborted: list[Any] = []
    server.on("upgrade_aborted", aborted.append)
    with anyio.fail_after(10):
        async with hosting(host, starlette_app(server)) as port:
            async with make_client(port, "CP1"):
                first = server.clients["CP1"]
                with pytest.raises(ConnectError) as info:
                    async with make_client(port, "CP2"):
                        pytest.fail("connected beyond max_connections")
                assert info.value.status == 503
            await first.wait_closed()  # the server has seen it go: its slot is free
            async with make_client(port, "CP2"):
                pass
    assert [(a.identity, a.status) for a in aborted] == [("CP2", 503)]


@by_host
async def test_a_server_that_is_not_running_refuses_with_500(host: str) -> None:
    server = RPCServer(ping_interval=None)  # never entered
    app = Starlette(routes=[Mount("/ocpp", app=server.asgi_app)])
    with anyio.fail_after(10):
        async with hosting(host, app) as port:
            with pytest.raises(ConnectError) as info:
                async with make_client(port):
                    pytest.fail("connected to a server that is not running")
            assert info.value.status == 500


@by_host
async def test_served_alone_the_lifespan_runs_the_rpc_server(host: str) -> None:
    server = RPCServer(ping_interval=None)
    server.handle("Echo", lambda call: call.params)
    with anyio.fail_after(10):
        async with hosting(host, server.asgi_app) as port:
            client = RPCClient(f"ws://127.0.0.1:{port}/", "CP1", reconnect=False,
                               ping_interval=None)
            async with client:
                assert await client.call("Echo", {"a": 1}) == {"a": 1}
                assert server.clients["CP1"].handshake.endpoint == "/"
            assert (await get(port, "/")).status == 404
    assert server._task_group is None  # the lifespan's shutdown closed it


async def test_fastapi_mount(anyio_backend: str) -> None:
    fastapi = pytest.importorskip("fastapi")
    server = RPCServer(protocols=["ocpp2.0.1"], ping_interval=None)
    server.handle("Heartbeat", lambda call: {"currentTime": "now"})

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with server:
            yield

    app = fastapi.FastAPI(lifespan=lifespan)
    app.mount("/ocpp", server.asgi_app)
    with anyio.fail_after(10):
        async with hosting("hypercorn-trio" if anyio_backend == "trio" else "uvicorn", app) as port:
            async with make_client(port, protocols=["ocpp2.0.1"]) as client:
                assert await client.call("Heartbeat") == {"currentTime": "now"}


# -- the ASGI protocol without a host ---------------------------------------------------------


class FakeASGI:
    """Feeds an ASGI app messages and records what it sends."""

    def __init__(self, *incoming: dict[str, Any]) -> None:
        self.sent: list[dict[str, Any]] = []
        self._incoming = list(incoming)
        self._arrived = anyio.Event()

    def feed(self, message: dict[str, Any]) -> None:
        self._incoming.append(message)
        self._arrived.set()

    async def receive(self) -> dict[str, Any]:
        while not self._incoming:
            self._arrived = anyio.Event()
            await self._arrived.wait()
        return self._incoming.pop(0)

    async def send(self, message: Any) -> None:
        self.sent.append(dict(message))


def websocket_scope(path: str = "/ocpp/CP1", **extra: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "websocket", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "headers": [(b"host", b"example")], "client": ("10.0.0.1", 5000),
        "subprotocols": [], "extensions": {},
    }
    scope.update(extra)
    return scope


async def test_without_the_denial_extension_a_refusal_closes_before_accepting() -> None:
    async with RPCServer(ping_interval=None) as server:

        @server.auth
        async def auth(handshake: Handshake) -> None:
            raise Reject(401, "no")

        peer = FakeASGI({"type": "websocket.connect"})
        with anyio.fail_after(5):
            await server.asgi_app(websocket_scope(), peer.receive, peer.send)
        assert peer.sent == [{"type": "websocket.close", "code": 1008, "reason": "no"}]


async def test_without_the_denial_extension_a_stopped_server_closes_with_1011() -> None:
    server = RPCServer(ping_interval=None)
    peer = FakeASGI({"type": "websocket.connect"})
    with anyio.fail_after(5):
        await server.asgi_app(websocket_scope(), peer.receive, peer.send)
    assert peer.sent == [
        {"type": "websocket.close", "code": 1011, "reason": "the RPC server is not running"}
    ]


async def test_with_the_denial_extension_a_refusal_is_an_http_response() -> None:
    async with RPCServer(ping_interval=None) as server:

        @server.auth
        async def auth(handshake: Handshake) -> None:
            raise Reject(403, "forbidden")

        peer = FakeASGI({"type": "websocket.connect"})
        scope = websocket_scope(extensions={"websocket.http.response": {}})
        with anyio.fail_after(5):
            await server.asgi_app(scope, peer.receive, peer.send)
        assert [m["type"] for m in peer.sent] == [
            "websocket.http.response.start", "websocket.http.response.body"
        ]
        assert peer.sent[0]["status"] == 403 and peer.sent[1]["body"] == b"forbidden"


async def test_lifespan_is_acknowledged_when_the_server_already_runs() -> None:
    async with RPCServer(ping_interval=None) as server:
        peer = FakeASGI({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"})
        with anyio.fail_after(5):
            await server.asgi_app({"type": "lifespan"}, peer.receive, peer.send)
        assert [m["type"] for m in peer.sent] == [
            "lifespan.startup.complete", "lifespan.shutdown.complete"
        ]
        assert server._task_group is not None  # not ours to stop


async def test_fallback_gets_every_scope_that_is_not_a_websocket() -> None:
    seen: list[str] = []

    async def fallback(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    app = ASGIApp(RPCServer(), fallback=fallback)
    peer = FakeASGI()
    await app({"type": "http", "path": "/"}, peer.receive, peer.send)
    await app({"type": "lifespan"}, peer.receive, peer.send)
    assert seen == ["http", "lifespan"] and peer.sent == []


async def test_unknown_scope_type_raises() -> None:
    peer = FakeASGI()
    with pytest.raises(ValueError):
        await RPCServer().asgi_app({"type": "carrier-pigeon"}, peer.receive, peer.send)


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ({"path": "/ocpp/CP1", "root_path": "/ocpp", "raw_path": b"/ocpp/CP1"}, "/ocpp/CP1"),
        ({"path": "/CP1", "root_path": "/ocpp", "raw_path": b"/CP1"}, "/ocpp/CP1"),
        ({"path": "/api/ocpp/CP1", "root_path": "/api/ocpp", "raw_path": b"/ocpp/CP1"},
         "/api/ocpp/CP1"),
        ({"path": "/ocpp/CP/1", "root_path": "", "raw_path": b"/ocpp/CP%2F1"}, "/ocpp/CP%2F1"),
        ({"path": "/ocpp/CP 1", "root_path": ""}, "/ocpp/CP%201"),
        ({"path": "/a b/CP1", "root_path": "", "raw_path": b"/a%20b/CP1"}, "/a%20b/CP1"),
    ],
)
def test_request_path_keeps_the_mount_and_the_raw_identity(
    scope: dict[str, Any], expected: str
) -> None:
    assert _request_path(scope) == expected


async def test_transport_reports_the_disconnect_and_refuses_to_send_after_it() -> None:
    peer = FakeASGI({"type": "websocket.receive", "text": "hi"},
                    {"type": "websocket.receive", "bytes": b"\x00"},
                    {"type": "websocket.disconnect", "code": 4000, "reason": "gone"})
    ws = ASGIWebSocket(peer.receive, peer.send, subprotocol="ocpp1.6")
    assert ws.subprotocol == "ocpp1.6"
    assert await ws.receive() == "hi"
    assert await ws.receive() == b"\x00"
    await ws.send("yo")
    await ws.ping()  # a no-op
    with pytest.raises(Exception) as info:
        await ws.receive()
    assert (info.value.code, info.value.reason) == (4000, "gone")  # type: ignore[attr-defined]
    with pytest.raises(type(info.value)):
        await ws.send("late")
    assert peer.sent == [{"type": "websocket.send", "text": "yo"}]


async def test_transport_close_waits_for_the_disconnect() -> None:
    peer = FakeASGI()
    ws = ASGIWebSocket(peer.receive, peer.send)
    async with anyio.create_task_group() as tg:
        tg.start_soon(ws.close, 4000, "bye")
        await anyio.wait_all_tasks_blocked()
        assert peer.sent == [{"type": "websocket.close", "code": 4000, "reason": "bye"}]
        assert ws.close_code is None
        peer.feed({"type": "websocket.disconnect", "code": 1005})
    assert (ws.close_code, ws.close_reason) == (4000, "bye")


async def test_transport_abort_wakes_the_reader_with_1006() -> None:
    peer = FakeASGI()
    ws = ASGIWebSocket(peer.receive, peer.send)
    codes: list[int] = []

    async def reader() -> None:
        try:
            await ws.receive()
        except Exception as exc:
            codes.append(exc.code)  # type: ignore[attr-defined]

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        await ws.abort()
    assert codes == [1006] and peer.sent == []


async def test_transport_closes_an_oversized_message_with_1009() -> None:
    peer = FakeASGI({"type": "websocket.receive", "text": "é" * 6})
    ws = ASGIWebSocket(peer.receive, peer.send, max_message_size=11)
    with pytest.raises(Exception) as info:
        await ws.receive()
    assert info.value.code == 1009  # type: ignore[attr-defined]
    assert peer.sent == [{"type": "websocket.close", "code": 1009, "reason": "message too big"}]
