"""``ocpp-rpc call URL ACTION [JSON]``: act as a charge point for one call (or
a file of calls) and print each result or error."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import anyio

from .. import Call, ConnectError, ConnectionClosed, RPCClient, RPCError
from .answers import answer_as_charge_point
from .common import (
    EXIT_BROKEN_PIPE,
    EXIT_CALL_FAILED,
    EXIT_CONNECT_FAILED,
    EXIT_OK,
    UsageError,
    client_ssl_context,
)
from .output import DIM, RED, Output, pretty_json


def parse_call_line(line: str) -> tuple[str, Any] | None:
    """One call from text: ``["Action", {...}]``, ``{"action": ..., "params": ...}``
    or ``Action {...}``; None for a blank or ``#`` comment line. ValueError if bad."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    if line[0] in "[{":
        value = json.loads(line)
        if isinstance(value, list) and len(value) in (1, 2) and isinstance(value[0], str):
            return value[0], value[1] if len(value) == 2 else {}
        if isinstance(value, dict) and isinstance(value.get("action"), str):
            return value["action"], value.get("params", {})
        raise ValueError('expected ["Action", {params}] or {"action": ..., "params": ...}')
    action, _, rest = line.partition(" ")
    return action, json.loads(rest) if rest.strip() else {}


def split_url(url: str, identity: str | None) -> tuple[str, str]:
    """(endpoint, identity): the identity is the URL's last path segment unless given."""
    if identity is not None:
        return url, identity
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise UsageError(f"not a ws:// or wss:// URL: {url}")
    endpoint, _, last = parts.path.rpartition("/")
    if not last:
        raise UsageError(f"{url} has no identity: end it with /IDENTITY or pass --identity")
    return urlunsplit((parts.scheme, parts.netloc, endpoint, "", "")), unquote(last)


def _read_calls(args: argparse.Namespace) -> list[tuple[str, Any]]:
    if args.file is not None:
        if args.action is not None:
            raise UsageError("give either ACTION [JSON] or --file, not both")
        try:
            text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text("utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc.strerror or exc}") from None
        return list(_parse_lines(text.splitlines(), args.file))
    if args.action is None:
        raise UsageError("missing ACTION (or --file)")
    try:
        params = {} if args.params is None else json.loads(args.params)
    except ValueError as exc:
        raise UsageError(f"the payload is not JSON: {exc}") from None
    return [(args.action, params)]


def _parse_lines(lines: Iterable[str], name: str) -> Iterable[tuple[str, Any]]:
    for number, line in enumerate(lines, 1):
        try:
            parsed = parse_call_line(line)
        except ValueError as exc:
            raise UsageError(f"{name}:{number}: {exc}") from None
        if parsed is not None:
            yield parsed


def error_fields(exc: BaseException) -> dict[str, Any]:
    """How a failed call is reported: an OCPP error code, message and details."""
    if isinstance(exc, RPCError):
        return {"code": exc.code, "message": exc.message, "details": exc.details}
    if isinstance(exc, TimeoutError):
        return {"code": "Timeout", "message": "no answer in time", "details": {}}
    if isinstance(exc, ConnectionClosed):
        return {"code": "ConnectionClosed", "message": f"{exc.code} {exc.reason}".strip(),
                "details": {"close_code": exc.code, "reason": exc.reason}}
    return {"code": type(exc).__name__, "message": str(exc), "details": {}}


async def call_command(args: argparse.Namespace) -> int:
    """``ocpp-rpc call``."""
    calls = _read_calls(args)
    endpoint, identity = split_url(args.url, args.identity)
    out = Output(json_lines=args.json)
    err = out if args.json else Output(sys.stderr)
    try:
        client = RPCClient(
            endpoint, identity, protocols=args.protocols, password=args.password,
            ssl_context=client_ssl_context(args), call_timeout=args.timeout,
            reconnect=False, strict_mode=args.strict, ping_interval=None,
        )
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise UsageError(str(exc)) from None

    def answer(call: Call) -> Any:
        called = f"CSMS called {call.method} {pretty_json(call.params, indent=False)}"
        try:
            result = answer_as_charge_point(call)
        except RPCError as exc:
            err.emit("inbound", f"{called} -> {exc.code}", action=call.method,
                     params=call.params, error=error_fields(exc))
            raise
        err.emit("inbound", f"{called} -> {pretty_json(result, indent=False)}",
                 action=call.method, params=call.params, result=result)
        return result

    client.handle(answer)
    failed = False
    with out.until_reader_gone():
        try:
            async with client:
                agreed = client.protocol or "no subprotocol"
                err.emit("connected", err.style(
                    f"connected to {endpoint} as {identity} ({agreed})", DIM),
                    url=endpoint, identity=identity, protocol=client.protocol)
                for action, params in calls:
                    started = time.perf_counter()
                    try:
                        result = await client.call(action, params)
                    except (RPCError, TimeoutError, ConnectionClosed, ValueError) as exc:
                        ms = (time.perf_counter() - started) * 1000
                        failed = True
                        fields = error_fields(exc)
                        details = fields["details"]
                        text = f"{action} failed: {fields['code']}: {fields['message']}"
                        if details and isinstance(exc, RPCError):
                            text += f" {pretty_json(details, indent=False)}"
                        err.emit("error", err.style(text, RED), action=action,
                                 ms=round(ms, 3), **fields)
                        if isinstance(exc, ConnectionClosed):
                            break
                        continue
                    ms = (time.perf_counter() - started) * 1000
                    if out.json_lines:
                        out.emit("result", "", action=action, result=result, ms=round(ms, 3))
                    elif len(calls) == 1:
                        out.write(pretty_json(result, indent=out.is_tty))
                    else:
                        out.write(f"{action} -> {pretty_json(result, indent=False)}  "
                                  + out.style(f"{ms:.1f} ms", DIM))
                if args.linger > 0:
                    with anyio.move_on_after(args.linger):
                        await client.wait_closed()
        except ConnectError as exc:
            status = f" (HTTP {exc.status})" if exc.status else ""
            err.emit("connect_error", err.style(f"cannot connect: {exc}{status}", RED),
                     message=str(exc), status=exc.status)
            return EXIT_CONNECT_FAILED
    if out.reader_gone:
        return EXIT_BROKEN_PIPE
    return EXIT_CALL_FAILED if failed else EXIT_OK
