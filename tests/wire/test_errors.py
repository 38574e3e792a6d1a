"""The error tree (API.md "Errors") and what a CALLERROR carries for each."""

from __future__ import annotations

import json

import pytest

from ocpp_rpc import errors
from ocpp_rpc._wire.codec import Dialect, dialect_for, encode_error

CODES = sorted(errors.ERROR_CLASSES)
V16 = dialect_for("ocpp1.6")
V201 = dialect_for("ocpp2.0.1")


@pytest.mark.parametrize("code", CODES)
def test_create_rpc_error_keeps_the_message_it_is_given(code: str) -> None:
    error = errors.create_rpc_error(code)
    assert type(error) is errors.ERROR_CLASSES[code]
    assert (error.code, error.message, error.details) == (code, "", {})
    assert str(error) == code
    given = errors.create_rpc_error(code, "why", {"k": 1})
    assert (given.message, given.details, str(given)) == ("why", {"k": 1}, f"{code}: why")


@pytest.mark.parametrize("cls", sorted(set(errors.ERROR_CLASSES.values()), key=str))
def test_the_standard_descriptions_stay_on_the_classes(cls: type[errors.RPCError]) -> None:
    assert cls().message == ""
    assert cls().default_message == cls.default_message
    if cls is errors.RPCGenericError:
        assert cls.default_message == ""
    else:
        assert cls.default_message.strip() and cls.default_message[0].isupper()


def test_an_unknown_code_is_a_generic_error_that_keeps_it() -> None:
    error = errors.create_rpc_error("VendorSpecific")
    assert type(error) is errors.RPCGenericError
    assert (error.code, error.message, error.default_message) == ("VendorSpecific", "", "")


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize("dialect", [V16, V201], ids=["1.6", "2.0.1"])
def test_a_callerror_without_message_carries_the_standard_description(
    code: str, dialect: Dialect
) -> None:
    """The wire as before `create_rpc_error(code)` left `message` empty: our
    CALLERROR for an error without a message says what the code means."""
    error = errors.create_rpc_error(code, details={"d": 1})
    frame = json.loads(encode_error("m1", error, dialect))
    assert frame == [4, "m1", dialect.spell(code), type(error).default_message, {"d": 1}]


def test_a_callerror_carries_the_message_and_any_details_given() -> None:
    error = errors.RPCNotSupportedError("not here", {"a": 1})
    assert json.loads(encode_error("m1", error, V201)) == [
        4, "m1", "NotSupported", "not here", {"a": 1}
    ]
    assert json.loads(encode_error("m1", error, V201, {"b": 2}, result_error=True)) == [
        5, "m1", "NotSupported", "not here", {"b": 2}
    ]


def test_a_message_that_is_not_a_string_goes_out_as_its_text() -> None:
    """A CALLERROR's description is a string: `RPCGenericError(5)` from a
    handler must not put a number where every peer (ours too) reads a string."""
    error = errors.RPCGenericError(5)  # type: ignore[arg-type]
    assert error.message == "5"
    assert json.loads(encode_error("m1", error, V201)) == [4, "m1", "GenericError", "5", {}]
