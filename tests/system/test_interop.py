"""Interop with peers written by others (../shared/interop): the Node `ocpp-rpc`
2.2.1 package and the Python `ocpp` 2.1.0 package, in both directions.

`nox -s tests` / `nox -s interop` install the peers into `.interop/` and set
OCPP_RPC_INTEROP and INTEROP_PYTHON; without them these tests are skipped.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest

from ocpp_rpc import (
    Call,
    ConnectError,
    Handshake,
    Reject,
    RPCClient,
    RPCError,
    RPCFormatViolationError,
    RPCNotImplementedError,
    RPCNotSupportedError,
    RPCOccurrenceConstraintViolationError,
    RPCServer,
    ServerClient,
)

ROOT = Path(__file__).resolve().parents[2]
INTEROP = Path(os.environ.get("OCPP_RPC_INTEROP", ROOT / ".interop"))
HAVE_NODE = (INTEROP / "node" / "node_modules" / "ocpp-rpc").exists()
INTEROP_PYTHON = os.environ.get("INTEROP_PYTHON")


def _python_peers_available() -> bool:
    if not INTEROP_PYTHON or not (INTEROP / "python" / "csms.py").exists():
        return False
    probe = subprocess.run([INTEROP_PYTHON, "-c", "import ocpp, websockets"], capture_output=True)
    return probe.returncode == 0


HAVE_PYTHON = _python_peers_available()

if HAVE_NODE or HAVE_PYTHON:
    sys.path.insert(0, str(INTEROP))
    import peers  # type: ignore[import-not-found]

needs_node = pytest.mark.skipif(not HAVE_NODE, reason="run via `nox` (installs the Node peers)")
needs_python = pytest.mark.skipif(
    not HAVE_PYTHON, reason="run via `nox` (installs the Python `ocpp` peers)"
)
pytestmark = [pytest.mark.anyio, pytest.mark.interop]

NOW = "2024-01-01T00:00:00.000Z"
BOOT16 = {"chargePointVendor": "V", "chargePointModel": "M"}
BOOT201 = {"chargingStation": {"model": "M", "vendorName": "V"}, "reason": "PowerUp"}
BOOT = {"ocpp1.6": BOOT16, "ocpp2.0.1": BOOT201}
FORMAT_VIOLATION = {"ocpp1.6": "FormationViolation", "ocpp2.0.1": "FormatViolation"}
PROTOCOLS = pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1"])

T = TypeVar("T")


async def blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking peer helper (it waits on a pipe) off the event loop."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def script(steps: list[dict[str, Any]]) -> str:
    fd, path = tempfile.mkstemp(suffix=".jsonl", prefix="ocpp-rpc-interop-")
    with os.fdopen(fd, "w") as out:
        out.writelines(json.dumps(step) + "\n" for step in steps)
    return path


def fast_client(url: str, identity: str, **options: Any) -> RPCClient:
    options.setdefault("ping_interval", None)
    options.setdefault("reconnect", False)
    return RPCClient(url, identity, **options)


# -- our RPCClient against the Node ocpp-rpc server ------------------------------------


@needs_node
@PROTOCOLS
async def test_our_client_with_node_server_calls_both_ways(protocol: str) -> None:
    with await blocking(peers.node_server, "--protocols", protocol, "--fixed-time", NOW) as srv:
        async with fast_client(srv.url, "CP1", protocols=[protocol]) as client:
            assert client.protocol == protocol
            result = await client.call("BootNotification", BOOT[protocol])
            assert result == {"status": "Accepted", "currentTime": NOW, "interval": 300}
            assert await client.call("Echo", {"a": [1, "é", None]}) == {"a": [1, "é", None]}
            with pytest.raises(RPCNotSupportedError) as not_supported:
                await client.call("Fail", {"type": "NotSupported", "message": "nope"})
            assert not_supported.value.message == "nope"
            with pytest.raises(RPCFormatViolationError) as format_violation:
                await client.call("Fail", {"type": "FormatViolation"})
            assert format_violation.value.code == FORMAT_VIOLATION[protocol]
            with pytest.raises(TimeoutError):
                await client.call("Sleep", {"ms": 2000}, timeout=0.1)

            @client.handler("Reset")
            async def reset(call: Call) -> dict[str, Any]:
                assert call.protocol == protocol
                return {"status": "Accepted", "echo": call.params}

            @client.handler("Refuse")
            def refuse(call: Call) -> None:
                raise RPCFormatViolationError("bad payload", {"field": "x"})

            await blocking(srv.wait_for, event="connected", identity="CP1", protocol=protocol)
            res = await blocking(srv.request, {"cmd": "call", "identity": "CP1", "method": "Reset",
                                               "params": {"type": "Soft"}})
            assert res["ok"] and res["result"] == {"status": "Accepted", "echo": {"type": "Soft"}}
            res = await blocking(srv.request, {"cmd": "call", "identity": "CP1", "method": "Refuse",
                                               "params": {}})
            assert not res["ok"]
            assert res["error"]["code"] == FORMAT_VIOLATION[protocol]
            assert res["error"]["message"] == "bad payload"
            assert res["error"]["details"] == {"field": "x"}
            res = await blocking(srv.request, {"cmd": "call", "identity": "CP1", "method": "Nope",
                                               "params": {}})
            assert not res["ok"] and res["error"]["code"] == "NotImplemented"
            closed = await client.close(code=4000, reason="bye")
            assert closed == (4000, "bye")
        await blocking(srv.wait_for, event="disconnect", identity="CP1", code=4000, reason="bye")


@needs_node
async def test_node_server_close_code_reaches_our_client() -> None:
    with await blocking(peers.node_server, "--protocols", "ocpp1.6") as srv:
        async with fast_client(srv.url, "CP2", protocols=["ocpp1.6"]) as client:
            await blocking(srv.wait_for, event="connected", identity="CP2")
            res = await blocking(srv.request, {"cmd": "close", "identity": "CP2", "code": 4001,
                                               "reason": "later"})
            assert res["ok"]
            with anyio.fail_after(5):
                assert await client.wait_closed() == (4001, "later")


@needs_node
async def test_node_server_basic_auth() -> None:
    with await blocking(peers.node_server, "--password", "s3:cret") as srv:
        with pytest.raises(ConnectError) as refused:
            async with fast_client(srv.url, "CP3", protocols=["ocpp1.6"], password="wrong"):
                pass
        assert refused.value.status == 401
        password = b"s3:cret"
        async with fast_client(srv.url, "CP3", protocols=["ocpp1.6"], password=password) as client:
            assert "currentTime" in await client.call("Heartbeat")
        await blocking(srv.wait_for, event="connected", identity="CP3", passwordProvided=True,
                       password="s3:cret")


@needs_node
async def test_node_server_bad_frame_answer_reaches_us() -> None:
    with await blocking(peers.node_server, "--protocols", "ocpp2.0.1") as srv:
        async with fast_client(srv.url, "CP4", protocols=["ocpp2.0.1"]) as client:
            bad: list[Any] = []
            client.on("bad_message", bad.append)
            client.on("unexpected_response", bad.append)
            await client.send_raw("not json")
            # Node answers [4,"-1",...]: an answer to nothing we asked.
            assert await client.call("Echo", {"x": 1}) == {"x": 1}
            await blocking(srv.wait_for, event="badMessage", identity="CP4", message="not json")
        assert any(getattr(event, "message", None) == '[4,"-1","RpcFrameworkError",'
                   '"Message must be a JSON structure",{}]' for event in bad), bad


# -- the Node ocpp-rpc client against our RPCServer ---------------------------------------


async def serve_ours(server: RPCServer) -> str:
    listening = await server.listen()
    return f"ws://127.0.0.1:{listening.port}"


@needs_node
@PROTOCOLS
async def test_node_client_with_our_server_calls_both_ways(protocol: str) -> None:
    async with RPCServer(protocols=[protocol], ping_interval=None) as server:
        results: dict[str, Any] = {}
        done = anyio.Event()

        @server.handler("BootNotification")
        def boot(call: Call) -> dict[str, Any]:
            return {"status": "Accepted", "currentTime": NOW, "interval": 300}

        @server.handler("Unsupported")
        def unsupported(call: Call) -> None:
            raise RPCNotSupportedError("not here")

        @server.handler("Broken")
        def broken(call: Call) -> None:
            raise ValueError("secret internals")

        @server.on_client
        async def on_client(client: ServerClient) -> None:
            results["protocol"] = client.protocol
            await client.call("BootNotification", BOOT[protocol])  # wait until booted
            results["echo"] = await client.call("Echo", {"from": "server"})
            try:
                await client.call("Fail", {"type": "OccurrenceConstraintViolation", "message": "m"})
            except RPCError as exc:
                results["fail"] = exc
            done.set()

        url = await serve_ours(server)
        steps = [
            {"cmd": "call", "method": "BootNotification", "params": BOOT[protocol],
             "expect": {"ok": True, "result": {"status": "Accepted", "currentTime": NOW}}},
            {"cmd": "call", "method": "Unsupported", "params": {},
             "expect": {"ok": False, "error": {"code": "NotSupported", "message": "not here"}}},
            {"cmd": "call", "method": "Broken", "params": {},
             "expect": {"ok": False, "error": {"code": "InternalError"}}},
            {"cmd": "call", "method": "Missing", "params": {},
             "expect": {"ok": False, "error": {"code": "NotImplemented"}}},
            {"cmd": "expect", "event": {"event": "disconnect", "code": 4002, "reason": "done"},
             "timeoutMs": 10000},
        ]
        with await blocking(peers.node_client, url, "--identity", "NODE1", "--protocols", protocol,
                            "--script", script(steps)) as cli:
            with anyio.fail_after(10):
                await done.wait()
            assert results["protocol"] == protocol
            assert results["echo"] == {"from": "server"}
            assert isinstance(results["fail"], RPCOccurrenceConstraintViolationError)
            await blocking(cli.wait_for, event="result", step=3)  # the script's last call
            await server.clients["NODE1"].close(code=4002, reason="done")
            assert await blocking(cli.wait_exit, 15) == 0, [
                json.dumps(e) for e in cli.events if e["event"] == "expectFailed"]
            broken_answer = await blocking(cli.wait_for, event="result", ok=False,
                                           error={"code": "InternalError"})
            assert "secret internals" not in json.dumps(broken_answer)


@needs_node
async def test_node_client_basic_auth_with_our_server() -> None:
    async with RPCServer(protocols=["ocpp1.6"], ping_interval=None) as server:

        @server.auth
        async def auth(handshake: Handshake) -> None:
            if handshake.password != b"s3:cret":
                raise Reject(401, "Unauthorized")

        url = await serve_ours(server)
        with await blocking(peers.node_client, url, "--identity", "NODE2", "--password", "wrong",
                            "--max-seconds", "20") as bad:
            event = await blocking(bad.wait_for, event="connectFailed")
            assert event["error"].get("status") == 401
        steps = [{"cmd": "call", "method": "Nope", "params": {},
                  "expect": {"ok": False, "error": {"code": "NotImplemented"}}}]
        with await blocking(peers.node_client, url, "--identity", "NODE2", "--password",
                            "s3:cret", "--script", script(steps)) as good:
            assert await blocking(good.wait_exit, 15) == 0, good.events[-5:]


# -- our RPCClient against the Python `ocpp` CSMS ------------------------------------------


@needs_python
@PROTOCOLS
async def test_our_client_with_python_csms(protocol: str) -> None:
    with await blocking(peers.python_csms, "--fixed-time", NOW) as csms:
        async with fast_client(csms.url, "PY1", protocols=[protocol]) as client:
            assert client.protocol == protocol
            result = await client.call("BootNotification", BOOT[protocol])
            assert result["status"] == "Accepted"
            assert "currentTime" in await client.call("Heartbeat")
            with pytest.raises((RPCNotSupportedError, RPCNotImplementedError)):
                await client.call("Echo", {})

            @client.handler("Reset")
            def reset(call: Call) -> dict[str, str]:
                return {"status": "Accepted"}

            @client.handler("ClearCache")
            def clear_cache(call: Call) -> None:
                raise RPCNotSupportedError("no cache")

            await blocking(csms.wait_for, event="connected", identity="PY1", protocol=protocol)
            params = {"type": "Hard"} if protocol == "ocpp1.6" else {"type": "Immediate"}
            res = await blocking(csms.request, {"cmd": "call", "identity": "PY1",
                                                "method": "Reset", "params": params})
            assert res["ok"] and res["result"] == {"status": "Accepted"}, res
            res = await blocking(csms.request, {"cmd": "call", "identity": "PY1",
                                                "method": "ClearCache", "params": {}})
            assert not res["ok"] and res["error"]["code"] == "NotSupported", res
            await client.close(code=1000)
        await blocking(csms.wait_for, event="disconnect", identity="PY1", code=1000)


@needs_python
async def test_python_csms_basic_auth() -> None:
    with await blocking(peers.python_csms, "--password", "pw") as csms:
        with pytest.raises(ConnectError) as refused:
            async with fast_client(csms.url, "PY2", protocols=["ocpp1.6"], password="nope"):
                pass
        assert refused.value.status == 401
        async with fast_client(csms.url, "PY2", protocols=["ocpp1.6"], password="pw") as client:
            assert "currentTime" in await client.call("Heartbeat")


# -- the Python `ocpp` charge point against our RPCServer ---------------------------------------


@needs_python
@PROTOCOLS
async def test_python_charge_point_with_our_server(protocol: str) -> None:
    async with RPCServer(protocols=["ocpp2.0.1", "ocpp1.6"], ping_interval=None) as server:
        booted = anyio.Event()
        seen: list[str] = []

        @server.handler()
        def any_call(call: Call) -> dict[str, Any]:
            seen.append(call.method)
            if call.method == "BootNotification":
                booted.set()
                return {"status": "Accepted", "currentTime": NOW, "interval": 300}
            if call.method == "Heartbeat":
                return {"currentTime": NOW}
            return {}

        url = await serve_ours(server)
        with await blocking(peers.python_charge_point, url, "--identity", "PYCP",
                            "--protocols", protocol) as cp:
            with anyio.fail_after(15):
                await booted.wait()
            await blocking(cp.wait_for, event="result", id="boot:StatusNotification", ok=True,
                           timeout=15)
            client = server.clients["PYCP"]
            assert client.protocol == protocol
            params = {"type": "Soft"} if protocol == "ocpp1.6" else {"type": "OnIdle"}
            assert await client.call("Reset", params) == {"status": "Accepted"}
            with pytest.raises(RPCError) as unknown:
                await client.call("NoSuchAction", {})
            assert unknown.value.code in ("NotSupported", "NotImplemented")
            await client.close(code=4003, reason="bye")
            await blocking(cp.wait_for, event="disconnect", code=4003, timeout=10)
        assert seen[:3] == ["BootNotification", "Heartbeat", "StatusNotification"]


@needs_python
async def test_python_charge_point_basic_auth_with_our_server() -> None:
    async with RPCServer(protocols=["ocpp1.6"], ping_interval=None) as server:

        @server.auth
        async def auth(handshake: Handshake) -> None:
            if handshake.password != b"pw":
                raise Reject(401, "Unauthorized")

        url = await serve_ours(server)
        with await blocking(peers.python_charge_point, url, "--identity", "PYCP2", "--password",
                            "bad", "--max-seconds", "20") as cp:
            event = await blocking(cp.wait_for, event="connectFailed", timeout=15)
            assert event["error"].get("status") == 401


# -- strict mode: ours and Node ocpp-rpc's (ajv) agree on valid traffic ----------------------

STATUS = {
    "ocpp1.6": {"connectorId": 1, "errorCode": "NoError", "status": "Available"},
    "ocpp2.0.1": {"timestamp": NOW, "connectorStatus": "Available", "evseId": 1,
                  "connectorId": 1},
}
CSMS_CALL = {
    "ocpp1.6": ("GetConfiguration", {"key": ["HeartbeatInterval"]},
                {"configurationKey": [{"key": "HeartbeatInterval", "readonly": False,
                                       "value": "300"}]}),
    "ocpp2.0.1": ("GetVariables", {"getVariableData": [
        {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}]},
        {"getVariableResult": [{"attributeStatus": "Accepted", "attributeValue": "300",
                                "component": {"name": "OCPPCommCtrlr"},
                                "variable": {"name": "HeartbeatInterval"}}]}),
}


@needs_node
@PROTOCOLS
async def test_strict_client_with_strict_node_server(protocol: str) -> None:
    with await blocking(peers.node_server, "--strict", "--protocols", protocol,
                        "--fixed-time", NOW) as srv:
        async with fast_client(srv.url, "STRICT1", protocols=[protocol], strict_mode=True) as cp:
            failures: list[Any] = []
            cp.on("strict_validation_failure", failures.append)
            method, params, result = CSMS_CALL[protocol]
            cp.handle(method, lambda call: result)
            assert (await cp.call("BootNotification", BOOT[protocol]))["status"] == "Accepted"
            assert "currentTime" in await cp.call("Heartbeat")
            assert await cp.call("StatusNotification", STATUS[protocol]) == {}
            await blocking(srv.wait_for, event="connected", identity="STRICT1")
            res = await blocking(srv.request, {"cmd": "call", "identity": "STRICT1",
                                               "method": method, "params": params})
            assert res["ok"] and res["result"] == result, res
            with pytest.raises(RPCOccurrenceConstraintViolationError):
                await cp.call("BootNotification", {})  # refused locally, never sent
            assert [f.outbound for f in failures] == [True]
        assert not [e for e in srv.events if e.get("event") == "strictValidationFailure"]


@needs_node
@PROTOCOLS
async def test_strict_node_client_with_our_strict_server(protocol: str) -> None:
    async with RPCServer(protocols=[protocol], ping_interval=None, strict_mode=True) as server:
        failures: list[Any] = []
        results: dict[str, Any] = {}
        done = anyio.Event()
        server.handle("BootNotification",
                      lambda call: {"status": "Accepted", "currentTime": NOW, "interval": 300})
        server.handle("StatusNotification", lambda call: {})

        @server.on_client
        async def on_client(client: ServerClient) -> None:
            client.on("strict_validation_failure", failures.append)
            method, params, _ = CSMS_CALL[protocol]
            results["answer"] = await client.call(method, params)
            done.set()

        url = await serve_ours(server)
        steps = [
            {"cmd": "call", "method": "BootNotification", "params": BOOT[protocol],
             "expect": {"ok": True, "result": {"status": "Accepted"}}},
            {"cmd": "call", "method": "StatusNotification", "params": STATUS[protocol],
             "expect": {"ok": True, "result": {}}},
            {"cmd": "expect", "event": {"event": "callResult", "direction": "out"},
             "timeoutMs": 10000},
        ]
        with await blocking(peers.node_client, url, "--identity", "STRICT2", "--strict",
                            "--protocols", protocol, "--script", script(steps)) as cli:
            with anyio.fail_after(10):
                await done.wait()
            assert await blocking(cli.wait_exit, 15) == 0, [
                json.dumps(e) for e in cli.events if e["event"] == "expectFailed"]
        assert results["answer"]["configurationKey" if protocol == "ocpp1.6"
                                 else "getVariableResult"]
        assert failures == []
