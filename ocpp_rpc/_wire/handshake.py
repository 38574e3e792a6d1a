"""What the server knows of a client asking to connect (`Handshake`), the auth
hook's answers (`Accept`, `Reject`), and building a Handshake from the parts of
any upgrade request: our own HTTP/1.1 reader, an ASGI scope, a trio-websocket
request."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, unquote

_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_BASIC = re.compile(r"^\s*basic\s+([A-Za-z0-9+/._~-]+=*)\s*$", re.IGNORECASE)


class Headers(Mapping[str, str]):
    """Request headers, looked up case-insensitively; repeated ones joined with ", "."""

    __slots__ = ("_items", "_map")

    def __init__(self, items: Sequence[tuple[str, str]]) -> None:
        self._items = tuple(items)
        merged: dict[str, str] = {}
        for name, value in self._items:
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        self._map = merged

    def __getitem__(self, name: str) -> str:
        return self._map[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._map

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def raw_items(self) -> tuple[tuple[str, str], ...]:
        """Every header line as received (lower-cased names), repeats included."""
        return self._items

    def __repr__(self) -> str:
        return f"Headers({self._map!r})"


@dataclass(frozen=True, slots=True)
class Handshake:
    """What the server knows of a client asking to connect (the auth hook's input).

    `password` is the password of an HTTP Basic ``Authorization`` header whose
    user is the identity (bytes as sent: any octets, colons included), else None.
    `peer_certificate` is the verified TLS client certificate as
    `ssl.SSLSocket.getpeercert()` returns it, `peer_certificate_der` the same
    certificate DER-encoded; both None without TLS or without a client
    certificate (servers behind ASGI may only provide the DER form).
    """

    identity: str
    endpoint: str
    protocols: tuple[str, ...]
    remote_address: tuple[str, int] | None
    headers: Headers
    query: Mapping[str, str]
    password: bytes | None
    peer_certificate: dict[str, Any] | None = None
    peer_certificate_der: bytes | None = None


@dataclass(frozen=True, slots=True)
class Accept:
    """Accept the client; `session` is kept on `ServerClient.session`, `protocol`
    (one the client offered) overrides the server's choice."""

    session: Any = None
    protocol: str | None = None


class Reject(Exception):
    """Raise from the auth hook to refuse the upgrade with an HTTP `status`."""

    def __init__(self, status: int = 400, message: str = "") -> None:
        if not 400 <= status <= 599:
            raise ValueError("Reject needs an HTTP error status (400-599)")
        super().__init__(status, message)
        self.status = status
        self.message = message


def make_handshake(
    *,
    path: str,
    query_string: str,
    headers: Sequence[tuple[str, str]],
    protocols: Sequence[str],
    remote_address: tuple[str, int] | None,
    peer_certificate: dict[str, Any] | None = None,
    peer_certificate_der: bytes | None = None,
) -> Handshake:
    """The Handshake of an upgrade request for `path` (still percent-encoded).

    ValueError for a missing or malformed identity (the last path segment).
    """
    endpoint, _, raw_identity = path.rpartition("/")
    identity = decode_identity(raw_identity)
    header_map = Headers(headers)
    return Handshake(
        identity=identity,
        endpoint=endpoint or "/",
        protocols=tuple(protocols),
        remote_address=remote_address,
        headers=header_map,
        query=MappingProxyType(dict(parse_qsl(query_string, keep_blank_values=True))),
        password=basic_auth_password(header_map.get("authorization"), identity),
        peer_certificate=peer_certificate or None,
        peer_certificate_der=peer_certificate_der or None,
    )


def decode_identity(raw_identity: str) -> str:
    """Percent-decode one path segment into an identity; ValueError if malformed."""
    if not raw_identity:
        raise ValueError("missing identity (the last path segment)")
    if _BAD_PERCENT.search(raw_identity):
        raise ValueError("malformed percent-encoding in the identity")
    try:
        identity = unquote(raw_identity, errors="strict")
    except UnicodeDecodeError:
        raise ValueError("the identity is not UTF-8") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in identity):
        raise ValueError("control characters in the identity")
    return identity


def basic_auth_password(authorization: str | None, identity: str) -> bytes | None:
    """The password of a Basic ``Authorization`` value whose user is `identity`.

    The credentials are split after ``identity + ":"`` rather than at the first
    colon, so identities and passwords may both contain colons; the password
    is returned as the raw octets sent (OCPP 2.0.1 passwords are arbitrary bytes).
    """
    if not authorization:
        return None
    match = _BASIC.match(authorization)
    if match is None:
        return None
    try:
        credentials = base64.b64decode(match.group(1), validate=False)
    except (binascii.Error, ValueError):
        return None
    prefix = identity.encode("utf-8") + b":"
    if not credentials.startswith(prefix):
        return None
    return credentials[len(prefix):]
