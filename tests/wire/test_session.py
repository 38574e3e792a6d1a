"""The pure RPC exchange: pending calls, duplicate ids, the bad-message count,
and the answers it prescribes for failures (internal errors, strict mode)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from harness import hostile_messages, is_good
from hypothesis import given
from hypothesis import strategies as st

from ocpp_rpc._wire.codec import CallErrorFrame, CallFrame, CallResultFrame, SendFrame
from ocpp_rpc._wire.session import Answer, Bad, Dispatch, Exchange, MessageIds, Refuse
from ocpp_rpc.errors import (
    RPCError,
    RPCFormatViolationError,
    RPCFrameworkError,
    RPCInternalError,
    RPCNotImplementedError,
    RPCOccurrenceConstraintViolationError,
)


def test_call_is_dispatched_and_duplicate_id_refused_while_handled() -> None:
    exchange: Exchange[object] = Exchange("ocpp2.0.1")
    assert exchange.receive('[2,"a","X",{}]') == Dispatch(CallFrame("a", "X", {}))
    refused = exchange.receive('[2,"a","X",{}]')
    assert isinstance(refused, Refuse)
    reply = json.loads(refused.reply)
    assert reply == [4, "a", "RpcFrameworkError", "Already processing a call with message ID: a",
                     {}]
    assert exchange.bad_message_count == 0
    exchange.finish("a")
    assert isinstance(exchange.receive('[2,"a","X",{}]'), Dispatch)


def test_send_is_dispatched_without_tracking() -> None:
    exchange: Exchange[object] = Exchange("ocpp2.1")
    assert exchange.receive('[6,"s","N",{}]') == Dispatch(SendFrame("s", "N", {}))
    assert exchange.receive('[6,"s","N",{}]') == Dispatch(SendFrame("s", "N", {}))
    assert "s" not in exchange.handling


@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1", "ocpp2.1"])
def test_once_a_close_began_calls_and_sends_are_refused_and_answers_taken(protocol: str) -> None:
    exchange: Exchange[str] = Exchange(protocol)
    exchange.add_pending("out", "waiter")
    exchange.stop_calls(answer=True)  # a close awaiting pending work: our Close not sent yet
    refused = exchange.receive('[2,"a","X",{}]')
    assert isinstance(refused, Refuse) and refused.reply is not None and not refused.busy
    # GenericError: a code of every OCPP-J version, as the busy refusal's.
    assert json.loads(refused.reply) == [
        4, "a", "GenericError", "The connection is closing; no new calls are accepted", {}
    ]
    assert "a" not in exchange.handling
    if protocol == "ocpp2.1":
        assert exchange.receive('[6,"s","N",{}]') == Refuse(SendFrame("s", "N", {}), None)
        assert exchange.sends_handling == 0
    assert exchange.receive('[3,"out",{}]') == Answer("waiter", CallResultFrame("out", {}))
    exchange.stop_calls(answer=False)  # our Close goes: nothing may follow it
    assert exchange.receive('[2,"b","X",{}]') == Refuse(CallFrame("b", "X", {}), None)
    assert exchange.inbound_in_progress == 0


def test_answer_resolves_pending_once() -> None:
    exchange: Exchange[str] = Exchange("ocpp1.6")
    exchange.add_pending("m", "waiter")
    assert exchange.receive('[3,"m",{}]') == Answer("waiter", CallResultFrame("m", {}))
    late = exchange.receive('[3,"m",{}]')
    assert isinstance(late, Bad)
    assert late.unexpected == CallResultFrame("m", {})
    assert late.reply is None


def test_withdrawn_call_answer_is_unexpected() -> None:
    exchange: Exchange[str] = Exchange("ocpp1.6")
    exchange.add_pending("m", "waiter")
    exchange.withdraw("m")
    bad = exchange.receive('[4,"m","GenericError","",{}]')
    assert isinstance(bad, Bad)
    assert bad.unexpected is not None and bad.failed is None


def test_malformed_response_fails_the_pending_call() -> None:
    exchange: Exchange[str] = Exchange("ocpp2.0.1")
    exchange.add_pending("m", "waiter")
    bad = exchange.receive('[3,"m"]')
    assert isinstance(bad, Bad)
    assert bad.failed == "waiter"
    assert isinstance(bad.error, RPCFrameworkError)
    assert bad.reply is None
    assert "m" not in exchange.pending


def test_bad_messages_close_after_max_consecutive() -> None:
    exchange: Exchange[str] = Exchange("ocpp2.0.1", max_bad_messages=2)
    first, second = exchange.receive("x"), exchange.receive("x")
    assert isinstance(first, Bad) and isinstance(second, Bad)
    assert not first.close and not second.close and second.reply is not None
    third = exchange.receive("x")
    assert isinstance(third, Bad) and third.close and third.reply is None


def test_good_frame_resets_bad_count() -> None:
    exchange: Exchange[str] = Exchange("ocpp2.0.1", max_bad_messages=1)
    assert not exchange.receive("x").close  # type: ignore[union-attr]
    exchange.receive('[2,"a","X",{}]')
    assert exchange.bad_message_count == 0
    assert not exchange.receive("x").close  # type: ignore[union-attr]
    assert exchange.receive("x").close  # type: ignore[union-attr]


def test_empty_frame_neither_counts_nor_resets() -> None:
    exchange: Exchange[str] = Exchange("ocpp2.0.1")
    exchange.receive("x")
    assert exchange.receive("") is None
    assert exchange.bad_message_count == 1


def test_zero_max_bad_messages_closes_on_first() -> None:
    exchange: Exchange[str] = Exchange(None, max_bad_messages=0)
    bad = exchange.receive("[]")
    assert isinstance(bad, Bad) and bad.close


def test_message_ids_unique_and_short() -> None:
    ids = MessageIds()
    made = {ids() for _ in range(10_000)}
    assert len(made) == 10_000
    assert all(len(i) <= 36 for i in made)


@given(
    messages=st.lists(
        hostile_messages | st.sampled_from(["", "x", "[]", '[2,"a","X",{}]', '[3,"zz",{}]']),
        max_size=30,
    ),
    protocol=st.sampled_from(["ocpp1.6", "ocpp2.0.1", "ocpp2.1", None]),
    limit=st.sampled_from([math.inf, 0, 1, 3]),
)
def test_every_message_is_classified_and_counted_as_the_table_says(
    messages: list[str | bytes], protocol: str | None, limit: float
) -> None:
    """Against `harness.is_good`, a model of the table written without ocpp_rpc:
    a good message resets the count, an empty one leaves it, a bad one adds to
    it, and the connection closes (answering nothing) once it exceeds `limit`."""
    exchange: Exchange[str] = Exchange(protocol, max_bad_messages=limit)
    consecutive = 0
    for message in messages:
        verdict = is_good(message, protocol)
        result = exchange.receive(message)
        if verdict is None:
            assert result is None
        elif verdict:
            consecutive = 0
            assert isinstance(result, (Dispatch, Refuse)), (message, result)
        else:
            consecutive += 1
            assert isinstance(result, Bad), (message, result)
            assert result.close == (consecutive > limit)
            if result.close:
                assert result.reply is None
                break
        assert exchange.bad_message_count == consecutive


@pytest.mark.parametrize("protocol", ["ocpp2.1", None])
def test_callresulterror_answers_the_pending_call_from_2_1_on(protocol: str | None) -> None:
    exchange: Exchange[str] = Exchange(protocol)
    exchange.add_pending("m", "waiter")
    assert isinstance(exchange.receive("x"), Bad)
    received = exchange.receive('[5,"m","InternalError","boom",{"why":1}]')
    assert received == Answer(
        "waiter", CallErrorFrame("m", "InternalError", "boom", {"why": 1}, result_error=True)
    )
    assert exchange.bad_message_count == 0 and "m" not in exchange.pending
    assert exchange.receive('[5,"m","InternalError","late",{}]').unexpected  # type: ignore[union-attr]


# -- the answers the exchange prescribes --------------------------------------------


def test_a_handlers_rpc_error_answers_as_it_is() -> None:
    exchange: Exchange[str] = Exchange("ocpp2.0.1", detailed_errors=True)
    raised = RPCNotImplementedError("nope", {"why": "x"})
    error, details = exchange.failure(raised)
    assert error is raised and details == {"why": "x"}
    assert json.loads(exchange.error_reply("m", error, details)) == [
        4, "m", "NotImplemented", "nope", {"why": "x"}
    ]


@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1", None])
def test_any_other_exception_answers_a_generic_internal_error(protocol: str | None) -> None:
    exchange: Exchange[str] = Exchange(protocol)
    error, details = exchange.failure(ValueError("secret token 1234"))
    assert type(error) is RPCInternalError and details is None
    reply = exchange.error_reply("m", error, details)
    assert "secret" not in reply and "ValueError" not in reply
    kind, message_id, code, description, sent_details = json.loads(reply)
    assert (kind, message_id, code, sent_details) == (4, "m", "InternalError", {})
    assert description == (error.message or getattr(error, "description", ""))


def test_detailed_errors_send_the_exceptions_name_message_and_stack() -> None:
    exchange: Exchange[str] = Exchange("ocpp2.0.1", detailed_errors=True)
    try:
        raise KeyError("the key")
    except KeyError as exc:
        error, details = exchange.failure(exc)
    assert type(error) is RPCInternalError and error.message == "'the key'"
    assert details["name"] == "KeyError" and details["message"] == "'the key'"
    assert "Traceback" in details["stack"] and "raise KeyError" in details["stack"]
    sent = json.loads(exchange.error_reply("m", error, details))
    assert sent[2:4] == ["InternalError", "'the key'"] and sent[4] == details
    # An exception without text is named by its type.
    assert exchange.failure(RuntimeError())[0].message == "RuntimeError"


def test_detailed_errors_may_change_on_a_live_exchange() -> None:
    exchange: Exchange[str] = Exchange("ocpp2.0.1")
    assert exchange.failure(ValueError("x"))[1] is None
    exchange.detailed_errors = True
    assert exchange.failure(ValueError("x"))[1] is not None


def test_an_invalid_result_of_our_handler_answers_a_generic_internal_error() -> None:
    cause = RPCFormatViolationError("bad result", {"path": "$.status"})
    error = Exchange.invalid_own_result(cause)
    assert type(error) is RPCInternalError and error.details == {}
    assert "bad result" not in Exchange("ocpp2.0.1").error_reply("m", error)


def test_no_handler_answers_not_implemented() -> None:
    error = Exchange.unhandled("Heartbeat")
    assert isinstance(error, RPCNotImplementedError) and "Heartbeat" in error.message


def test_a_result_json_cannot_hold_answers_an_internal_error() -> None:
    """Why goes out only with detailed errors (the text names the result's types)."""
    exchange: Exchange[str] = Exchange("ocpp2.0.1")
    assert json.loads(exchange.result_reply("m", {"a": 1})) == [3, "m", {"a": 1}]
    with pytest.raises(RPCInternalError) as caught:
        exchange.result_reply("m", {"a": object()})
    assert caught.value.message == RPCInternalError.default_message
    assert isinstance(caught.value.__cause__, TypeError)  # kept for local observers
    detailed: Exchange[str] = Exchange("ocpp2.0.1", detailed_errors=True)
    with pytest.raises(RPCInternalError, match="not JSON: Object of type object"):
        detailed.result_reply("m", {"a": object()})


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [
        ("ocpp2.1", [5, "m", "OccurrenceConstraintViolation", "missing", {"field": "x"}]),
        ("ocpp2.0.1", None),
        ("ocpp1.6", None),
        # No subprotocol: the 2.1 RPC framework (SEND, CALLRESULTERROR) applies.
        (None, [5, "m", "OccurrenceConstraintViolation", "missing", {"field": "x"}]),
    ],
)
def test_an_invalid_result_from_the_peer_gets_a_callresulterror_from_2_1_on(
    protocol: str | None, expected: list[Any] | None
) -> None:
    exchange: Exchange[str] = Exchange(protocol)
    error: RPCError = RPCOccurrenceConstraintViolationError("missing", {"field": "x"})
    reply = exchange.invalid_result_reply("m", error)
    assert (None if reply is None else json.loads(reply)) == expected
