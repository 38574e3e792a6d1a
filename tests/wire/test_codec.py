"""The pure OCPP-J codec: every row of API.md's wire table that a single frame
decides, both dialects, plus hypothesis round-trip and robustness properties."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ocpp_rpc import errors
from ocpp_rpc._wire.codec import (
    MAX_DEPTH,
    BadFrame,
    CallErrorFrame,
    CallFrame,
    CallResultFrame,
    SendFrame,
    decode,
    dialect_for,
    encode_call,
    encode_call_error,
    encode_call_result,
    encode_send,
)

V16 = dialect_for("ocpp1.6")
V201 = dialect_for("ocpp2.0.1")
V21 = dialect_for("ocpp2.1")
NONE = dialect_for(None)


def reply_of(text: str, dialect: Any) -> list[Any] | None:
    frame = decode(text, dialect)
    assert isinstance(frame, BadFrame)
    return None if frame.reply is None else json.loads(frame.reply)


def test_dialects() -> None:
    assert V16.legacy_codes and not V16.rpc21
    assert not V201.legacy_codes and not V201.rpc21
    assert not V21.legacy_codes and V21.rpc21
    assert NONE.rpc21 and not NONE.legacy_codes
    assert dialect_for("ocpp2.2").rpc21
    assert not dialect_for("custom").rpc21


@pytest.mark.parametrize(
    ("code", "on16", "on2x"),
    [
        ("FormatViolation", "FormationViolation", "FormatViolation"),
        ("FormationViolation", "FormationViolation", "FormatViolation"),
        ("OccurrenceConstraintViolation", "OccurenceConstraintViolation",
         "OccurrenceConstraintViolation"),
        ("OccurenceConstraintViolation", "OccurenceConstraintViolation",
         "OccurrenceConstraintViolation"),
        ("RpcFrameworkError", "GenericError", "RpcFrameworkError"),
        ("MessageTypeNotSupported", "GenericError", "MessageTypeNotSupported"),
        ("NotImplemented", "NotImplemented", "NotImplemented"),
        ("SomethingElse", "GenericError", "GenericError"),
    ],
)
def test_error_code_spelling_per_dialect(code: str, on16: str, on2x: str) -> None:
    assert V16.spell(code) == on16
    assert V201.spell(code) == on2x
    assert V21.spell(code) == on2x


def test_empty_frame_is_ignored() -> None:
    assert decode("", V16) is None
    assert decode(b"", V201) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "Message must be a JSON structure"),
        ("[2, \"a\"", "Message must be a JSON structure"),
        ("NaN", "Message must be a JSON structure"),
        ("[2,\"a\",\"X\",{\"v\":Infinity}]", "Message must be a JSON structure"),
        ("{}", "Message must be an array"),
        ("\"x\"", "Message must be an array"),
        ("[]", "Message type must be a number"),
        ("[\"2\",\"a\",\"X\",{}]", "Message type must be a number"),
        ("[true,\"a\",\"X\",{}]", "Message type must be a number"),
        ("[2,123,\"X\",{}]", "Message ID must be a string"),
        ("[2,null,\"X\",{}]", "Message ID must be a string"),
    ],
)
def test_unreadable_frames_answer_rpc_framework_error_with_id_minus_one(
    text: str, message: str
) -> None:
    assert reply_of(text, V201) == [4, "-1", "RpcFrameworkError", message, {}]
    # 1.6J has no RpcFrameworkError: GenericError instead.
    assert reply_of(text, V16) == [4, "-1", "GenericError", message, {}]


def test_binary_non_utf8_is_not_json() -> None:
    assert reply_of(b"\xff\xfe", V201) == [
        4, "-1", "RpcFrameworkError", "Message must be a JSON structure", {}
    ]


@pytest.mark.parametrize("kind", [0, 1, 7, 9, 99, -2, 2.5, -0.5])  # a number, no type
def test_unknown_message_type(kind: float) -> None:
    text = json.dumps([kind, "id1", "X", {}])
    expected = [4, "id1", "MessageTypeNotSupported", f"Unrecognised message type: {kind}", {}]
    assert reply_of(text, V201) == expected
    assert reply_of(text, V21) == expected
    frame = decode(text, V16)
    assert isinstance(frame, BadFrame)
    assert frame.reply is None
    assert isinstance(frame.error, errors.RPCMessageTypeNotSupportedError)


def test_unknown_message_type_with_unreadable_id_uses_minus_one() -> None:
    assert reply_of("[9, 5]", V201) == [
        4, "-1", "MessageTypeNotSupported", "Unrecognised message type: 9", {}
    ]


@pytest.mark.parametrize("kind", [5, 6])
def test_types_5_and_6_are_unknown_before_2_1(kind: int) -> None:
    text = json.dumps([kind, "m", "X", {}] if kind == 6 else [kind, "m", "GenericError", "", {}])
    assert reply_of(text, V201)[2] == "MessageTypeNotSupported"  # type: ignore[index]
    assert reply_of(text, V16) is None
    assert not isinstance(decode(text, V21), BadFrame)


@pytest.mark.parametrize(
    "text",
    ['[2,"m1",5,{}]', '[2,"m1",null,{}]', '[2,"m1","X"]', '[2,"m1","X",{},1]', '[2,"m1"]'],
)
def test_bad_call_shape_answers_with_its_id(text: str) -> None:
    reply = reply_of(text, V201)
    assert reply is not None
    assert reply[:3] == [4, "m1", "RpcFrameworkError"]


@pytest.mark.parametrize(
    "text",
    ['[3,"m1"]', '[3,"m1",{},1]', '[4,"m1","X","d"]', '[4,"m1",1,"d",{}]', '[4,"m1","X",2,{}]',
     '[4,"m1","X","d",[]]', '[4,"m1","X","d",{},5]'],
)
def test_bad_response_shape_is_never_answered_but_names_the_call(text: str) -> None:
    frame = decode(text, V201)
    assert isinstance(frame, BadFrame)
    assert frame.reply is None
    assert frame.response_id == "m1"
    assert isinstance(frame.error, errors.RPCFrameworkError)


def test_valid_frames() -> None:
    assert decode('[2,"a","Heartbeat",{}]', V16) == CallFrame("a", "Heartbeat", {})
    assert decode('[3,"a",{"x":1}]', V16) == CallResultFrame("a", {"x": 1})
    assert decode('[4,"a","NotSupported","no",{"k":1}]', V16) == CallErrorFrame(
        "a", "NotSupported", "no", {"k": 1}
    )
    assert decode('[5,"a","InternalError","",{}]', V21) == CallErrorFrame(
        "a", "InternalError", "", {}, result_error=True
    )
    assert decode('[6,"a","NotifyX",{}]', V21) == SendFrame("a", "NotifyX", {})
    # A CALL's payload is passed through as is (strict mode judges it).
    assert decode('[2,"a","X",[1]]', V201) == CallFrame("a", "X", [1])


def test_call_error_frame_to_error_keeps_code() -> None:
    error = CallErrorFrame("a", "FormationViolation", "bad", {"k": 1}).to_error()
    assert isinstance(error, errors.RPCFormatViolationError)
    assert (error.code, error.message, error.details) == ("FormationViolation", "bad", {"k": 1})
    unknown = CallErrorFrame("a", "Weird", "", {}).to_error()
    assert type(unknown) is errors.RPCGenericError
    assert unknown.code == "Weird"


def test_encoders() -> None:
    assert encode_call("1", "Heartbeat", {}) == '[2,"1","Heartbeat",{}]'
    assert encode_send("1", "N", {"a": "é"}) == '[6,"1","N",{"a":"é"}]'
    assert encode_call_result("1", {"a": [1, 2]}) == '[3,"1",{"a":[1,2]}]'
    assert encode_call_error("1", "FormatViolation", "d", {}, V16) == (
        '[4,"1","FormationViolation","d",{}]'
    )
    assert encode_call_error("1", "InternalError", "", {}, V21, result_error=True) == (
        '[5,"1","InternalError","",{}]'
    )
    with pytest.raises(ValueError, match="JSON"):
        encode_call_result("1", {"x": float("nan")})
    # An error answer always goes out, even with details JSON cannot hold.
    assert encode_call_error("1", "GenericError", "", {"x": object()}, V201) == (
        '[4,"1","GenericError","",{}]'
    )


# -- properties ----------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
payloads = st.dictionaries(st.text(max_size=10), json_values, max_size=5)
ids = st.text(min_size=1, max_size=36)
dialects = st.sampled_from([V16, V201, V21, NONE])


@given(ids, st.text(min_size=1, max_size=30), payloads, dialects)
def test_call_round_trip(message_id: str, method: str, params: Any, dialect: Any) -> None:
    assert decode(encode_call(message_id, method, params), dialect) == CallFrame(
        message_id, method, params
    )


@given(ids, json_values, dialects)
def test_call_result_round_trip(message_id: str, result: Any, dialect: Any) -> None:
    assert decode(encode_call_result(message_id, result), dialect) == CallResultFrame(
        message_id, result
    )


@given(ids, st.sampled_from(sorted(errors.ERROR_CLASSES)), st.text(), payloads, dialects)
def test_call_error_round_trip(
    message_id: str, code: str, description: str, details: Any, dialect: Any
) -> None:
    frame = decode(encode_call_error(message_id, code, description, details, dialect), dialect)
    assert isinstance(frame, CallErrorFrame)
    assert frame.code == dialect.spell(code)
    assert (frame.message_id, frame.description, frame.details) == (
        message_id, description, details
    )


@given(st.one_of(st.text(), st.binary()), dialects)
def test_decode_never_raises_on_arbitrary_input(data: Any, dialect: Any) -> None:
    frame = decode(data, dialect)
    if isinstance(frame, BadFrame) and frame.reply is not None:
        reply = json.loads(frame.reply)
        assert reply[0] == 4 and isinstance(reply[1], str)


@given(st.lists(json_values, max_size=6), dialects)
def test_decode_never_raises_on_arbitrary_arrays(items: list[Any], dialect: Any) -> None:
    frame = decode(json.dumps(items), dialect)
    assert frame is None or isinstance(
        frame, BadFrame | CallFrame | SendFrame | CallResultFrame | CallErrorFrame
    )


# -- the nesting limit: the codec's own rule, whatever the Python and decoder ------

def _decoders() -> list[Any]:
    from ocpp_rpc._wire import codec as _codec

    found = [pytest.param(_codec._decode_std, id="json")]
    if _codec.orjson is not None:
        found.append(pytest.param(_codec._decode_orjson, id="orjson"))
    return found


@pytest.fixture(params=_decoders())
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Each decode path in turn: the standard library's, and orjson's if installed."""
    from ocpp_rpc._wire import codec as _codec

    monkeypatch.setattr(_codec, "_decode", request.param)
    return request.param


def _nested_call(depth: int, opener: str = "[", closer: str = "]") -> str:
    """A CALL whose frame nests `depth` deep (its own array is level 1): its
    params are `opener`s closed by `closer`s around an empty array."""
    levels = depth - 2  # the frame's array and the innermost []
    return '[2,"1","A",' + opener * levels + "[]" + closer * levels + "]"


def _depth(value: Any) -> int:
    """How deep `value` nests lists and dicts (iteratively: it may be deep)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, level)
            todo.extend((child, level + 1) for child in
                        (item.values() if isinstance(item, dict) else item))
    return deepest


@pytest.mark.parametrize(
    ("opener", "closer"),
    [("[", "]"), ('{"a":', "}"), ('["x",1,{},', "]"), ('[{"k":"]}"},', "]")],
    ids=["arrays", "objects", "padded", "closers-in-strings"],
)
def test_nesting_up_to_the_limit_decodes(decoder: Any, opener: str, closer: str) -> None:
    text = _nested_call(MAX_DEPTH, opener, closer)
    frame = decode(text, V201)
    assert isinstance(frame, CallFrame)
    assert _depth([frame.params]) == MAX_DEPTH


@pytest.mark.parametrize(
    ("opener", "closer"),
    [("[", "]"), ('{"a":', "}"), ('["x",1,{},', "]"), ('[{"k":"]}"},', "]")],
    ids=["arrays", "objects", "padded", "closers-in-strings"],
)
@pytest.mark.parametrize("dialect", [V16, V201, V21], ids=["1.6", "2.0.1", "2.1"])
def test_nesting_over_the_limit_is_a_frame_that_is_not_json(
    decoder: Any, opener: str, closer: str, dialect: Any
) -> None:
    code = "GenericError" if dialect.legacy_codes else "RpcFrameworkError"
    expected = [4, "-1", code, "Message must be a JSON structure", {}]
    text = _nested_call(MAX_DEPTH + 1, opener, closer)
    assert json.loads(text)  # valid JSON, only too deep
    assert reply_of(text, dialect) == expected
    frame = decode(text.encode(), dialect)
    assert isinstance(frame, BadFrame) and isinstance(frame.error, errors.RPCFrameworkError)


@pytest.mark.parametrize("depth", [1010, 10_000, 100_000])  # 3.13 used to read 1,010
def test_far_too_deep_is_a_bad_frame(decoder: Any, depth: int) -> None:
    assert reply_of(_nested_call(depth), V201) == [
        4, "-1", "RpcFrameworkError", "Message must be a JSON structure", {}
    ]


@pytest.mark.parametrize(
    "string",
    ["[" * 2000, "]" * 2000, "{[" * 1000, '\\"' + "[" * 2000, "\\\\" + "]" * 2000,
     "\\u005b" * 2000, "é[😀]" * 700],
    ids=["openers", "closers", "both", "escaped-quote", "escaped-backslash", "escapes",
         "non-ascii"],
)
def test_brackets_in_strings_do_not_count(decoder: Any, string: str) -> None:
    # Strings full of brackets in a frame at the limit: still decoded...
    opener = '["' + string + '",'
    at_limit = _nested_call(MAX_DEPTH, opener)
    frame = decode(at_limit, V201)
    assert isinstance(frame, CallFrame)
    assert _depth([frame.params]) == MAX_DEPTH
    # ...and one level past it refused, whatever the strings hold to mislead a count.
    assert isinstance(decode(_nested_call(MAX_DEPTH + 1, opener), V201), BadFrame)
    assert isinstance(decode(_nested_call(MAX_DEPTH + 1, '{"' + string + '":'), V201), BadFrame)


def test_short_frames_are_never_scanned(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hot path: a frame too short to nest past the limit is not looked at."""
    from ocpp_rpc._wire import codec as _codec

    def scanned(text: str, limit: int = MAX_DEPTH) -> bool:
        raise AssertionError("scanned")

    monkeypatch.setattr(_codec, "_too_deep", scanned)
    text = '[2,"1","A",{"v":"' + "x" * (_codec._SCAN_FROM - 20) + '"}]'
    assert len(text) <= _codec._SCAN_FROM
    assert isinstance(decode(text, V201), CallFrame)


json_trees = st.recursive(
    st.none() | st.integers() | st.text(alphabet='[]{}"\\ab\u00e9\n', max_size=6),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(alphabet='[]{}"\\k', max_size=3), children, max_size=3),
    max_leaves=20,
)


@given(json_trees, st.booleans(), st.integers(0, 12))
def test_the_depth_scan_counts_what_the_parser_nests(
    value: Any, ascii_only: bool, limit: int
) -> None:
    from ocpp_rpc._wire import codec as _codec

    text = json.dumps(value, ensure_ascii=ascii_only)
    assert _codec._too_deep(text, limit) == (_depth(value) > limit)


def test_create_rpc_error() -> None:
    assert type(errors.create_rpc_error("NotSupported")) is errors.RPCNotSupportedError
    e = errors.create_rpc_error("OccurenceConstraintViolation", "m", {"a": 1})
    assert isinstance(e, errors.RPCOccurrenceConstraintViolationError)
    assert e.message == "m" and e.details == {"a": 1}
    default = errors.create_rpc_error("NotImplemented")
    assert default.message == ""  # API.md; the standard text is the class's
    assert default.default_message == errors.RPCNotImplementedError.default_message != ""
    assert errors.create_rpc_error("X").code == "X"


@pytest.mark.parametrize("text", ['[6,"s1",5,{}]', '[6,"s1","X"]', '[6,"s1","X",{},1]'])
def test_malformed_send_is_bad_but_never_answered(text: str) -> None:
    frame = decode(text, V21)
    assert isinstance(frame, BadFrame)
    assert frame.reply is None
    assert isinstance(frame.error, errors.RPCFrameworkError)


# -- the orjson path (the `fast` extra) against the standard library ---------------

def _outcome(function: Any, value: Any) -> tuple[str, Any]:
    """("ok", repr of the result) or ("raises", exception class): repr tells 1 from
    1.0 and 0.0 from -0.0."""
    try:
        result = function(value)
    except (ValueError, TypeError, RecursionError) as exc:
        return "raises", ValueError if isinstance(exc, ValueError) else type(exc)
    return "ok", repr(result)


# Everything Python may hand the encoder: JSON values at their edges, and more.
wild_leaves = (
    st.none() | st.booleans() | st.floats() | st.text()
    | st.integers() | st.integers(min_value=2**63 - 3, max_value=2**64 + 3)
    | st.integers(max_value=-(2**63) + 3, min_value=-(2**63) - 3)
    | st.sampled_from(["\ud800", "a\udfff", "\x00", "\u2028", "é", "😀"])
)
wild_values = st.recursive(
    wild_leaves,
    lambda children: st.lists(children, max_size=4)
    | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=8) | st.integers() | st.booleans() | st.none(),
                      children, max_size=4),
    max_leaves=12,
)


@given(wild_values)
def test_orjson_encoding_means_what_the_standard_library_writes(value: Any) -> None:
    from ocpp_rpc._wire import codec as _codec

    pytest.importorskip("orjson")
    std, fast = _outcome(_codec._encode_std, value), _outcome(_codec._encode_orjson, value)
    if std[0] == "raises":
        assert fast == std
    else:  # the same JSON value (orjson spells some floats otherwise: 1e-7, not 1e-07)
        text = _codec._encode_orjson(value)
        assert repr(json.loads(text)) == repr(json.loads(_codec._encode_std(value)))
        if not any(type(leaf) is float for leaf in _leaves(value)):
            assert text == _codec._encode_std(value)


# -- the standard library path: its C encoder made once, and a scan first ---------


def _exactly(function: Any, value: Any) -> tuple[str, Any]:
    """("ok", result) or ("raises", exception class and message)."""
    try:
        return "ok", repr(function(value))
    except (ValueError, TypeError, RecursionError) as exc:
        return "raises", (type(exc), str(exc))


@given(wild_values)
@example(float("nan"))
@example({1: [2.5, -0.0, 1e-7], None: {"é": "\ud800"}, False: (1, 2)})
@example(object())
def test_the_standard_encoders_write_what_json_encoder_encode_writes(value: Any) -> None:
    from ocpp_rpc._wire import codec as _codec

    for ascii_only, ours in ((True, _codec._encode_ascii), (False, _codec._encode_utf8)):
        theirs = json.JSONEncoder(
            ensure_ascii=ascii_only, allow_nan=False, separators=(",", ":"), check_circular=False
        ).encode
        assert _exactly(ours, value) == _exactly(theirs, value)


@given(st.one_of(
    wild_values.map(lambda v: _written(v)),
    wild_values.map(lambda v: " \n" + _written(v) + "\t "),
    st.text(max_size=40),
    st.sampled_from(["", " ", "[1,", "[1,]", "[1] x", '"a" ', "NaN", "[-Infinity]", "1e400",
                     "\ufeff[1]", "[" * 300 + "]" * 300, '{"a":1,"a":2}']),
))
def test_the_standard_decoder_reads_what_json_decoder_decode_reads(text: str) -> None:
    from ocpp_rpc._wire import codec as _codec

    theirs = json.JSONDecoder(parse_constant=_codec._reject_constant).decode
    assert _exactly(_codec._decode_std, text) == _exactly(theirs, text)


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def _numbers() -> st.SearchStrategy[str]:
    digits = st.text("0123456789", min_size=1, max_size=24)
    return st.tuples(
        st.sampled_from(["", "-"]), digits,
        st.sampled_from(["", "."]).flatmap(lambda dot: digits.map(lambda d: dot + d) if dot
                                           else st.just("")),
        st.sampled_from(["", "e", "E-", "e+"]).flatmap(
            lambda e: st.integers(0, 400).map(lambda x: e + str(x)) if e else st.just("")),
    ).map("".join)


def _written(value: Any) -> str:
    """What the standard library writes for `value` ("[]" if it cannot)."""
    from ocpp_rpc._wire import codec as _codec

    try:
        return _codec._encode_std(value)
    except (ValueError, TypeError):
        return "[]"


@given(st.one_of(
    wild_values.map(_written),
    _numbers().map(lambda n: f'[2,"1","A",{{"v":{n}}}]'),
    _numbers(),
    st.text(max_size=40),
    st.sampled_from(['"\\ud800"', "NaN", "[Infinity]", "-Infinity", "1e400", "[1,]",
                     "[" * 300 + "]" * 300, '{"a":1,"a":2}', " [1] ", "\ufeff[1]"]),
))
@example("1e400")  # orjson refuses; the standard library reads inf
@example('["\\ud800"]')  # a lone surrogate: orjson refuses
@example("[NaN]")  # both refuse (NaN is not JSON)
@example("-9223372036854775809")  # 19 digits, under int64: orjson makes it a float
@example("[18446744073709551616]")  # over uint64
@example('{"id":123456789012345678901234567890}')
def test_orjson_decoding_reads_what_the_standard_library_reads(text: str) -> None:
    from ocpp_rpc._wire import codec as _codec

    pytest.importorskip("orjson")
    assert _outcome(_codec._decode_orjson, text) == _outcome(_codec._decode_std, text)


def test_orjson_leaves_to_the_standard_library_what_it_would_write_otherwise() -> None:
    import dataclasses
    import datetime
    import enum
    import uuid

    from ocpp_rpc._wire import codec as _codec

    pytest.importorskip("orjson")

    class Level(enum.IntEnum):
        HIGH = 2

    class Name(str, enum.Enum):
        A = "a"

    @dataclasses.dataclass
    class Point:
        x: int

    for value in (Level.HIGH, Name.A, {"n": Level.HIGH}, [Name.A]):
        assert _codec._encode_orjson(value) == _codec._encode_std(value)
    for value in (Point(1), datetime.datetime(2024, 1, 1), float("nan"), [float("inf")]):
        assert _outcome(_codec._encode_orjson, value)[0] == "raises"
    assert _codec._encode_orjson({"n": None}) == '{"n":null}'

    class Plain(enum.Enum):  # the one difference, as documented: orjson writes these
        B = "b"

    assert _codec._encode_orjson([Plain.B]) == '["b"]'
    some = uuid.UUID(int=1)
    assert _codec._encode_orjson(some) == f'"{some}"'
