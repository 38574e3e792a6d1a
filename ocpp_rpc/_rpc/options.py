"""Options of clients and servers (`Options`, changed by `reconfigure()`), and
the frozen part of them one connection reads (`ConnectionConfig`)."""

from __future__ import annotations

import math
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .._wire.validation import Validator, resolve_validators
from .reconnect import DEFAULT_BACKOFF, Backoff

#: Default maximum inbound message size in bytes (larger ones close with 1009).
DEFAULT_MAX_MESSAGE_SIZE = 2**24  # 16 MiB, a comfortable ceiling for OCPP payloads
#: Default bound on inbound calls (CALL and SEND) being handled at once.
DEFAULT_MAX_INBOUND_CALLS = 100
#: Default seconds one outbound frame may take to be written before the peer is dropped.
DEFAULT_WRITE_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class ConnectionConfig:
    """What one connection reads of its owner's options, fixed for the agreed
    subprotocol. A live connection gets a new one on `reconfigure()`."""

    protocol: str | None = None
    max_bad_messages: float = math.inf
    max_inbound_calls: float = DEFAULT_MAX_INBOUND_CALLS
    defer_pings_on_activity: bool = False
    ping_interval: float | None = 30.0
    write_timeout: float | None = DEFAULT_WRITE_TIMEOUT
    respond_with_detailed_errors: bool = False
    #: Strict mode: the validator of the agreed subprotocol, if it is validated.
    validator: Validator | None = None


@dataclass(slots=True)
class Options:
    """Options shared by clients and servers; `reconfigure()` changes them."""

    protocols: tuple[str, ...] = ()
    call_timeout: float = 60.0
    ping_interval: float | None = 30.0
    defer_pings_on_activity: bool = False
    call_concurrency: int = 1
    respond_with_detailed_errors: bool = False
    max_bad_messages: float = math.inf
    strict_mode: bool | tuple[str, ...] = False
    strict_mode_validators: tuple[Validator, ...] = ()
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_inbound_calls: float = DEFAULT_MAX_INBOUND_CALLS
    write_timeout: float | None = DEFAULT_WRITE_TIMEOUT
    # client only
    password: str | bytes | None = None
    headers: Mapping[str, str] | None = None
    query: Mapping[str, str] | None = None
    ssl_context: ssl.SSLContext | None = None
    reconnect: bool = True
    max_reconnects: float = math.inf
    backoff: Backoff = DEFAULT_BACKOFF
    #: subprotocol -> its validator, for the subprotocols validated strictly (derived)
    validators: dict[str, Validator] = field(default_factory=dict, init=False, repr=False)
    #: protocol -> its connection config, made once: every connection of an owner
    #: (all of a server's clients) holds the same object. Per owner, not global,
    #: so that nothing outlives the clients that use it.
    _configs: dict[str | None, ConnectionConfig] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self.protocols = tuple(self.protocols)
        if not isinstance(self.strict_mode, bool):
            self.strict_mode = tuple(self.strict_mode)
        if self.call_concurrency < 1:
            raise ValueError("call_concurrency must be at least 1")
        if self.call_timeout <= 0:
            raise ValueError("call_timeout must be positive")
        if self.max_message_size < 1:
            raise ValueError("max_message_size must be positive")
        if self.max_bad_messages < 0 or self.max_reconnects < 0:
            raise ValueError("max_bad_messages and max_reconnects must not be negative")
        if not self.max_inbound_calls >= 1:
            raise ValueError("max_inbound_calls must be at least 1")
        if self.write_timeout is not None and not self.write_timeout > 0:
            raise ValueError("write_timeout must be positive (or None: no limit)")
        self.strict_mode_validators = tuple(self.strict_mode_validators)
        self.validators = resolve_validators(
            self.strict_mode, self.protocols, self.strict_mode_validators
        )

    def updated(self, changes: Mapping[str, Any]) -> Options:
        """A validated copy with `changes` applied; unknown names raise TypeError."""
        known = {f.name for f in fields(self) if f.init}
        unknown = set(changes) - known
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        return replace(self, **changes)

    def connection_config(self, protocol: str | None) -> ConnectionConfig:
        """The config of a connection that agreed on `protocol` (equal configs
        are one object: every idle connection holds one)."""
        config = self._configs.get(protocol)
        if config is not None:
            return config
        config = self._configs[protocol] = ConnectionConfig(
            protocol=protocol,
            max_bad_messages=self.max_bad_messages,
            max_inbound_calls=self.max_inbound_calls,
            defer_pings_on_activity=self.defer_pings_on_activity,
            ping_interval=self.ping_interval,
            write_timeout=self.write_timeout,
            respond_with_detailed_errors=self.respond_with_detailed_errors,
            validator=None if protocol is None else self.validators.get(protocol),
        )
        return config
