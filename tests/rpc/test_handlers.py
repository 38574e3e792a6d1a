"""`Call`, as handlers receive it: the fast constructor the connection uses
makes the same frozen value as the dataclass's own."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocpp_rpc import Call
from ocpp_rpc._rpc.handlers import make_call

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(
    method=st.text(), params=json_values, message_id=st.text(),
    protocol=st.none() | st.sampled_from(["ocpp1.6", "ocpp2.0.1", "ocpp2.1"]),
)
def test_make_call_is_the_dataclass_value(
    method: str, params: Any, message_id: str, protocol: str | None
) -> None:
    client = object()
    fast = make_call(method, params, message_id, protocol, client)  # type: ignore[arg-type]
    slow = Call(method, params, message_id, protocol, client)  # type: ignore[arg-type]
    assert type(fast) is Call
    assert fast == slow
    for field in dataclasses.fields(Call):
        assert getattr(fast, field.name) is getattr(slow, field.name)
    assert repr(fast) == repr(slow)
    assert hash(fast) == hash(slow) if _hashable(params) else True


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def test_a_made_call_stays_frozen() -> None:
    call = make_call("Heartbeat", {}, "1", "ocpp1.6", object())  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        call.method = "Other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        call.params = {"a": 1}  # type: ignore[misc]
