"""The server's answers to an upgrade, built directly as bytes, are byte for
byte what the general serializer (the first implementation, kept here as the
oracle) writes; the key check's fast path agrees with base64's."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from http import HTTPStatus

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from wsproto.utilities import generate_accept_token

from ocpp_rpc._transport.upgrade import _http_response, _valid_key, accept_response


def oracle_response(
    status: int, headers: Sequence[tuple[str, str]], body: bytes | None = None
) -> bytes:
    try:
        lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
    except ValueError:
        lines = [f"HTTP/1.1 {status} Unknown"]
    for name, value in headers:
        if not name or any(c in name + value for c in "\r\n\0") or ":" in name:
            raise ValueError(f"invalid HTTP header {name!r}: {value!r}")
        lines.append(f"{name}: {value}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def oracle_accept(key: str, subprotocol: str | None, extra: Sequence[tuple[str, str]]) -> bytes:
    accept = generate_accept_token(key.encode("ascii")).decode("ascii")
    headers = [
        ("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept)
    ]
    if subprotocol is not None:
        headers.append(("Sec-WebSocket-Protocol", subprotocol))
    return oracle_response(101, [*headers, *extra])


def outcome(build: Callable[..., bytes], *args: object) -> bytes | type[Exception]:
    try:
        return build(*args)
    except ValueError as exc:  # UnicodeEncodeError included
        return type(exc)


TEXT = st.one_of(
    st.sampled_from(["ocpp1.6", "ocpp2.0.1", "", "a b", "x:y", "caf\xe9"]),
    st.text(st.sampled_from("ab \t:\r\n\x00\xe9\u20ac"), max_size=6),
)
HEADERS = st.lists(st.tuples(TEXT, TEXT), max_size=3)
KEYS = st.binary(min_size=16, max_size=16).map(lambda raw: base64.b64encode(raw).decode())


@given(KEYS, st.none() | TEXT, HEADERS)
@example("dGhlIHNhbXBsZSBub25jZQ==", None, [])
@example("dGhlIHNhbXBsZSBub25jZQ==", "ocpp1.6", [])
def test_the_101_is_what_the_general_serializer_writes(
    key: str, subprotocol: str | None, extra: list[tuple[str, str]]
) -> None:
    assert outcome(accept_response, key, subprotocol, extra) == outcome(
        oracle_accept, key, subprotocol, extra
    )


def test_the_101_of_rfc_6455() -> None:
    assert accept_response("dGhlIHNhbXBsZSBub25jZQ==", "ocpp1.6") == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"Sec-WebSocket-Protocol: ocpp1.6\r\n\r\n"
    )


@given(st.sampled_from([101, 200, 400, 404, 408, 431, 500, 503, 299, 599]), HEADERS,
       st.none() | st.binary(max_size=8))
def test_any_response_is_what_the_general_serializer_writes(
    status: int, headers: list[tuple[str, str]], body: bytes | None
) -> None:
    assert outcome(_http_response, status, headers, body) == outcome(
        oracle_response, status, headers, body
    )


@given(st.one_of(
    KEYS,
    st.text(st.sampled_from("AQgw+/=aZ09 \t.-_"), max_size=26),
    st.text(max_size=26),
))
@example("dGhlIHNhbXBsZSBub25jZQ=")
@example("dGhlIHNhbXBsZSBub25jZR==")
@example("")
def test_the_key_check_agrees_with_base64(key: str) -> None:
    try:
        expected = len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        expected = False
    assert _valid_key(key) is expected


@pytest.mark.parametrize("subprotocol", ["bad\r\nX-Injected: 1", "nul\0"])
def test_a_subprotocol_that_would_break_the_head_is_refused(subprotocol: str) -> None:
    with pytest.raises(ValueError, match="invalid HTTP header"):
        accept_response("dGhlIHNhbXBsZSBub25jZQ==", subprotocol)
