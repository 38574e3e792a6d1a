"""What goes through Redis: the key and channel layout, and the versioned
messages nodes exchange.

Pure data, no I/O: everything here is testable without Redis.

Layout (``P`` is the prefix, ``enc(identity)`` the identity percent-encoded
with every byte outside ``A-Z a-z 0-9 _ . - ~`` escaped, so that no identity
can reach another's key and no key contains a ``:`` after the prefix):

=============================  ===========  =========================================
``P:id:<enc(identity)>``       hash         the registration: ``node``, ``inst``
                                            (the node's instance token), ``conn``
                                            (connection id), ``proto``
``P:node:<node_id>``           string, TTL  the node's lease: its instance token,
                                            expiring ``lease`` seconds after the last
                                            renewal
``P:nodes``                    sorted set   instance token -> lease expiry (ms, Redis
                                            clock), so any node can reap dead ones
``P:inst:<instance>``          set          identities registered by that instance
``P:inbox:<node_id>``          channel      calls, replies, cancels and "replace"
                                            requests for that node
``P:events``                   channel      ``connected`` / ``disconnected`` events
=============================  ===========  =========================================

Every message is one JSON object with ``"v"`` (the format version, 1) and
``"k"`` (its kind). A node drops, and logs, a message whose version it does not
know or whose shape is wrong.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

__all__ = (
    "VERSION",
    "Call",
    "Cancel",
    "ClusterEvent",
    "Layout",
    "Message",
    "Replace",
    "Reply",
    "check_node_id",
    "decode",
    "default_node_id",
    "encode",
    "encode_identity",
)

logger = logging.getLogger("ocpp_rpc.cluster")

#: The message format version this code writes and understands.
VERSION = 1

_NODE_ID = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


def encode_identity(identity: str) -> str:
    """`identity` as it appears in keys: percent-encoded UTF-8 (injective, and
    never containing ``:``, ``{`` or ``}``)."""
    return quote(identity, safe="")


def check_node_id(node_id: str) -> str:
    """`node_id` if it is usable in keys and channels as is, else `ValueError`."""
    if not isinstance(node_id, str) or not _NODE_ID.fullmatch(node_id):
        raise ValueError(
            f"node_id must be 1-128 characters from A-Z a-z 0-9 _ . -, not {node_id!r}"
        )
    return node_id


def default_node_id() -> str:
    """``<host>-<pid>-<random>``: unique per process, readable in ``CLIENT LIST``."""
    host = re.sub(r"[^A-Za-z0-9_.\-]", "-", socket.gethostname())[:64] or "node"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def new_instance() -> str:
    """A fresh instance token: a node takes a new one each time it (re)joins."""
    return secrets.token_hex(8)


@dataclass(frozen=True)
class Layout:
    """Key and channel names for one prefix."""

    prefix: str

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not self.prefix:
            raise ValueError("prefix must be a non-empty string")

    def registration(self, identity: str) -> str:
        return f"{self.prefix}:id:{encode_identity(identity)}"

    def lease(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}"

    def inbox(self, node_id: str) -> str:
        return f"{self.prefix}:inbox:{node_id}"

    def instance(self, instance: str) -> str:
        return f"{self.prefix}:inst:{instance}"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}:nodes"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"


# -- messages -----------------------------------------------------------------

OutcomeKind = Literal["result", "error", "timeout", "closed", "absent"]


@dataclass(frozen=True)
class Call:
    """A call routed to the node holding `identity`; `timeout` is what was left
    of the caller's deadline when it was sent (seconds)."""

    id: str
    sender: str
    identity: str
    method: str
    params: Any
    timeout: float


@dataclass(frozen=True)
class Reply:
    """The outcome of a `Call`, sent back to the caller's inbox.

    `outcome` is ``result`` (`value`), ``error`` (an OCPP-J CALLERROR: `code`,
    `message`, `details`), ``timeout``, ``closed`` (the charger's connection
    ended: `code`, `message` is the close reason) or ``absent`` (not connected
    to that node: the call was not delivered).
    """

    id: str
    sender: str
    outcome: OutcomeKind
    value: Any = None
    code: str | int | None = None
    message: str = ""
    details: dict[str, Any] | None = None


@dataclass(frozen=True)
class Cancel:
    """The caller gave up on call `id`: the node withdraws it."""

    id: str
    sender: str


@dataclass(frozen=True)
class Replace:
    """Node `by` registered `identity`: close connection `connection_id` here
    (1000 "replaced"). Sent by the registration script itself."""

    identity: str
    connection_id: str
    by: str


@dataclass(frozen=True)
class ClusterEvent:
    """A presence change anywhere in the cluster: `type` ``"connected"`` or
    ``"disconnected"``, the charger's `identity`, the `node_id` holding (or
    that held) it, the agreed `protocol` (or None) and `time` (Unix seconds,
    Redis's clock)."""

    type: Literal["connected", "disconnected"]
    identity: str
    node_id: str
    protocol: str | None
    time: float


Message = Call | Reply | Cancel | Replace | ClusterEvent


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode(message: Call | Reply | Cancel) -> str:
    """The JSON text of a message this node sends (`Replace` and `ClusterEvent` are
    written by the Lua scripts). Raises `TypeError`/`ValueError` if a payload
    is not JSON."""
    if isinstance(message, Call):
        return _dumps(
            {
                "v": VERSION,
                "k": "call",
                "id": message.id,
                "from": message.sender,
                "identity": message.identity,
                "method": message.method,
                "params": message.params,
                "timeout": round(message.timeout, 6),
            }
        )
    if isinstance(message, Reply):
        body: dict[str, Any] = {
            "v": VERSION,
            "k": "reply",
            "id": message.id,
            "from": message.sender,
            "outcome": message.outcome,
        }
        if message.outcome == "result":
            body["value"] = message.value
        elif message.outcome in ("error", "closed"):
            body["code"] = message.code
            body["message"] = message.message
            if message.outcome == "error":
                body["details"] = message.details or {}
        return _dumps(body)
    return _dumps({"v": VERSION, "k": "cancel", "id": message.id, "from": message.sender})


class _Bad(Exception):
    pass


def _str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise _Bad(f"{key!r} is not a string")
    return value


def decode(text: str | bytes) -> Message | None:
    """The message in `text`, or `None` (logged) when it is not one this
    version understands."""
    try:
        body = json.loads(text)
    except ValueError:
        logger.warning("dropping a cluster message that is not JSON: %.200r", text)
        return None
    if not isinstance(body, dict):
        logger.warning("dropping a cluster message that is not an object: %.200r", text)
        return None
    version = body.get("v")
    if version != VERSION:
        logger.warning(
            "dropping a cluster message of unknown version %r (this node speaks %d): %.200r",
            version, VERSION, text,
        )
        return None
    try:
        return _decode(body)
    except _Bad as exc:
        logger.warning("dropping a malformed cluster message (%s): %.200r", exc, text)
        return None


def _decode(body: dict[str, Any]) -> Message:
    kind = body.get("k")
    if kind == "call":
        timeout = body.get("timeout")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise _Bad("'timeout' is not a number")
        return Call(
            id=_str(body, "id"),
            sender=_str(body, "from"),
            identity=_str(body, "identity"),
            method=_str(body, "method"),
            params=body.get("params"),
            timeout=max(0.0, float(timeout)),
        )
    if kind == "reply":
        outcome = body.get("outcome")
        call_id, sender = _str(body, "id"), _str(body, "from")
        if outcome == "result":
            return Reply(call_id, sender, outcome="result", value=body.get("value"))
        if outcome == "error":
            details = body.get("details")
            return Reply(
                call_id,
                sender,
                outcome="error",
                code=_str(body, "code"),
                message=str(body.get("message") or ""),
                details=details if isinstance(details, dict) else {},
            )
        if outcome == "closed":
            code = body.get("code")
            if isinstance(code, bool) or not isinstance(code, int):
                raise _Bad("'code' is not an integer")
            return Reply(
                call_id, sender, outcome="closed", code=code, message=str(body.get("message") or "")
            )
        if outcome in ("timeout", "absent"):
            return Reply(call_id, sender, outcome=outcome)
        raise _Bad(f"unknown outcome {outcome!r}")
    if kind == "cancel":
        return Cancel(id=_str(body, "id"), sender=_str(body, "from"))
    if kind == "replace":
        return Replace(
            identity=_str(body, "identity"), connection_id=_str(body, "conn"), by=_str(body, "by")
        )
    if kind in ("connected", "disconnected"):
        stamp = body.get("ts")
        try:
            if not isinstance(stamp, list) or len(stamp) != 2:
                raise ValueError
            when = int(stamp[0]) + int(stamp[1]) / 1_000_000
        except (TypeError, ValueError):
            raise _Bad("'ts' is not [seconds, microseconds]") from None
        protocol = body.get("proto")
        return ClusterEvent(
            type=kind,
            identity=_str(body, "identity"),
            node_id=_str(body, "node"),
            protocol=protocol if isinstance(protocol, str) and protocol else None,
            time=when,
        )
    raise _Bad(f"unknown kind {kind!r}")
