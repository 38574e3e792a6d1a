"""[pure] Strict mode: OCPP payloads checked against JSON schemas.

Schemas are compiled to Python code by fastjsonschema (tens of times faster
than jsonschema's interpreter: ``benchmarks/validation.py``), each on first use,
and the built-in OCA schemas (``ocpp_rpc/schemas/``) once per process. A failure
raises the `RPCError` subclass of API.md's keyword table; the connection spells
its code for the dialect.

When `jsonschema_rs` (Rust) is installed, a payload it accepts is accepted at
once (a 1 KB MeterValues in ~2 us instead of ~8); anything it rejects, or cannot
take, goes through the fastjsonschema code, which alone decides and explains a
failure. It is given fastjsonschema's own format checks, so it never accepts
what fastjsonschema would refuse (a differential test holds it to that).
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import fastjsonschema

try:  # an optional accelerator (the `fast` extra); typed Any, stubs or not
    jsonschema_rs: Any = importlib.import_module("jsonschema_rs")
except ImportError:  # pragma: no cover - depends on the environment
    jsonschema_rs = None

from ..errors import (
    RPCError,
    RPCFormatViolationError,
    RPCNotImplementedError,
    RPCOccurrenceConstraintViolationError,
    RPCPropertyConstraintViolationError,
    RPCTypeConstraintViolationError,
)
from ._internals import compile_schema, format_patterns

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ("BUILTIN_SUBPROTOCOLS", "Validator", "builtin_validator", "resolve_validators")

#: Subprotocols whose OCA schemas ship with the package.
BUILTIN_SUBPROTOCOLS: Final = ("ocpp1.6", "ocpp2.0.1", "ocpp2.1")

_REQUEST: Final = "Request"
_RESPONSE: Final = "Response"
_CLIP: Final = 40  # longest quoted name or value in an error
_MAX_MESSAGE: Final = 200

#: Failing JSON-schema keyword -> error class; any other keyword -> FormatViolation.
KEYWORD_ERRORS: Final[Mapping[str, type[RPCError]]] = {
    "type": RPCTypeConstraintViolationError,
    **dict.fromkeys(("required", "minItems", "maxItems"), RPCOccurrenceConstraintViolationError),
    **dict.fromkeys(
        (
            "enum",
            "const",
            "pattern",
            "minLength",
            "maxLength",
            "minimum",
            "maximum",
            "exclusiveMinimum",
            "exclusiveMaximum",
            "multipleOf",
        ),
        RPCPropertyConstraintViolationError,
    ),
}

_Compiled = Callable[[Any], Any]
_Checks = tuple[_Compiled, Callable[[Any], bool] | None]  # code, jsonschema_rs check


class Validator:
    """Validates the OCPP payloads of one subprotocol against JSON schemas.

    `schemas` maps ``"<Action>Request"`` and ``"<Action>Response"`` (the OCPP
    2.x file names without ``.json``) to JSON schemas: draft-04 or draft-06 as
    their ``$schema`` says, else draft-07. An OCPP 2.1 SEND payload is its
    action's request schema. Each schema is compiled on first use (thread-safe);
    `compile_all` checks and compiles a whole set up front.
    """

    def __init__(self, subprotocol: str, schemas: Mapping[str, Mapping[str, Any]]) -> None:
        for key in schemas:
            if not key.endswith((_REQUEST, _RESPONSE)) or key in (_REQUEST, _RESPONSE):
                raise ValueError(
                    f"schema key {key!r} must be '<Action>Request' or '<Action>Response'"
                )
        self.subprotocol: Final = subprotocol
        self._schemas = schemas if isinstance(schemas, _SchemaFiles) else dict(schemas)
        # Schema key -> its compiled code and jsonschema_rs check (None without).
        self._compiled: dict[str, _Checks] = {}
        # The same by action, per kind: the per-call lookup, no key built.
        self._requests: dict[str, _Checks] = {}
        self._responses: dict[str, _Checks] = {}

    @classmethod
    def from_directory(
        cls, subprotocol: str, directory: str | os.PathLike[str] | Traversable
    ) -> Validator:
        """A validator for a directory of ``.json`` files named as the OCA ones.

        ``<Action>Request.json`` and ``<Action>Response.json`` (OCPP 2.x), or
        ``<Action>.json`` for a request (OCPP 1.6; also 2.1's SEND-only
        ``NotifyPeriodicEventStream.json``). Files are read on first use.
        """
        if isinstance(directory, (str, os.PathLike)):
            directory = Path(directory)
        return cls(subprotocol, _SchemaFiles(directory))

    def __repr__(self) -> str:
        return f"Validator({self.subprotocol!r}, <{len(self._schemas)} schemas>)"

    def knows(self, action: str) -> bool:
        """Whether a request schema exists for `action`."""
        return action + _REQUEST in self._schemas

    def validate_call(self, action: str, params: Any) -> None:
        """Check a CALL's payload. Raises `RPCNotImplementedError` for an action
        without a request schema, else the `RPCError` subclass of the failure."""
        checks = self._requests.get(action)
        if checks is None or type(params) is not dict:
            checks = self._prepare(action, _REQUEST, params)
        _check(checks, params)

    def validate_send(self, action: str, params: Any) -> None:
        """Check an OCPP 2.1 SEND's payload (against its action's request schema)."""
        self.validate_call(action, params)

    def validate_result(self, action: str, result: Any) -> None:
        """Check a CALLRESULT's payload for a call of `action` (same errors;
        `RPCNotImplementedError` when there is no response schema)."""
        checks = self._responses.get(action)
        if checks is None or type(result) is not dict:
            checks = self._prepare(action, _RESPONSE, result)
        _check(checks, result)

    def compile_all(self) -> None:
        """Compile every schema now. Raises `ValueError` for an invalid schema."""
        for key in self._schemas:
            self._compile(key)

    def _compile(self, key: str) -> _Checks:
        checks = self._compiled.get(key)
        if checks is None:
            schema = dict(self._schemas[key])
            try:
                compiled = _compile(schema)
            except fastjsonschema.JsonSchemaDefinitionException as exc:
                raise ValueError(f"invalid schema {key} for {self.subprotocol}: {exc}") from exc
            checks = self._compiled[key] = (compiled, _fast_check(schema))
        return checks

    def _prepare(self, action: str, kind: str, payload: Any) -> _Checks:
        """The slow path of a check: the validator of `action`'s `kind` schema,
        compiled on first use; raises for a missing schema or a non-object."""
        key = action + kind
        if key not in self._schemas:
            raise RPCNotImplementedError(
                f"No {kind.lower()} schema for {_clip(action)!r} in {self.subprotocol}"
            )
        checks = self._compile(key)
        (self._requests if kind == _REQUEST else self._responses)[action] = checks
        if not isinstance(payload, dict):
            raise RPCFormatViolationError(
                "$ must be a JSON object", {"path": "$", "keyword": "type"}
            )
        return checks


def _check(checks: _Checks, payload: Any) -> None:
    """Accept `payload` if the fast check does; else the Python code decides
    (and raises the `RPCError` of a failure)."""
    validate, fast = checks
    if fast is not None:
        try:
            if fast(payload):
                return
        except Exception:  # a payload it cannot take: the Python code decides
            pass
    try:
        validate(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise _to_rpc_error(exc) from None
    except Exception as exc:  # never let a hostile payload raise anything else
        raise _unexpected(exc) from exc


def _unexpected(exc: Exception) -> RPCError:
    return RPCFormatViolationError(
        f"$ could not be validated ({type(exc).__name__})", {"path": "$", "keyword": ""}
    )


# -- compilation: fastjsonschema (see _internals), with a multipleOf that tolerates float error


def _is_multiple(value: object, step: float | Decimal) -> bool:
    """Whether a number is a multiple of `step`, as ocpp-rpc decides: the quotient
    is within 1e-6 of an integer (so 9.1 and 1.1 + 2.2 are multiples of 0.1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return True  # the type keyword's business
    if isinstance(value, int) and isinstance(step, int):
        return value % step == 0
    if not isinstance(value, Decimal) and not isinstance(step, Decimal):
        try:
            quotient = value / step
        except OverflowError:  # an int too large for a float
            quotient = math.inf
        if math.isfinite(quotient):
            return abs(round(quotient) - quotient) < 1e-6
    exact = _decimal(value) / _decimal(step)
    return exact == exact.to_integral_value()


def _decimal(number: float | Decimal) -> Decimal:
    return Decimal(repr(number)) if isinstance(number, float) else Decimal(number)


def _compile(schema: dict[str, Any]) -> _Compiled:
    """fastjsonschema's validator of `schema`, with our multipleOf (and
    allocation-free object keywords: see `_internals`)."""
    return compile_schema(schema, _is_multiple)


def _fast_check(schema: dict[str, Any]) -> Callable[[Any], bool] | None:
    """jsonschema_rs's `is_valid` for `schema` with fastjsonschema's format checks,
    or None (not installed, no array in the schema, or it cannot compile it)."""
    if jsonschema_rs is None or '"array"' not in json.dumps(schema, default=str):
        # Without arrays a payload stays small, and crossing into Rust (and back
        # for each format check) costs more than the Python code takes.
        return None
    # fastjsonschema's own checks, called back from Rust, so that no format is
    # laxer (its "uri" accepts "a:", for one). Except date-time: its Rust check
    # is no laxer than fastjsonschema's regex (a grammar-driven differential
    # test holds it to that) and saves a call into Python per timestamp.
    # Only the formats the schema uses: any callback given, used or not, slows
    # every validation by about 40 %.
    used = _formats_used(schema) - {"date-time"}
    formats: dict[str, Callable[[str], bool]] = {
        name: functools.partial(_matches, re.compile(pattern))
        for name, pattern in format_patterns(schema).items()
        if name in used
    }
    options: dict[str, Any] = {"formats": formats} if formats else {}
    try:
        check: Callable[[Any], bool] = jsonschema_rs.validator_for(
            _lean(schema), validate_formats=True, **options
        ).is_valid
    except Exception:  # an older jsonschema_rs, or a schema it does not take
        return None
    return check


_VALUE_KEYWORDS: Final = frozenset({"const", "enum", "default", "examples"})


def _lean(schema: Any) -> Any:
    """`schema` without the keywords a string enum makes void: ``"type":
    "string"`` (only strings equal its values) and ``additionalProperties``
    (objects only). The OCA schemas repeat both on every enum; jsonschema_rs
    checks them at a cost (a 1 KB MeterValues: 1.8 -> 1.45 us)."""
    if isinstance(schema, list):
        return [_lean(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    lean = {  # values (const, enum...) are left as they are
        key: value if key in _VALUE_KEYWORDS else _lean(value) for key, value in schema.items()
    }
    enum = lean.get("enum")
    if isinstance(enum, list) and enum and all(type(value) is str for value in enum):
        if lean.get("type") == "string":
            del lean["type"]
        lean.pop("additionalProperties", None)
    return lean


def _formats_used(schema: object) -> set[str]:
    """Every string value of a ``format`` key anywhere in `schema`."""
    if isinstance(schema, list):
        return set().union(*map(_formats_used, schema))
    if not isinstance(schema, dict):
        return set()
    found = set().union(*map(_formats_used, schema.values()))
    if isinstance(schema.get("format"), str):
        found.add(schema["format"])
    return found


def _matches(pattern: re.Pattern[str], value: str) -> bool:
    return pattern.match(value) is not None


class _SchemaFiles(Mapping[str, Mapping[str, Any]]):
    """Schema key -> a ``.json`` file of a directory, parsed on access."""

    def __init__(self, directory: Traversable) -> None:
        files = {f.name[:-5]: f for f in directory.iterdir() if f.name.endswith(".json")}
        self._files: dict[str, Traversable] = {}
        for stem, file in files.items():
            key = stem if stem.endswith((_REQUEST, _RESPONSE)) else stem + _REQUEST
            if key in self._files:
                raise ValueError(f"both {stem}.json and {key}.json in {directory}")
            self._files[key] = file

    def __getitem__(self, key: str) -> Mapping[str, Any]:
        schema: Mapping[str, Any] = json.loads(self._files[key].read_bytes())
        return schema

    def __contains__(self, key: object) -> bool:
        return key in self._files

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


def _clip(text: str) -> str:
    return text if len(text) <= _CLIP else text[: _CLIP - 3] + "..."


def _child(path: str, key: str) -> str:
    key = _clip(key)
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{json.dumps(key)}]"


def _to_rpc_error(exc: fastjsonschema.JsonSchemaValueException) -> RPCError:
    """The `RPCError` for a failure: JSON path, keyword and a short message that
    never quotes the payload (only clipped property names)."""
    keyword = exc.rule or ""
    name = exc.name or "data"
    path = "$" + name[4:] if name.startswith("data") else "$"
    value, definition = exc.value, exc.definition if isinstance(exc.definition, dict) else {}
    if keyword == "required" and isinstance(value, dict):
        missing = [k for k in definition.get("required", ()) if k not in value] or ["?"]
        path = _child(path, str(missing[0]))
        message = f"{path} is required"
    elif keyword == "additionalProperties" and isinstance(value, dict):
        known = definition.get("properties", {})
        extra = [k for k in value if k not in known] or ["?"]
        path = _child(path, str(extra[0]))
        message = f"{path} is not allowed"
    else:
        # fastjsonschema's messages quote only the schema; "data" is its root name.
        message = "$" + exc.message[4:] if exc.message.startswith("data") else exc.message
    if len(path) > _MAX_MESSAGE:
        path = path[: _MAX_MESSAGE - 3] + "..."
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 3] + "..."
    cls = KEYWORD_ERRORS.get(keyword, RPCFormatViolationError)
    return cls(message, {"path": path, "keyword": keyword})


@cache
def builtin_validator(subprotocol: str) -> Validator | None:
    """The validator of the OCA schemas shipped for `subprotocol` (``ocpp1.6``,
    ``ocpp2.0.1``, ``ocpp2.1``), one per process, else None."""
    if subprotocol not in BUILTIN_SUBPROTOCOLS:
        return None
    return Validator.from_directory(
        subprotocol, resources.files("ocpp_rpc") / "schemas" / subprotocol
    )


def resolve_validators(
    strict_mode: bool | Sequence[str],
    protocols: Sequence[str],
    custom: Sequence[Validator] = (),
) -> dict[str, Validator]:
    """Subprotocol -> validator for the subprotocols validated in strict mode.

    `strict_mode` True means every one of `protocols`; a sequence names them.
    A `custom` validator replaces the built-in one of its subprotocol. Raises
    `ValueError` when strict mode has nothing to validate with.
    """
    if not strict_mode:
        return {}
    if isinstance(strict_mode, str):
        raise TypeError("strict_mode must be a bool or a sequence of subprotocols")
    own: dict[str, Validator] = {}
    for validator in custom:
        if validator.subprotocol in own:
            raise ValueError(f"more than one validator for subprotocol {validator.subprotocol!r}")
        own[validator.subprotocol] = validator
    if strict_mode is True:
        if not protocols:
            raise ValueError("strict_mode requires at least one subprotocol")
        strict_mode = protocols
    resolved: dict[str, Validator] = {}
    for protocol in strict_mode:
        found = own.get(protocol) or builtin_validator(protocol)
        if found is None:
            raise ValueError(f"no strict-mode validator for subprotocol {protocol!r}")
        resolved[protocol] = found
    return resolved
