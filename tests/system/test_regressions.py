"""Behaviour the issue 13 redesign must keep, found by reviewing it: each of
these failed on the first redesigned code and passes on the code before it.
Public API only, so the same file runs on any checkout."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import anyio
import anyio.abc
import pytest

from ocpp_rpc import Call, RPCClient, RPCError, RPCGenericError, RPCServer

pytestmark = pytest.mark.anyio

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def test_a_101_with_an_empty_subprotocol_header_agrees_to_no_subprotocol() -> None:
    # A server that agreed to no subprotocol but still sends an empty
    # `Sec-WebSocket-Protocol:` line. RFC 6455 4.1 (6) fails only a response that
    # "indicates the use of a subprotocol" not offered; an empty value names
    # none. HEAD fails it with NotRetryable, so the client never reconnects.
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def answer(stream: anyio.abc.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive()
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        await stream.send(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n"
            b"Sec-WebSocket-Protocol: \r\n\r\n"
        )
        with anyio.move_on_after(5):
            try:
                await stream.receive()  # the client's Close: hang up
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
        await stream.aclose()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, answer)
            client = RPCClient(
                f"ws://127.0.0.1:{port}/ocpp", "CP1", reconnect=False, ping_interval=None
            )
            async with client:
                assert client.protocol is None
            tg.cancel_scope.cancel()


class _StationBusy(RPCGenericError):
    default_message = "station busy"  # the pre-HEAD way to give a code its text


async def _call_error(server_handler: Any, **server_options: Any) -> tuple[RPCError, list[Any]]:
    """The error a client gets calling "Do" on a server whose handler is
    `server_handler`, and the server's `call_error` events."""
    events: list[Any] = []
    with anyio.fail_after(10):
        async with RPCServer(ping_interval=None, **server_options) as server:
            server.handle("Do", server_handler)

            @server.on_client
            async def observe(client: Any) -> None:
                client.on("call_error", events.append)

            listening = await server.listen()
            url = f"ws://127.0.0.1:{listening.port}/ocpp"
            async with RPCClient(url, "CP1", reconnect=False, ping_interval=None) as client:
                with pytest.raises(RPCError) as raised:
                    await client.call("Do", {})
    return raised.value, events


async def test_an_rpc_error_subclass_keeps_its_default_message_on_the_wire() -> None:
    # errors.py: `default_message` became `description`, and the constructor no
    # longer falls back to it; a user's subclass now answers with "".
    def handler(call: Call) -> Any:
        raise _StationBusy()

    error, _ = await _call_error(handler)
    assert error.message == "station busy"


async def test_the_call_error_event_carries_the_text_the_peer_was_sent() -> None:
    # A handler's non-RPCError is answered InternalError with the standard text;
    # the server's `call_error` event used to carry that same error. On HEAD its
    # `.message` is "" while the wire says the description.
    def handler(call: Call) -> Any:
        raise ValueError("secret")

    error, events = await _call_error(handler)
    assert error.message  # the description, on the wire
    assert [event.error.message for event in events] == [error.message]


async def test_a_closed_clients_strict_validator_is_not_kept_alive() -> None:
    # options.py: `_shared` (a module-level lru_cache of 128 ConnectionConfigs)
    # keeps every config's Validator, and what it compiled, alive after the
    # client that used it is gone.
    import gc
    import weakref

    from ocpp_rpc import Validator

    schemas = {"HeartbeatRequest": {"type": "object"}, "HeartbeatResponse": {"type": "object"}}
    validator = Validator("ocpp2.0.1", schemas)
    alive = weakref.ref(validator)
    with anyio.fail_after(10):
        async with RPCServer(protocols=["ocpp2.0.1"], ping_interval=None) as server:
            listening = await server.listen()
            client = RPCClient(
                f"ws://127.0.0.1:{listening.port}/ocpp", "CP1", protocols=["ocpp2.0.1"],
                strict_mode=True, strict_mode_validators=[validator], reconnect=False,
                ping_interval=None,
            )
            async with client:
                pass
    del client, validator
    gc.collect()
    assert alive() is None
