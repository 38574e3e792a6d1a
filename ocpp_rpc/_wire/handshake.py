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
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote

_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_T = TypeVar("_T")
_BASIC = re.compile(r"^\s*basic\s+([A-Za-z0-9+/._~-]+=*)\s*$", re.IGNORECASE)


class Headers(Mapping[str, str]):
    """Request headers, looked up case-insensitively; repeated ones joined with ", "."""

    # A connection keeps its Handshake, so this keeps one compact form: the
    # items (or the reader's raw header block, split on first use) and the
    # merged map only once something is looked up.
    __slots__ = ("_items", "_map")

    _items: tuple[tuple[str, str], ...] | bytes
    _map: dict[str, str] | None

    def __init__(self, items: Sequence[tuple[str, str]]) -> None:
        self._items = tuple(items)
        self._map = None

    def raw_items(self) -> tuple[tuple[str, str], ...]:
        """Every header line as received (lower-cased names), repeats included."""
        items = self._items
        if isinstance(items, bytes):
            items = self._items = header_block_items(items)
        return items

    def _merged(self) -> dict[str, str]:
        merged = self._map
        if merged is None:
            merged = self._map = {}
            for name, value in self.raw_items():
                key = name.lower()
                merged[key] = f"{merged[key]}, {value}" if key in merged else value
        return merged

    def _peek(self, name: str) -> str | None:
        """``self.get(name)`` for a lower-case ASCII `name`, without building
        the map: for the server's own look-ups, which a connection need not pay
        for in memory."""
        if self._map is not None:
            return self._map.get(name)
        items = self._items
        if isinstance(items, bytes):
            if name.encode("ascii") not in items.lower():
                return None
            items = header_block_items(items)
        values = [value for key, value in items if key.lower() == name]
        return ", ".join(values) if values else None

    def __getitem__(self, name: str) -> str:
        return self._merged()[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._merged()

    def __iter__(self) -> Iterator[str]:
        return iter(self._merged())

    def __len__(self) -> int:
        return len(self._merged())

    def __repr__(self) -> str:
        return f"Headers({self._merged()!r})"


def headers_from_block(block: bytes) -> Headers:
    """Headers of a raw header block: ``name:value`` lines joined by CRLF, each
    a token name and a visible-ASCII value (OWS around it allowed), as the
    server's request reader has already checked. Split on the first look-up."""
    headers = Headers.__new__(Headers)
    headers._items = block
    headers._map = None
    return headers


def header_block_items(block: bytes) -> tuple[tuple[str, str], ...]:
    """The (lower-cased name, value) items of a header block `headers_from_block` takes."""
    if not block:
        return ()
    items = []
    for line in block.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        items.append((name.lower(), value.strip(" \t")))
    return tuple(items)


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
    headers: Sequence[tuple[str, str]] | Headers,
    protocols: Sequence[str],
    remote_address: tuple[str, int] | None,
    peer_certificate: dict[str, Any] | None = None,
    peer_certificate_der: bytes | None = None,
) -> Handshake:
    """The Handshake of an upgrade request for `path` (still percent-encoded).

    `headers` are (name, value) pairs, or a `Headers` the Handshake then keeps
    as is. ValueError for a missing or malformed identity (the last path segment).
    """
    endpoint, _, raw_identity = path.rpartition("/")
    identity = decode_identity(raw_identity)
    header_map = headers if isinstance(headers, Headers) else Headers(headers)
    endpoint = endpoint or "/"
    if len(endpoint) <= _SHARED_SIZE:
        endpoint = _shared(_ENDPOINTS, endpoint)
    offered = tuple(protocols)
    if sum(map(len, offered)) <= _SHARED_SIZE:
        offered = _shared(_PROTOCOLS, offered)
    return Handshake(
        identity=identity,
        endpoint=endpoint,
        protocols=offered,
        remote_address=remote_address,
        headers=header_map,
        query=(
            MappingProxyType(dict(parse_qsl(query_string, keep_blank_values=True)))
            if query_string
            else _NO_QUERY
        ),
        password=basic_auth_password(header_map._peek("authorization"), identity),
        peer_certificate=peer_certificate or None,
        peer_certificate_der=peer_certificate_der or None,
    )


_NO_QUERY: Mapping[str, str] = MappingProxyType({})
# Most connections offer the same protocols on the same endpoint: their
# Handshakes share one copy of each (short ones, a bounded number of them).
_ENDPOINTS: dict[str, str] = {}
_PROTOCOLS: dict[tuple[str, ...], tuple[str, ...]] = {}
_SHARED_SIZE = 64
_SHARED_MAX = 64


def _shared(cache: dict[_T, _T], value: _T) -> _T:
    """`value`, or an equal one `cache` already holds (it holds at most `_SHARED_MAX`)."""
    shared = cache.get(value)
    if shared is None:
        if len(cache) >= _SHARED_MAX:
            cache.clear()
        shared = cache[value] = value
    return shared


def decode_identity(raw_identity: str) -> str:
    """Percent-decode one path segment into an identity; ValueError if malformed."""
    # Nearly every identity is printable ASCII without escapes: itself.
    plain = "%" not in raw_identity and raw_identity.isascii() and raw_identity.isprintable()
    return raw_identity if plain and raw_identity else _decode_identity(raw_identity)


def _decode_identity(raw_identity: str) -> str:
    """`decode_identity` for any segment (the fast path's oracle in the tests)."""
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
