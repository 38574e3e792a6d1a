"""Testing your own OCPP code with ocpp_rpc: run the real server on a free
loopback port and drive it with a real client, on both asyncio and Trio.

    pip install pytest anyio trio
    pytest examples/test_my_csms.py

Nothing is mocked: the frames cross a real WebSocket, so the tests see what
a charger would see (CALLERROR codes, closes), and each test takes a few ms.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from ocpp_rpc import (
    Call,
    RPCClient,
    RPCPropertyConstraintViolationError,
    RPCServer,
    create_rpc_error,
)

pytestmark = pytest.mark.anyio


# -- the code under test: your CSMS's handlers -----------------------------------------

def make_csms() -> RPCServer:
    server = RPCServer(protocols=["ocpp1.6"])

    @server.handler("BootNotification")
    def boot(call: Call) -> dict[str, Any]:
        if call.params.get("chargePointVendor") != "ACME":
            raise create_rpc_error("PropertyConstraintViolation", "unknown vendor")
        return {"status": "Accepted", "currentTime": "2024-01-01T00:00:00Z", "interval": 60}

    return server


# -- fixtures: a live server per test, on a free port ----------------------------------

@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def csms_url() -> AsyncIterator[str]:
    async with make_csms() as server:
        listening = await server.listen(0)  # port 0: the OS picks a free one
        yield f"ws://127.0.0.1:{listening.port}/ocpp"


@pytest.fixture
async def charger(csms_url: str) -> AsyncIterator[RPCClient]:
    async with RPCClient(csms_url, "CP-TEST", protocols=["ocpp1.6"], reconnect=False) as cp:
        yield cp


# -- the tests --------------------------------------------------------------------------

async def test_boot_is_accepted(charger: RPCClient) -> None:
    result = await charger.call("BootNotification", {"chargePointVendor": "ACME",
                                                     "chargePointModel": "X"})
    assert result["status"] == "Accepted"


async def test_unknown_vendor_gets_a_callerror(charger: RPCClient) -> None:
    with pytest.raises(RPCPropertyConstraintViolationError, match="unknown vendor"):
        await charger.call("BootNotification", {"chargePointVendor": "Other",
                                                "chargePointModel": "X"})


async def test_a_server_call_reaches_the_charger() -> None:
    async with make_csms() as server:  # here the test needs the server itself
        listening = await server.listen(0)
        url = f"ws://127.0.0.1:{listening.port}/ocpp"
        async with RPCClient(url, "CP-TEST", protocols=["ocpp1.6"]) as cp:
            cp.handle("Reset", lambda call: {"status": "Accepted"})
            # once a call is answered, the server has surely registered the client
            await cp.call("BootNotification", {"chargePointVendor": "ACME",
                                               "chargePointModel": "X"})
            result = await server.clients["CP-TEST"].call("Reset", {"type": "Soft"})
    assert result == {"status": "Accepted"}
