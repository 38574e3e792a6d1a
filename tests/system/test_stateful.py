"""Stateful property tests.

1. The pure `Exchange` against a model (hypothesis `RuleBasedStateMachine`):
   pending calls, calls being handled, the inbound bound, the bad-message count.
2. A live connection (both backends, both of our ends) driven by a random
   script of operations against the raw peer of `rawpeer`: outbound calls
   (with timeouts, cancellations, `no_reply`), inbound calls to handlers that
   answer, fail, block, stay quiet or call back, answers good, late, repeated
   and malformed, bad frames, pings, closes and drops from both sides. After
   every script:

   - every outbound call ended exactly once, with a result, an `RPCError`,
     `TimeoutError`, `ConnectionClosed` or our own cancellation, each one
     consistent with what the peer did;
   - every inbound call whose handler ends was answered (unless the
     connection ended first), with what its handler returned;
   - no handler outlives its connection, and no more run at once than
     `max_inbound_calls`;
   - the bad-message count behaves as API.md says: a good frame resets it,
     and the connection closes with 1002 exactly when consecutive bad frames
     exceed `max_bad_messages`;
   - no task is left running once the endpoints' `async with` blocks exit.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from harness import offered, task_count, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)
from rawpeer import PeerClosed, RawPeer, raw_client, raw_server
from wsproto import events as ev
from wsproto.utilities import LocalProtocolError

from ocpp_rpc import (
    NOREPLY,
    Call,
    CloseResult,
    ConnectionClosed,
    RPCClient,
    RPCError,
    RPCFrameworkError,
    RPCNotSupportedError,
    RPCServer,
    ServerClient,
)
from ocpp_rpc._wire.codec import CallFrame, SendFrame
from ocpp_rpc._wire.session import Answer, Bad, Dispatch, Exchange, Refuse

# == 1. the pure exchange =====================================================================


class ExchangeMachine(RuleBasedStateMachine):
    """`Exchange` against a model of API.md's wire table (ocpp2.1: SEND exists)."""

    outbound = Bundle("outbound")  # ids of our calls awaiting an answer
    inbound = Bundle("inbound")  # ids of the peer's calls being handled

    def __init__(self) -> None:
        super().__init__()
        self.ids = itertools.count()
        self.exchange: Exchange[str] = Exchange("ocpp2.1")
        self.pending: set[str] = set()
        self.handling: set[str] = set()
        self.sends = 0
        self.bad = 0
        self.busy = 0

    @initialize(max_bad=st.sampled_from([0, 1, 3, math.inf]), limit=st.sampled_from([1, 2, 5]))
    def configure(self, max_bad: float, limit: int) -> None:
        self.exchange = Exchange("ocpp2.1", max_bad_messages=max_bad, max_inbound_calls=limit)

    def _expect_bad(self, received: Any) -> Bad[str]:
        assert isinstance(received, Bad), received
        self.bad += 1
        assert received.close == (self.bad > self.exchange.max_bad_messages)
        if received.close:
            assert received.reply is None
        return received

    def _full(self) -> bool:
        return len(self.handling) + self.sends >= self.exchange.max_inbound_calls

    @rule(target=outbound)
    def add_pending(self) -> str:
        message_id = f"o{next(self.ids)}"
        self.exchange.add_pending(message_id, message_id)
        self.pending.add(message_id)
        return message_id

    @rule(message_id=consumes(outbound))
    def withdraw(self, message_id: str) -> None:
        self.exchange.withdraw(message_id)
        self.pending.discard(message_id)

    @rule(message_id=consumes(outbound), error=st.booleans())
    def answer(self, message_id: str, error: bool) -> None:
        text = (f'[4,"{message_id}","NotSupported","",{{}}]' if error
                else f'[3,"{message_id}",{{"r":1}}]')
        received = self.exchange.receive(text)
        if message_id in self.pending:
            assert isinstance(received, Answer) and received.pending == message_id
            self.pending.discard(message_id)
            self.bad = 0
        else:  # withdrawn: unexpected
            bad = self._expect_bad(received)
            assert bad.unexpected is not None and bad.failed is None

    @rule(message_id=consumes(outbound))
    def malformed_answer(self, message_id: str) -> None:
        bad = self._expect_bad(self.exchange.receive(f'[3,"{message_id}"]'))
        assert bad.failed == (message_id if message_id in self.pending else None)
        assert isinstance(bad.error, RPCFrameworkError)
        self.pending.discard(message_id)

    @rule(target=inbound)
    def call(self) -> str:
        message_id = f"i{next(self.ids)}"
        received = self.exchange.receive(f'[2,"{message_id}","M",{{}}]')
        self.bad = 0
        if self._full():
            assert isinstance(received, Refuse) and received.busy
            assert received.reply is not None
            assert json.loads(received.reply)[:3] == [4, message_id, "GenericError"]
            self.busy += 1
            return "refused"
        assert received == Dispatch(CallFrame(message_id, "M", {}))
        self.handling.add(message_id)
        self.busy = 0
        return message_id

    @rule(message_id=inbound)
    def duplicate_call(self, message_id: str) -> None:
        if message_id == "refused":
            return
        received = self.exchange.receive(f'[2,"{message_id}","M",{{}}]')
        self.bad = 0
        if message_id in self.handling:
            assert isinstance(received, Refuse) and not received.busy
            assert received.reply is not None
            assert json.loads(received.reply)[:3] == [4, message_id, "RpcFrameworkError"]
        else:  # finished: a new call with an old id is a new call
            if self._full():
                assert isinstance(received, Refuse) and received.busy
                self.busy += 1
            else:
                assert isinstance(received, Dispatch)
                self.handling.add(message_id)
                self.busy = 0

    @rule(message_id=consumes(inbound))
    def finish(self, message_id: str) -> None:
        if message_id in self.handling:
            self.exchange.finish(message_id)
            self.handling.discard(message_id)

    @rule()
    def send(self) -> None:
        received = self.exchange.receive(f'[6,"s{next(self.ids)}","M",{{}}]')
        self.bad = 0
        if self._full():
            assert isinstance(received, Refuse) and received.busy and received.reply is None
            self.busy += 1
        else:
            assert isinstance(received, Dispatch) and isinstance(received.frame, SendFrame)
            self.sends += 1
            self.busy = 0

    @precondition(lambda self: self.sends > 0)
    @rule()
    def finish_send(self) -> None:
        self.exchange.finish_send()
        self.sends -= 1

    @rule(text=st.sampled_from(["x", "[]", "{}", '[2,"a"]', '[9,"a",{}]', '[3,1,{}]', "[2,"]))
    def garbage(self, text: str) -> None:
        self._expect_bad(self.exchange.receive(text))

    @rule()
    def unknown_answer(self) -> None:
        bad = self._expect_bad(self.exchange.receive(f'[3,"u{next(self.ids)}",{{}}]'))
        assert bad.unexpected is not None

    @rule()
    def empty(self) -> None:
        assert self.exchange.receive("") is None

    @invariant()
    def agrees_with_the_model(self) -> None:
        exchange = self.exchange
        assert set(exchange.pending) == self.pending
        assert set(exchange.handling) == self.handling
        assert exchange.inbound_in_progress == len(self.handling) + self.sends
        assert exchange.inbound_in_progress <= exchange.max_inbound_calls
        assert exchange.bad_message_count == self.bad
        assert exchange.busy_refusals == self.busy


ExchangeMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40)
test_exchange_agrees_with_its_model = ExchangeMachine.TestCase


# == 2. a live connection driven by random scripts ============================================

# -- the operations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OurCall:
    timeout: float | None  # None: no timeout (the call_timeout of 30 s never fires here)
    no_reply: bool = False


@dataclass(frozen=True)
class CancelCall:
    index: int


@dataclass(frozen=True)
class PeerAnswer:
    index: int
    kind: str  # result, error, malformed, again (a second answer), unknown (an id never used)


@dataclass(frozen=True)
class PeerCall:
    method: str  # the handler of ours it reaches; see HANDLERS
    send: bool = False  # OCPP 2.1 SEND instead of CALL


@dataclass(frozen=True)
class PeerDuplicate:
    index: int  # resend a CALL with the id of the peer's index-th call


@dataclass(frozen=True)
class PeerBad:
    text: str


@dataclass(frozen=True)
class PeerPing:
    pass


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class OurClose:
    await_pending: bool
    force: bool


@dataclass(frozen=True)
class PeerClose:
    code: int


@dataclass(frozen=True)
class PeerDrop:
    pass


Op = (OurCall | CancelCall | PeerAnswer | PeerCall | PeerDuplicate | PeerBad | PeerPing | Pause
      | OurClose | PeerClose | PeerDrop)

# Bad in every dialect (the ids of bad responses are never ours).
BAD_FRAMES = [
    "not json", "[2,", "{}", "[]", '"text"', '["2","x","M",{}]', '[2,7,"M",{}]', '[2,"x"]',
    '[2,"x",7,{}]', '[9,"x",{}]', '[3,"never-sent"]', '[4,"never-sent",1,"",{}]', "[3]",
]
HANDLERS = ["Echo", "Slow", "Block", "Fail", "Crash", "Quiet", "Nested"]
ENDING = {"Echo", "Slow", "Fail", "Crash", "Nested"}  # handlers that answer by themselves

our_calls = st.one_of(
    st.builds(OurCall, st.sampled_from([None, None, 0.02])), st.just(OurCall(None, no_reply=True))
)
peer_answers = st.builds(
    PeerAnswer, st.integers(0, 20),
    st.sampled_from(["result", "result", "result", "error", "malformed", "again", "unknown"]),
)
peer_calls = st.builds(
    PeerCall, st.sampled_from([*HANDLERS, "Block", "Echo"]), st.sampled_from([False, False, True])
)
actions = st.one_of(
    our_calls, our_calls, st.builds(CancelCall, st.integers(0, 20)),
    peer_answers, peer_answers, peer_calls, peer_calls,
    st.builds(PeerDuplicate, st.integers(0, 20)),
    st.builds(PeerBad, st.sampled_from(BAD_FRAMES)), st.just(PeerPing()),
    st.builds(Pause, st.sampled_from([0.0, 0.002, 0.01])),
)
endings = st.one_of(
    st.builds(OurClose, st.booleans(), st.booleans()),
    st.builds(PeerClose, st.sampled_from([1000, 4000])),
    st.just(PeerDrop()),
)
# Actions, then maybe something that ends the connection and a few late actions
# (without one, the script ends by checking that everything still settles).
scripts = st.tuples(
    st.lists(actions, min_size=6, max_size=30), st.lists(endings, max_size=1),
    st.lists(actions, max_size=3),
).map(lambda parts: [*parts[0], *parts[1], *(parts[2] if parts[1] else [])])


# -- bookkeeping --------------------------------------------------------------------------------


@dataclass
class OutboundCall:
    """One call of ours and how it ended."""

    number: int
    op: OurCall
    outcomes: list[tuple[str, Any]] = field(default_factory=list)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    cancelled: bool = False  # by the script
    message_id: str | None = None  # once the peer received it
    answers: list[str] = field(default_factory=list)  # kinds the peer sent, in order

    @property
    def ended(self) -> bool:
        return bool(self.outcomes)


@dataclass
class InboundCall:
    message_id: str
    method: str
    params: Any
    send: bool


class Handlers:
    """Our handlers, counting those running at once."""

    def __init__(self) -> None:
        self.running = 0
        self.most_running = 0

    def install(self, ours: RPCClient) -> None:
        for method in HANDLERS:
            ours.handle(method, self._wrap(getattr(self, method.lower())))

    def _wrap(self, handler: Callable[[Call], Any]) -> Callable[[Call], Any]:
        async def counted(call: Call) -> Any:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            try:
                return await handler(call)
            finally:
                self.running -= 1

        return counted

    async def echo(self, call: Call) -> Any:
        return call.params

    async def slow(self, call: Call) -> Any:
        await anyio.sleep(0.005)
        return call.params

    async def block(self, call: Call) -> Any:
        await anyio.sleep_forever()

    async def fail(self, call: Call) -> Any:
        raise RPCNotSupportedError("not here")

    async def crash(self, call: Call) -> Any:
        raise ValueError("a bug")

    async def quiet(self, call: Call) -> Any:
        return NOREPLY

    async def nested(self, call: Call) -> Any:
        return {"inner": await call.client.call("Inner", call.params, timeout=2)}


_PEER_SEND_ERRORS = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError,
                     LocalProtocolError)


class Peer:
    """The raw peer: a pump task records what arrives (answering pings, and our
    nested handlers' `Inner` calls at once); the script sends."""

    def __init__(self, raw: RawPeer) -> None:
        self.raw = raw
        self.lock = anyio.Lock()
        self.unlocked_send = raw._send

        async def send_locked(event: ev.Event) -> None:  # the pump answers pings meanwhile
            async with self.lock:
                await self.unlocked_send(event)

        raw._send = send_locked  # type: ignore[method-assign]
        self.alive = True
        self.closed: tuple[int, str] | None = None
        self.our_calls: list[list[Any]] = []  # CALLs of ours, in arrival order
        self.answers: dict[str, list[list[Any]]] = defaultdict(list)  # to the peer's calls
        # Text frames in wire order, with how our side must count each one:
        # "bad", "good", "unknown", or the call it answers while pending (good,
        # unless the script withdrew it meanwhile: see `Scenario.verdict`).
        self.sent: list[tuple[str, str | OutboundCall]] = []
        self.inbound: list[InboundCall] = []

    async def pump(self) -> None:
        while True:
            try:
                message = await self.raw.receive(timeout=math.inf)
            except PeerClosed as exc:
                self.closed = (exc.code, exc.reason)
                self.alive = False
                return
            except LocalProtocolError:  # it echoed a Close after the script sent its own
                self.alive = False
                return
            frame = json.loads(message)
            if frame[0] == 2:
                self.our_calls.append(frame)
                if frame[2] == "Inner":
                    await self.send(json.dumps([3, frame[1], frame[3]]), "unknown")
            else:
                assert frame[0] == 4 or frame[0] == 3, frame
                self.answers[frame[1]].append(frame)

    async def send(self, text: str, kind: str | OutboundCall) -> None:
        """Send a text frame classified as `kind` (how our side must count it)."""
        async with self.lock:
            if not self.alive:
                return
            self.sent.append((text, kind))
            try:
                await self.unlocked_send(ev.TextMessage(data=text))
            except _PEER_SEND_ERRORS:
                self.alive = False

    async def send_event(self, event: ev.Event) -> None:
        if self.alive:
            try:
                await self.raw._send(event)
            except _PEER_SEND_ERRORS:
                self.alive = False


@dataclass
class Scenario:
    end: str
    protocol: str
    max_bad: float
    max_inbound: float
    call_concurrency: int
    ours: RPCClient = field(init=False)
    peer: Peer = field(init=False)
    handlers: Handlers = field(default_factory=Handlers)
    calls: list[OutboundCall] = field(default_factory=list)
    inbound_log: list[list[Any]] = field(default_factory=list)  # [message, marked bad]
    strays: list[Any] = field(default_factory=list)  # bad_message events for no such message
    ended_by: list[str] = field(default_factory=list)  # what ended the connection
    message_ids: Any = field(default_factory=itertools.count)

    def observe(self, ours: RPCClient) -> None:
        self.ours = ours
        self.handlers.install(ours)
        ours.on("message", self._message)
        ours.on("bad_message", self._bad)

    def _message(self, event: Any) -> None:
        if not event.outbound:
            self.inbound_log.append([event.message, False])

    def _bad(self, event: Any) -> None:  # observers must not raise: checked later
        if self.inbound_log and self.inbound_log[-1][0] == event.message:
            self.inbound_log[-1][1] = True
        else:
            self.strays.append(event)

    # -- running a script ------------------------------------------------------------------

    async def run_call(self, record: OutboundCall) -> None:
        op = record.op
        with record.scope:
            try:
                result = await self.ours.call(
                    "Op", {"n": record.number}, timeout=op.timeout, no_reply=op.no_reply
                )
                record.outcomes.append(("result", result))
            except RPCError as exc:
                record.outcomes.append(("rpc", exc))
            except TimeoutError as exc:
                record.outcomes.append(("timeout", exc))
            except ConnectionClosed as exc:
                record.outcomes.append(("closed", exc))
        if record.scope.cancelled_caught:
            record.outcomes.append(("cancelled", None))

    def received(self, record: OutboundCall) -> bool:
        if record.message_id is None:
            for frame in self.peer.our_calls:
                if frame[3] == {"n": record.number}:
                    record.message_id = frame[1]
        return record.message_id is not None

    async def answer(self, record: OutboundCall, kind: str) -> None:
        message_id = record.message_id
        assert message_id is not None
        first = not record.answers
        if kind == "again" and first:
            kind = "result"
        record.answers.append(kind)
        verdict: str | OutboundCall
        if kind == "malformed":
            text, verdict = f'[3,"{message_id}"]', "bad"
        else:
            if kind == "error":
                text = f'[4,"{message_id}","NotSupported","no",{{}}]'
            else:
                text = json.dumps([3, message_id, {"r": record.number}])
            if self.ended_by:
                verdict = "unknown"  # closing: the call may have failed already
            elif not first:
                verdict = "bad"  # the first answer settled or withdrew it
            elif record.ended:
                verdict = "bad"  # withdrawn (timed out, cancelled or no_reply): unexpected
            elif record.op.timeout is None and not record.cancelled:
                verdict = record  # pending: good, unless withdrawn before it arrives
            else:
                verdict = "unknown"  # may time out (or be cancelled) meanwhile
        await self.peer.send(text, verdict)

    async def apply(self, op: Op, tg: Any) -> None:
        peer = self.peer
        if isinstance(op, OurCall):
            record = OutboundCall(len(self.calls), op)
            self.calls.append(record)
            tg.start_soon(self.run_call, record)
            await anyio.sleep(0.001)  # lets the call go out (in order, mostly)
        elif isinstance(op, CancelCall):
            if self.calls:
                record = self.calls[op.index % len(self.calls)]
                record.cancelled = True
                record.scope.cancel()
                await wait_until(lambda: record.ended)
        elif isinstance(op, PeerAnswer):
            if op.kind == "unknown":
                await peer.send(f'[3,"unknown-{next(self.message_ids)}",{{}}]', "bad")
                return
            candidates = [r for r in self.calls if self.received(r)]
            if candidates:
                await self.answer(candidates[op.index % len(candidates)], op.kind)
        elif isinstance(op, PeerCall):
            if op.send and self.protocol != "ocpp2.1":
                return
            message_id = f"p{next(self.message_ids)}"
            params = {"id": message_id}
            peer.inbound.append(InboundCall(message_id, op.method, params, op.send))
            await peer.send(json.dumps([6 if op.send else 2, message_id, op.method, params]),
                            "good")
        elif isinstance(op, PeerDuplicate):
            calls = [c for c in peer.inbound if not c.send]
            if calls:
                call = calls[op.index % len(calls)]
                # Still handled: refused; else a new call with an old id (both good).
                peer.inbound.append(call)
                await peer.send(json.dumps([2, call.message_id, call.method, call.params]),
                                "good")
        elif isinstance(op, PeerBad):
            await peer.send(op.text, "bad")
        elif isinstance(op, PeerPing):
            await peer.send_event(ev.Ping(payload=b"hi"))
        elif isinstance(op, Pause):
            await anyio.sleep(op.seconds)
        elif isinstance(op, OurClose):
            self.ended_by.append("our close")
            tg.start_soon(self._close, op)
            await anyio.sleep(0.001)
        elif isinstance(op, PeerClose):
            if peer.alive:
                self.ended_by.append("peer close")
            await peer.send_event(ev.CloseConnection(code=op.code))
        elif isinstance(op, PeerDrop):
            if peer.alive:
                self.ended_by.append("peer drop")
            peer.alive = False
            await peer.raw.drop()

    async def _close(self, op: OurClose) -> None:
        await self.ours.close(await_pending=op.await_pending, force=op.force)

    async def settle(self) -> None:
        """Still open: the peer answers every call of ours (as they come) until all
        ended, and every inbound call whose handler ends gets its answer."""
        with anyio.fail_after(5):
            while self.peer.alive and not all(r.ended for r in self.calls):
                for record in self.calls:
                    if self.received(record) and not record.answers and not record.ended:
                        await self.answer(record, "result")
                await anyio.sleep(0.002)
            await wait_until(lambda: not self.peer.alive or all(
                self.peer.answers.get(c.message_id) for c in self.peer.inbound
                if c.method in ENDING and not c.send
            ))
            if self.peer.alive:  # the connection still serves a plain call
                await self.peer.send('[2,"probe","Echo",{}]', "good")
                await wait_until(lambda: bool(self.peer.answers.get("probe"))
                                 or not self.peer.alive)

    async def finish(self, tg: Any) -> CloseResult:
        """End the connection (with a close; a drop if `await_pending` waits on
        a blocked handler) and return how it closed."""
        tg.start_soon(self.ours.close)
        with anyio.move_on_after(0.3):
            return await self.ours.wait_closed()
        await self.peer.raw.drop()
        with anyio.fail_after(5):
            return await self.ours.wait_closed()

    # -- the checks ----------------------------------------------------------------------------

    def check(self, result: CloseResult) -> None:
        ended = bool(self.ended_by)
        bad_close = self.check_bad_count(result)
        ended = ended or bad_close
        assert self.handlers.most_running <= self.max_inbound
        for record in self.calls:
            self.check_call(record, ended)
        self.check_inbound(ended)

    def check_bad_count(self, result: CloseResult) -> bool:
        assert not self.strays, self.strays
        # Our side read what the peer sent, in order, nothing skipped.
        assert len(self.inbound_log) <= len(self.peer.sent)
        count = 0
        for i, (message, marked_bad) in enumerate(self.inbound_log):
            text, sent_as = self.peer.sent[i]
            assert message == text, (i, message, text)
            verdict = self.verdict(sent_as)
            if verdict in ("bad", "good"):
                assert marked_bad == (verdict == "bad"), (message, verdict)
            count = count + 1 if marked_bad else 0
            if count > self.max_bad:
                assert i == len(self.inbound_log) - 1, "messages read after the 1002 close"
                if not self.ended_by:
                    assert result.code == 1002, result
                return True
        assert result.code != 1002, result
        return False

    def verdict(self, sent_as: str | OutboundCall) -> str:
        if isinstance(sent_as, str):
            return sent_as
        # An answer sent while its call was pending: the script may have
        # cancelled the call, or started to close, before our side read it.
        return "unknown" if sent_as.cancelled or self.ended_by else "good"

    def check_call(self, record: OutboundCall, ended: bool) -> None:
        assert len(record.outcomes) == 1, record
        kind, value = record.outcomes[0]
        op = record.op
        if op.no_reply:
            assert (kind == "result" and value is None) or kind in ("closed", "cancelled"), record
            return
        if kind == "result":
            assert value == {"r": record.number} and record.answers[0] == "result", record
        elif kind == "rpc":
            first = record.answers[0]
            expected = {"error": RPCNotSupportedError, "malformed": RPCFrameworkError}[first]
            assert type(value) is expected, record
        elif kind == "timeout":
            assert op.timeout is not None, record
        elif kind == "closed":
            assert ended, record
        elif kind == "cancelled":
            assert record.cancelled, record
        if record.answers and op.timeout is None and not record.cancelled and kind != "closed":
            first = record.answers[0]
            assert kind == ("result" if first == "result" else "rpc"), record

    def check_inbound(self, ended: bool) -> None:
        busy = "Too many inbound calls in progress"
        closing = "The connection is closing"  # refused once our close(await_pending) began
        for call in self.peer.inbound:
            answers = self.peer.answers.get(call.message_id, [])
            if call.send:
                assert not answers, call
                continue
            calls_with_id = sum(c.message_id == call.message_id for c in self.peer.inbound)
            assert len(answers) <= calls_with_id, (call, answers)
            for answer in answers:
                kind, _, *rest = answer
                if kind == 4 and rest[0] in ("GenericError", "RpcFrameworkError") and (
                    busy in rest[1] or "Already processing" in rest[1]
                ):
                    continue
                if kind == 4 and rest[0] == "GenericError" and closing in rest[1]:
                    assert "our close" in self.ended_by, answer  # only once we close
                    continue
                method = call.method
                if method in ("Echo", "Slow"):
                    assert answer == [3, call.message_id, call.params], answer
                elif method == "Nested":
                    assert answer == [3, call.message_id, {"inner": call.params}] or (
                        kind == 4 and rest[0] == "InternalError"
                    ), answer
                elif method == "Fail":
                    assert kind == 4 and rest[0] == "NotSupported", answer
                elif method == "Crash":
                    assert kind == 4 and rest[0] == "InternalError", answer
                else:  # Block and Quiet never answer by themselves
                    raise AssertionError(f"{method} answered: {answer}")
            if not ended and call.method in ENDING:
                assert answers, f"inbound call {call} was never answered"


@asynccontextmanager
async def our_endpoint(scenario: Scenario) -> AsyncIterator[tuple[RPCClient, RawPeer]]:
    """Our endpoint (the `end` of the scenario) connected to a raw peer."""
    common: dict[str, Any] = {
        "ping_interval": None, "max_bad_messages": scenario.max_bad,
        "call_concurrency": scenario.call_concurrency, "call_timeout": 30,
        "max_inbound_calls": scenario.max_inbound,
    }
    if scenario.end == "client":
        async with raw_server(subprotocol=scenario.protocol) as srv:
            client = RPCClient(srv.url, "CP1", protocols=offered(scenario.protocol),
                               reconnect=False, **common)
            scenario.observe(client)
            async with client:
                yield client, await srv.accept()
    else:
        async with RPCServer(protocols=offered(scenario.protocol), **common) as server:
            accepted: list[ServerClient] = []

            @server.on_client
            async def on_client(client: ServerClient) -> None:
                scenario.observe(client)  # before its first await: sees every call
                accepted.append(client)

            listening = await server.listen()
            url = f"ws://{listening.host}:{listening.port}/ocpp/CP1"
            async with raw_client(url, offered(scenario.protocol)) as raw:
                await wait_until(lambda: bool(accepted))
                yield accepted[0], raw


async def run_script(scenario: Scenario, script: list[Op]) -> None:
    tasks_before = task_count()
    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            async with our_endpoint(scenario) as (_, raw):
                scenario.peer = peer = Peer(raw)
                tg.start_soon(peer.pump)
                for op in script:
                    await scenario.apply(op, tg)
                if not scenario.ended_by:
                    await scenario.settle()
                result = await scenario.finish(tg)
                # Once closed, no handler runs, and every call of ours has ended.
                assert scenario.handlers.running == 0
                with anyio.fail_after(2):
                    await wait_until(lambda: all(r.ended for r in scenario.calls))
                await peer.raw.drop()
            scenario.check(result)
    assert task_count() == tasks_before, "a task outlived the endpoints"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("end", ["server", "client"])
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    script=scripts,
    protocol=st.sampled_from(["ocpp2.0.1", "ocpp2.1"]),
    max_bad=st.sampled_from([math.inf, 0, 1, 3]),
    max_inbound=st.sampled_from([1, 2, 100]),
    call_concurrency=st.sampled_from([1, 3]),
)
def test_random_scripts_keep_every_invariant(
    backend: str, end: str, script: list[Op], protocol: str, max_bad: float,
    max_inbound: int, call_concurrency: int,
) -> None:
    scenario = Scenario(end, protocol, max_bad, max_inbound, call_concurrency)
    anyio.run(run_script, scenario, script, backend=backend)
