"""The OCPP-J wire behaviour of API.md, checked from the outside.

Our endpoints (an `RPCServer`'s client, and an `RPCClient`) face the raw
wsproto peer of `rawpeer`, which shares no code with ocpp_rpc; every test
asserts the exact frames that cross the wire.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from harness import ENDS, echo, offered, serving
from rawpeer import RawPeer, http_request, raw_client, raw_server
from wsproto import events as wsproto_events

from ocpp_rpc import (
    NOREPLY,
    Accept,
    Call,
    ConnectError,
    ConnectionClosed,
    Handshake,
    RPCClient,
    RPCError,
    RPCFormatViolationError,
    RPCFrameworkError,
    RPCGenericError,
    RPCInternalError,
    RPCMessageTypeNotSupportedError,
    RPCNotImplementedError,
    RPCNotSupportedError,
    RPCOccurrenceConstraintViolationError,
    RPCPropertyConstraintViolationError,
    RPCProtocolError,
    RPCSecurityError,
    RPCServer,
    RPCTypeConstraintViolationError,
    ServerClient,
    State,
    create_rpc_error,
)

pytestmark = pytest.mark.anyio

#: ocpp1.6 (1.6J spellings), ocpp2.0.1 (2.x spellings, no types 5/6), ocpp2.1, none (as 2.1).
PROTOCOLS = ["ocpp1.6", "ocpp2.0.1", "ocpp2.1", None]
RPC21 = ["ocpp2.1", None]

# How OCPP 1.6J writes the 2.x codes (and the ones it lacks), written out here
# independently of the library.
_LEGACY = {
    "FormatViolation": "FormationViolation",
    "OccurrenceConstraintViolation": "OccurenceConstraintViolation",
    "RpcFrameworkError": "GenericError",
    "MessageTypeNotSupported": "GenericError",
}


def spelled(protocol: str | None, code: str) -> str:
    return _LEGACY.get(code, code) if protocol == "ocpp1.6" else code


@dataclass
class Side:
    """Our endpoint (`ours`) and the raw peer facing it, plus what `ours` reported."""

    peer: RawPeer = field(init=False)
    ours: RPCClient = field(init=False)
    bad: list[Any] = field(default_factory=list)
    unexpected: list[Any] = field(default_factory=list)

    def observe(self, endpoint: RPCClient) -> None:
        endpoint.on("bad_message", self.bad.append)
        endpoint.on("unexpected_response", self.unexpected.append)


@asynccontextmanager
async def served(protocol: str | None, **options: Any) -> AsyncIterator[Side]:
    """Our RPCServer (its ServerClient is `ours`) facing a raw client."""
    async with RPCServer(protocols=offered(protocol), ping_interval=None, **options) as server:
        side = Side()
        ready = anyio.Event()

        @server.on_client
        async def on_client(client: ServerClient) -> None:
            side.ours = client
            side.observe(client)
            ready.set()

        server.handle("Echo", echo)
        listening = await server.listen()
        url = f"ws://{listening.host}:{listening.port}/ocpp/CP1"
        async with raw_client(url, offered(protocol)) as side.peer:
            assert (side.peer.status, side.peer.subprotocol) == (101, protocol)
            with anyio.fail_after(5):
                await ready.wait()
            assert side.ours.protocol == protocol
            yield side


@asynccontextmanager
async def connected(protocol: str | None, **options: Any) -> AsyncIterator[Side]:
    """Our RPCClient (`ours`) connected to a raw server."""
    async with raw_server(subprotocol=protocol) as srv:
        client = RPCClient(
            srv.url,
            "CP1",
            protocols=offered(protocol),
            ping_interval=None,
            reconnect=False,
            **options,
        )
        client.handle("Echo", echo)
        side = Side()
        side.ours = client
        side.observe(client)
        async with client:
            side.peer = await srv.accept()
            assert side.peer.subprotocol == protocol
            assert client.protocol == protocol
            try:
                yield side
            except BaseException:
                await side.peer.drop()
                raise
            async with anyio.create_task_group() as tg:  # a clean close handshake
                tg.start_soon(side.peer.drain)
                await client.close()


def endpoint(end: str, protocol: str | None, **options: Any) -> AbstractAsyncContextManager[Side]:
    """`served` or `connected`: the tests of most rows run against both of our ends."""
    return served(protocol, **options) if end == "server" else connected(protocol, **options)


_probe_numbers = itertools.count()


async def probe(peer: RawPeer) -> None:
    """A CALL whose answer must be the very next message: proves that nothing
    else was sent before it and that the connection still serves calls."""
    n = next(_probe_numbers)
    await peer.send_json([2, f"probe-{n}", "Echo", {"n": n}])
    assert await peer.receive_json() == [3, f"probe-{n}", {"n": n}]


async def outbound_call(side: Side, tg: Any, method: str = "Ping") -> tuple[str, list[Any]]:
    """Start `ours.call(method)` in `tg`; returns its message id and a list that
    receives its outcome (result or exception)."""
    outcome: list[Any] = []

    async def run() -> None:
        try:
            outcome.append(await side.ours.call(method, {"q": 1}, timeout=5))
        except Exception as exc:
            outcome.append(exc)

    tg.start_soon(run)
    frame = await side.peer.receive_json()
    assert frame[0] == 2 and frame[2:] == [method, {"q": 1}]
    return frame[1], outcome


# -- row: empty frame ----------------------------------------------------------------------


@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_empty_frame_is_ignored(end: str, protocol: str | None) -> None:
    async with endpoint(end, protocol, max_bad_messages=0) as side:
        await side.peer.send_text("")
        await side.peer.send_bytes(b"")
        await probe(side.peer)  # not answered, not bad (max_bad_messages=0 did not close)
        assert side.bad == []


# -- row: unreadable frames -> CALLERROR "-1" ----------------------------------------------

UNREADABLE = [
    ("not json", "Message must be a JSON structure"),
    ("[2,", "Message must be a JSON structure"),
    ('[2,"c1","Echo",NaN]', "Message must be a JSON structure"),
    ('[2,"c1","Echo",{"a":Infinity}]', "Message must be a JSON structure"),
    ("{}", "Message must be an array"),
    ('{"0":2}', "Message must be an array"),
    ('"text"', "Message must be an array"),
    ("42", "Message must be an array"),
    ("null", "Message must be an array"),
    ("[]", "Message type must be a number"),
    ('["2","c1","Echo",{}]', "Message type must be a number"),
    ("[null]", "Message type must be a number"),
    ('[true,"c1","Echo",{}]', "Message type must be a number"),
    ('[[2],"c1","Echo",{}]', "Message type must be a number"),
    ('[2,1,"Echo",{}]', "Message ID must be a string"),
    ("[2]", "Message ID must be a string"),
    ('[2,null,"Echo",{}]', "Message ID must be a string"),
    ("[3,7,{}]", "Message ID must be a string"),
    ('[4,["x"],"GenericError","",{}]', "Message ID must be a string"),
]


@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_unreadable_frames_get_rpc_framework_error(end: str, protocol: str | None) -> None:
    code = spelled(protocol, "RpcFrameworkError")
    async with endpoint(end, protocol) as side:
        for frame, description in UNREADABLE:
            await side.peer.send_text(frame)
            expected = [4, "-1", code, description, {}]
            assert await side.peer.receive_json() == expected, frame
        await side.peer.send_bytes(b"\xff\xfe not utf-8")  # a binary message is read as UTF-8
        assert await side.peer.receive_json() == [4, "-1", code, UNREADABLE[0][1], {}]
        await probe(side.peer)
        assert [event.response for event in side.bad] == [
            [4, "-1", code, d, {}] for _, d in [*UNREADABLE, UNREADABLE[0]]
        ]
        assert all(isinstance(event.error, RPCFrameworkError) for event in side.bad)
        assert [event.message for event in side.bad][:2] == ["not json", "[2,"]


# -- row: unknown message type -------------------------------------------------------------


def unknown_types(protocol: str | None) -> list[tuple[str, str]]:
    """(frame, id the answer must carry)"""
    frames = [
        ('[7,"m7","Echo",{}]', "m7"),
        ('[0,"m0"]', "m0"),
        ('[1,"m1",{}]', "m1"),
        ('[-2,"neg","Echo",{}]', "neg"),
        ('[99,"m99",1,2,3,4]', "m99"),
        ("[7,5]", "-1"),
        ("[7]", "-1"),
        ('[7,null,"Echo",{}]', "-1"),
    ]
    if protocol not in RPC21:  # before 2.1 types 5 and 6 do not exist
        frames += [('[5,"r5","InternalError","",{}]', "r5"), ('[6,"s6","Echo",{}]', "s6")]
    return frames


@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_unknown_message_type(end: str, protocol: str | None) -> None:
    frames = unknown_types(protocol)
    async with endpoint(end, protocol) as side:
        for frame, message_id in frames:
            await side.peer.send_text(frame)
            if protocol != "ocpp1.6":
                answer = await side.peer.receive_json()
                assert answer[:3] == [4, message_id, "MessageTypeNotSupported"], frame
                assert isinstance(answer[3], str) and answer[4] == {} and len(answer) == 5
        await probe(side.peer)  # on 1.6 nothing at all was answered
        assert len(side.bad) == len(frames)
        assert all(isinstance(e.error, RPCMessageTypeNotSupportedError) for e in side.bad)
        if protocol == "ocpp1.6":
            assert all(event.response is None for event in side.bad)


# -- row: CALL with a bad action or length -------------------------------------------------

BAD_CALLS = [
    '[2,"c1",5,{}]',
    '[2,"c2",null,{}]',
    '[2,"c3",["Echo"],{}]',
    '[2,"c4","Echo"]',
    '[2,"c5","Echo",{},{}]',
    '[2,"c6"]',
]


@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_bad_call_gets_callerror_with_its_id(end: str, protocol: str | None) -> None:
    ran: list[str] = []

    def wildcard(call: Call) -> Any:
        ran.append(call.message_id)
        return call.params

    async with endpoint(end, protocol) as side:
        side.ours.handle(wildcard)  # must run for no bad CALL
        for i, frame in enumerate(BAD_CALLS, 1):
            await side.peer.send_text(frame)
            answer = await side.peer.receive_json()
            assert answer[:3] == [4, f"c{i}", spelled(protocol, "RpcFrameworkError")], frame
            assert isinstance(answer[3], str) and answer[4] == {} and len(answer) == 5
        await probe(side.peer)
        assert [message_id for message_id in ran if not message_id.startswith("probe-")] == []
        assert len(side.bad) == len(BAD_CALLS)


# -- row: responses with an unknown id -----------------------------------------------------


@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_response_with_unknown_id(end: str, protocol: str | None) -> None:
    frames: list[list[Any]] = [
        [3, "nobody", {"a": 1}],
        [4, "nobody2", "GenericError", "x", {"k": "v"}],
        [4, "nobody3", "FormationViolation", "", {}],
    ]
    if protocol in RPC21:
        frames.append([5, "nobody4", "InternalError", "late", {}])
    async with endpoint(end, protocol) as side:
        for frame in frames:
            await side.peer.send_json(frame)
        await probe(side.peer)  # none of them was answered
        assert side.unexpected == frames
        assert [event.response for event in side.bad] == [None] * len(frames)


# -- row: responses of the wrong shape -----------------------------------------------------

WRONG_SHAPES = [
    "[3,{id}]",
    "[3,{id},{{}},1]",
    '[4,{id},"GenericError"]',
    '[4,{id},"GenericError","x"]',
    '[4,{id},5,"x",{{}}]',
    '[4,{id},"GenericError",5,{{}}]',
    '[4,{id},"GenericError","x",[]]',
    '[4,{id},"GenericError","x",null]',
    '[4,{id},"GenericError","x",{{}},1]',
]


@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.1"])
@pytest.mark.parametrize("shape", WRONG_SHAPES)
async def test_wrong_shape_response_fails_the_pending_call(
    end: str, protocol: str, shape: str
) -> None:
    async with endpoint(end, protocol) as side, anyio.create_task_group() as tg:
        message_id, outcome = await outbound_call(side, tg)
        frame = shape.format(id=json.dumps(message_id))
        await side.peer.send_text(frame)
        await probe(side.peer)  # a response is never answered
        assert len(outcome) == 1 and isinstance(outcome[0], RPCFrameworkError)
        assert [(event.message, event.response) for event in side.bad] == [(frame, None)]
        # the call is over: a late valid answer is unexpected
        await side.peer.send_json([3, message_id, {}])
        await probe(side.peer)
        assert side.unexpected == [[3, message_id, {}]]


@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.1"])
async def test_wrong_shape_response_without_pending_call(protocol: str) -> None:
    async with served(protocol) as side:
        for shape in WRONG_SHAPES:
            await side.peer.send_text(shape.format(id='"nobody"'))
        await probe(side.peer)
        assert [event.response for event in side.bad] == [None] * len(WRONG_SHAPES)
        assert side.unexpected == []


@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("protocol", RPC21)
@pytest.mark.parametrize(
    "shape", ['[5,{id},"GenericError"]', '[5,{id},"GenericError","x",[]]', "[5,{id},{{}}]"]
)
async def test_wrong_shape_callresulterror_fails_the_pending_call(
    end: str, protocol: str | None, shape: str
) -> None:
    async with endpoint(end, protocol) as side, anyio.create_task_group() as tg:
        message_id, outcome = await outbound_call(side, tg)
        await side.peer.send_text(shape.format(id=json.dumps(message_id)))
        await probe(side.peer)
        assert len(outcome) == 1 and isinstance(outcome[0], RPCFrameworkError)
        assert [event.response for event in side.bad] == [None]


# -- row: CALL whose id is still being handled ---------------------------------------------


@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1", "ocpp2.1"])
async def test_call_with_an_id_in_progress(end: str, protocol: str) -> None:
    started, release = anyio.Event(), anyio.Event()
    runs: list[Any] = []

    async def slow(call: Call) -> Any:
        runs.append(call.params)
        started.set()
        await release.wait()
        return {"done": call.params}

    async with endpoint(end, protocol, max_bad_messages=0) as side:
        side.ours.handle("Slow", slow)
        await side.peer.send_json([2, "dup", "Slow", 1])
        with anyio.fail_after(5):
            await started.wait()
        await side.peer.send_json([2, "dup", "Slow", 2])
        answer = await side.peer.receive_json()
        assert answer[:3] == [4, "dup", spelled(protocol, "RpcFrameworkError")]
        assert isinstance(answer[3], str) and answer[4] == {}
        release.set()
        assert await side.peer.receive_json() == [3, "dup", {"done": 1}]
        assert runs == [1]
        # once answered, the id may be used again; nothing of this was "bad"
        await side.peer.send_json([2, "dup", "Slow", 3])
        assert await side.peer.receive_json() == [3, "dup", {"done": 3}]
        await probe(side.peer)
        assert side.bad == []


# -- row: CALL without handler -------------------------------------------------------------


@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_call_without_handler(end: str, protocol: str | None) -> None:
    async with endpoint(end, protocol, max_bad_messages=0) as side:
        await side.peer.send_json([2, "n1", "NoSuchAction", {}])
        answer = await side.peer.receive_json()
        assert answer[:3] == [4, "n1", "NotImplemented"]
        assert isinstance(answer[3], str) and answer[4] == {} and len(answer) == 5
        await side.peer.send_json([2, "n2", "NoSuchAction", {}])  # not bad: still open
        assert (await side.peer.receive_json())[:3] == [4, "n2", "NotImplemented"]
        await probe(side.peer)
        assert side.bad == []


# -- row: 2.1 CALLRESULTERROR --------------------------------------------------------------


@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("protocol", RPC21)
async def test_callresulterror_rejects_the_pending_call(end: str, protocol: str | None) -> None:
    async with endpoint(end, protocol, max_bad_messages=0) as side, anyio.create_task_group() as tg:
        message_id, outcome = await outbound_call(side, tg)
        await side.peer.send_json([5, message_id, "InternalError", "boom", {"why": 1}])
        await probe(side.peer)  # not answered, not bad
        [error] = outcome
        assert isinstance(error, RPCInternalError)
        assert (error.code, error.message, error.details) == ("InternalError", "boom", {"why": 1})
        assert side.bad == [] and side.unexpected == []


# -- row: 2.1 SEND -------------------------------------------------------------------------


@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("protocol", RPC21)
async def test_send_runs_the_handler_and_is_never_answered(end: str, protocol: str | None) -> None:
    calls: list[Call] = []
    ran = anyio.Event()

    def notify(call: Call) -> Any:
        calls.append(call)
        ran.set()
        return {"ignored": True}

    def fail(call: Call) -> Any:
        raise RPCSecurityError("no")

    def crash(call: Call) -> Any:
        raise ValueError("boom")

    async with endpoint(end, protocol, max_bad_messages=0) as side:
        side.ours.handle("Notify", notify)
        side.ours.handle("Fail", fail)
        side.ours.handle("Crash", crash)
        for frame in ([6, "s0", "Fail", {}], [6, "s1", "Crash", {}], [6, "s2", "Nope", {}]):
            await side.peer.send_json(frame)
        await side.peer.send_json([6, "s3", "Notify", {"x": 1}])
        with anyio.fail_after(5):
            await ran.wait()
        [call] = calls
        assert (call.method, call.params, call.message_id) == ("Notify", {"x": 1}, "s3")
        assert call.protocol == protocol and call.client is side.ours
        await side.peer.expect_nothing()
        await probe(side.peer)
        assert side.bad == []


# -- max_bad_messages ----------------------------------------------------------------------

#: (frame, answered?) for every kind of bad frame in the table
BAD_KINDS = {
    "not-json": ("nope", True),
    "not-array": ("{}", True),
    "unknown-type": ('[9,"x"]', True),
    "bad-call": ('[2,"x",1,{}]', True),
    "unknown-id": ('[3,"nobody",{}]', False),
    "wrong-shape": ('[3,"nobody"]', False),
}


@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.1"])
@pytest.mark.parametrize("kind", list(BAD_KINDS))
async def test_every_bad_kind_counts(end: str, protocol: str, kind: str) -> None:
    frame, answered = BAD_KINDS[kind]
    if kind == "unknown-type" and protocol == "ocpp1.6":
        answered = False
    async with endpoint(end, protocol, max_bad_messages=1) as side:
        await side.peer.send_text(frame)
        if answered:
            assert (await side.peer.receive_json())[0] == 4
        await side.peer.send_text(frame)
        assert (await side.peer.expect_close())[0] == 1002  # and no answer before it


@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("limit", [0, 3])  # 1: test_every_bad_kind_counts
async def test_max_bad_messages_closes_with_1002(end: str, limit: int) -> None:
    async with endpoint(end, "ocpp2.0.1", max_bad_messages=limit) as side:
        for _ in range(limit):
            await side.peer.send_text("bad")
            assert (await side.peer.receive_json())[:2] == [4, "-1"]
        await side.peer.send_text("bad")
        assert (await side.peer.expect_close())[0] == 1002
        assert [event.response for event in side.bad][limit] is None
        with anyio.fail_after(5):
            result = await side.ours.wait_closed()
        assert result.code == 1002


@pytest.mark.parametrize("end", ENDS)
async def test_closing_for_bad_frames_is_a_close_the_endpoint_reports(end: str) -> None:
    """While its Close 1002 waits for the peer's, the endpoint is CLOSING and
    said so (`closing`), as after close(); calls refuse with that code."""
    async with endpoint(end, "ocpp2.0.1", max_bad_messages=0) as side:
        closing: list[Any] = []
        side.ours.on("closing", closing.append)
        await side.peer.send_text("bad")
        with anyio.fail_after(5):
            close = await side.peer._event()  # not answered yet
        assert isinstance(close, wsproto_events.CloseConnection) and close.code == 1002
        assert side.ours.state is State.CLOSING
        assert len(closing) == 1
        with pytest.raises(ConnectionClosed) as caught:
            await side.ours.call("Echo")
        assert caught.value.code == 1002
        await side.peer._send(close.response())
        with anyio.fail_after(5):
            assert (await side.ours.wait_closed()).code == 1002
        assert side.ours.state is State.CLOSED and len(closing) == 1


@pytest.mark.parametrize("end", ENDS)
async def test_a_good_frame_resets_the_bad_count(end: str) -> None:
    async with endpoint(end, "ocpp2.1", max_bad_messages=2) as side:
        good_frames: list[Any] = [
            lambda: probe(side.peer),  # a CALL
            lambda: side.peer.send_json([6, "s", "Echo", {}]),  # a SEND
        ]
        for good in good_frames:
            for _ in range(2):
                await side.peer.send_text("bad")
                assert (await side.peer.receive_json())[:2] == [4, "-1"]
            await good()
        # an answer to our pending call is good too
        async with anyio.create_task_group() as tg:
            for _ in range(2):
                await side.peer.send_text("bad")
                assert (await side.peer.receive_json())[:2] == [4, "-1"]
            message_id, outcome = await outbound_call(side, tg)
            await side.peer.send_json([3, message_id, {}])
        assert outcome == [{}]
        for _ in range(2):
            await side.peer.send_text("bad")
            assert (await side.peer.receive_json())[:2] == [4, "-1"]
        await side.peer.send_text("bad")
        assert (await side.peer.expect_close())[0] == 1002


@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("how", ["close", "drop"])
async def test_peer_going_away_fails_the_pending_call(end: str, how: str) -> None:
    async with endpoint(end, "ocpp2.0.1") as side:
        async with anyio.create_task_group() as tg:
            _, outcome = await outbound_call(side, tg)
            if how == "close":
                assert (await side.peer.close(4001, "bye"))[0] == 4001
            else:
                await side.peer.drop()
        [error] = outcome
        assert isinstance(error, ConnectionClosed)
        assert (error.code, error.reason) == ((4001, "bye") if how == "close" else (1006, ""))


# -- error codes raised by handlers --------------------------------------------------------

RAISED = [
    (RPCFormatViolationError("bad format", {"f": 1}), "FormatViolation", "bad format", {"f": 1}),
    (RPCOccurrenceConstraintViolationError("occ"), "OccurrenceConstraintViolation", "occ", {}),
    (RPCFrameworkError("fw"), "RpcFrameworkError", "fw", {}),
    (RPCMessageTypeNotSupportedError("mt"), "MessageTypeNotSupported", "mt", {}),
    (RPCNotSupportedError("nope", {"k": [1]}), "NotSupported", "nope", {"k": [1]}),
    (RPCNotImplementedError("ni"), "NotImplemented", "ni", {}),
    (RPCPropertyConstraintViolationError("p"), "PropertyConstraintViolation", "p", {}),
    (RPCTypeConstraintViolationError("t"), "TypeConstraintViolation", "t", {}),
    (RPCProtocolError("pr"), "ProtocolError", "pr", {}),
    (RPCSecurityError("sec"), "SecurityError", "sec", {}),
    (RPCInternalError("int"), "InternalError", "int", {}),
    (RPCGenericError("gen"), "GenericError", "gen", {}),
    (create_rpc_error("FormationViolation", "legacy"), "FormatViolation", "legacy", {}),
    (
        create_rpc_error("OccurenceConstraintViolation", "l2"),
        "OccurrenceConstraintViolation",
        "l2",
        {},
    ),
]


@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_error_codes_are_spelled_for_the_dialect(end: str, protocol: str | None) -> None:
    def raiser(call: Call) -> Any:
        raise RAISED[call.params["i"]][0]

    async with endpoint(end, protocol) as side:
        side.ours.handle("Raise", raiser)
        for i, (_, code, message, details) in enumerate(RAISED):
            await side.peer.send_json([2, f"e{i}", "Raise", {"i": i}])
            expected = [4, f"e{i}", spelled(protocol, code), message, details]
            assert await side.peer.receive_json() == expected


@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1"])
async def test_every_inbound_spelling_is_accepted(end: str, protocol: str) -> None:
    cases: list[tuple[str, type[RPCError]]] = [
        ("FormationViolation", RPCFormatViolationError),
        ("FormatViolation", RPCFormatViolationError),
        ("OccurenceConstraintViolation", RPCOccurrenceConstraintViolationError),
        ("OccurrenceConstraintViolation", RPCOccurrenceConstraintViolationError),
        ("RpcFrameworkError", RPCFrameworkError),
        ("MessageTypeNotSupported", RPCMessageTypeNotSupportedError),
        ("NotImplemented", RPCNotImplementedError),
        ("SomethingNew", RPCGenericError),
    ]
    async with endpoint(end, protocol) as side:
        for code, cls in cases:
            async with anyio.create_task_group() as tg:
                message_id, outcome = await outbound_call(side, tg)
                await side.peer.send_json([4, message_id, code, "why", {"d": code}])
            [error] = outcome
            assert type(error) is cls
            assert (error.code, error.message, error.details) == (code, "why", {"d": code})
        await probe(side.peer)
        assert side.bad == []


@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.1"])
@pytest.mark.parametrize("detailed", [False, True])
async def test_plain_exception_answers_internal_error(
    end: str, protocol: str, detailed: bool
) -> None:
    def crash(call: Call) -> Any:
        raise ValueError("secret-detail-42")

    async def crash_async(call: Call) -> Any:
        await anyio.lowlevel.checkpoint()
        raise KeyError("secret-detail-43")

    async with endpoint(end, protocol, respond_with_detailed_errors=detailed) as side:
        side.ours.handle("Crash", crash)
        side.ours.handle("CrashAsync", crash_async)
        for method, secret in (("Crash", "secret-detail-42"), ("CrashAsync", "secret-detail-43")):
            await side.peer.send_json([2, "x1", method, {}])
            text = await side.peer.receive()
            assert isinstance(text, str)
            answer = json.loads(text)
            assert answer[:2] == [4, "x1"] and answer[2] == "InternalError"
            assert isinstance(answer[3], str) and answer[3]
            assert isinstance(answer[4], dict) and len(answer) == 5
            if detailed:
                assert secret in answer[3]
                assert "Traceback" in json.dumps(answer[4])
            else:
                assert secret not in text and answer[4] == {}
                assert "ValueError" not in text and "KeyError" not in text
                assert "Traceback" not in text


@pytest.mark.parametrize("end", ENDS)
async def test_result_that_is_not_json_answers_internal_error(end: str) -> None:
    async with endpoint(end, "ocpp2.0.1") as side:
        side.ours.handle("Odd", lambda call: {"x": object()})
        await side.peer.send_json([2, "o1", "Odd", {}])
        answer = await side.peer.receive_json()
        assert answer[:3] == [4, "o1", "InternalError"]
        assert "object" not in answer[3]  # no type names without detailed errors
        await probe(side.peer)


@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.1"])
async def test_noreply_sends_nothing(end: str, protocol: str) -> None:
    done = anyio.Event()

    async def silent(call: Call) -> Any:
        done.set()
        return NOREPLY

    async with endpoint(end, protocol, max_bad_messages=0) as side:
        side.ours.handle("Silent", silent)
        await side.peer.send_json([2, "q1", "Silent", {}])
        with anyio.fail_after(5):
            await done.wait()
        await side.peer.expect_nothing()
        await probe(side.peer)
        # the call is finished: its id can be used again
        await side.peer.send_json([2, "q1", "Echo", {"again": True}])
        assert await side.peer.receive_json() == [3, "q1", {"again": True}]


# -- what our endpoints send ---------------------------------------------------------------


@pytest.mark.parametrize("end", ENDS)
async def test_outgoing_message_ids_are_unique_short_strings(end: str) -> None:
    seen: list[Any] = []
    async with endpoint(end, "ocpp2.1", call_concurrency=5) as side:
        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(side.ours.call, "Ping", {"i": i})
            for _ in range(10):
                frame = await side.peer.receive_json()
                seen.append(frame[1])
                await side.peer.send_json([3, frame[1], {}])
        for i in range(3):
            await side.ours.send("Note", {"i": i})
            frame = await side.peer.receive_json()
            assert frame[0] == 6
            seen.append(frame[1])
    assert all(type(message_id) is str and 0 < len(message_id) <= 36 for message_id in seen)
    assert len(set(seen)) == len(seen)


async def test_message_ids_are_unique_across_endpoints() -> None:
    seen: list[str] = []
    async with served("ocpp2.0.1") as a, connected("ocpp2.0.1") as b:
        for side in (a, b, a, b):
            async with anyio.create_task_group() as tg:
                message_id, _ = await outbound_call(side, tg)
                await side.peer.send_json([3, message_id, {}])
            seen.append(message_id)
    assert len(set(seen)) == 4


@pytest.mark.parametrize("end", ENDS)
async def test_call_params_none_sends_an_empty_object(end: str) -> None:
    async with endpoint(end, "ocpp1.6") as side:
        calls = (lambda: side.ours.call("Heartbeat"), lambda: side.ours.call("Heartbeat", None))
        for call in calls:
            result: list[Any] = []

            async def run(call: Any = call, result: list[Any] = result) -> None:
                result.append(await call())

            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                text = await side.peer.receive()
                assert isinstance(text, str)
                frame = json.loads(text)
                assert text == f'[2,{json.dumps(frame[1])},"Heartbeat",{{}}]'
                await side.peer.send_json([3, frame[1], {"currentTime": "now"}])
            assert result == [{"currentTime": "now"}]


@pytest.mark.parametrize("end", ENDS)
async def test_no_reply_call_returns_none_at_once(end: str) -> None:
    async with endpoint(end, "ocpp2.0.1") as side:
        with anyio.fail_after(2):
            assert await side.ours.call("Reset", {"type": "Hard"}, no_reply=True) is None
        frame = await side.peer.receive_json()
        assert frame[0] == 2 and frame[2:] == ["Reset", {"type": "Hard"}]
        await side.peer.send_json([3, frame[1], {"status": "Accepted"}])
        with anyio.fail_after(2):
            assert await side.ours.call("Reset", None, no_reply=True) is None
        frame2 = await side.peer.receive_json()
        assert frame2[2:] == ["Reset", {}]
        await side.peer.send_json([4, frame2[1], "GenericError", "", {}])
        await probe(side.peer)  # the answers were not answered
        assert side.unexpected == [
            [3, frame[1], {"status": "Accepted"}],
            [4, frame2[1], "GenericError", "", {}],
        ]
        assert len(side.bad) == 2


@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("protocol", RPC21)
async def test_send_sends_type_6(end: str, protocol: str | None) -> None:
    async with endpoint(end, protocol, call_concurrency=1) as side:
        async with anyio.create_task_group() as tg:
            message_id, outcome = await outbound_call(side, tg)  # holds the only call slot
            with anyio.fail_after(2):
                await side.ours.send("NotifyPeriodicEventStream", {"data": [1]})
                await side.ours.send("NotifyPeriodicEventStream")
            first = await side.peer.receive_json()
            second = await side.peer.receive_json()
            assert first[0] == 6 and first[2:] == ["NotifyPeriodicEventStream", {"data": [1]}]
            assert second[0] == 6 and second[2:] == ["NotifyPeriodicEventStream", {}]
            assert first[1] != second[1] and message_id not in (first[1], second[1])
            await side.peer.send_json([3, message_id, {}])
        assert outcome == [{}]


@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1"])
async def test_send_is_refused_before_2_1(end: str, protocol: str) -> None:
    async with endpoint(end, protocol) as side:
        with pytest.raises(ValueError, match=r"2\.1"):
            await side.ours.send("NotifyPeriodicEventStream", {})
        await probe(side.peer)  # nothing was sent


@pytest.mark.parametrize("end", ENDS)
async def test_send_raw_is_verbatim(end: str) -> None:
    async with endpoint(end, "ocpp1.6") as side:
        raw = '[2, "raw-1" ,"Weird",  {"z": 1e3}] '
        await side.ours.send_raw(raw)
        assert await side.peer.receive() == raw
        await side.ours.send_raw("not json at all")
        assert await side.peer.receive() == "not json at all"
        await side.ours.send_raw(b"\x00\x01binary")
        assert await side.peer.receive() == b"\x00\x01binary"
        with pytest.raises(ValueError):  # cannot be UTF-8 text: refused, connection unharmed
            await side.ours.send_raw('[2,"x","\ud800",{}]')
        await probe(side.peer)


# -- the handshake -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/ocpp/", "/", "/ocpp/%zz", "/ocpp/bad%2", "/ocpp/%ff%fe", "/ocpp/a%0Ab", "/ocpp/%00"]
)
async def test_malformed_or_empty_identity_gets_400(path: str) -> None:
    aborted: list[Any] = []
    async with serving(protocols=["ocpp1.6"]) as (server, base):
        server.on("upgrade_aborted", aborted.append)
        async with raw_client(base + path, ["ocpp1.6"]) as peer:
            assert peer.status == 400
    assert [event.status for event in aborted] == [400]


async def test_identity_is_one_percent_decoded_segment() -> None:
    seen: list[Handshake] = []
    async with serving() as (server, base):

        @server.auth
        async def auth(handshake: Handshake) -> None:
            seen.append(handshake)

        async with raw_client(base + "/ocpp/CP%2F1%20x", []) as peer:
            assert peer.status == 101 and peer.subprotocol is None
    assert [(h.identity, h.endpoint) for h in seen] == [("CP/1 x", "/ocpp")]


async def test_plain_http_gets_404() -> None:
    async with serving(protocols=["ocpp1.6"]) as (_, base):
        response = await http_request(base.replace("ws:", "http:") + "/ocpp/CP1")
        assert response.status == 404
        response = await http_request(base.replace("ws:", "http:") + "/", method="POST")
        assert response.status == 404


UPGRADE = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13")]
KEY = ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("GET", UPGRADE),  # no key
        ("GET", [*UPGRADE, ("Sec-WebSocket-Key", "short")]),
        ("GET", [*UPGRADE[:2], ("Sec-WebSocket-Version", "8"), KEY]),
        ("POST", [*UPGRADE, KEY]),
    ],
)
async def test_malformed_upgrade_gets_400(method: str, headers: list[tuple[str, str]]) -> None:
    async with serving(protocols=["ocpp1.6"]) as (_, base):
        url = base.replace("ws:", "http:") + "/ocpp/CP1"
        response = await http_request(url, method=method, headers=headers)
        assert response.status == 400


@pytest.mark.parametrize("client_offers", [["ocpp1.2"], [], ["ocpp1.5", "ocpp2.1"]])
async def test_no_common_subprotocol_is_refused(client_offers: list[str]) -> None:
    async with serving(protocols=["ocpp1.6", "ocpp2.0.1"]) as (server, base):
        async with raw_client(base + "/ocpp/CP1", client_offers) as peer:
            assert peer.status is not None and 400 <= peer.status < 500
        assert server.clients == {}


async def test_auth_callback_may_accept_without_common_subprotocol() -> None:
    async with serving(protocols=["ocpp1.6"]) as (server, base):
        server.handle("Echo", echo)

        @server.auth
        async def auth(handshake: Handshake) -> Accept:
            return Accept()

        async with raw_client(base + "/ocpp/CP1", ["ocpp9"]) as peer:
            assert peer.status == 101 and peer.subprotocol is None
            await probe(peer)


async def test_client_refuses_a_server_without_common_subprotocol() -> None:
    closes: list[tuple[int, str]] = []

    async def answer(srv: Any) -> None:
        peer = await srv.accept()
        assert peer.subprotocol is None  # the raw server agreed to nothing
        closes.append(await peer.expect_close())

    async with raw_server(subprotocol="ocpp2.1") as srv, anyio.create_task_group() as tg:
        tg.start_soon(answer, srv)
        client = RPCClient(
            srv.url, "CP1", protocols=["ocpp1.6"], ping_interval=None, reconnect=False
        )
        with pytest.raises(ConnectError):
            async with client:
                pass
    assert len(closes) == 1


@pytest.mark.parametrize("end", ENDS)
async def test_lone_surrogates_are_sent_escaped(end: str) -> None:
    # "\ud800" is valid JSON, but the string it stands for cannot be UTF-8 text:
    # echoing it must neither break the connection nor be dropped.
    async with endpoint(end, "ocpp2.0.1") as side:
        await side.peer.send_text('[2,"\\ud800","Echo",{}]')
        assert await side.peer.receive() == '[3,"\\ud800",{}]'
        await side.peer.send_text('[2,"s2","Echo",{"x":"a\\udfffb"}]')
        assert await side.peer.receive_json() == [3, "s2", {"x": "a\udfffb"}]
        await side.peer.send_text('[2,"s3","No\\ud800pe",{}]')
        assert (await side.peer.receive_json())[:3] == [4, "s3", "NotImplemented"]
        async with anyio.create_task_group() as tg:
            tg.start_soon(side.ours.call, "Odd", {"s": "\udc00"})
            frame = await side.peer.receive_json()
            assert frame[2:] == ["Odd", {"s": "\udc00"}]
            await side.peer.send_json([3, frame[1], {}])
        await probe(side.peer)
