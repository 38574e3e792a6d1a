"""Strict-mode validations per second: ocpp_rpc's compiled validators
(fastjsonschema) side by side with the `jsonschema` library's interpreter
(validators built once, format checking on, as ours), plus `json.loads` of the
same frame for scale. Prints one table; no assertions.

    pip install jsonschema   # the baseline; not a dependency of ocpp_rpc
    python benchmarks/validation.py [--seconds 0.5]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from ocpp_rpc import Validator
from ocpp_rpc._wire import validation as _validation
from ocpp_rpc._wire.validation import builtin_validator

TS = "2024-05-01T12:00:00.000Z"


def meter_values_16(n: int) -> dict[str, Any]:
    sample = {
        "value": "1234.5",
        "context": "Sample.Periodic",
        "format": "Raw",
        "measurand": "Energy.Active.Import.Register",
        "phase": "L1",
        "location": "Outlet",
        "unit": "Wh",
    }
    return {
        "connectorId": 1,
        "transactionId": 42,
        "meterValue": [{"timestamp": TS, "sampledValue": [dict(sample) for _ in range(n)]}],
    }


def meter_values_201(n: int) -> dict[str, Any]:
    sample = {
        "value": 1234.5,
        "context": "Sample.Periodic",
        "measurand": "Energy.Active.Import.Register",
        "phase": "L1",
        "location": "Outlet",
        "unitOfMeasure": {"unit": "Wh", "multiplier": 0},
    }
    return {
        "evseId": 1,
        "meterValue": [{"timestamp": TS, "sampledValue": [dict(sample) for _ in range(n)]}],
    }


def notify_report_201(n: int) -> dict[str, Any]:
    def item(i: int) -> dict[str, Any]:
        return {
            "component": {"name": "EVSE", "evse": {"id": 1 + i % 4, "connectorId": 1}},
            "variable": {"name": f"Variable{i}", "instance": "Main"},
            "variableAttribute": [
                {"type": "Actual", "value": str(i), "mutability": "ReadOnly", "persistent": True}
            ],
            "variableCharacteristics": {
                "dataType": "decimal",
                "supportsMonitoring": True,
                "unit": "W",
            },
        }

    return {
        "requestId": 7,
        "generatedAt": TS,
        "tbc": False,
        "seqNo": 0,
        "reportData": [item(i) for i in range(n)],
    }


CASES: list[tuple[str, str, str, dict[str, Any]]] = [
    ("Heartbeat", "ocpp1.6", "Heartbeat", {}),
    ("Heartbeat", "ocpp2.0.1", "Heartbeat", {}),
    ("MeterValues, 50 sampled values", "ocpp1.6", "MeterValues", meter_values_16(50)),
    ("MeterValues, 50 sampled values", "ocpp2.0.1", "MeterValues", meter_values_201(50)),
    ("NotifyReport, 100 reportData", "ocpp2.0.1", "NotifyReport", notify_report_201(100)),
]


def rate(seconds: float, fn: Callable[..., object], *args: Any) -> float:
    """Calls per second of `fn(*args)`, in batches until `seconds` have passed."""
    fn(*args)
    count, batch, start = 0, 1, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(batch):
            fn(*args)
        count += batch
        batch = min(batch * 2, 4096)
    return count / elapsed


def baseline(protocol: str, action: str) -> Callable[[Any], None] | None:
    """jsonschema's validator for the request schema, or None if not installed."""
    try:
        import jsonschema
    except ImportError:
        return None
    name = f"{action}.json" if protocol == "ocpp1.6" else f"{action}Request.json"
    text = (resources.files("ocpp_rpc") / "schemas" / protocol / name).read_bytes()
    schema = json.loads(text)
    cls = jsonschema.validators.validator_for(schema)
    checker = cls(schema, format_checker=cls.FORMAT_CHECKER)
    return checker.validate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="per measurement")
    seconds = parser.parse_args().seconds

    rust = _validation.jsonschema_rs
    version = importlib.metadata.version("jsonschema-rs") if rust else ""
    print(f"fast path: {'jsonschema_rs ' + version if rust else 'none (pure Python)'}")
    print(
        f"{'message':<32} {'protocol':<10} {'ocpp_rpc/s':>12} {'python-only/s':>14}"
        f" {'jsonschema/s':>13} {'speed-up':>9} {'json.loads/s':>13} {'bytes':>7}"
    )
    for label, protocol, action, payload in CASES:
        validator = builtin_validator(protocol)
        assert validator is not None
        start = time.perf_counter()
        validator.validate_call(action, payload)  # first use compiles the schema
        compile_ms = (time.perf_counter() - start) * 1000
        ours = rate(seconds, validator.validate_call, action, payload)
        _validation.jsonschema_rs = None  # the same schemas, fastjsonschema code only
        python_only = Validator(protocol, validator._schemas)
        python_only.validate_call(action, payload)  # compiled now, without the fast path
        _validation.jsonschema_rs = rust
        python = rate(seconds, python_only.validate_call, action, payload)
        check = baseline(protocol, action)
        theirs = rate(seconds, check, payload) if check else float("nan")
        frame = json.dumps([2, "19223201", action, payload])
        loads = rate(seconds, json.loads, frame)
        print(
            f"{label:<32} {protocol:<10} {ours:>12,.0f} {python:>14,.0f} {theirs:>13,.0f}"
            f" {ours / theirs:>8.1f}x {loads:>13,.0f} {len(frame):>7}"
            f"   (compiled in {compile_ms:.1f} ms)"
        )

    for protocol in ("ocpp1.6", "ocpp2.0.1", "ocpp2.1"):
        validator = builtin_validator(protocol)
        assert validator is not None
        start = time.perf_counter()
        validator.compile_all()
        print(f"compile_all {protocol}: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
