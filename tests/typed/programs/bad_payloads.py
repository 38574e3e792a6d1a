"""Payloads that must not type-check: each bad line announces mypy's error."""

from __future__ import annotations

from ocpp_rpc import v16, v201

station: v201.ChargingStationType = {"model": "One", "vendorName": "Acme"}

# a misspelled key (so the required one is missing too)
misspelled: v201.BootNotificationRequest = {  # E: Extra key "reasn" for TypedDict "BootNotificationRequest"  # E: Missing key "reason"
    "reasn": "PowerUp",
    "chargingStation": station,
}
# a wrong value type
wrong_type: v16.HeartbeatResponse = {"currentTime": 1700000000}  # E: Incompatible types (expression has type "int", TypedDict item "currentTime" has type "str")
# a missing required key
missing: v201.BootNotificationRequest = {"chargingStation": station}  # E: Missing key "reason" for TypedDict "BootNotificationRequest"
# an unknown enumeration value
unknown_enum: v201.BootNotificationRequest = {
    "reason": "Reboot",  # E: Incompatible types (expression has type "Literal['Reboot']", TypedDict item "reason" has type "Literal['ApplicationReset',
    "chargingStation": station,
}
# a wrong type in a nested object
nested: v201.BootNotificationRequest = {
    "reason": "PowerUp",
    "chargingStation": {"model": 1, "vendorName": "Acme"},  # E: Incompatible types (expression has type "int", TypedDict item "model" has type "str")
}
# a misspelled key in an object in a list in a list (1.6: inline types, named by the generator)
nested_list: v16.MeterValuesRequest = {
    "connectorId": 1,
    "meterValue": [
        {
            "timestamp": "2025-01-01T00:00:00Z",
            "sampledValue": [{"valeu": "1"}],  # E: Extra key "valeu" for TypedDict "MeterValueSampledValue"  # E: Missing key "value"
        }
    ],
}
# keys are the schema's, camelCase: no case conversion
snake_case: v16.BootNotificationRequest = {  # E: Extra key "charge_point_vendor"  # E: Missing key "chargePointVendor"
    "charge_point_vendor": "Acme",
    "chargePointModel": "One",
}
