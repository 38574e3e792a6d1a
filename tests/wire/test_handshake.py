"""Building a Handshake: `Headers` read the same from items or from the
reader's raw header block (and build their map only when looked up), and the
identity fast path decodes exactly as the general one."""

from __future__ import annotations

import base64

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ocpp_rpc._wire.handshake import (
    Headers,
    _decode_identity,
    decode_identity,
    header_block_items,
    headers_from_block,
    make_handshake,
)

NAMES = st.sampled_from(["Host", "host", "HOST", "Authorization", "X-Vendor", "x-vendor", "Via"])
VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=8)
ITEMS = st.lists(st.tuples(NAMES, VALUES), max_size=8)


def merged(items: list[tuple[str, str]]) -> dict[str, str]:
    """What a Headers must read as: names lower-cased, repeats joined with ", "."""
    values: dict[str, list[str]] = {}
    for name, value in items:
        values.setdefault(name.lower(), []).append(value)
    return {name: ", ".join(each) for name, each in values.items()}


def check_reads_as(headers: Headers, items: list[tuple[str, str]]) -> None:
    expected = merged(items)
    for name in ("authorization", "host", "x-vendor", "via", "missing"):
        assert headers._peek(name) == expected.get(name)
    assert headers._map is None  # _peek leaves the map unbuilt
    assert dict(headers) == expected and list(headers) == list(expected)
    assert len(headers) == len(expected)
    for name, value in expected.items():
        assert headers[name.upper()] == value and name.title() in headers
    assert "missing" not in headers and object() not in headers
    assert repr(headers) == f"Headers({expected!r})"
    with pytest.raises(KeyError):
        headers["missing"]


@given(ITEMS)
def test_headers_read_their_items(items: list[tuple[str, str]]) -> None:
    headers = Headers(items)
    assert headers.raw_items() == tuple(items)
    check_reads_as(headers, items)
    assert headers.raw_items() == tuple(items)


@given(ITEMS, st.lists(st.sampled_from(["", " ", "\t", " \t "]), min_size=16, max_size=16))
@example([("Host", "h")], [""] * 16)
def test_a_header_block_reads_as_its_items(items: list[tuple[str, str]], spaces: list[str]) -> None:
    # OWS around values is not part of them; values never start or end with it.
    items = [(name, value.strip(" ")) for name, value in items]
    lines = [
        f"{name}:{spaces[2 * i]}{value}{spaces[2 * i + 1]}" for i, (name, value) in enumerate(items)
    ]
    block = "\r\n".join(lines).encode("ascii")
    lowered = tuple((name.lower(), value) for name, value in items)
    assert header_block_items(block) == lowered
    headers = headers_from_block(block)
    check_reads_as(headers, items)
    assert headers.raw_items() == lowered
    assert headers == Headers(items)


def test_a_handshake_keeps_the_block_and_builds_no_map() -> None:
    password = base64.b64encode(b"CP1:pw").decode()
    block = f"Host: h\r\nAuthorization: Basic {password}\r\nX-A: 1".encode()
    headers = headers_from_block(block)
    handshake = make_handshake(
        path="/ocpp/CP1", query_string="", headers=headers, protocols=["ocpp1.6"],
        remote_address=None,
    )
    assert handshake.headers is headers and headers._items is block and headers._map is None
    assert handshake.password == b"pw" and handshake.query == {}
    assert handshake.headers["x-a"] == "1"
    assert headers.raw_items() == (("host", "h"), ("authorization", f"Basic {password}"),
                                   ("x-a", "1"))


def test_connections_share_their_endpoint_and_protocols() -> None:
    def handshake(path: str, protocols: list[str]) -> tuple[str, tuple[str, ...]]:
        made = make_handshake(path=path, query_string="a=1", headers=[], protocols=protocols,
                              remote_address=None)
        return made.endpoint, made.protocols

    first = handshake("/ocpp/" + "CP1", ["ocpp1.6", "ocpp2.0.1"])
    second = handshake("".join(["/oc", "pp/CP2"]), ["ocpp1.6", "".join(["ocpp2", ".0.1"])])
    assert first == ("/ocpp", ("ocpp1.6", "ocpp2.0.1")) and first == second
    assert first[0] is second[0] and first[1] is second[1]
    assert handshake("CP3", []) == ("/", ())


SEGMENTS = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12),
    st.text(max_size=12),
    st.lists(st.sampled_from(["CP", "%2F", "%", "%4", "%zz", "%C3%A9", "%FF", "%00", "\x7f",
                              "\x1f", "é", " ", ":"]), max_size=5).map("".join),
)


@given(SEGMENTS)
@example("")
@example("CP_000123")
@example("%")
def test_the_identity_fast_path_decodes_as_the_general_one(raw: str) -> None:
    try:
        general: str | ValueError = _decode_identity(raw)
    except ValueError as exc:
        general = exc
    if isinstance(general, ValueError):
        with pytest.raises(ValueError) as raised:
            decode_identity(raw)
        assert str(raised.value) == str(general)
    else:
        assert decode_identity(raw) == general
