"""[pure] Strict-mode validation: the shipped OCA schemas, the keyword -> error
code table with each dialect's wire spelling, real messages of every OCPP
version, custom validators, `resolve_validators`, and hypothesis robustness."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocpp_rpc import errors
from ocpp_rpc._wire import validation as _validation_module
from ocpp_rpc._wire.codec import dialect_for, encode_error
from ocpp_rpc._wire.validation import (
    BUILTIN_SUBPROTOCOLS,
    Validator,
    builtin_validator,
    resolve_validators,
)

SCHEMAS = resources.files("ocpp_rpc") / "schemas"
TS = "2024-05-01T12:00:00Z"
V16, V201, V21 = (builtin_validator(p) for p in BUILTIN_SUBPROTOCOLS)


def builtin(protocol: str) -> Validator:
    validator = builtin_validator(protocol)
    assert validator is not None
    return validator


def fails(
    validator: Validator, action: str, payload: Any, *, result: bool = False
) -> errors.RPCError:
    check = validator.validate_result if result else validator.validate_call
    with pytest.raises(errors.RPCError) as info:
        check(action, payload)
    return info.value


# -- the shipped schemas ----------------------------------------------------------------


def schema_files(protocol: str) -> list[str]:
    return sorted(f.name for f in (SCHEMAS / protocol).iterdir())


@pytest.mark.parametrize(
    ("protocol", "actions", "extra"),
    [("ocpp1.6", 39, []), ("ocpp2.0.1", 64, []), ("ocpp2.1", 90, ["NotifyPeriodicEventStream"])],
)
def test_shipped_files_match_notice(protocol: str, actions: int, extra: list[str]) -> None:
    notice = (SCHEMAS / "NOTICE.md").read_text(encoding="utf-8")
    assert "Open Charge Alliance" in notice
    assert "Attribution-NoDerivatives 4.0" in notice
    assert f"{protocol.removeprefix('ocpp')} = {actions} actions" in notice
    names = schema_files(protocol)
    assert all(name.endswith(".json") for name in names)
    for name in names:
        json.loads((SCHEMAS / protocol / name).read_bytes())  # every file is JSON
    stems = [name.removesuffix(".json") for name in names]
    responses = {s.removesuffix("Response") for s in stems if s.endswith("Response")}
    requests = {s.removesuffix("Request") for s in stems if not s.endswith("Response")}
    bare = {s for s in stems if not s.endswith(("Request", "Response"))}
    assert bare == (requests if protocol == "ocpp1.6" else set(extra))
    assert len(responses) == actions
    assert requests - responses == set(extra)
    assert responses <= requests
    assert len(names) == 2 * actions + len(extra)


def test_builtin_validators_are_cached_and_know_their_actions() -> None:
    assert builtin_validator("ocpp1.6") is V16
    assert builtin_validator("ocpp2.1") is V21
    assert builtin_validator("ocpp2.0") is None
    assert builtin_validator("OCPP1.6") is None
    assert V16 is not None and V201 is not None and V21 is not None
    assert V16.subprotocol == "ocpp1.6"
    assert V16.knows("BootNotification") and V16.knows("GetLog")  # 1.6 security extension
    assert V201.knows("TransactionEvent") and not V16.knows("TransactionEvent")
    assert V21.knows("BatterySwap") and not V201.knows("BatterySwap")
    assert V21.knows("NotifyPeriodicEventStream")
    assert not V21.knows("BootNotificationRequest")


# -- every shipped schema accepts a minimal message -----------------------------------------


def minimal(node: Any, root: dict[str, Any]) -> Any:
    """A smallest instance of a (shipped, OCA-style) schema node."""
    if "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/definitions/")
        return minimal(root["definitions"][ref.rsplit("/", 1)[1]], root)
    if "const" in node:
        return node["const"]
    if "enum" in node:
        return node["enum"][0]
    kind = node.get("type")
    if kind == "object":
        props = node.get("properties", {})
        return {name: minimal(props.get(name, {}), root) for name in node.get("required", ())}
    if kind == "array":
        return [minimal(node.get("items", {}), root) for _ in range(node.get("minItems", 0))]
    if kind in ("integer", "number"):
        value = node.get("minimum", node.get("exclusiveMinimum", -1) + 1)
        value = max(value, 0) if "maximum" not in node else min(max(value, 0), node["maximum"])
        return int(value) if kind == "integer" else value
    if kind == "string":
        if node.get("format") == "date-time":
            return TS
        if node.get("format") == "uri":
            return "https://example.com/x"
        return "x" * max(node.get("minLength", 0), 1)
    if kind == "boolean":
        return False
    return "any"  # a node without a type accepts anything


def every_schema() -> Iterator[tuple[str, str]]:
    for protocol in BUILTIN_SUBPROTOCOLS:
        for name in schema_files(protocol):
            yield protocol, name.removesuffix(".json")


@pytest.mark.parametrize(("protocol", "stem"), list(every_schema()))
def test_every_shipped_schema_compiles_and_accepts_a_minimal_message(
    protocol: str, stem: str
) -> None:
    schema = json.loads((SCHEMAS / protocol / f"{stem}.json").read_bytes())
    instance = minimal(schema, schema)
    snapshot = copy.deepcopy(instance)
    validator = builtin(protocol)
    if stem.endswith("Response"):
        validator.validate_result(stem.removesuffix("Response"), instance)
    else:
        action = stem.removesuffix("Request")
        assert validator.knows(action)
        validator.validate_call(action, instance)
        validator.validate_send(action, instance)
    assert instance == snapshot  # schema defaults are never written into the payload
    if schema.get("required"):  # and the empty object is rejected
        action = stem.removesuffix("Response").removesuffix("Request")
        err = fails(validator, action, {}, result=stem.endswith("Response"))
        assert isinstance(err, errors.RPCOccurrenceConstraintViolationError)


def test_compile_all_compiles_every_builtin_schema() -> None:
    for protocol in BUILTIN_SUBPROTOCOLS:
        builtin(protocol).compile_all()


# -- real messages of each version ------------------------------------------------------------

BOOT_16 = {"chargePointVendor": "VendorX", "chargePointModel": "Model-1"}
BOOT_2X = {"reason": "PowerUp", "chargingStation": {"model": "Model-1", "vendorName": "VendorX"}}
TX_EVENT_201 = {
    "eventType": "Started",
    "timestamp": TS,
    "triggerReason": "Authorized",
    "seqNo": 0,
    "transactionInfo": {"transactionId": "tx-1", "chargingState": "Charging"},
    "evse": {"id": 1, "connectorId": 1},
    "idToken": {"idToken": "04A2B3C4", "type": "ISO14443"},
    "meterValue": [
        {
            "timestamp": TS,
            "sampledValue": [
                {"value": 1234.5, "measurand": "Energy.Active.Import.Register"},
                {
                    "value": 16,
                    "measurand": "Current.Import",
                    "phase": "L1",
                    "unitOfMeasure": {"unit": "A"},
                },
            ],
        }
    ],
}


@pytest.mark.parametrize(
    ("protocol", "action", "params", "result"),
    [
        (
            "ocpp1.6",
            "BootNotification",
            BOOT_16,
            {"status": "Accepted", "currentTime": TS, "interval": 300},
        ),
        (
            "ocpp1.6",
            "StatusNotification",
            {"connectorId": 1, "errorCode": "NoError", "status": "Available", "timestamp": TS},
            {},
        ),
        ("ocpp1.6", "Heartbeat", {}, {"currentTime": TS}),
        (
            "ocpp1.6",
            "SignCertificate",
            {"csr": "-----BEGIN CERTIFICATE REQUEST-----"},
            {"status": "Accepted"},
        ),
        (
            "ocpp2.0.1",
            "BootNotification",
            BOOT_2X,
            {"status": "Accepted", "currentTime": TS, "interval": 300},
        ),
        (
            "ocpp2.0.1",
            "StatusNotification",
            {"timestamp": TS, "connectorStatus": "Occupied", "evseId": 1, "connectorId": 1},
            {},
        ),
        (
            "ocpp2.0.1",
            "TransactionEvent",
            TX_EVENT_201,
            {"idTokenInfo": {"status": "Accepted"}, "totalCost": 0.0},
        ),
        (
            "ocpp2.1",
            "BootNotification",
            BOOT_2X,
            {"status": "Accepted", "currentTime": TS, "interval": 300},
        ),
        (
            "ocpp2.1",
            "BatterySwap",
            {
                "eventType": "BatteryIn",
                "requestId": 1,
                "idToken": {"idToken": "A1", "type": "Local"},
                "batteryData": [{"evseId": 1, "serialNumber": "B-1", "soC": 80.0, "soH": 99.0}],
            },
            {},
        ),
        (
            "ocpp2.1",
            "OpenPeriodicEventStream",
            {
                "constantStreamData": {
                    "id": 1,
                    "variableMonitoringId": 2,
                    "params": {"interval": 10, "values": 5},
                }
            },
            {"status": "Accepted"},
        ),
    ],
)
def test_real_messages_are_accepted(
    protocol: str, action: str, params: dict[str, Any], result: dict[str, Any]
) -> None:
    validator = builtin(protocol)
    validator.validate_call(action, params)
    validator.validate_result(action, result)


def test_real_messages_of_one_version_are_rejected_by_another() -> None:
    # "required" is checked before "additionalProperties".
    assert fails(builtin("ocpp2.0.1"), "BootNotification", BOOT_16).details == {
        "path": "$.reason",
        "keyword": "required",
    }
    assert fails(builtin("ocpp1.6"), "BootNotification", BOOT_2X).details == {
        "path": "$.chargePointVendor",
        "keyword": "required",
    }
    assert isinstance(
        fails(builtin("ocpp1.6"), "TransactionEvent", TX_EVENT_201), errors.RPCNotImplementedError
    )


def test_send_payload_notify_periodic_event_stream() -> None:
    stream = {"id": 1, "pending": 0, "basetime": TS, "data": [{"t": 0.5, "v": "230.1"}]}
    v21 = builtin("ocpp2.1")
    v21.validate_send("NotifyPeriodicEventStream", stream)
    err = fails(v21, "NotifyPeriodicEventStream", {**stream, "data": []})
    assert isinstance(err, errors.RPCOccurrenceConstraintViolationError)
    assert err.details == {"path": "$.data", "keyword": "minItems"}
    with pytest.raises(errors.RPCPropertyConstraintViolationError):
        v21.validate_send("NotifyPeriodicEventStream", {**stream, "pending": -1})
    # SEND-only: there is no response schema.
    with pytest.raises(errors.RPCNotImplementedError):
        v21.validate_result("NotifyPeriodicEventStream", {})


# -- the keyword -> code table, per dialect ---------------------------------------------------

TX = TX_EVENT_201
CASES: list[tuple[str, str, Any, str, str, str]] = [
    # protocol, action, payload, code, path, keyword
    (
        "ocpp1.6",
        "BootNotification",
        {**BOOT_16, "chargePointModel": 7},
        "TypeConstraintViolation",
        "$.chargePointModel",
        "type",
    ),
    (
        "ocpp1.6",
        "BootNotification",
        {"chargePointVendor": "V"},
        "OccurrenceConstraintViolation",
        "$.chargePointModel",
        "required",
    ),
    (
        "ocpp1.6",
        "BootNotification",
        {**BOOT_16, "chargePointModel": "M" * 21},
        "PropertyConstraintViolation",
        "$.chargePointModel",
        "maxLength",
    ),
    (
        "ocpp1.6",
        "BootNotification",
        {**BOOT_16, "extra": 1},
        "FormatViolation",
        "$.extra",
        "additionalProperties",
    ),
    (
        "ocpp1.6",
        "StatusNotification",
        {"connectorId": 1, "errorCode": "NoError", "status": "Sleeping"},
        "PropertyConstraintViolation",
        "$.status",
        "enum",
    ),
    (
        "ocpp1.6",
        "StatusNotification",
        {"connectorId": 1, "errorCode": "NoError", "status": "Available", "timestamp": "yesterday"},
        "FormatViolation",
        "$.timestamp",
        "format",
    ),
    ("ocpp1.6", "Heartbeat", [], "FormatViolation", "$", "type"),
    (
        "ocpp2.0.1",
        "BootNotification",
        {**BOOT_2X, "reason": "Bored"},
        "PropertyConstraintViolation",
        "$.reason",
        "enum",
    ),
    (
        "ocpp2.0.1",
        "BootNotification",
        {"reason": "PowerUp", "chargingStation": {"model": "M"}},
        "OccurrenceConstraintViolation",
        "$.chargingStation.vendorName",
        "required",
    ),
    (
        "ocpp2.0.1",
        "BootNotification",
        {**BOOT_2X, "chargingStation": {"model": "M" * 21, "vendorName": "V"}},
        "PropertyConstraintViolation",
        "$.chargingStation.model",
        "maxLength",
    ),
    (
        "ocpp2.0.1",
        "TransactionEvent",
        {**TX, "seqNo": "0"},
        "TypeConstraintViolation",
        "$.seqNo",
        "type",
    ),
    (
        "ocpp2.0.1",
        "TransactionEvent",
        {**TX, "seqNo": True},
        "TypeConstraintViolation",
        "$.seqNo",
        "type",
    ),
    (
        "ocpp2.0.1",
        "TransactionEvent",
        {**TX, "seqNo": 1.5},
        "TypeConstraintViolation",
        "$.seqNo",
        "type",
    ),
    (
        "ocpp2.0.1",
        "TransactionEvent",
        {**TX, "meterValue": []},
        "OccurrenceConstraintViolation",
        "$.meterValue",
        "minItems",
    ),
    (
        "ocpp2.0.1",
        "TransactionEvent",
        {**TX, "timestamp": "2024-05-01 12:00"},
        "FormatViolation",
        "$.timestamp",
        "format",
    ),
    (
        "ocpp2.0.1",
        "TransactionEvent",
        {**TX, "evse": {"id": 1, "connector": 1}},
        "FormatViolation",
        "$.evse.connector",
        "additionalProperties",
    ),
    (
        "ocpp2.0.1",
        "Authorize",
        {
            "idToken": {"idToken": "A", "type": "Local"},
            "iso15118CertificateHashData": [
                {
                    "hashAlgorithm": "SHA256",
                    "issuerNameHash": "a",
                    "issuerKeyHash": "b",
                    "serialNumber": "c",
                    "responderURL": "d",
                }
            ]
            * 5,
        },
        "OccurrenceConstraintViolation",
        "$.iso15118CertificateHashData",
        "maxItems",
    ),
    (
        "ocpp2.0.1",
        "NotifyEVChargingNeeds",
        {
            "evseId": 1,
            "chargingNeeds": {
                "requestedEnergyTransfer": "DC",
                "dcChargingParameters": {
                    "evMaxCurrent": 1,
                    "evMaxVoltage": 1,
                    "stateOfCharge": 101,
                },
            },
        },
        "PropertyConstraintViolation",
        "$.chargingNeeds.dcChargingParameters.stateOfCharge",
        "maximum",
    ),
    (
        "ocpp2.0.1",
        "NotifyEVChargingNeeds",
        {
            "evseId": 1,
            "chargingNeeds": {
                "requestedEnergyTransfer": "DC",
                "dcChargingParameters": {"evMaxCurrent": 1, "evMaxVoltage": 1, "stateOfCharge": -1},
            },
        },
        "PropertyConstraintViolation",
        "$.chargingNeeds.dcChargingParameters.stateOfCharge",
        "minimum",
    ),
    (
        "ocpp2.1",
        "BootNotification",
        {**BOOT_2X, "reason": 1},
        "TypeConstraintViolation",
        "$.reason",
        "type",
    ),
    (
        "ocpp2.1",
        "BatterySwap",
        {"eventType": "BatteryIn", "requestId": 1, "idToken": {"idToken": "A1", "type": "Local"}},
        "OccurrenceConstraintViolation",
        "$.batteryData",
        "required",
    ),
    ("ocpp2.1", "BootNotification", "PowerUp", "FormatViolation", "$", "type"),
]
SPELLING_16 = {
    "OccurrenceConstraintViolation": "OccurenceConstraintViolation",
    "FormatViolation": "FormationViolation",
}


@pytest.mark.parametrize(("protocol", "action", "payload", "code", "path", "keyword"), CASES)
def test_keyword_to_code_and_wire_spelling(
    protocol: str, action: str, payload: Any, code: str, path: str, keyword: str
) -> None:
    err = fails(builtin(protocol), action, payload)
    assert type(err) is errors.ERROR_CLASSES[code]
    assert err.code == code  # canonical 2.x spelling inside the library
    assert err.details == {"path": path, "keyword": keyword}
    assert err.message.startswith(path)
    dialect = dialect_for(protocol)
    wire = SPELLING_16.get(code, code) if protocol == "ocpp1.6" else code
    assert dialect.spell(err.code) == wire
    assert json.loads(encode_error("id-1", err, dialect))[2] == wire


def test_wire_spelling_of_every_validation_code_in_every_dialect() -> None:
    for cls in (
        errors.RPCTypeConstraintViolationError,
        errors.RPCOccurrenceConstraintViolationError,
        errors.RPCPropertyConstraintViolationError,
        errors.RPCFormatViolationError,
        errors.RPCNotImplementedError,
    ):
        code = cls.default_code
        assert dialect_for("ocpp1.6").spell(code) == SPELLING_16.get(code, code)
        for protocol in ("ocpp2.0.1", "ocpp2.1", None):
            assert dialect_for(protocol).spell(code) == code


def test_results_are_validated_with_the_same_errors() -> None:
    v201 = builtin("ocpp2.0.1")
    err = fails(v201, "BootNotification", {"status": "Accepted", "currentTime": TS}, result=True)
    assert isinstance(err, errors.RPCOccurrenceConstraintViolationError)
    assert err.details == {"path": "$.interval", "keyword": "required"}
    err = fails(builtin("ocpp1.6"), "Heartbeat", {"currentTime": 1}, result=True)
    assert isinstance(err, errors.RPCTypeConstraintViolationError)


def test_unknown_action_is_not_implemented() -> None:
    v16 = builtin("ocpp1.6")
    assert not v16.knows("Teleport")
    err = fails(v16, "Teleport", {})
    assert type(err) is errors.RPCNotImplementedError
    assert dialect_for("ocpp1.6").spell(err.code) == "NotImplemented"
    # An unknown action wins over a payload that is not even an object.
    assert type(fails(v16, "Teleport", [])) is errors.RPCNotImplementedError
    with pytest.raises(errors.RPCNotImplementedError):
        v16.validate_result("Teleport", {})
    with pytest.raises(errors.RPCNotImplementedError):
        v16.validate_send("Teleport", {})


# -- multipleOf and binary floating point -----------------------------------------------------


def charging_profile_16(limit: Any) -> dict[str, Any]:
    return {
        "connectorId": 1,
        "csChargingProfiles": {
            "chargingProfileId": 1,
            "stackLevel": 0,
            "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": {
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}],
            },
        },
    }


@pytest.mark.parametrize(
    "limit", [9.1, 0.3, 0.7, 16, 32.0, 1.1 + 2.2, 0.1 * 3, 123456.7, 0, -4.2, 1e308, 10**400]
)
def test_multiple_of_tolerates_binary_floating_point(limit: float) -> None:
    builtin("ocpp1.6").validate_call("SetChargingProfile", charging_profile_16(limit))


@pytest.mark.parametrize("limit", [9.15, 0.01, 0.05, 19.01, 123.45, -0.3333])
def test_multiple_of_rejects_real_fractions(limit: float) -> None:
    err = fails(builtin("ocpp1.6"), "SetChargingProfile", charging_profile_16(limit))
    assert isinstance(err, errors.RPCPropertyConstraintViolationError)
    assert err.details == {
        "path": "$.csChargingProfiles.chargingSchedule.chargingSchedulePeriod[0].limit",
        "keyword": "multipleOf",
    }


def test_multiple_of_in_a_custom_schema() -> None:
    validator = Validator("x", {"StepRequest": {"properties": {"n": {"multipleOf": 3}}}})
    validator.validate_call("Step", {"n": 10**400 * 3})
    validator.validate_call("Step", {"n": 6.0})
    validator.validate_call("Step", {"n": "not a number"})  # type is another keyword
    for bad in (10**400 + 1, 7, 6.5):
        with pytest.raises(errors.RPCPropertyConstraintViolationError):
            validator.validate_call("Step", {"n": bad})
    with pytest.raises(ValueError, match="multipleOf"):
        Validator("x", {"StepRequest": {"multipleOf": 0}}).compile_all()


# -- details never echo the payload -----------------------------------------------------------


def test_details_do_not_echo_the_payload() -> None:
    secret = "S3CRET" * 1000
    payloads = [
        {**BOOT_2X, "chargingStation": {"model": secret, "vendorName": "V"}},
        {**BOOT_2X, "reason": secret},
        {**BOOT_2X, secret: secret},
        {**BOOT_2X, "chargingStation": {"model": "M", "vendorName": 1, "x": secret}},
        {
            "reason": "PowerUp",
            "chargingStation": {"model": "M", "vendorName": "V", "modem": {"iccid": 10**30}},
            "x": secret,
        },
    ]
    for payload in payloads:
        err = fails(builtin("ocpp2.0.1"), "BootNotification", payload)
        text = json.dumps([err.message, err.details])
        assert "S3CRETS3CRETS3CRETS3CRETS3CRETS3CRETS3CRET" not in text, text
        assert len(text) < 400
        assert set(err.details) == {"path", "keyword"}


def test_an_unexpected_property_is_named_clipped() -> None:
    err = fails(builtin("ocpp2.0.1"), "BootNotification", {**BOOT_2X, "k" * 500: 1})
    assert err.details["path"] == '$["' + "k" * 37 + '..."]'
    err = fails(builtin("ocpp2.0.1"), "BootNotification", {**BOOT_2X, "bad key": 1})
    assert err.details["path"] == '$["bad key"]'


# -- custom validators -------------------------------------------------------------------------

CUSTOM_SCHEMAS: dict[str, dict[str, Any]] = {
    "PingRequest": {
        "$schema": "http://json-schema.org/draft-06/schema#",
        "type": "object",
        "properties": {
            "tag": {"type": "string", "minLength": 2, "pattern": "^[a-z]+$"},
            "kind": {"const": "ping"},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "step": {"type": "number", "multipleOf": 0.01},
            "either": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        },
        "required": ["tag"],
        "additionalProperties": False,
    },
    "PingResponse": {"type": "object", "properties": {"pong": {"type": "boolean"}}},
}


@pytest.mark.parametrize(
    ("payload", "cls", "path", "keyword"),
    [
        ({"tag": "a"}, errors.RPCPropertyConstraintViolationError, "$.tag", "minLength"),
        ({"tag": "ABC"}, errors.RPCPropertyConstraintViolationError, "$.tag", "pattern"),
        (
            {"tag": "ab", "kind": "pong"},
            errors.RPCPropertyConstraintViolationError,
            "$.kind",
            "const",
        ),
        (
            {"tag": "ab", "ratio": 0},
            errors.RPCPropertyConstraintViolationError,
            "$.ratio",
            "exclusiveMinimum",
        ),
        (
            {"tag": "ab", "ratio": 1},
            errors.RPCPropertyConstraintViolationError,
            "$.ratio",
            "exclusiveMaximum",
        ),
        (
            {"tag": "ab", "step": 0.125},
            errors.RPCPropertyConstraintViolationError,
            "$.step",
            "multipleOf",
        ),
        ({"tag": "ab", "either": []}, errors.RPCFormatViolationError, "$.either", "anyOf"),
    ],
)
def test_custom_schema_keywords(
    payload: dict[str, Any], cls: type[errors.RPCError], path: str, keyword: str
) -> None:
    validator = Validator("ping1.0", CUSTOM_SCHEMAS)
    err = fails(validator, "Ping", payload)
    assert type(err) is cls
    assert err.details == {"path": path, "keyword": keyword}


def test_custom_validator_for_a_custom_subprotocol() -> None:
    validator = Validator("ping1.0", CUSTOM_SCHEMAS)
    validator.compile_all()
    assert validator.subprotocol == "ping1.0"
    assert validator.knows("Ping") and not validator.knows("Pong")
    validator.validate_call("Ping", {"tag": "ab", "step": 0.07, "ratio": 0.5, "either": 3})
    validator.validate_result("Ping", {"pong": True})
    assert isinstance(
        fails(validator, "Ping", {"pong": 1}, result=True), errors.RPCTypeConstraintViolationError
    )
    assert resolve_validators(True, ["ping1.0"], [validator]) == {"ping1.0": validator}
    # Later changes to the caller's mapping do not reach the validator.
    schemas = dict(CUSTOM_SCHEMAS)
    frozen = Validator("ping1.0", schemas)
    schemas.clear()
    assert frozen.knows("Ping")


def test_custom_validator_overrides_a_builtin(tmp_path: Any) -> None:
    # A stricter BootNotification for ocpp1.6 from a directory named the OCA 1.6 way.
    stricter = json.loads((SCHEMAS / "ocpp1.6" / "BootNotification.json").read_bytes())
    stricter["properties"]["chargePointVendor"]["enum"] = ["ACME"]
    (tmp_path / "BootNotification.json").write_text(json.dumps(stricter))
    (tmp_path / "BootNotificationResponse.json").write_bytes(
        (SCHEMAS / "ocpp1.6" / "BootNotificationResponse.json").read_bytes()
    )
    (tmp_path / "README.md").write_text("not a schema")
    custom = Validator.from_directory("ocpp1.6", tmp_path)
    resolved = resolve_validators(True, ["ocpp1.6", "ocpp2.0.1"], [custom])
    assert resolved == {"ocpp1.6": custom, "ocpp2.0.1": builtin("ocpp2.0.1")}
    builtin("ocpp1.6").validate_call("BootNotification", BOOT_16)
    err = fails(resolved["ocpp1.6"], "BootNotification", BOOT_16)
    assert isinstance(err, errors.RPCPropertyConstraintViolationError)
    assert not custom.knows("Heartbeat")  # only what the directory holds
    assert builtin_validator("ocpp1.6") is not custom


def test_validator_rejects_bad_keys_and_bad_schemas(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match=r"BootNotification\.req"):
        Validator("x", {"BootNotification.req": {}})
    with pytest.raises(ValueError, match="Request"):
        Validator("x", {"Request": {}})
    broken = Validator("x", {"BadRequest": {"type": "no-such-type"}})
    with pytest.raises(ValueError, match="BadRequest"):
        broken.compile_all()
    (tmp_path / "Boot.json").write_text("{}")
    (tmp_path / "BootRequest.json").write_text("{}")
    with pytest.raises(ValueError, match="both"):
        Validator.from_directory("x", str(tmp_path))


# -- resolve_validators ------------------------------------------------------------------------


def test_resolve_validators() -> None:
    assert resolve_validators(False, ["ocpp1.6"]) == {}
    assert resolve_validators([], ["ocpp1.6"]) == {}
    assert resolve_validators(True, ["ocpp2.1", "ocpp1.6"]) == {
        "ocpp2.1": builtin("ocpp2.1"),
        "ocpp1.6": builtin("ocpp1.6"),
    }
    # A list names the strict ones, whatever is offered.
    assert resolve_validators(["ocpp1.6"], ["ocpp1.6", "ocpp2.0.1"]) == {
        "ocpp1.6": builtin("ocpp1.6")
    }
    assert resolve_validators(("ocpp2.0.1",), []) == {"ocpp2.0.1": builtin("ocpp2.0.1")}


def test_resolve_validators_fails_fast() -> None:
    with pytest.raises(ValueError, match="strict_mode requires at least one subprotocol"):
        resolve_validators(True, [])
    with pytest.raises(ValueError, match="no strict-mode validator for subprotocol 'ocpp9'"):
        resolve_validators(True, ["ocpp1.6", "ocpp9"])
    with pytest.raises(ValueError, match=r"no strict-mode validator for subprotocol 'ping1\.0'"):
        resolve_validators(["ping1.0"], ["ping1.0"])
    with pytest.raises(TypeError):
        resolve_validators("ocpp1.6", ["ocpp1.6"])
    twice = [Validator("ping1.0", CUSTOM_SCHEMAS), Validator("ping1.0", CUSTOM_SCHEMAS)]
    with pytest.raises(ValueError, match="more than one"):
        resolve_validators(True, ["ping1.0"], twice)


# -- hypothesis: only RPCErrors, whatever the payload ------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
TARGETS = [
    ("ocpp1.6", "BootNotification", BOOT_16),
    ("ocpp1.6", "SetChargingProfile", charging_profile_16(9.1)),
    ("ocpp2.0.1", "TransactionEvent", TX_EVENT_201),
    ("ocpp2.0.1", "BootNotification", BOOT_2X),
    (
        "ocpp2.1",
        "NotifyPeriodicEventStream",
        {"id": 1, "pending": 0, "basetime": TS, "data": [{"t": 0.5, "v": "230.1"}]},
    ),
]


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*prefix, index))


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    value = copy.copy(value)
    value[path[0]] = replaced(value[path[0]], path[1:], new)
    return value


def check_only_rpc_errors(validator: Validator, action: str, payload: Any) -> None:
    for check in (validator.validate_call, validator.validate_result, validator.validate_send):
        try:
            check(action, payload)
            continue
        except errors.RPCError as exc:
            err = exc
        assert err.code in errors.ERROR_CLASSES
        assert len(err.message) <= 200
        if err.code != "NotImplemented":
            assert set(err.details) == {"path", "keyword"}
            assert err.message.startswith("$")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(TARGETS), JSON, st.data())
def test_validation_only_ever_raises_rpc_errors(
    target: tuple[str, str, Any], junk: Any, data: st.DataObject
) -> None:
    protocol, action, valid = target
    validator = builtin(protocol)
    check_only_rpc_errors(validator, action, junk)
    # The same junk planted anywhere inside a valid message reaches the deep checks.
    path = data.draw(st.sampled_from(list(paths(valid))))
    check_only_rpc_errors(validator, action, replaced(valid, path, junk))


def test_not_implemented_message_clips_the_action() -> None:
    err = fails(builtin("ocpp2.0.1"), "X" * 10_000, {})
    assert type(err) is errors.RPCNotImplementedError
    assert len(err.message) < 100
    assert err.message == f"No request schema for '{'X' * 37}...' in ocpp2.0.1"


def test_decimal_numbers_are_validated_too() -> None:
    from decimal import Decimal

    builtin("ocpp1.6").validate_call("SetChargingProfile", charging_profile_16(Decimal("9.1")))
    with pytest.raises(errors.RPCPropertyConstraintViolationError):
        builtin("ocpp1.6").validate_call("SetChargingProfile", charging_profile_16(Decimal("9.15")))
    schema = {"properties": {"n": {"multipleOf": Decimal("0.1")}}}
    validator = Validator("x", {"StepRequest": schema})
    validator.validate_call("Step", {"n": 9.1})
    validator.validate_call("Step", {"n": Decimal("9.1")})
    with pytest.raises(errors.RPCPropertyConstraintViolationError):
        validator.validate_call("Step", {"n": 9.15})


# -- the allocation-free object keywords check exactly what fastjsonschema's do ----------------


def reference_compile(schema: dict[str, Any]) -> Any:
    """The validator of fastjsonschema's own generator (only our multipleOf)."""
    from ocpp_rpc._wire import validation as _validation
    from ocpp_rpc._wire._internals import compile_schema

    return compile_schema(schema, _validation._is_multiple, lean=False)


def outcome(validate: Any, payload: Any) -> tuple[str, str] | None:
    import fastjsonschema

    try:
        validate(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        return (exc.rule or "", exc.name or "")
    return None


OBJECT_SCHEMAS = {
    "ThingRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["a", "we'ird \"key\"\n{x}"],
        "properties": {
            "a": {"type": "integer"},
            "we'ird \"key\"\n{x}": {"type": "string"},
            "nested": {
                "type": "object",
                "properties": {"x": {"type": "string"}, "x_key": {"type": "integer"}},
                "additionalProperties": False,
            },
            "open": {"type": "object", "properties": {"y": {"type": "integer"}}},
            "empty": {"type": "object", "properties": {}, "additionalProperties": False},
            "schema_extra": {"type": "object", "additionalProperties": {"type": "integer"}},
            "pattern": {
                "type": "object",
                "patternProperties": {"^p": {"type": "integer"}},
                "additionalProperties": False,
            },
            "req_only": {"type": "object", "required": ["z"]},
            "kind": {"type": "string", "enum": ["A", "B", "we'ird"]},
            "untyped_kind": {"enum": ["A", "1"]},
            "mixed_kind": {"enum": ["A", 1, None, True]},
            "counts": {"type": "array", "maxItems": 3, "items": {"type": "integer"}},
        },
    },
}
THING = {
    "a": 1,
    "we'ird \"key\"\n{x}": "s",
    "nested": {"x": "v", "x_key": 2},
    "open": {"y": 1, "other": None},
    "empty": {},
    "schema_extra": {"k": 1},
    "pattern": {"p1": 1},
    "req_only": {"z": 0},
    "kind": "we'ird",
    "untyped_kind": "1",
    "mixed_kind": 1,
    "counts": [1, 2],
}
DIFF_TARGETS = [
    *((protocol, action + "Request", payload) for protocol, action, payload in TARGETS),
    ("ping1.0", "ThingRequest", THING),
]


def diff_schema(protocol: str, key: str) -> dict[str, Any]:
    if protocol == "ping1.0":
        return OBJECT_SCHEMAS[key]
    return dict(builtin(protocol)._schemas[key])


# Each example compiles two validators: slow, and slower on a loaded machine.
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(DIFF_TARGETS), JSON, st.data())
def test_object_keywords_agree_with_fastjsonschema(
    target: tuple[str, str, Any], junk: Any, data: st.DataObject
) -> None:
    from ocpp_rpc._wire import validation as _validation

    protocol, key, valid = target
    schema = diff_schema(protocol, key)
    ours, reference = _validation._compile(dict(schema)), reference_compile(dict(schema))
    assert outcome(ours, valid) is None
    path = data.draw(st.sampled_from(list(paths(valid))))
    payloads = [junk, replaced(valid, path, junk)]
    parent = data.draw(st.sampled_from([p for p in paths(valid) if _is_dict_at(valid, p)]))
    extra = data.draw(st.text(max_size=6))
    payloads.append(replaced(valid, parent, {**_at(valid, parent), extra: junk}))
    if _at(valid, parent):
        gone = data.draw(st.sampled_from(sorted(_at(valid, parent))))
        payloads.append(
            replaced(valid, parent, {k: v for k, v in _at(valid, parent).items() if k != gone})
        )
    for payload in payloads:
        assert outcome(ours, payload) == outcome(reference, payload)


def _has_fast_path(target: tuple[str, str, Any]) -> bool:
    from ocpp_rpc._wire import validation as _validation

    return _validation._fast_check(dict(diff_schema(target[0], target[1]))) is not None


@pytest.mark.skipif(
    _validation_module.jsonschema_rs is None, reason="jsonschema_rs is not installed"
)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([t for t in DIFF_TARGETS if _has_fast_path(t)]), JSON, st.data())
def test_the_rust_fast_path_never_accepts_what_fastjsonschema_refuses(
    target: tuple[str, str, Any], junk: Any, data: st.DataObject
) -> None:
    from ocpp_rpc._wire import validation as _validation

    protocol, key, valid = target
    schema = diff_schema(protocol, key)
    fast = _validation._fast_check(dict(schema))
    assert fast is not None
    ours = _validation._compile(dict(schema))
    assert fast(valid) and outcome(ours, valid) is None
    path = data.draw(st.sampled_from(list(paths(valid))))
    text = data.draw(st.text(max_size=30))
    number = data.draw(st.one_of(st.integers(), st.floats(allow_nan=False)))
    payloads = [junk, replaced(valid, path, junk), replaced(valid, path, text),
                replaced(valid, path, number)]
    parent = data.draw(st.sampled_from([p for p in paths(valid) if _is_dict_at(valid, p)]))
    extra = data.draw(st.text(max_size=6))
    payloads.append(replaced(valid, parent, {**_at(valid, parent), extra: junk}))
    for payload in payloads:
        try:
            accepted = fast(payload)
        except Exception:
            continue  # the Python code decides
        if accepted:
            assert outcome(ours, payload) is None, (key, payload)


@pytest.mark.parametrize(
    ("stamp", "valid"),
    [("2024-01-01T00:00:00Z", True), ("2024-01-01T00:00:00+0100", True),
     ("2024-01-01T23:59:60Z", True), ("2024-01-01 00:00:00Z", False), ("yesterday", False)],
)
def test_date_times_get_the_same_verdict_with_and_without_the_fast_path(
    stamp: str, valid: bool
) -> None:
    from ocpp_rpc._wire import validation as _validation

    schema = dict(builtin("ocpp1.6")._schemas["MeterValuesRequest"])
    sample = {"timestamp": stamp, "sampledValue": [{"value": "1"}]}
    payload = {"connectorId": 1, "meterValue": [sample]}
    ours = _validation._compile(dict(schema))
    assert (outcome(ours, payload) is None) == valid
    fast = _validation._fast_check(dict(schema))
    assert (fast is None) == (_validation.jsonschema_rs is None)
    if fast is not None and fast(payload):
        assert valid  # it may refuse more (e.g. "+0100"): the Python code then decides
    validator = Validator("ocpp1.6", dict(builtin("ocpp1.6")._schemas))
    if valid:
        validator.validate_call("MeterValues", payload)
    else:
        assert fails(validator, "MeterValues", payload).details == {
            "path": "$.meterValue[0].timestamp", "keyword": "format"}


def _digits(low: int, high: int, width: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map(lambda n: str(n).zfill(width))


# Strings shaped like RFC 3339 date-times, right and wrong in every part.
DATE_TIME_LIKE = st.tuples(
    st.one_of(_digits(0, 9999, 4), _digits(0, 99999, 5), _digits(0, 99, 2)),
    st.sampled_from(["-", "/", ""]), _digits(0, 19, 2), st.sampled_from(["-", ""]),
    _digits(0, 39, 2), st.sampled_from(["T", "t", " ", "_", ""]),
    _digits(0, 29, 2), st.sampled_from([":", ""]), _digits(0, 69, 2),
    st.sampled_from([":", ""]), _digits(0, 69, 2),
    st.one_of(st.just(""), st.text("0123456789", max_size=12).map(lambda d: "." + d),
              st.just(",5")),
    st.one_of(
        st.sampled_from(["Z", "z", "", "UTC", "+", "-"]),
        st.tuples(st.sampled_from(["+", "-"]), _digits(0, 29, 2), st.sampled_from([":", ""]),
                  _digits(0, 69, 2)).map("".join),
    ),
    st.sampled_from(["", "\n", " ", "x"]),
).map("".join)


@pytest.mark.skipif(
    _validation_module.jsonschema_rs is None, reason="jsonschema_rs is not installed"
)
@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(DATE_TIME_LIKE, st.text(max_size=40)))
def test_the_rust_date_time_check_is_no_laxer_than_fastjsonschemas(stamp: str) -> None:
    from ocpp_rpc._wire import validation as _validation

    schema = {"type": "array", "items": {"type": "string", "format": "date-time"}}
    fast = _validation._fast_check(schema)
    assert fast is not None
    if fast([stamp]):
        assert outcome(_validation._compile(schema), [stamp]) is None, stamp


def test_without_jsonschema_rs_the_python_code_validates_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ocpp_rpc._wire import validation as _validation

    monkeypatch.setattr(_validation, "jsonschema_rs", None)
    validator = Validator("ocpp1.6", dict(builtin("ocpp1.6")._schemas))
    validator.validate_call("Heartbeat", {})
    assert validator._requests["Heartbeat"][1] is None
    err = fails(validator, "Heartbeat", {"extra": 1})
    assert err.details == {"path": "$.extra", "keyword": "additionalProperties"}


def test_only_schemas_with_arrays_take_the_fast_path() -> None:
    validator = Validator("ocpp1.6", dict(builtin("ocpp1.6")._schemas))
    validator.validate_call("Heartbeat", {})
    validator.validate_call("MeterValues", {"connectorId": 1, "meterValue": [
        {"timestamp": "2024-01-01T00:00:00Z", "sampledValue": [{"value": "1"}]}]})
    assert validator._requests["Heartbeat"][1] is None
    from ocpp_rpc._wire import validation as _validation

    fast = validator._requests["MeterValues"][1]
    assert (fast is not None) == (_validation.jsonschema_rs is not None)


def test_a_payload_the_fast_path_refuses_gets_the_python_codes_error() -> None:
    validator = Validator("ocpp1.6", dict(builtin("ocpp1.6")._schemas))
    validator.validate_call("Heartbeat", {})
    bad = {"connectorId": "one", "meterValue": [{"timestamp": "x", "sampledValue": []}]}
    err = fails(validator, "MeterValues", bad)
    assert (err.details or {}).get("keyword") in ("type", "format", "minItems")


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def _is_dict_at(value: Any, path: tuple[Any, ...]) -> bool:
    return isinstance(_at(value, path), dict)


def test_every_builtin_schema_compiles_and_accepts_what_fastjsonschema_accepts() -> None:
    from ocpp_rpc._wire import validation as _validation

    for protocol in BUILTIN_SUBPROTOCOLS:
        validator = builtin(protocol)
        validator.compile_all()
        for key in validator._schemas:
            reference = reference_compile(dict(validator._schemas[key]))
            ours = _validation._compile(dict(validator._schemas[key]))
            for payload in ({}, {"x": 1}, [], None):
                assert outcome(ours, payload) == outcome(reference, payload), (protocol, key)


def test_payload_checks_after_the_validator_is_cached() -> None:
    """The per-action fast path still refuses non-objects and takes dict subclasses."""

    class Params(dict[str, Any]):
        pass

    validator = Validator("ping1.0", OBJECT_SCHEMAS)
    validator.validate_call("Thing", THING)  # compiled and cached
    for junk in ([], None, "x", 1):
        err = fails(validator, "Thing", junk)
        assert type(err) is errors.RPCFormatViolationError
        assert err.details == {"path": "$", "keyword": "type"}
    validator.validate_call("Thing", Params(THING))
    err = fails(validator, "Thing", Params(THING, extra=1))
    assert err.details == {"path": "$.extra", "keyword": "additionalProperties"}
    assert type(fails(validator, "Thing", {**THING, "a": "1"})) is (
        errors.RPCTypeConstraintViolationError
    )
    missing = dict(THING)
    del missing["a"]
    assert fails(validator, "Thing", missing).details == {"path": "$.a", "keyword": "required"}
    with pytest.raises(errors.RPCNotImplementedError):
        validator.validate_result("Thing", {})


def test_the_rust_schema_drops_only_what_a_string_enum_makes_void() -> None:
    from ocpp_rpc._wire.validation import _lean

    schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "unit": {"type": "string", "additionalProperties": False, "enum": ["W", "A"]},
            "mixed": {"type": "string", "enum": ["W", 1]},  # not all strings: kept
            "fixed": {"const": {"type": "string", "enum": ["W"]}},  # a value: kept
            "many": {"type": "array", "items": {"type": "string", "enum": ["x"]}},
        },
    }
    assert _lean(schema) == {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "unit": {"enum": ["W", "A"]},
            "mixed": {"type": "string", "enum": ["W", 1]},
            "fixed": {"const": {"type": "string", "enum": ["W"]}},
            "many": {"type": "array", "items": {"enum": ["x"]}},
        },
    }
