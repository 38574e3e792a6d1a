"""API.md "Typed payloads" checked from outside, as a user meets it: the names
and signatures the modules declare (read from their source, so the check is
the same on every Python), the 2.x definitions kept as named types, `call` and
`handler` over real sockets on an `RPCClient`, a `ServerClient` and an
`RPCServer`, and a user's program under `mypy --strict`."""

from __future__ import annotations

import ast
import importlib
import json
import re
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import anyio
import pytest
from harness import make_client, serving

from ocpp_rpc import NOREPLY, Call, ServerClient, v21, v201

if sys.version_info >= (3, 11):
    from typing import is_typeddict
else:  # the modules' TypedDicts come from typing_extensions on 3.10
    from typing_extensions import is_typeddict

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "ocpp_rpc" / "schemas"
MODULES = {"v16": "ocpp1.6", "v201": "ocpp2.0.1", "v21": "ocpp2.1"}
SEND = {"NotifyPeriodicEventStream"}  # 2.1 SEND: a request, never answered


def actions(folder: str) -> dict[str, bool]:
    """Action -> answered?, from the schema file names alone."""
    stems = {path.stem for path in (SCHEMAS / folder).glob("*.json")}
    found: dict[str, bool] = {}
    for stem in stems:
        if stem.endswith("Response"):
            continue
        action = stem.removesuffix("Request") if folder != "ocpp1.6" else stem
        found[action] = f"{action}Response" in stems
    return found


def overloads(name: str, function: str) -> dict[str, ast.AsyncFunctionDef | ast.FunctionDef]:
    """The `@overload`s of `function` in the module's source, by their action."""
    tree = ast.parse((ROOT / "ocpp_rpc" / f"{name}.py").read_text("utf-8"))
    found: dict[str, ast.AsyncFunctionDef | ast.FunctionDef] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == function:
            if not any(ast.unparse(d) == "overload" for d in node.decorator_list):
                continue
            annotation = node.args.args[1].annotation
            assert isinstance(annotation, ast.Constant), ast.unparse(node)
            assert isinstance(annotation.value, str), ast.unparse(node)
            match = re.fullmatch(r'Literal\["(\w+)"\]', annotation.value)
            assert match, annotation.value
            found[match[1]] = node
    return found


def annotation(node: ast.expr | None) -> str:
    assert isinstance(node, ast.Constant) and isinstance(node.value, str)
    return node.value


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_action_has_its_request_and_response_and_call_overload(name: str) -> None:
    module = importlib.import_module(f"ocpp_rpc.{name}")
    every = actions(MODULES[name])
    assert every, name
    for action, answered in every.items():
        assert is_typeddict(getattr(module, f"{action}Request")), action
        assert f"{action}Request" in module.__all__
        if answered:
            assert is_typeddict(getattr(module, f"{action}Response")), action
        else:
            assert action in SEND and not hasattr(module, f"{action}Response")
    calls = overloads(name, "call")
    assert set(calls) == {action for action, answered in every.items() if answered}
    for action, node in calls.items():
        client, _, params = node.args.args
        # a ServerClient is an RPCClient; RPCEndpoint is what a handler's `call.client` is
        assert annotation(client.annotation) == "RPCClient | RPCEndpoint"
        assert annotation(params.annotation) == f"{action}Request"
        assert annotation(node.returns) == f"{action}Response"
        [timeout] = node.args.kwonlyargs
        assert timeout.arg == "timeout" and annotation(timeout.annotation) == "float | None"
        [default] = node.args.kw_defaults
        assert isinstance(default, ast.Constant) and default.value is None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_handler_is_typed_for_every_action_sends_included(name: str) -> None:
    """An inbound SEND runs its handler (API.md, the wire table): 2.1's
    NotifyPeriodicEventStream needs a typed `handler` like any other action."""
    every = actions(MODULES[name])
    handlers = overloads(name, "handler")
    assert set(handlers) == set(every)
    for action, node in handlers.items():
        assert annotation(node.args.args[0].annotation) == "RPCClient | RPCServer"
        response = f"{action}Response" if every[action] else "None"
        assert annotation(node.returns) == f"_Register[{action}Request, {response}]"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_schema_definitions_are_named_types_used_by_name(name: str) -> None:
    """2.0.1/2.1 (and the 1.6 security extension) keep each definition's name:
    an enumeration is a `Literal` alias of that name, an object a TypedDict of
    that name, and every field that refers to it is annotated with the name."""
    module = importlib.import_module(f"ocpp_rpc.{name}")
    tree = ast.parse((ROOT / "ocpp_rpc" / f"{name}.py").read_text("utf-8"))
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    seen = 0
    for path in sorted((SCHEMAS / MODULES[name]).glob("*.json")):
        schema = json.loads(path.read_text("utf-8"))
        definitions: dict[str, Any] = schema.get("definitions", {})
        for definition, node in definitions.items():
            seen += 1
            value = getattr(module, definition)
            if "enum" in node:
                assert get_origin(value) is Literal, definition
                assert set(get_args(value)) == set(node["enum"]), definition
            else:
                assert is_typeddict(value) and value.__name__ == definition, definition
        stem = path.stem
        owners = [(stem if stem.endswith(("Request", "Response")) else f"{stem}Request", schema)]
        owners += [(d, n) for d, n in definitions.items() if "properties" in n]
        for owner, node in owners:
            fields = {
                item.target.id: ast.unparse(item.annotation)
                for item in classes[owner].body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            }
            for key, child in node.get("properties", {}).items():
                ref = child.get("$ref") or child.get("items", {}).get("$ref")
                if ref:
                    target = ref.rsplit("/", 1)[1]
                    written = re.sub(r"^NotRequired\[(.*)\]$", r"\1", fields[key])
                    assert written in (target, f"list[{target}]"), (owner, key, fields[key])
    assert seen or name == "v16"


@pytest.mark.anyio
async def test_call_and_handler_on_client_server_client_and_server(anyio_backend: str) -> None:
    """Over a socket: `handler` on an RPCServer, on a ServerClient (its own
    handler wins over the server's) and on an RPCClient; each receives a `Call`
    whose params are the dict sent; sync, async, awaitable and NOREPLY results;
    `call` from both ends, its `timeout` passed through (call_timeout is 30 s,
    so only the given timeout can end the calls that get no answer in time)."""
    seen: dict[str, Call[Any]] = {}
    accepted: list[ServerClient] = []
    ready = anyio.Event()
    with anyio.fail_after(5):
        async with serving(protocols=["ocpp2.0.1"], strict_mode=True, call_timeout=30) as (
            server, url):

            @v201.handler(server, "BootNotification")
            def boot(call: Call[v201.BootNotificationRequest]) -> v201.BootNotificationResponse:
                seen["boot"] = call
                return {"status": "Accepted", "currentTime": "2025-01-01T00:00:00Z", "interval": 7}

            @v201.handler(server, "Heartbeat")
            def server_heartbeat(call: Call[v201.HeartbeatRequest]) -> v201.HeartbeatResponse:
                return {"currentTime": "1999-01-01T00:00:00Z"}

            @v201.handler(server, "StatusNotification")
            def status(call: Call[v201.StatusNotificationRequest]) -> Any:
                return NOREPLY

            @v201.handler(server, "DataTransfer")
            async def calls_back(call: Call[v201.DataTransferRequest]) -> v201.DataTransferResponse:
                reset = await v201.call(call.client, "Reset", {"type": "Immediate"}, timeout=2)
                return {"status": "Accepted", "data": reset["status"]}

            @server.on_client
            async def on_client(client: ServerClient) -> None:
                async def answer() -> v201.HeartbeatResponse:
                    return {"currentTime": "2025-01-01T00:00:00Z"}

                def heartbeat(
                    call: Call[v201.HeartbeatRequest],
                ) -> Awaitable[v201.HeartbeatResponse]:
                    seen["heartbeat"] = call
                    return answer()  # an awaitable, from a plain function

                v201.handler(client, "Heartbeat")(heartbeat)
                accepted.append(client)
                ready.set()

            async with make_client(
                url + "/CP1", protocols=["ocpp2.0.1"], strict_mode=True, call_timeout=30
            ) as client:

                @v201.handler(client, "Reset")
                async def reset(call: Call[v201.ResetRequest]) -> v201.ResetResponse:
                    seen["reset"] = call
                    return {"status": "Scheduled"}

                @v201.handler(client, "GetVariables")
                async def never(call: Call[v201.GetVariablesRequest]) -> Any:
                    return NOREPLY

                request: v201.BootNotificationRequest = {
                    "reason": "PowerUp", "chargingStation": {"model": "M", "vendorName": "V"}}
                boot_result = await v201.call(client, "BootNotification", request, timeout=2)
                assert boot_result == {
                    "status": "Accepted", "currentTime": "2025-01-01T00:00:00Z", "interval": 7}
                assert type(seen["boot"].params) is dict and seen["boot"].params == request
                assert seen["boot"].method == "BootNotification"
                assert await v201.call(client, "Heartbeat", {}) == {
                    "currentTime": "2025-01-01T00:00:00Z"}  # the ServerClient's own handler
                assert seen["heartbeat"].params == {}
                assert await v201.call(client, "DataTransfer", {"vendorId": "V"}) == {
                    "status": "Accepted", "data": "Scheduled"}  # called back on call.client
                assert seen["reset"].params == {"type": "Immediate"}
                with pytest.raises(TimeoutError):
                    await v201.call(client, "StatusNotification", {
                        "timestamp": "2025-01-01T00:00:00Z", "connectorStatus": "Available",
                        "evseId": 1, "connectorId": 1}, timeout=0.05)

                await ready.wait()
                station = accepted[0]
                assert await v201.call(station, "Reset", {"type": "OnIdle"}, timeout=2) == {
                    "status": "Scheduled"}
                assert type(seen["reset"].params) is dict
                assert seen["reset"].params == {"type": "OnIdle"}
                with pytest.raises(TimeoutError):
                    await v201.call(station, "GetVariables", {"getVariableData": [
                        {"component": {"name": "C"}, "variable": {"name": "V"}}]}, timeout=0.05)


@pytest.mark.anyio
async def test_timeout_none_means_the_clients_call_timeout(anyio_backend: str) -> None:
    with anyio.fail_after(5):
        async with serving(protocols=["ocpp2.0.1"]) as (server, url):
            server.handle("Heartbeat", lambda call: NOREPLY)
            async with make_client(url + "/CP1", protocols=["ocpp2.0.1"], call_timeout=0.05) as cp:
                with pytest.raises(TimeoutError):
                    await v201.call(cp, "Heartbeat", {})


@pytest.mark.anyio
async def test_a_typed_send_handler_runs_with_the_payload(anyio_backend: str) -> None:
    got: list[v21.NotifyPeriodicEventStreamRequest] = []
    arrived = anyio.Event()
    with anyio.fail_after(5):
        async with serving(protocols=["ocpp2.1"], strict_mode=True) as (server, url):

            @v21.handler(server, "NotifyPeriodicEventStream")
            def stream(call: Call[v21.NotifyPeriodicEventStreamRequest]) -> None:
                got.append(call.params)
                arrived.set()

            payload: v21.NotifyPeriodicEventStreamRequest = {
                "id": 1, "pending": 0, "basetime": "2025-01-01T00:00:00Z",
                "data": [{"t": 0.5, "v": "1"}]}
            async with make_client(url + "/CP1", protocols=["ocpp2.1"], strict_mode=True) as cp:
                await cp.send("NotifyPeriodicEventStream", payload)
                await arrived.wait()
    assert got == [payload] and type(got[0]) is dict


PROGRAM = '''
from __future__ import annotations
from typing import Any
from ocpp_rpc import NOREPLY, Call, RPCClient, RPCServer, ServerClient, v16, v201, v21


async def run(client: RPCClient, station: ServerClient, server: RPCServer) -> None:
    boot = await v201.call(client, "BootNotification", {
        "reason": "PowerUp", "chargingStation": {"model": "M", "vendorName": "V"}}, timeout=2.5)
    reveal_type(boot)
    reveal_type(await v16.call(station, "Reset", {"type": "Soft"}, timeout=None))

    @v201.handler(station, "Heartbeat")
    def heartbeat(call: Call[v201.HeartbeatRequest]) -> v201.HeartbeatResponse:
        reveal_type(call.params)
        return {"currentTime": "2025-01-01T00:00:00Z"}

    @v21.handler(server, "NotifyPeriodicEventStream")
    def stream(call: Call[v21.NotifyPeriodicEventStreamRequest]) -> None:
        reveal_type(call.params["data"])

    @v201.handler(server, "StatusNotification")
    async def back(call: Call[v201.StatusNotificationRequest]) -> v201.StatusNotificationResponse:
        reveal_type(await v201.call(call.client, "Reset", {"type": "Immediate"}))
        return {}

    @v21.handler(server, "NotifyPeriodicEventStream")
    def answers(call: Call[v21.NotifyPeriodicEventStreamRequest]) -> v21.HeartbeatResponse:
        return {"currentTime": "2025-01-01T00:00:00Z"}

    await v201.call(client, "BootNotification", {
        "reason": "PowerUp", "chargingStation": {"model": "M", "vendorName": 1}})
    await v21.call(client, "NotifyPeriodicEventStream", {
        "id": 1, "pending": 0, "basetime": "x", "data": []})
'''
#: line -> what mypy must say there (a note or an error), nothing else anywhere
EXPECTED = {
    10: 'Revealed type is "TypedDict(ocpp_rpc.v201.BootNotificationResponse,',
    11: 'Revealed type is "TypedDict(ocpp_rpc.v16.ResetResponse,',
    15: 'Revealed type is "TypedDict(ocpp_rpc.v201.HeartbeatRequest,',
    20: "list[TypedDict(ocpp_rpc.v21.StreamDataElementType,",
    24: 'Revealed type is "TypedDict(ocpp_rpc.v201.ResetResponse,',
    27: 'Argument 1 has incompatible type "Callable[[Call[NotifyPeriodicEventStreamRequest]], '
        'HeartbeatResponse]"',
    31: 'No overload variant of "call" matches argument types',
    33: 'No overload variant of "call" matches argument types',
}


@pytest.mark.skipif(
    sys.version_info[:2] != (3, 11), reason="mypy's verdict does not depend on the interpreter"
)
def test_a_users_program_under_mypy_strict(tmp_path: Path) -> None:
    api = pytest.importorskip("mypy.api")
    program = tmp_path / "user_program.py"
    program.write_text(PROGRAM, "utf-8")
    stdout, stderr, status = api.run([
        "--strict", "--config-file", str(ROOT / "pyproject.toml"),
        "--cache-dir", str(ROOT / ".mypy_cache" / "typed-tests"),
        "--no-pretty", "--no-error-summary", "--hide-error-context", str(program),
    ])
    assert status in (0, 1), stderr
    said: dict[int, list[str]] = {}
    for line in stdout.splitlines():
        match = re.match(r"^[^:]*user_program\.py:(\d+): (?:error|note): (.*)$", line)
        if match and not match[2].startswith(("Possible overload", "    def ", "Revealed local")):
            said.setdefault(int(match[1]), []).append(match[2])
    for number, message in EXPECTED.items():
        assert any(message in said_ for said_ in said.get(number, [])), (number, said)
    assert set(said) == set(EXPECTED), said
