"""Strict mode wired into connections: the four validation points, SEND, the
`strict_validation_failure` event, wire spellings per dialect, and setup errors.
Wire answers are checked with the independent raw peer (tests/rawpeer.py)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from rawpeer import raw_client, raw_server

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

from ocpp_rpc import (
    Call,
    RPCClient,
    RPCInternalError,
    RPCNotImplementedError,
    RPCOccurrenceConstraintViolationError,
    RPCPropertyConstraintViolationError,
    RPCServer,
    RPCTypeConstraintViolationError,
    Validator,
)

pytestmark = pytest.mark.anyio

NOW = "2024-01-01T00:00:00Z"
BOOT16 = {"chargePointVendor": "V", "chargePointModel": "M"}
BOOT201 = {"chargingStation": {"model": "M", "vendorName": "V"}, "reason": "PowerUp"}
BOOT_RESULT = {"status": "Accepted", "currentTime": NOW, "interval": 300}
BOOT = {"ocpp1.6": BOOT16, "ocpp2.0.1": BOOT201, "ocpp2.1": BOOT201}
OCCURRENCE = {"ocpp1.6": "OccurenceConstraintViolation",
              "ocpp2.0.1": "OccurrenceConstraintViolation",
              "ocpp2.1": "OccurrenceConstraintViolation"}
FORMAT = {"ocpp1.6": "FormationViolation", "ocpp2.0.1": "FormatViolation",
          "ocpp2.1": "FormatViolation"}
PROTOCOLS = pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1", "ocpp2.1"])


@asynccontextmanager
async def strict_server(protocol: str, **options: Any) -> AsyncIterator[tuple[RPCServer, str]]:
    options.setdefault("strict_mode", True)
    async with RPCServer(protocols=[protocol], ping_interval=None, **options) as server:
        listening = await server.listen()
        yield server, f"ws://127.0.0.1:{listening.port}/ocpp"


def client(url: str, protocol: str, **options: Any) -> RPCClient:
    return RPCClient(url, "CP1", protocols=[protocol], ping_interval=None, reconnect=False,
                     **options)


@PROTOCOLS
async def test_valid_traffic_passes_both_ways(protocol: str) -> None:
    async with strict_server(protocol) as (server, url):
        server.handle("BootNotification", lambda call: BOOT_RESULT)
        server.handle("StatusNotification", lambda call: {})
        status = (
            {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
            if protocol == "ocpp1.6"
            else {"timestamp": NOW, "connectorStatus": "Available", "evseId": 1, "connectorId": 1}
        )
        async with client(url, protocol, strict_mode=True) as cp:
            assert await cp.call("BootNotification", BOOT[protocol]) == BOOT_RESULT
            assert await cp.call("StatusNotification", status) == {}


@PROTOCOLS
async def test_invalid_outbound_call_raises_locally_and_sends_nothing(protocol: str) -> None:
    async with strict_server(protocol, strict_mode=False) as (server, url):
        seen: list[str] = []
        server.handle(lambda call: seen.append(call.method) or BOOT_RESULT)
        async with client(url, protocol, strict_mode=True) as cp:
            failures: list[Any] = []
            cp.on("strict_validation_failure", failures.append)
            with pytest.raises(RPCOccurrenceConstraintViolationError) as info:
                await cp.call("BootNotification", {})
            assert info.value.details["keyword"] == "required"
            assert info.value.code == OCCURRENCE[protocol]  # spelled for the dialect
            with pytest.raises(RPCNotImplementedError):
                await cp.call("NoSuchAction", {})
            await cp.call("BootNotification", BOOT[protocol])  # the connection is fine
        assert seen == ["BootNotification"]
        assert [(f.method, f.outbound, f.is_call) for f in failures] == [
            ("BootNotification", True, True), ("NoSuchAction", True, True)]
        assert isinstance(failures[0].error, RPCOccurrenceConstraintViolationError)


@PROTOCOLS
async def test_invalid_inbound_call_is_answered_with_dialect_code_and_handler_not_run(
    protocol: str,
) -> None:
    async with strict_server(protocol) as (server, url):
        ran: list[str] = []
        server.handle(lambda call: ran.append(call.method) or {"currentTime": NOW})
        failures: list[Any] = []
        server.on_client(lambda c: _observe(c, failures))
        async with raw_client(url + "/RAW", [protocol]) as peer:
            await peer.send_json([2, "m1", "BootNotification", {}])
            reply = await peer.receive_json()
            assert reply[:3] == [4, "m1", OCCURRENCE[protocol]]
            assert reply[4]["keyword"] == "required"
            await peer.send_json([2, "m2", "Heartbeat", {"extra": 1}])
            assert (await peer.receive_json())[:2] == [4, "m2"]
            await peer.send_json([2, "m3", "Heartbeat", []])
            # a payload that is not an object -> FormatViolation (1.6: FormationViolation)
            assert (await peer.receive_json())[:3] == [4, "m3", FORMAT[protocol]]
            await peer.send_json([2, "m4", "NotAnAction", {}])
            assert (await peer.receive_json())[:3] == [4, "m4", "NotImplemented"]
            await peer.send_json([2, "m5", "Heartbeat", {}])
            assert (await peer.receive_json())[:2] == [3, "m5"]
        assert ran == ["Heartbeat"]
        assert [(f.message_id, f.outbound, f.is_call) for f in failures][:4] == [
            ("m1", False, True), ("m2", False, True), ("m3", False, True), ("m4", False, True)]


async def _observe(client: Any, failures: list[Any]) -> None:
    client.on("strict_validation_failure", failures.append)


@PROTOCOLS
async def test_invalid_outbound_result_becomes_internal_error(protocol: str) -> None:
    async with strict_server(protocol) as (server, url):
        server.handle("BootNotification", lambda call: {"status": "Maybe"})
        async with client(url, protocol) as cp:  # the client does not validate
            with pytest.raises(RPCInternalError):
                await cp.call("BootNotification", BOOT[protocol])


@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1"])
async def test_invalid_inbound_result_fails_the_call_and_is_not_answered_before_2_1(
    protocol: str,
) -> None:
    async with raw_server(protocol) as srv:
        cp_strict = client(srv.url, protocol, strict_mode=True)
        async with anyio.create_task_group() as tg, cp_strict as cp:
            peer = await srv.accept()
            outcome: list[BaseException] = []

            async def call() -> None:
                try:
                    await cp.call("BootNotification", BOOT[protocol])
                except Exception as exc:
                    outcome.append(exc)

            tg.start_soon(call)
            request = await peer.receive_json()
            await peer.send_json([3, request[1], {"status": "Accepted"}])  # missing fields
            await peer.expect_nothing()
            tg.start_soon(peer.expect_close)  # answers our close when the block ends
        assert isinstance(outcome[0], RPCOccurrenceConstraintViolationError)
        assert outcome[0].code == OCCURRENCE[protocol]


async def test_invalid_inbound_result_on_2_1_sends_callresulterror() -> None:
    async with raw_server("ocpp2.1") as srv:
        cp_strict = client(srv.url, "ocpp2.1", strict_mode=True)
        async with anyio.create_task_group() as tg, cp_strict as cp:
            peer = await srv.accept()
            outcome: list[BaseException] = []

            async def call() -> None:
                try:
                    await cp.call("Heartbeat", {})
                except Exception as exc:
                    outcome.append(exc)

            tg.start_soon(call)
            request = await peer.receive_json()
            await peer.send_json([3, request[1], {"currentTime": 5}])
            answer = await peer.receive_json()
            tg.start_soon(peer.expect_close)  # answers our close when the block ends
        assert answer[:3] == [5, request[1], "TypeConstraintViolation"]
        assert isinstance(outcome[0], RPCTypeConstraintViolationError)


async def test_invalid_inbound_send_is_dropped() -> None:
    async with strict_server("ocpp2.1") as (server, url):
        ran: list[Any] = []
        server.handle("NotifyPeriodicEventStream", lambda call: ran.append(call.params))
        server.handle("Heartbeat", lambda call: {"currentTime": NOW})
        async with raw_client(url + "/RAW", ["ocpp2.1"]) as peer:
            await peer.send_json([6, "s1", "NotifyPeriodicEventStream", {"id": "x"}])
            valid = {"id": 1, "pending": 0, "basetime": NOW, "data": [{"t": 0.5, "v": "1"}]}
            await peer.send_json([6, "s2", "NotifyPeriodicEventStream", valid])
            await peer.send_json([2, "m1", "Heartbeat", {}])
            assert (await peer.receive_json())[:2] == [3, "m1"]  # nothing came before it
        assert ran == [valid]


async def test_strict_mode_list_validates_only_those_protocols() -> None:
    async with RPCServer(protocols=["ocpp2.0.1", "ocpp1.6"], strict_mode=["ocpp2.0.1"],
                         ping_interval=None) as server:
        server.handle("BootNotification", lambda call: BOOT_RESULT)
        url = f"ws://127.0.0.1:{(await server.listen()).port}"
        async with client(url, "ocpp1.6") as loose:
            assert await loose.call("BootNotification", {}) == BOOT_RESULT
        async with client(url, "ocpp2.0.1") as strict:
            with pytest.raises(RPCOccurrenceConstraintViolationError):
                await strict.call("BootNotification", {})


async def test_custom_validator_for_a_custom_subprotocol() -> None:
    schemas = {
        "PingRequest": {"type": "object", "properties": {"n": {"type": "integer", "maximum": 3}},
                        "required": ["n"], "additionalProperties": False},
        "PingResponse": {"type": "object"},
    }
    validator = Validator("acme1", schemas)
    async with RPCServer(protocols=["acme1"], strict_mode=True,
                         strict_mode_validators=[validator], ping_interval=None) as server:
        server.handle("Ping", lambda call: {})
        url = f"ws://127.0.0.1:{(await server.listen()).port}"
        async with client(url, "acme1") as cp:
            assert await cp.call("Ping", {"n": 1}) == {}
            with pytest.raises(RPCPropertyConstraintViolationError):
                await cp.call("Ping", {"n": 9})


def test_strict_mode_without_validator_fails_fast() -> None:
    with pytest.raises(ValueError, match="no strict-mode validator"):
        RPCServer(protocols=["acme1"], strict_mode=True)
    with pytest.raises(ValueError, match="at least one subprotocol"):
        RPCClient("ws://127.0.0.1:1", "CP", strict_mode=True)
    with pytest.raises(ValueError, match="no strict-mode validator"):
        RPCClient("ws://127.0.0.1:1", "CP", protocols=["ocpp1.6"], strict_mode=["acme1"])


async def test_reconfigure_strict_mode_applies_to_the_next_connection() -> None:
    cp = RPCClient("ws://127.0.0.1:1", "CP", protocols=["ocpp1.6"])
    cp.reconfigure(strict_mode=True)
    assert set(cp._options.validators) == {"ocpp1.6"}
    with pytest.raises(ValueError):
        cp.reconfigure(strict_mode=["nope"])


async def test_handler_sees_call_after_validation(anyio_backend: str) -> None:
    async with strict_server("ocpp2.0.1") as (server, url):
        got: list[Call] = []

        @server.handler("BootNotification")
        def boot(call: Call) -> dict[str, Any]:
            got.append(call)
            return BOOT_RESULT

        async with client(url, "ocpp2.0.1", strict_mode=True) as cp:
            await cp.call("BootNotification", BOOT201)
        assert got[0].params == BOOT201


async def test_a_response_schema_that_fails_to_compile_ends_the_client_at_once() -> None:
    """The client checks the server's result against a schema that cannot be
    compiled (found on first use): a bug in the setup, so the client's block
    raises it at once (on asyncio as on Trio, whether the message was dealt
    with as it arrived or by the reader task), and the call does not hang
    until its timeout."""
    schemas = {
        "PingRequest": {"type": "object"},
        "PingResponse": {"type": "object", "properties": {"n": {"type": 7}}},  # not a schema
    }
    validator = Validator("acme1", schemas)
    async with RPCServer(protocols=["acme1"], ping_interval=None) as server:
        server.handle("Ping", lambda call: {"n": 1})
        url = f"ws://127.0.0.1:{(await server.listen()).port}"
        cp = RPCClient(url, "CP", protocols=["acme1"], strict_mode=True,
                       strict_mode_validators=[validator], reconnect=False, ping_interval=None,
                       call_timeout=30)
        with anyio.fail_after(5), pytest.raises(BaseException) as raised:
            async with cp:
                await cp.call("Ping", {})
    errors = [raised.value]
    while isinstance(errors[-1], BaseExceptionGroup):
        errors.append(errors[-1].exceptions[0])
    assert isinstance(errors[-1], ValueError), raised.value
    assert "invalid schema PingResponse" in str(errors[-1])
