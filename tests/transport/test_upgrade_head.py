"""The plain-head fast path of the upgrade reader (`upgrade._simple_head`)
accepts only requests h11 accepts, and reads them exactly as h11 does: the
header block it keeps reads as h11's headers."""

from __future__ import annotations

import h11
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ocpp_rpc._transport.upgrade import _simple_head
from ocpp_rpc._wire.handshake import header_block_items, headers_from_block

# Mostly what a real client sends, so that both paths see plenty of each other.
METHODS = st.sampled_from([b"GET"] * 6 + [b"POST", b"get", b"G@T", b""])
TARGETS = st.sampled_from(
    [b"/", b"/ocpp/CP1?x=1&y=%20", b"/a b", b"/\x80x", b"*", b"http://h/p", b"/\x00"]
)
VERSIONS = st.sampled_from([b"HTTP/1.1"] * 6 + [b"HTTP/1.0", b"HTTP/1.1 ", b"HTTP/2"])
NAMES = st.sampled_from([
    b"Host", b"host", b"HOST", b"Upgrade", b"Connection", b"Sec-WebSocket-Key",
    b"Sec-WebSocket-Protocol", b"Content-Length", b"Transfer-Encoding", b"X-\xc3\x84",
    b"Bad Name", b"", b"X-Custom",
])
VALUES = st.one_of(
    st.sampled_from([b"websocket", b"Upgrade", b"ocpp1.6, ocpp2.0.1", b"0", b"chunked",
                     b"", b" padded\t", b"a\tb", b"caf\xc3\xa9", b"x\x00y", b"127.0.0.1:9000"]),
    st.binary(max_size=12),
)
SEPARATORS = st.sampled_from([b": "] * 4 + [b":", b":\t", b" :", b"::"])


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    line = draw(METHODS) + b" " + draw(TARGETS) + b" " + draw(VERSIONS)
    headers = [b"Host: 127.0.0.1:9000"] if draw(st.integers(0, 4)) else []
    for _ in range(draw(st.integers(0, 6))):
        header = draw(NAMES) + draw(SEPARATORS) + draw(VALUES)
        if draw(st.integers(0, 9)) == 0:  # an obsolete folded continuation line
            header += b"\r\n " + draw(VALUES)
        headers.append(header)
    lines = [line, *draw(st.permutations(headers))]
    trailing = draw(st.sampled_from([b"", b"\x81\x80abcd", b"GET / HTTP/1.1\r\n"]))
    return b"\r\n".join(lines) + b"\r\n\r\n" + trailing


TOKENS = st.text(st.sampled_from("!#$%&'*+-.^_`|~09AZaz"), min_size=1, max_size=6)
PLAIN_NAMES = st.one_of(
    st.sampled_from(["Upgrade", "Connection", "Sec-WebSocket-Key", "sec-websocket-protocol",
                     "HOST", "Content-Length", "transfer-encoding", "Authorization"]),
    TOKENS,
)
PLAIN_VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.just("\t"),
                       max_size=12)


ODD_BYTES = [b"\x00", b"\x01", b"\x0b", b"\t", b"\r", b"\n", b" ", b":", b"\x7f", b"\x80",
             b"\xe9", b"(", b"@", b"\r\n", b"\r\n "]


@st.composite
def near_plain_heads(draw: st.DrawFn, odd: bool) -> bytes:
    """Heads much like what clients send, mostly ones the fast path takes; with
    `odd`, plain upgrade heads with one odd byte changed or added among the headers."""
    target = draw(st.sampled_from(["/ocpp/CP1", "/ocpp/CP%2F1?a=1&b=", "*", "http://h/p"]))
    method = "GET" if odd else draw(st.sampled_from(["GET"] * 4 + ["POST", "X-Y"]))
    headers = ["Host: 127.0.0.1:9000"] if odd or draw(st.integers(0, 9)) else []
    names = TOKENS if odd else PLAIN_NAMES
    for _ in range(draw(st.integers(0, 7))):
        separator = draw(st.sampled_from([": "] * 4 + [":", ":\t", ": \t ", " :", "\t:"]))
        headers.append(draw(names) + separator + draw(PLAIN_VALUES))
    request = f"{method} {target} HTTP/1.1\r\n"
    head = (request + "\r\n".join(draw(st.permutations(headers)))).encode("ascii")
    if odd:
        at = draw(st.integers(len(request), len(head)))
        head = head[:at] + draw(st.sampled_from(ODD_BYTES)) + head[at + draw(st.integers(0, 1)):]
    return head + b"\r\n\r\n" + draw(st.sampled_from([b"", b"\x81\x80abcd"]))


def fast_reading(data: bytes) -> tuple[str, bytes, list[tuple[bytes, bytes]], bytes] | None:
    """`_simple_head`'s reading in h11's terms, its block split as `Headers` splits it."""
    fast = _simple_head(data)
    if fast is None:
        return None
    method, target, block, trailing = fast
    items = header_block_items(block)
    assert headers_from_block(block).raw_items() == items
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in items]
    return method, target, headers, trailing


def h11_reading(data: bytes) -> tuple[str, bytes, list[tuple[bytes, bytes]], bytes] | None:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    try:
        event = conn.next_event()
        if not isinstance(event, h11.Request) or event.http_version != b"1.1":
            return None
        if not isinstance(conn.next_event(), h11.EndOfMessage):
            return None
    except h11.RemoteProtocolError:
        return None
    return (event.method.decode("ascii"), event.target, list(event.headers),
            conn.trailing_data[0])


@settings(max_examples=1000)  # cheap examples; the boundaries are rare hits
@given(st.one_of(heads(), near_plain_heads(odd=False), near_plain_heads(odd=True)))
@example(b"GET /ocpp/CP1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n\x81")
def test_the_fast_path_reads_what_h11_reads(data: bytes) -> None:
    fast = fast_reading(data)
    if fast is not None:
        assert fast == h11_reading(data)


def test_a_plain_upgrade_request_takes_the_fast_path() -> None:
    data = (b"GET /ocpp/CP%2F1?a=1 HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp1.6,  ocpp2.0.1 \r\n"
            b"\r\n\x81\x85")
    fast = fast_reading(data)
    assert fast is not None
    assert fast == h11_reading(data)
    assert fast[3] == b"\x81\x85"
    assert (b"sec-websocket-protocol", b"ocpp1.6,  ocpp2.0.1") in fast[2]


def test_what_the_fast_path_leaves_to_h11() -> None:
    plain = b"GET / HTTP/1.1\r\nHost: h\r\n"
    for data in (
        plain,  # not whole yet
        plain + b"Content-Length: 0\r\n\r\n",  # body headers
        plain + b"Host: h2\r\n\r\n",  # two hosts: h11 refuses
        b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",  # no host: h11 refuses
        plain + b"X-A: caf\xc3\xa9\r\n\r\n",  # not ASCII
        plain + b"X-A: a\r\n b\r\n\r\n",  # folded
        b"GET / HTTP/1.0\r\nHost: h\r\n\r\n",
    ):
        assert _simple_head(data) is None, data
