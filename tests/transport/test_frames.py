"""The framing fast path (`frames`) against wsproto alone, frame by frame, and
the frame boundaries it follows to the peer's Close."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage
from wsproto.frame_protocol import XorMaskerSimple

from ocpp_rpc._transport.frames import Splitter, encode, encode_control, unmask

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def raw_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    mask: bool = True,
    rsv: int = 0,
    wide: int = 0,
) -> bytes:
    """One frame by hand; `wide` 1 or 2 announces the length in 2 or 8 bytes
    even when fewer would do (a protocol violation)."""
    n = len(payload)
    head = bytearray([(0x80 if fin else 0) | rsv << 4 | opcode])
    bit = 0x80 if mask else 0
    if n < 126 and not wide:
        head.append(bit | n)
    elif n < 1 << 16 and wide != 2:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if mask:
        key = os.urandom(4)
        head += key
        payload = unmask(key, payload)
    return bytes(head) + payload


def normalize(items: Iterable[Any], state: dict[str, Any]) -> None:
    """Whole messages, pings, pongs and the first close code, into `state["out"]`
    (wsproto's partial messages joined)."""
    out: list[tuple[str, Any]] = state["out"]
    for item in items:
        if state["closed"]:
            return
        if isinstance(item, (str, bytes)):
            assert not state["parts"], "a whole message in the middle of a fragmented one"
            out.append(("message", item))
        elif isinstance(item, (TextMessage, BytesMessage)):
            state["parts"].append(item.data)
            if item.message_finished:
                parts, state["parts"] = state["parts"], []
                out.append(("message", parts[0][:0].join(parts)))
        elif isinstance(item, Ping):
            out.append(("ping", item.payload))
        elif isinstance(item, Pong):
            out.append(("pong", item.payload))
        elif isinstance(item, CloseConnection):
            out.append(("close", int(item.code)))
            state["closed"] = True
        else:  # pragma: no cover - nothing else is expected
            raise AssertionError(item)


def through_wsproto(client: bool, chunks: list[bytes]) -> list[tuple[str, Any]]:
    conn = Connection(ConnectionType.CLIENT if client else ConnectionType.SERVER)
    state: dict[str, Any] = {"out": [], "parts": [], "closed": False}
    for chunk in chunks:
        if state["closed"]:
            break
        conn.receive_data(chunk)
        normalize(list(conn.events()), state)
    return list(state["out"])


def through_splitter(
    client: bool, chunks: list[bytes], max_size: int
) -> tuple[list[tuple[str, Any]], bool]:
    """What the splitter yields, and whether it still splits at the end."""
    conn = Connection(ConnectionType.CLIENT if client else ConnectionType.SERVER)
    splitter = Splitter(conn, max_size)
    state: dict[str, Any] = {"out": [], "parts": [], "closed": False}
    for chunk in chunks:
        if state["closed"]:
            break
        normalize(splitter.feed(chunk), state)
    return list(state["out"]), not splitter._through


# short payloads, and ones that need a 2-byte length
TEXTS = (st.text(max_size=40) | st.text(min_size=126, max_size=300)).map(str.encode)
BYTES = st.binary(max_size=40) | st.binary(min_size=126, max_size=300)
BAD_UTF8 = st.sampled_from(  # a bad byte, a cut sequence, a surrogate, overlong, > U+10FFFF
    [b"\xff", b"ok \xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"a\xf4\x90\x80\x80"]
)


@st.composite
def frames(draw: st.DrawFn, client: bool) -> bytes:
    """One frame; mostly what a peer sends, sometimes what a hostile one does."""
    mask = not client
    if draw(st.integers(0, 30)) == 0:
        mask = not mask  # the wrong mask bit
    rsv = draw(st.sampled_from([0] * 20 + [1, 2, 4]))
    wide = draw(st.sampled_from([0] * 20 + [1, 2]))
    kind = draw(st.sampled_from(
        ["text"] * 8 + ["binary"] * 3 + ["bad_text", "fragmented", "ping", "pong", "close",
         "stray_continuation", "open_fragment", "unknown", "long_ping", "fragmented_ping"]
    ))

    def one(opcode: int, payload: bytes, fin: bool = True) -> bytes:
        return raw_frame(opcode, payload, fin=fin, mask=mask, rsv=rsv, wide=wide)

    if kind == "text":
        return one(TEXT, draw(TEXTS))
    if kind == "binary":
        return one(BINARY, draw(BYTES))
    if kind == "bad_text":
        return one(TEXT, draw(TEXTS) + draw(BAD_UTF8) + draw(TEXTS))
    if kind == "fragmented":  # text in pieces (cut anywhere, even inside a character),
        body = draw(TEXTS) + draw(st.sampled_from([b"", b"", b"\xff"]))  # pings between
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        out = b""
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            out += one(TEXT if i == 0 else CONT, piece, fin=last)
            if not last and draw(st.booleans()):
                out += one(PING, draw(st.binary(max_size=8)))
        return out
    if kind == "ping":
        return one(PING, draw(st.binary(max_size=125)))
    if kind == "pong":
        return one(PONG, draw(st.binary(max_size=125)))
    if kind == "close":  # 1014 is the one code wsproto refuses and we take: tested apart
        code = draw(st.sampled_from(
            [1000, 1001, 1003, 1012, 1013, 3000, 4999, 1004, 1005, 1016, 2999, 999]
        ))
        return one(CLOSE, struct.pack("!H", code) + draw(st.text(max_size=20)).encode())
    if kind == "stray_continuation":  # ends an open fragmented message, if any
        return one(CONT, draw(BYTES), fin=draw(st.booleans()))
    if kind == "open_fragment":  # a message that the next frames may or may not continue
        return one(draw(st.sampled_from([TEXT, BINARY])), draw(TEXTS), fin=False)
    if kind == "unknown":
        return one(draw(st.sampled_from([3, 4, 5, 6, 7, 11, 12, 13, 14, 15])), draw(BYTES))
    if kind == "long_ping":
        return one(PING, draw(st.binary(min_size=126, max_size=200)))
    return one(PING, draw(st.binary(max_size=10)), fin=False)  # a fragmented control frame


@st.composite
def streams(draw: st.DrawFn) -> tuple[bool, list[bytes], int, bool]:
    """(client side?, the bytes cut in reads, max_size, whether a Close is among them)"""
    client = draw(st.booleans())
    parts = draw(st.lists(frames(client), max_size=8))
    data = b"".join(parts)
    starts = [sum(map(len, parts[:i])) for i in range(len(parts))] or [0]
    near_a_header = st.builds(  # where cuts are the most telling
        lambda start, offset: min(len(data), start + offset),
        st.sampled_from(starts),
        st.integers(0, 15),
    )
    cuts = sorted(draw(st.lists(st.integers(0, len(data)) | near_a_header, max_size=6)))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    max_size = draw(st.sampled_from([1 << 24, 1 << 24, 64, 0]))
    has_close = any(part[0] & 0x0F == CLOSE for part in parts)  # a "close" is one frame
    return client, chunks, max_size, has_close


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_the_splitter_yields_exactly_what_wsproto_alone_does(
    stream: tuple[bool, list[bytes], int, bool],
) -> None:
    client, chunks, max_size, _ = stream
    expected = through_wsproto(client, chunks)
    got, splitting = through_splitter(client, chunks, max_size)
    assert got == expected
    if not any(kind == "close" for kind, _ in expected):
        assert splitting, "a valid stream left the fast path for good"


@pytest.mark.parametrize("client", [False, True])
def test_whole_data_frames_skip_wsproto_and_the_rest_reach_it_in_order(client: bool) -> None:
    mask = not client
    data = (
        raw_frame(TEXT, b"[2,\"1\",\"A\",{}]", mask=mask)
        + raw_frame(PING, b"p", mask=mask)
        + raw_frame(BINARY, b"\x00\x01", mask=mask)
        + raw_frame(TEXT, "é".encode() * 100, mask=mask)
    )
    conn = Connection(ConnectionType.CLIENT if client else ConnectionType.SERVER)
    items: list[str | bytes | Event] = list(Splitter(conn, 1 << 24).feed(data))
    assert items[0] == '[2,"1","A",{}]'
    assert isinstance(items[1], Ping) and items[1].payload == b"p"
    assert items[2:] == [b"\x00\x01", "é" * 100]


def test_a_frame_split_across_reads_goes_through_wsproto_as_it_arrives() -> None:
    data = raw_frame(TEXT, b"x" * 1000)
    splitter = Splitter(Connection(ConnectionType.SERVER), 1 << 24)
    first = list(splitter.feed(data[:500]))
    assert [type(e) for e in first] == [TextMessage]
    assert not first[0].message_finished  # type: ignore[union-attr]
    rest = list(splitter.feed(data[500:] + raw_frame(TEXT, b"next")))
    assert isinstance(rest[0], TextMessage) and rest[0].message_finished
    assert rest[1:] == ["next"]  # the boundary is found again: back on the fast path


def test_bad_utf8_in_a_whole_frame_closes_1007_after_the_messages_before_it() -> None:
    data = raw_frame(TEXT, b"ok") + raw_frame(TEXT, b"\xff") + raw_frame(TEXT, b"never")
    items = list(Splitter(Connection(ConnectionType.SERVER), 1 << 24).feed(data))
    assert items[0] == "ok"
    assert isinstance(items[1], CloseConnection) and items[1].code == 1007
    assert "utf-8" in (items[1].reason or "") and len(items) == 2


def test_a_frame_over_max_size_is_left_to_wsproto_in_pieces() -> None:
    """The connection sees partial messages and applies its 1009 check to them."""
    items = list(Splitter(Connection(ConnectionType.SERVER), 10).feed(raw_frame(TEXT, b"x" * 11)))
    assert [type(e) for e in items] == [TextMessage]


@settings(max_examples=300)
@given(st.lists(st.one_of(st.text(max_size=70_000), st.binary(max_size=70_000)), max_size=4),
       st.booleans())
def test_encode_gives_frames_wsproto_reads_back(messages: list[str | bytes], mask: bool) -> None:
    # a client masks what it sends; the server reading it wants masked frames
    reader = Connection(ConnectionType.SERVER if mask else ConnectionType.CLIENT)
    reader.receive_data(encode(messages, mask=mask))
    got = [e.data for e in reader.events() if isinstance(e, (TextMessage, BytesMessage))]
    assert got == messages


@pytest.mark.parametrize("text", [False, True])
@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536])
def test_encode_uses_the_minimal_length_form(size: int, text: bool) -> None:
    # one text message unmasked (a server's answer) has a path of its own
    data: str | bytes = "é" * (size // 2) + "x" * (size % 2) if text else b"x" * size
    event = TextMessage(data=data) if isinstance(data, str) else BytesMessage(data=data)
    expected = Connection(ConnectionType.SERVER).send(event)
    assert encode([data], mask=False) == expected


@given(st.binary(min_size=4, max_size=4), st.binary(max_size=5000))
def test_unmask_matches_wsprotos_masker(key: bytes, payload: bytes) -> None:
    assert unmask(key, payload) == bytes(XorMaskerSimple(key).process(bytearray(payload)))


@pytest.mark.parametrize("client", [False, True])
@pytest.mark.parametrize("size", [0, 5, 125, 126, 300, 65535, 65536])
def test_a_frame_cut_at_every_byte_of_its_header_still_splits(client: bool, size: int) -> None:
    data = raw_frame(BINARY, b"x" * size, mask=not client) + raw_frame(TEXT, b"next",
                                                                       mask=not client)
    header = len(data) - size - len(raw_frame(TEXT, b"next", mask=not client))
    for cut in range(1, header + 1):
        splitter = Splitter(Connection(ConnectionType.CLIENT if client else ConnectionType.SERVER),
                            1 << 24)
        state: dict[str, Any] = {"out": [], "parts": [], "closed": False}
        normalize(splitter.feed(data[:cut]), state)
        normalize(splitter.feed(data[cut:]), state)
        assert state["out"] == [("message", b"x" * size), ("message", "next")], cut
        assert not splitter._through, cut


def test_events_from_a_close_on_are_taken_lazily() -> None:
    """wsproto is still open while the messages before a Close are taken."""
    conn = Connection(ConnectionType.SERVER)
    close = raw_frame(CLOSE, struct.pack("!H", 1000))
    items = iter(Splitter(conn, 1 << 24).feed(raw_frame(TEXT, b"call") + close))
    assert next(items) == "call"
    from wsproto.connection import ConnectionState

    assert conn.state is ConnectionState.OPEN  # a reply can still be sent
    assert isinstance(next(items), CloseConnection)
    assert conn.state in (ConnectionState.REMOTE_CLOSING,)  # once its Close is taken


def test_encode_refuses_what_is_neither_text_nor_bytes() -> None:
    with pytest.raises(TypeError):
        encode([5], mask=False)  # type: ignore[list-item]


def test_a_bytearray_read_yields_bytes_messages() -> None:
    splitter = Splitter(Connection(ConnectionType.SERVER), 1 << 24)
    items = list(splitter.feed(bytearray(raw_frame(BINARY, b"\x01\x02"))))
    assert items == [b"\x01\x02"] and type(items[0]) is bytes


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.sampled_from(["feed", "discard", "feed-then-discard"]))
def test_the_peers_close_is_noticed_however_the_bytes_were_taken(
    stream: tuple[bool, list[bytes], int, bool], how: str
) -> None:
    """Fed, dropped after a failure, or both: frame boundaries are followed to
    the end, so `close_received` tells whether a whole Close came."""
    client, chunks, max_size, has_close = stream
    splitter = Splitter(Connection(ConnectionType.CLIENT if client else ConnectionType.SERVER),
                        max_size)
    failed = how == "discard"
    for chunk in chunks:
        if failed:
            splitter.discard(chunk)
            continue
        for item in splitter.feed(chunk):
            if isinstance(item, CloseConnection) and how == "feed-then-discard":
                failed = True  # the connection fails here: the rest is dropped
                break
    assert splitter.close_received == has_close


@pytest.mark.parametrize("client", [False, True])
@pytest.mark.parametrize("code", [1012, 1013, 1014, 3000, 4999])
def test_a_close_with_any_code_our_rule_allows_keeps_its_code(client: bool, code: int) -> None:
    """wsproto fails a Close whose code it does not know (1014) with 1002; the
    splitter hands it the Close with a code it knows and puts ours back, also
    when the Close comes a byte at a time."""
    data = raw_frame(TEXT, b"before", mask=not client) + raw_frame(
        CLOSE, struct.pack("!H", code) + "bye é".encode(), mask=not client
    )
    for cut in range(len(data) + 1):
        conn = Connection(ConnectionType.CLIENT if client else ConnectionType.SERVER)
        splitter = Splitter(conn, 1 << 24)
        items = [*splitter.feed(data[:cut]), *splitter.feed(data[cut:])]
        text = "".join(item if isinstance(item, str) else item.data
                       for item in items if isinstance(item, (str, TextMessage)))
        closes = [item for item in items if isinstance(item, CloseConnection)]
        assert text == "before" and len(closes) == 1, cut
        assert (closes[0].code, closes[0].reason) == (code, "bye é"), cut
        assert splitter.close_received


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 1016, 2999, 5000])
def test_a_close_with_a_code_our_rule_refuses_is_a_protocol_error(code: int) -> None:
    splitter = Splitter(Connection(ConnectionType.SERVER), 1 << 24)
    items = list(splitter.feed(raw_frame(CLOSE, struct.pack("!H", code))))
    assert len(items) == 1 and isinstance(items[0], CloseConnection)
    assert items[0].code == 1002


def test_discard_follows_a_long_frame_to_the_close_after_it() -> None:
    splitter = Splitter(Connection(ConnectionType.SERVER), 100)
    big = raw_frame(BINARY, b"x" * 70_000) + raw_frame(CLOSE, struct.pack("!H", 1000))
    list(splitter.feed(big[:1000]))  # the frame is over max_size: wsproto reads it in pieces
    for start in range(1000, len(big), 4096):
        assert not splitter.close_received
        splitter.discard(big[start : start + 4096])
    assert splitter.close_received


# -- Pings and Pongs on the fast path; wsproto made only when needed ------------


def test_a_lazy_splitter_starts_without_wsproto() -> None:
    assert Splitter(ConnectionType.SERVER, 1 << 24)._conn is None


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_a_splitter_that_makes_wsproto_itself_yields_what_wsproto_alone_does(
    stream: tuple[bool, list[bytes], int, bool],
) -> None:
    """Also: whenever it holds a wsproto connection, that one is needed (a
    frame or fragmented message is under way, or wsproto has the rest)."""
    client, chunks, max_size, _ = stream
    splitter = Splitter(ConnectionType.CLIENT if client else ConnectionType.SERVER, max_size)
    state: dict[str, Any] = {"out": [], "parts": [], "closed": False}
    for chunk in chunks:
        if state["closed"]:
            break
        normalize(splitter.feed(chunk), state)
        if splitter._conn is not None:
            assert splitter._through or splitter._owed or splitter._fragmented
    assert state["out"] == through_wsproto(client, chunks)


@st.composite
def everyday_streams(draw: st.DrawFn) -> tuple[bool, list[bytes], bool]:
    """(client side?, whole data frames, Pings and Pongs cut in reads, whether
    a cut falls inside a data frame)"""
    client = draw(st.booleans())
    kinds = st.sampled_from([(TEXT, TEXTS), (BINARY, BYTES), (PING, st.binary(max_size=125)),
                             (PONG, st.binary(max_size=125))])
    parts = [
        raw_frame(opcode, draw(payloads), mask=not client)
        for opcode, payloads in draw(st.lists(kinds, max_size=10))
    ]
    data = b"".join(parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    spans, start = [], 0
    for part in parts:
        if part[0] & 0x0F in (TEXT, BINARY):
            spans.append((start, start + len(part)))
        start += len(part)
    data_cut = any(a < cut < b for a, b in spans for cut in cuts)
    return client, chunks, data_cut


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(everyday_streams())
def test_data_pings_and_pongs_cut_anywhere_leave_no_wsproto(
    stream: tuple[bool, list[bytes], bool],
) -> None:
    """A Ping or Pong cut across reads is waited for whole; wsproto is made
    only for a data frame cut across reads, and dropped at its end."""
    client, chunks, data_cut = stream
    splitter = Splitter(ConnectionType.CLIENT if client else ConnectionType.SERVER, 1 << 24)
    state: dict[str, Any] = {"out": [], "parts": [], "closed": False}
    for chunk in chunks:
        normalize(splitter.feed(chunk), state)
        assert data_cut or splitter._conn is None
    assert state["out"] == through_wsproto(client, chunks)
    assert splitter._conn is None and not splitter._through


@pytest.mark.parametrize("client", [False, True])
def test_pings_and_pongs_are_events_without_wsproto(client: bool) -> None:
    mask = not client
    data = (
        raw_frame(PING, b"", mask=mask)
        + raw_frame(TEXT, b"call", mask=mask)
        + raw_frame(PONG, b"x" * 125, mask=mask)
        + raw_frame(PING, bytes(range(125)), mask=mask)
    )
    splitter = Splitter(ConnectionType.CLIENT if client else ConnectionType.SERVER, 1 << 24)
    items = list(splitter.feed(data[:-60])) + list(splitter.feed(data[-60:]))
    assert items == [Ping(b""), "call", Pong(b"x" * 125), Ping(bytes(range(125)))]
    assert all(type(item.payload) is bytes for item in items if isinstance(item, (Ping, Pong)))
    assert splitter._conn is None


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(raw_frame(PING, b"x" * 126), id="ping-126"),
        pytest.param(raw_frame(PONG, b"x" * 126), id="pong-126"),
        pytest.param(raw_frame(PING, b"p", fin=False), id="fragmented-ping"),
        pytest.param(raw_frame(PONG, b"p", rsv=1), id="pong-rsv1"),
        pytest.param(raw_frame(PING, b"p", mask=False), id="unmasked-ping"),
        pytest.param(raw_frame(PING, b"p", wide=1), id="ping-long-length-form"),
    ],
)
def test_a_bad_control_frame_makes_wsproto_which_fails_it_with_1002(bad: bytes) -> None:
    splitter = Splitter(ConnectionType.SERVER, 1 << 24)
    items = list(splitter.feed(raw_frame(PING, b"ok") + bad + raw_frame(TEXT, b"never")))
    assert items[0] == Ping(b"ok")
    assert isinstance(items[1], CloseConnection) and items[1].code == 1002
    assert len(items) == 2 and splitter._conn is not None


def test_a_fragmented_message_makes_wsproto_until_its_end_pings_between_stay_ours() -> None:
    splitter = Splitter(ConnectionType.SERVER, 1 << 24)
    first = list(splitter.feed(raw_frame(TEXT, b"he", fin=False) + raw_frame(PING, b"1")))
    assert [type(item) for item in first] == [TextMessage, Ping]
    assert splitter._conn is not None  # wsproto has the message under way
    rest = list(splitter.feed(raw_frame(CONT, b"llo") + raw_frame(TEXT, b"next")))
    assert isinstance(rest[0], TextMessage) and rest[0].message_finished
    assert rest[1:] == ["next"] and splitter._conn is None


@settings(max_examples=300)
@given(st.binary(max_size=125), st.sampled_from([Ping, Pong]))
def test_encode_control_gives_the_frame_wsproto_sends(payload: bytes, kind: type) -> None:
    event = kind(payload)
    assert encode_control(event, mask=False) == Connection(ConnectionType.SERVER).send(event)
    reader = Connection(ConnectionType.SERVER)  # a client's masked frame, read by a server
    reader.receive_data(encode_control(event, mask=True))
    assert list(reader.events()) == [event]


def test_encode_control_refuses_a_payload_over_125_bytes_as_wsproto_does() -> None:
    with pytest.raises(ValueError, match="payload too long for control frame"):
        Connection(ConnectionType.SERVER).send(Ping(b"x" * 126))
    with pytest.raises(ValueError, match="payload too long for control frame"):
        encode_control(Ping(b"x" * 126), mask=True)
