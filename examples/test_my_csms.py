"""Testing your own OCPP code with ocpp_rpc: run the real server and connect a
real client to it in memory (`ocpp_rpc.testing.connect`), on asyncio and on
Trio with a mock clock.

    pip install pytest anyio trio
    pytest examples/test_my_csms.py

Nothing is mocked but the socket: the client goes through your server's auth
hook, subprotocol negotiation and handlers as a charger would, and sees what
a charger would see (CALLERROR codes, closes). Without sockets each test takes
a millisecond or so, and under Trio's MockClock, timeouts and keep-alive
pings take no real time at all (see docs/testing.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from ocpp_rpc import (
    Call,
    ConnectError,
    Handshake,
    Reject,
    RPCClient,
    RPCPropertyConstraintViolationError,
    RPCServer,
    create_rpc_error,
)
from ocpp_rpc.testing import connect

pytestmark = pytest.mark.anyio


# -- the code under test: your CSMS's auth hook and handlers ----------------------------

PASSWORDS = {"CP-TEST": b"s3cret"}


def make_csms() -> RPCServer:
    server = RPCServer(protocols=["ocpp1.6"])

    @server.auth
    async def auth(handshake: Handshake) -> None:
        if PASSWORDS.get(handshake.identity) != handshake.password:
            raise Reject(401, "unknown charger or wrong password")

    @server.handler("BootNotification")
    def boot(call: Call) -> dict[str, Any]:
        if call.params.get("chargePointVendor") != "ACME":
            raise create_rpc_error("PropertyConstraintViolation", "unknown vendor")
        return {"status": "Accepted", "currentTime": "2024-01-01T00:00:00Z", "interval": 60}

    return server


# -- fixtures: each test on asyncio and on Trio (with a clock that skips idle time) --------

@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    if request.param == "trio":
        from trio.testing import MockClock

        return "trio", {"clock": MockClock(autojump_threshold=0)}
    return "asyncio"


@pytest.fixture
async def csms() -> AsyncIterator[RPCServer]:
    async with make_csms() as server:
        yield server


@pytest.fixture
async def charger(csms: RPCServer) -> AsyncIterator[RPCClient]:
    async with connect(csms, "CP-TEST", protocols=["ocpp1.6"], password="s3cret",
                       reconnect=False) as cp:
        yield cp


# -- the tests --------------------------------------------------------------------------

async def test_boot_is_accepted(charger: RPCClient) -> None:
    result = await charger.call("BootNotification", {"chargePointVendor": "ACME",
                                                     "chargePointModel": "X"})
    assert result["status"] == "Accepted"


async def test_a_wrong_password_is_refused_and_an_unknown_vendor_gets_a_callerror(
    csms: RPCServer, charger: RPCClient
) -> None:
    with pytest.raises(ConnectError) as refused:
        async with connect(csms, "CP-TEST", protocols=["ocpp1.6"], password="guess"):
            pass
    assert refused.value.status == 401
    with pytest.raises(RPCPropertyConstraintViolationError, match="unknown vendor"):
        await charger.call("BootNotification", {"chargePointVendor": "Other",
                                                "chargePointModel": "X"})


async def test_a_server_call_reaches_the_charger(csms: RPCServer, charger: RPCClient) -> None:
    charger.handle("Reset", lambda call: {"status": "Accepted"})
    # Once a call is answered, the server has surely registered the client.
    await charger.call("BootNotification", {"chargePointVendor": "ACME",
                                            "chargePointModel": "X"})
    result = await csms.clients["CP-TEST"].call("Reset", {"type": "Soft"})
    assert result == {"status": "Accepted"}
