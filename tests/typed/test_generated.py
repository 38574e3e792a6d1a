"""The generated modules `ocpp_rpc.v16`, `v201`, `v21` (API.md "Typed payloads"):
up to date with the generator and the schemas, faithful to the schemas (checked
here from the schemas, not from the generator's model), loaded only when
imported, and `call` / `handler` doing at run time what `client.call` and
`target.handle` do."""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, get_args, get_origin

import anyio
import pytest

from ocpp_rpc import NOREPLY, Call, RPCServer, v16, v21, v201
from ocpp_rpc.testing import connect

if sys.version_info >= (3, 11):
    from typing import get_type_hints, is_typeddict
else:  # the modules' TypedDicts come from typing_extensions on 3.10
    from typing_extensions import get_type_hints, is_typeddict

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "ocpp_rpc" / "schemas"
MODULES = {"v16": "ocpp1.6", "v201": "ocpp2.0.1", "v21": "ocpp2.1"}
SCALARS: dict[str, type] = {"string": str, "integer": int, "number": float, "boolean": bool}


def generator() -> ModuleType:
    path = ROOT / "tools" / "generate_types.py"
    spec = importlib.util.spec_from_file_location("generate_types", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


@pytest.mark.parametrize("name", sorted(MODULES))
def test_the_committed_module_is_what_the_generator_writes_today(name: str) -> None:
    """Fails after a schema or generator change until `python tools/generate_types.py`."""
    committed = (ROOT / "ocpp_rpc" / f"{name}.py").read_text("utf-8")
    assert generator().render(name) == committed, f"run: python tools/generate_types.py ({name})"


def test_a_schema_change_makes_the_committed_module_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    schemas = tmp_path / "schemas"
    (schemas / "ocpp1.6").mkdir(parents=True)
    for path in (SCHEMAS / "ocpp1.6").glob("*.json"):
        (schemas / "ocpp1.6" / path.name).write_bytes(path.read_bytes())
    heartbeat = schemas / "ocpp1.6" / "HeartbeatResponse.json"
    schema = json.loads(heartbeat.read_text("utf-8"))
    schema["properties"]["skew"] = {"type": "integer", "description": "A new key."}
    heartbeat.write_text(json.dumps(schema), "utf-8")
    module = generator()
    monkeypatch.setattr(module, "SCHEMAS", schemas)
    text = module.render("v16")
    assert text != (ROOT / "ocpp_rpc" / "v16.py").read_text("utf-8")
    assert "    #: A new key.\n    skew: NotRequired[int]\n" in text


def test_the_generator_check_mode_passes_on_the_committed_modules() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "generate_types.py"), "--check"],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def messages(folder: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(file, TypedDict name, schema) of every message file of a version."""
    found = []
    for path in sorted((SCHEMAS / folder).glob("*.json")):
        stem = path.stem
        # 1.6 names a request file after its action; so does 2.1 its SEND message
        if (folder == "ocpp1.6" and not stem.endswith("Response")) or (
            stem == "NotifyPeriodicEventStream"
        ):
            name = f"{stem}Request"
        else:
            name = stem
        found.append((path.name, name, json.loads(path.read_text("utf-8"))))
    return found


def check(
    hint: Any, node: dict[str, Any], schema: dict[str, Any], where: str, *, message: bool = False
) -> None:
    """`hint` (a resolved annotation) says what the schema `node` says; a
    `message` is a TypedDict even without properties (1.6's empty ones)."""
    if "$ref" in node:
        node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
    if "enum" in node:
        assert get_origin(hint) is Literal, where
        # as sets: typing caches Literal[...] by value, and Literal["W", "A"] == Literal["A", "W"]
        assert set(get_args(hint)) == set(node["enum"]), where
    elif "properties" in node or message:
        node.setdefault("properties", {})
        assert is_typeddict(hint), where
        hints = get_type_hints(hint)
        assert set(hints) == set(node["properties"]), where
        assert hint.__required_keys__ == frozenset(node.get("required", ())), where
        for key, child in node["properties"].items():
            check(hints[key], child, schema, f"{where}.{key}")
    elif node.get("type") == "array":
        assert get_origin(hint) is list, where
        check(get_args(hint)[0], node["items"], schema, f"{where}[]")
    elif node.get("type") == "object":
        assert hint == dict[str, Any], where
    elif "type" in node:
        assert hint is SCALARS[node["type"]], where
    else:
        assert hint is Any, where


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_message_of_the_version_is_its_schema_as_a_typeddict(name: str) -> None:
    module = importlib.import_module(f"ocpp_rpc.{name}")
    found = messages(MODULES[name])
    assert len(found) == {"v16": 78, "v201": 128, "v21": 181}[name]
    for file, type_name, schema in found:
        check(getattr(module, type_name), schema, schema, f"{file} {type_name}", message=True)
    typeddicts = {
        n for n, v in vars(module).items() if is_typeddict(v) and v.__module__ == module.__name__
    }
    assert typeddicts <= set(module.__all__)
    for exported in module.__all__:
        assert hasattr(module, exported), exported


def test_v201_names_2x_definitions_and_v16_its_inline_types() -> None:
    assert {"PowerUp", "Watchdog"} < set(get_args(v201.BootReasonEnumType))
    assert get_type_hints(v201.BootNotificationRequest)["chargingStation"] is (
        v201.ChargingStationType
    )
    assert get_type_hints(v16.AuthorizeResponse)["idTagInfo"] is v16.IdTagInfo
    assert v16.IdTagInfo.__required_keys__ == {"status"}
    assert get_type_hints(v16.StartTransactionResponse)["idTagInfo"] is v16.IdTagInfo
    assert "vendorId" in v21.CustomDataType.__required_keys__


def test_importing_ocpp_rpc_loads_no_typed_module() -> None:
    code = (
        "import sys, ocpp_rpc; print(sorted(m for m in sys.modules if m.startswith"
        "(('ocpp_rpc.v1', 'ocpp_rpc.v2'))))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert output.strip() == "[]"


def test_call_is_generic_and_otherwise_unchanged() -> None:
    alias = Call[v201.BootNotificationRequest]
    assert get_origin(alias) is Call and get_args(alias) == (v201.BootNotificationRequest,)
    params: v201.HeartbeatRequest = {}
    call = Call[v201.HeartbeatRequest]("Heartbeat", params, "1", "ocpp2.0.1", None)  # type: ignore[arg-type]
    assert type(call) is Call and call.params == {}
    assert not hasattr(call, "__dict__")
    with pytest.raises(AttributeError):
        call.method = "Other"  # type: ignore[misc]


@pytest.mark.anyio
async def test_typed_call_and_handler_go_through_the_untyped_api(anyio_backend: str) -> None:
    """Strict mode on both ends: every payload the typed API sent was valid."""
    seen: list[Call[Any]] = []
    with anyio.fail_after(5):
        server = RPCServer(protocols=["ocpp2.0.1"], strict_mode=True, ping_interval=None)
        async with server:

            @v201.handler(server, "BootNotification")
            def boot(call: Call[v201.BootNotificationRequest]) -> v201.BootNotificationResponse:
                seen.append(call)
                return {"status": "Accepted", "currentTime": "2025-01-01T00:00:00Z", "interval": 7}

            @v201.handler(server, "StatusNotification")
            async def status(call: Call[v201.StatusNotificationRequest]) -> Any:
                return NOREPLY

            def heartbeat(call: Call[v201.HeartbeatRequest]) -> v201.HeartbeatResponse:
                return {"currentTime": "2025-01-01T00:00:00Z"}

            assert v201.handler(server, "Heartbeat")(heartbeat) is heartbeat
            async with connect(
                server, "CP1", protocols=["ocpp2.0.1"], strict_mode=True, ping_interval=None
            ) as client:

                @v201.handler(client, "Reset")
                async def reset(call: Call[v201.ResetRequest]) -> v201.ResetResponse:
                    idle = call.params["type"] == "OnIdle"
                    return {"status": "Scheduled" if idle else "Accepted"}

                result = await v201.call(
                    client,
                    "BootNotification",
                    {"reason": "PowerUp", "chargingStation": {"model": "M", "vendorName": "V"}},
                    timeout=2,
                )
                assert result == {"status": "Accepted", "currentTime": "2025-01-01T00:00:00Z",
                                  "interval": 7}
                assert type(result) is dict
                assert seen[0].params == {
                    "reason": "PowerUp", "chargingStation": {"model": "M", "vendorName": "V"}}
                assert await v201.call(server.clients["CP1"], "Reset", {"type": "OnIdle"}) == {
                    "status": "Scheduled"}
                assert await v201.call(client, "Heartbeat", {}) == {
                    "currentTime": "2025-01-01T00:00:00Z"}
                with pytest.raises(TimeoutError):
                    await v201.call(
                        client, "StatusNotification",
                        {"timestamp": "2025-01-01T00:00:00Z", "connectorStatus": "Available",
                         "evseId": 1, "connectorId": 1},
                        timeout=0.05,
                    )

