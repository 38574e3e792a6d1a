"""[pure] The OCPP-J message codec: frozen frame values, `decode` and `encode_*`.

`decode(text, dialect)` never raises: it returns a frame value, `None` for an
empty frame (ignored entirely), or a `BadFrame` that carries the CALLERROR to
send back (if any) as dictated by API.md's wire table.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from typing import Any, Final

try:  # an optional accelerator (the `fast` extra); typed Any, stubs or not
    orjson: Any = importlib.import_module("orjson")
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None

from ..errors import (
    RPCError,
    RPCFrameworkError,
    RPCMessageTypeNotSupportedError,
    create_rpc_error,
)

CALL: Final = 2
CALLRESULT: Final = 3
CALLERROR: Final = 4
CALLRESULTERROR: Final = 5
SEND: Final = 6

# -- dialects ---------------------------------------------------------------

# Codes OCPP 1.6J knows, and how 1.6J spells the 2.x names (1.6J errata §5).
_CODES_16: Final = frozenset(
    {
        "NotImplemented",
        "NotSupported",
        "InternalError",
        "ProtocolError",
        "SecurityError",
        "FormationViolation",
        "PropertyConstraintViolation",
        "OccurenceConstraintViolation",
        "TypeConstraintViolation",
        "GenericError",
    }
)
_CODES_2X: Final = frozenset(
    {
        "NotImplemented",
        "NotSupported",
        "InternalError",
        "ProtocolError",
        "SecurityError",
        "FormatViolation",
        "PropertyConstraintViolation",
        "OccurrenceConstraintViolation",
        "TypeConstraintViolation",
        "GenericError",
        "MessageTypeNotSupported",
        "RpcFrameworkError",
    }
)
_TO_16: Final = {
    "FormatViolation": "FormationViolation",
    "OccurrenceConstraintViolation": "OccurenceConstraintViolation",
}
_TO_2X: Final = {
    "FormationViolation": "FormatViolation",
    "OccurenceConstraintViolation": "OccurrenceConstraintViolation",
}
_VERSION = re.compile(r"ocpp(\d+(?:\.\d+)*)\Z", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Dialect:
    """The wire rules that follow from the agreed subprotocol."""

    protocol: str | None
    #: OCPP 1.6J error-code spellings (and no RpcFrameworkError/MessageTypeNotSupported).
    legacy_codes: bool
    #: Message types 5 (CALLRESULTERROR) and 6 (SEND) exist (OCPP 2.1+, or no subprotocol).
    rpc21: bool

    def spelling(self, code: str) -> str:
        """`code` in this dialect's spelling of it (a code it lacks stays as is)."""
        return (_TO_16 if self.legacy_codes else _TO_2X).get(code, code)

    def spell(self, code: str) -> str:
        """`code` as this dialect writes it; codes it lacks become `GenericError`."""
        if self.legacy_codes:
            code = _TO_16.get(code, code)
            return code if code in _CODES_16 else "GenericError"
        code = _TO_2X.get(code, code)
        return code if code in _CODES_2X else "GenericError"


@lru_cache(maxsize=64)
def dialect_for(protocol: str | None) -> Dialect:
    """The dialect of a subprotocol name such as ``ocpp1.6`` or ``ocpp2.1``."""
    if protocol is None:
        return Dialect(None, legacy_codes=False, rpc21=True)
    match = _VERSION.match(protocol)
    version = tuple(int(p) for p in match.group(1).split(".")) if match else None
    return Dialect(
        protocol,
        legacy_codes=version is not None and version < (2,),
        rpc21=version is not None and version >= (2, 1),
    )


# -- frame values -------------------------------------------------------------
# The frames made per message are not frozen: a frozen dataclass's __init__ sets
# each field through object.__setattr__, 4x the cost. Nothing assigns to them.


@dataclass(slots=True)
class CallFrame:
    """``[2, message_id, method, params]``"""

    message_id: str
    method: str
    params: Any


@dataclass(slots=True)
class SendFrame:
    """``[6, message_id, method, params]`` (OCPP 2.1 SEND: never answered)."""

    message_id: str
    method: str
    params: Any


@dataclass(slots=True)
class CallResultFrame:
    """``[3, message_id, result]``"""

    message_id: str
    result: Any


@dataclass(slots=True)
class CallErrorFrame:
    """``[4, message_id, code, description, details]``, or type 5
    (CALLRESULTERROR, OCPP 2.1) when `result_error` is true."""

    message_id: str
    code: str
    description: str
    details: dict[str, Any]
    result_error: bool = False

    def to_error(self) -> RPCError:
        """The matching `RPCError` subclass instance."""
        return create_rpc_error(self.code, self.description, self.details)


@dataclass(frozen=True, slots=True)
class BadFrame:
    """A frame that is not a valid RPC message.

    `reply` is the CALLERROR text to send back (None: send nothing).
    `response_id` is set when the frame was a CALLRESULT/CALLERROR of the wrong
    shape whose id could be read: a pending call with that id must fail.
    """

    error: RPCError
    reply: str | None = None
    response_id: str | None = None


Frame = CallFrame | SendFrame | CallResultFrame | CallErrorFrame

# -- encoding -------------------------------------------------------------------

def _one_shot(encoder: json.JSONEncoder) -> Callable[[Any], str]:
    """`encoder.encode`, with the C encoder it makes on every call made once:
    half the cost of a frame. `encoder` must not check for cycles (it would
    keep its markers across calls) nor indent; its own `encode` where the C
    encoder is missing or takes other arguments."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - a Python built without _json
        return encoder.encode
    escape = json.encoder.encode_basestring_ascii if encoder.ensure_ascii else (
        json.encoder.encode_basestring
    )
    try:
        chunks = make(
            None, encoder.default, escape, None, encoder.key_separator,
            encoder.item_separator, encoder.sort_keys, encoder.skipkeys, encoder.allow_nan,
        )
    except TypeError:  # pragma: no cover - another Python's signature
        return encoder.encode

    def encode(value: Any) -> str:
        return "".join(chunks(value, 0))

    return encode


_encode_utf8: Final = _one_shot(json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), check_circular=False
))
_encode_ascii: Final = _one_shot(json.JSONEncoder(
    ensure_ascii=True, allow_nan=False, separators=(",", ":"), check_circular=False
))


def _encode_std(value: Any) -> str:
    """`value` as compact JSON text; ValueError/TypeError for what JSON cannot hold."""
    # The ASCII encoder is a third faster. With no escape in its output, no string
    # held a non-ASCII or control character, so the UTF-8 form is the same text.
    text = _encode_ascii(value)
    if "\\u" not in text:
        return text
    text = _encode_utf8(value)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (e.g. echoed from a peer's "\ud800") cannot go out as
            # UTF-8 text; the escaped form is the same JSON value.
            return _encode_ascii(value)
    return text


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _encode_orjson(value: Any) -> str:
    """`_encode_std` through orjson (~10x faster). Whatever orjson would write
    differently goes to `_encode_std`: values it refuses (integers over 64 bits,
    non-string keys, lone surrogates, nesting over 255) and, checked in its output,
    NaN and infinities, which it writes as null. Subclasses of str, int, dict and
    list, dataclasses and datetimes are handed back to `_encode_std` too. What
    differs: enum members and UUIDs are written (as their value and as a
    string) where the standard library raises TypeError, and some floats are
    spelled otherwise (``0.00001`` for ``1e-05``, ``1e-7`` for ``1e-07``: the
    same numbers)."""
    try:
        data: bytes = _dumps(value, default=_refuse, option=_PASSTHROUGH)
    except TypeError:  # orjson.JSONEncodeError included
        return _encode_std(value)
    if b"null" in data:  # maybe a NaN: the standard library raises ValueError
        return _encode_std(value)
    return data.decode("utf-8")


_encode: Callable[[Any], str]
if orjson is not None:
    _dumps = orjson.dumps
    _PASSTHROUGH: Final = (
        orjson.OPT_PASSTHROUGH_SUBCLASS
        | orjson.OPT_PASSTHROUGH_DATACLASS
        | orjson.OPT_PASSTHROUGH_DATETIME
    )
    _encode = _encode_orjson
else:  # pragma: no cover - depends on the environment
    _encode = _encode_std


def encode_call(message_id: str, method: str, params: Any) -> str:
    """A CALL frame. Raises `ValueError`/`TypeError` for a payload JSON cannot hold."""
    return _encode([CALL, message_id, method, params])


def encode_send(message_id: str, method: str, params: Any) -> str:
    """A SEND frame (OCPP 2.1)."""
    return _encode([SEND, message_id, method, params])


def encode_call_result(message_id: str, result: Any) -> str:
    """A CALLRESULT frame."""
    return _encode([CALLRESULT, message_id, result])


def encode_call_error(
    message_id: str,
    code: str,
    description: str,
    details: Any,
    dialect: Dialect,
    *,
    result_error: bool = False,
) -> str:
    """A CALLERROR (or CALLRESULTERROR) frame, the code spelled for `dialect`.

    Details that JSON cannot hold are replaced by ``{}`` rather than failing:
    an error answer must always go out.
    """
    kind = CALLRESULTERROR if result_error else CALLERROR
    frame = [kind, message_id, dialect.spell(code), description, details]
    try:
        return _encode(frame)
    except (TypeError, ValueError):
        frame[4] = {}
        return _encode(frame)


def encode_error(
    message_id: str,
    error: RPCError,
    dialect: Dialect,
    details: Any = None,
    *,
    result_error: bool = False,
) -> str:
    """A CALLERROR (or CALLRESULTERROR) frame for an `RPCError`: its `details`
    unless others are given, and its message, or when it has none its class's
    standard `default_message` (a CALLERROR always says what went wrong)."""
    return encode_call_error(
        message_id,
        error.code,
        error.message or error.default_message,
        error.details if details is None else details,
        dialect,
        result_error=result_error,
    )


# -- decoding -------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: The deepest a frame may nest arrays and objects, its own array counting as 1.
#: A deeper frame is not decoded: it is answered as one that is not JSON
#: (`RpcFrameworkError`, id "-1") on every Python, with or without orjson.
#: Without this rule the limit would be the interpreter's, which differs per
#: version (on 3.10/3.11 it even depends on the caller's stack). 900 is what
#: 3.11 allowed on a live connection less room for a deeper caller, so that up
#: to it every decoder decodes and Python code can still walk the payload
#: (encode it back, repr it) within the default recursion limit.
MAX_DEPTH: Final = 900
# Valid JSON nested deeper than MAX_DEPTH has more than twice as many
# characters; shorter text is left to the parser, which refuses invalid text
# whatever its depth.
_SCAN_FROM: Final = 2 * MAX_DEPTH
_ONE_BRACKET: Final = bytes.maketrans(b"{}", b"[]")  # for depth, [ and { are alike
_NOT_STRUCTURE: Final = bytes(set(range(256)) - set(b'"[]{}\\'))
_STEPS: Final = bytes.maketrans(b"[]", b"\x01\xff")  # as signed bytes: +1, -1


def _too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether `text` nests arrays and objects deeper than `limit`; brackets
    inside strings do not count. Byte-level passes in C, so that a long frame
    with few brackets costs one translation of its bytes. (For valid JSON;
    invalid text may get either answer: the parser refuses it anyway.)"""
    data = text.encode("utf-8", "surrogatepass")
    kept = data.translate(_ONE_BRACKET, _NOT_STRUCTURE)  # quotes, brackets, backslashes
    if len(kept) - kept.count(b'"') <= limit:
        return False  # not even that many brackets, those in strings included
    if b"\\" in kept:
        # An escaped backslash, then an escaped quote, delimits nothing; any
        # other escape goes with the letters.
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
        kept = data.translate(_ONE_BRACKET, _NOT_STRUCTURE).replace(b"\\", b"")
    # Quotes now alternate, opening and closing strings: a string that holds
    # no bracket leaves two adjacent ones.
    outside = kept.replace(b'""', b"")
    if b'"' in outside:  # some string holds a bracket: keep what lies between strings
        outside = b"".join(kept.split(b'"')[::2])
    return _deeper(outside, limit)


def _deeper(brackets: bytes, limit: int) -> bool:
    """Whether a balanced sequence of ``[`` and ``]`` nests deeper than `limit`."""
    # A pass removes the innermost pairs, one level off every branch, in C: the
    # shallow bulk of a payload goes in a few. Once a pass removes less than a
    # quarter, a running sum over what is left counts the rest (a linear bound
    # for hostile input).
    passes = 0
    while brackets:
        shorter = brackets.replace(b"[]", b"")
        passes += 1
        if len(shorter) * 4 > len(brackets) * 3:
            steps = memoryview(shorter.translate(_STEPS)).cast("b")  # +1 / -1
            return passes + max(accumulate(steps), default=0) > limit
        brackets = shorter
    return passes > limit


_std_decoder: Final = json.JSONDecoder(parse_constant=_reject_constant)
# The scanner the decoder made for itself (typeshed does not declare the attribute).
_scan: Final[Callable[[str, int], tuple[Any, int]]] = vars(_std_decoder)["scan_once"]


def _decode_std(text: str) -> Any:
    """`json.JSONDecoder(parse_constant=_reject_constant).decode(text)`: a frame
    with no whitespace around it, the usual case, is scanned at once (half
    the cost); anything else gets the decoder's own way, and its errors."""
    try:
        value, end = _scan(text, 0)
    except StopIteration:  # not a value at 0: leading whitespace, or no JSON
        return _std_decoder.decode(text)
    if end != len(text):  # trailing whitespace, or extra data
        return _std_decoder.decode(text)
    return value
_DIGITS: Final = bytes.maketrans(b"0123456789", b"0000000000")
_LONG_NUMBER: Final = b"0" * 19  # the shortest integer that may not fit 64 bits


def _decode_orjson(text: str) -> Any:
    """`_decode_std` through orjson (2-5x faster). Text it refuses goes to
    `_decode_std` (which accepts, e.g., lone surrogates and 1e400, or raises its
    own error), and so does text with 19 digits in a row (orjson reads integers
    over 64 bits as floats). Nesting is no concern here: `decode` has refused
    text deeper than `MAX_DEPTH`, well within orjson's 1,024."""
    if text.encode("utf-8", "surrogatepass").translate(_DIGITS).find(_LONG_NUMBER) < 0:
        try:
            return _loads(text)
        except ValueError:  # orjson.JSONDecodeError
            pass
    return _decode_std(text)


_decode: Callable[[str], Any]
if orjson is not None:
    _loads = orjson.loads
    _decode = _decode_orjson
else:  # pragma: no cover - depends on the environment
    _decode = _decode_std


def _bad(error: RPCError, reply_id: str | None, dialect: Dialect) -> BadFrame:
    reply = None if reply_id is None else encode_error(reply_id, error, dialect)
    return BadFrame(error, reply)


def decode(text: str | bytes, dialect: Dialect) -> Frame | BadFrame | None:
    """Parse one WebSocket message. Never raises.

    Returns None for an empty message, a frame value for a valid one, else a
    `BadFrame` (see API.md's wire table for what each carries).
    """
    if not text:
        return None
    try:
        if not isinstance(text, str):
            text = text.decode("utf-8")
        if len(text) > _SCAN_FROM and _too_deep(text):
            raise ValueError(f"nested deeper than {MAX_DEPTH}")
        message = _decode(text)
    except (ValueError, RecursionError):
        # RecursionError: on 3.10/3.11 the standard library's parser shares the
        # interpreter's recursion limit with the caller's stack.
        return _bad(RPCFrameworkError("Message must be a JSON structure"), "-1", dialect)
    if type(message) is not list:
        return _bad(RPCFrameworkError("Message must be an array"), "-1", dialect)
    length = len(message)
    kind = message[0] if length else None
    if type(kind) is float:
        if kind.is_integer():
            kind = int(kind)
        # else a number that is no message type (2.5, 1e400): an unknown one
    elif type(kind) is not int:
        return _bad(RPCFrameworkError("Message type must be a number"), "-1", dialect)
    message_id = message[1] if length > 1 else None
    known = kind in (CALL, CALLRESULT, CALLERROR) or (dialect.rpc21 and kind in (5, 6))
    if not known:
        error: RPCError = RPCMessageTypeNotSupportedError(f"Unrecognised message type: {kind}")
        if dialect.legacy_codes:
            return BadFrame(error)
        return _bad(error, message_id if type(message_id) is str else "-1", dialect)
    if type(message_id) is not str:
        return _bad(RPCFrameworkError("Message ID must be a string"), "-1", dialect)

    if kind in (CALL, SEND):
        # A SEND is never answered, not even a malformed one.
        reply_id = message_id if kind == CALL else None
        if length != 4:
            name = "CALL" if kind == CALL else "SEND"
            error = RPCFrameworkError(f"A {name} must have 4 elements")
            return _bad(error, reply_id, dialect)
        method = message[2]
        if type(method) is not str:
            return _bad(RPCFrameworkError("Method must be a string"), reply_id, dialect)
        cls = CallFrame if kind == CALL else SendFrame
        return cls(message_id, method, message[3])
    if kind == CALLRESULT:
        if length != 3:
            error = RPCFrameworkError("A CALLRESULT must have 3 elements")
            return BadFrame(error, response_id=message_id)
        return CallResultFrame(message_id, message[2])
    # CALLERROR / CALLRESULTERROR
    if (
        length != 5
        or type(message[2]) is not str
        or type(message[3]) is not str
        or type(message[4]) is not dict
    ):
        name = "CALLERROR" if kind == CALLERROR else "CALLRESULTERROR"
        error = RPCFrameworkError(
            f"A {name} must be [{kind}, id, code, description, details{{}}]"
        )
        return BadFrame(error, response_id=message_id)
    return CallErrorFrame(message_id, message[2], message[3], message[4], kind == CALLRESULTERROR)
