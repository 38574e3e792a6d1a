"""User handlers for the development CSMS: ``ocpp-rpc serve --handlers examples/handlers.py``.

``serve`` imports this module and, on top of its default answers:

- registers every module-level function named like an OCPP action
  (``BootNotification`` below) as that action's handler;
- registers ``HANDLERS`` (action -> handler), for names that are not valid
  Python identifiers or handlers defined elsewhere;
- calls ``register(server)`` last, with the `RPCServer`, for anything else:
  an auth hook, ``on_client``, events, wildcard handlers.

A handler gets one ``Call`` (``.method``, ``.params``, ``.protocol``,
``.client``), may be sync or async, and returns the CALLRESULT payload; raise
an ``RPCError`` (``create_rpc_error("NotSupported", "why")``) to answer with a
CALLERROR.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import Any

from ocpp_rpc import Call, RPCServer, ServerClient, create_rpc_error

KNOWN_TAGS = {"04E1A2B3C4", "TAG1"}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def BootNotification(call: Call) -> dict[str, Any]:  # named after the action it handles
    """Accept chargers, with a short heartbeat interval for development."""
    return {"status": "Accepted", "currentTime": now(), "interval": 60}


async def authorize(call: Call) -> dict[str, Any]:
    """Only known tags are accepted (both OCPP versions)."""
    if call.protocol == "ocpp1.6":
        status = "Accepted" if call.params.get("idTag") in KNOWN_TAGS else "Invalid"
        return {"idTagInfo": {"status": status}}
    token = call.params.get("idToken", {}).get("idToken")
    return {"idTokenInfo": {"status": "Accepted" if token in KNOWN_TAGS else "Invalid"}}


def data_transfer(call: Call) -> dict[str, Any]:
    if call.params.get("vendorId") != "ACME":
        raise create_rpc_error("NotSupported", "only ACME data transfers")
    return {"status": "Accepted", "data": "pong"}


HANDLERS = {"Authorize": authorize, "DataTransfer": data_transfer}


def register(server: RPCServer) -> None:
    """Called once, before the server listens."""

    @server.on_client
    async def greet(client: ServerClient) -> None:
        # stderr: stdout belongs to serve (and is JSON lines with --json)
        print(f"handlers.py: welcome {client.identity}", file=sys.stderr, flush=True)
