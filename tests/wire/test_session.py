"""The pure RPC session: pending calls, duplicate ids, the bad-message count."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from ocpp_rpc._wire.codec import CallFrame, CallResultFrame, SendFrame
from ocpp_rpc._wire.session import Answer, Bad, Dispatch, MessageIds, Refuse, Session
from ocpp_rpc.errors import RPCFrameworkError


def test_call_is_dispatched_and_duplicate_id_refused_while_handled() -> None:
    session: Session[object] = Session("ocpp2.0.1")
    assert session.receive('[2,"a","X",{}]') == Dispatch(CallFrame("a", "X", {}))
    refused = session.receive('[2,"a","X",{}]')
    assert isinstance(refused, Refuse)
    reply = json.loads(refused.reply)
    assert reply == [4, "a", "RpcFrameworkError", "Already processing a call with message ID: a",
                     {}]
    assert session.bad_message_count == 0
    session.finish("a")
    assert isinstance(session.receive('[2,"a","X",{}]'), Dispatch)


def test_send_is_dispatched_without_tracking() -> None:
    session: Session[object] = Session("ocpp2.1")
    assert session.receive('[6,"s","N",{}]') == Dispatch(SendFrame("s", "N", {}))
    assert session.receive('[6,"s","N",{}]') == Dispatch(SendFrame("s", "N", {}))
    assert "s" not in session.handling


def test_answer_resolves_pending_once() -> None:
    session: Session[str] = Session("ocpp1.6")
    session.add_pending("m", "waiter")
    assert session.receive('[3,"m",{}]') == Answer("waiter", CallResultFrame("m", {}))
    late = session.receive('[3,"m",{}]')
    assert isinstance(late, Bad)
    assert late.unexpected == CallResultFrame("m", {})
    assert late.reply is None


def test_withdrawn_call_answer_is_unexpected() -> None:
    session: Session[str] = Session("ocpp1.6")
    session.add_pending("m", "waiter")
    session.withdraw("m")
    bad = session.receive('[4,"m","GenericError","",{}]')
    assert isinstance(bad, Bad)
    assert bad.unexpected is not None and bad.failed is None


def test_malformed_response_fails_the_pending_call() -> None:
    session: Session[str] = Session("ocpp2.0.1")
    session.add_pending("m", "waiter")
    bad = session.receive('[3,"m"]')
    assert isinstance(bad, Bad)
    assert bad.failed == "waiter"
    assert isinstance(bad.error, RPCFrameworkError)
    assert bad.reply is None
    assert "m" not in session.pending


def test_bad_messages_close_after_max_consecutive() -> None:
    session: Session[str] = Session("ocpp2.0.1", max_bad_messages=2)
    first, second = session.receive("x"), session.receive("x")
    assert isinstance(first, Bad) and isinstance(second, Bad)
    assert not first.close and not second.close and second.reply is not None
    third = session.receive("x")
    assert isinstance(third, Bad) and third.close and third.reply is None


def test_good_frame_resets_bad_count() -> None:
    session: Session[str] = Session("ocpp2.0.1", max_bad_messages=1)
    assert not session.receive("x").close  # type: ignore[union-attr]
    session.receive('[2,"a","X",{}]')
    assert session.bad_message_count == 0
    assert not session.receive("x").close  # type: ignore[union-attr]
    assert session.receive("x").close  # type: ignore[union-attr]


def test_empty_frame_neither_counts_nor_resets() -> None:
    session: Session[str] = Session("ocpp2.0.1")
    session.receive("x")
    assert session.receive("") is None
    assert session.bad_message_count == 1


def test_zero_max_bad_messages_closes_on_first() -> None:
    session: Session[str] = Session(None, max_bad_messages=0)
    bad = session.receive("[]")
    assert isinstance(bad, Bad) and bad.close


def test_message_ids_unique_and_short() -> None:
    ids = MessageIds()
    made = {ids() for _ in range(10_000)}
    assert len(made) == 10_000
    assert all(len(i) <= 36 for i in made)


@given(st.lists(st.sampled_from(["x", "[]", '[2,"a","X",{}]', "", '[3,"zz",{}]']), max_size=30),
       st.integers(min_value=0, max_value=5))
def test_bad_count_matches_consecutive_bad_frames(frames: list[str], limit: int) -> None:
    session: Session[str] = Session("ocpp2.0.1", max_bad_messages=limit)
    consecutive = 0
    for text in frames:
        result = session.receive(text)
        session.handling.clear()
        if text == "":
            assert result is None
            continue
        if text.startswith('[2'):
            consecutive = 0
            assert isinstance(result, Dispatch)
        else:
            consecutive += 1
            assert isinstance(result, Bad)
            assert result.close == (consecutive > limit)
        assert session.bad_message_count == consecutive
