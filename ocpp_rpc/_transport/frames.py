"""[pure] WebSocket framing for the common case, next to wsproto.

OCPP-J traffic is almost entirely whole, unfragmented text frames, with a
Ping and its Pong now and then.  `Splitter` cuts received bytes at frame
boundaries: such a data frame becomes its message directly, a well-formed
Ping or Pong its wsproto event, and every other frame (Close, fragments,
frames too big or split across reads, anything malformed, everything from a
Close on) goes to wsproto, in order.  wsproto is only ever fed from a frame
boundary, so its decoder, state machine and error handling stay exactly as
they are.  Its `Connection` is made only when such a frame comes (or a Close
is sent), and dropped when back at rest: until then it would have been open
and seen only frames that change none of its state, so a new one is the
same.  `encode` and `encode_control` build the frames wsproto would.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from itertools import chain
from typing import Final

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Event, Ping, Pong
from wsproto.frame_protocol import CloseReason, XorMaskerSimple

from .close_codes import is_sendable

_TEXT: Final = 0x1
_BINARY: Final = 0x2
_DATA: Final = (_TEXT, _BINARY)
_CONTINUATION: Final = 0x0
_CLOSE: Final = 0x8
_PING: Final = 0x9
_PONG: Final = 0xA
_PINGS: Final = (_PING, _PONG)
_MAX_CONTROL: Final = 125  # a control frame's longest payload (RFC 6455 5.5)
_OPEN: Final = ConnectionState.OPEN
_SMALL_MASK: Final = 2048  # up to this size an integer XOR unmasks fastest
# The first two bytes of an unmasked, unfragmented text frame of each short length.
_TEXT_HEADS: Final = tuple(bytes((0x80 | _TEXT, n)) for n in range(126))
# Codes a peer may send (our one rule) that wsproto does not know, and so would
# fail with 1002 (it accepts only its own `CloseReason` below 3000): wsproto
# gets such a Close with `_STAND_IN` instead, and its event gets the code back.
_UNKNOWN_TO_WSPROTO: Final = frozenset(
    code for code in range(1000, 3000) if is_sendable(code) and code not in set(CloseReason)
)
_STAND_IN: Final = CloseReason.NORMAL_CLOSURE


def unmask(key: bytes, payload: bytes) -> bytes:
    """`payload` XOR the repeated 4-byte `key` (RFC 6455 5.3)."""
    n = len(payload)
    if n > _SMALL_MASK:
        return bytes(XorMaskerSimple(key).process(bytearray(payload)))
    mask = int.from_bytes((key * ((n >> 2) + 1))[:n], "little")
    return (int.from_bytes(payload, "little") ^ mask).to_bytes(n, "little")


def encode(messages: Sequence[str | bytes], *, mask: bool) -> bytes:
    """Whole, unfragmented data frames for `messages` (masked when `mask`, as a
    client must), the same bytes wsproto's `send` makes but for the random key."""
    if not mask and len(messages) == 1:  # a server's answer: most frames it writes
        message = messages[0]
        if type(message) is str:
            payload = message.encode("utf-8")
            if len(payload) < 126:
                return _TEXT_HEADS[len(payload)] + payload
    keys = os.urandom(4 * len(messages)) if mask else b""
    out: list[bytes] = []
    for i, message in enumerate(messages):
        if isinstance(message, str):
            payload, first = message.encode("utf-8"), 0x80 | _TEXT
        elif isinstance(message, (bytes, bytearray, memoryview)):
            payload, first = bytes(message), 0x80 | _BINARY
        else:
            raise TypeError(f"a message is str or bytes, not {type(message).__name__}")
        n = len(payload)
        bit = 0x80 if mask else 0
        if n < 126:
            out.append(bytes((first, bit | n)))
        elif n < 65536:
            out.append(bytes((first, bit | 126)) + n.to_bytes(2, "big"))
        else:
            out.append(bytes((first, bit | 127)) + n.to_bytes(8, "big"))
        if mask:
            key = keys[4 * i : 4 * i + 4]
            out.append(key)
            payload = unmask(key, payload)
        out.append(payload)
    return b"".join(out)


def encode_control(event: Ping | Pong, *, mask: bool) -> bytes:
    """The frame of a Ping or Pong, the same bytes wsproto's `send` makes but
    for the random key; ValueError (wsproto's) for a payload over 125 bytes."""
    payload = bytes(event.payload)
    n = len(payload)
    if n > _MAX_CONTROL:
        raise ValueError("payload too long for control frame")
    first = 0x80 | (_PING if isinstance(event, Ping) else _PONG)
    if not mask:
        return bytes((first, n)) + payload
    key = os.urandom(4)
    return bytes((first, 0x80 | n)) + key + unmask(key, payload)


class Splitter:
    """Received bytes in, messages (str/bytes) and wsproto events out, in wire order.

    A frame is a message here when it is whole in what has arrived, has FIN
    set, no reserved bits, the mask bit its direction needs, a minimal length
    of at most `max_size`, and opcode text or binary outside a fragmented
    message.  A text frame that is not UTF-8 yields
    ``CloseConnection(1007)`` (as wsproto would) and ends the splitting.  A
    whole Ping or Pong with FIN set, no reserved bits, the right mask bit and
    at most 125 bytes is its event here too.

    Given a `ConnectionType`, the splitter makes its wsproto `Connection`
    (`conn`) when the first frame for wsproto comes, and drops it again once
    that is back at rest (open, between messages, no frame begun), where it
    is the same as a new one; given a `Connection`, it feeds that one.

    Frame boundaries are followed to the end, also through what only wsproto
    reads and what `discard` drops: `close_received` tells when the peer's
    Close has come whole, which a connection being failed waits for.
    """

    __slots__ = (
        "_conn", "_fragmented", "_head", "_lazy", "_masked", "_max_size", "_owed",
        "_owed_close", "_through", "close_received",
    )

    def __init__(self, conn: Connection | ConnectionType, max_size: int) -> None:
        if isinstance(conn, Connection):
            self._conn: Connection | None = conn
            self._lazy = False  # the caller's: kept
            self._masked = not conn.client  # a server receives masked frames
        else:
            self._conn = None
            self._lazy = True
            self._masked = conn is ConnectionType.SERVER
        self._max_size = max_size
        self._head = b""  # the start of a frame whose header (or control frame) is not all here
        self._owed = 0  # bytes of the current frame still to come
        self._owed_close = False  # ... and that frame is a Close
        self._fragmented = False  # inside a fragmented message (wsproto has it)
        self._through = False  # from here on everything goes to wsproto
        #: The peer's Close frame has come whole (its event may not be taken yet).
        self.close_received = False

    @property
    def client(self) -> bool:
        """Whether this is the client side (which masks what it sends)."""
        return not self._masked

    @property
    def conn(self) -> Connection:
        """The wsproto `Connection`, made now if not yet: open, as nothing that
        came before it changes a wsproto connection's state."""
        conn = self._conn
        if conn is None:
            side = ConnectionType.CLIENT if self.client else ConnectionType.SERVER
            conn = self._conn = Connection(side)
        return conn

    @property
    def state(self) -> ConnectionState:
        """The wsproto connection's state (OPEN while it is not made)."""
        conn = self._conn
        return _OPEN if conn is None else conn.state

    def feed(self, data: bytes) -> Iterable[str | bytes | Event]:
        """The messages and events that `data` completes, to be taken in order.

        wsproto moves to its closing states only as its Close event is taken,
        so everything from a Close on stays a lazy iterator over its events:
        a message that came before the Close can still be answered."""
        out: list[str | bytes | Event] = []
        if type(data) is not bytes:  # slices of it are the messages: make them bytes
            data = bytes(data)
        if self._through:
            return self._pass_rest(data, 0, out)
        if self._head:
            data, self._head = self._head + data, b""
        pos, end = 0, len(data)
        owed = self._owed
        if owed:
            take = min(owed, end)
            self._owed = owed - take
            self._to_wsproto(data[:take], out)
            pos = take
        masked, max_size = self._masked, self._max_size
        while pos < end:
            if end - pos < 2:
                self._head = data[pos:]
                break
            first, second = data[pos], data[pos + 1]
            opcode, n = first & 0x0F, second & 0x7F
            extended = 2 if n == 126 else 8 if n == 127 else 0
            start = pos + 2 + extended + (4 if second & 0x80 else 0)
            if start > end:  # the header is not all here yet
                self._head = data[pos:]
                break
            if extended:
                n = int.from_bytes(data[pos + 2 : pos + 2 + extended], "big")
                minimal = n > 125 if extended == 2 else 65535 < n < 1 << 63
            else:
                minimal = True
            if (second & 0x80 != 0) is not masked or not minimal or first & 0x70:
                return self._pass_rest(data, pos, out)  # wsproto reports the violation
            stop = start + n
            fin = first & 0x80
            if fin and stop <= end and n <= max_size and opcode in _DATA and not self._fragmented:
                payload = data[start:stop]
                if masked:
                    payload = unmask(data[start - 4 : start], payload)
                if opcode == _BINARY:
                    out.append(payload)
                else:
                    try:
                        out.append(payload.decode("utf-8"))
                    except UnicodeDecodeError as exc:
                        code = CloseReason.INVALID_FRAME_PAYLOAD_DATA
                        out.append(CloseConnection(code, str(exc)))  # wsproto's words
                        self._through = True  # the connection fails: what follows is
                        self._walk(data, stop)  # only followed, never read
                        return out
                pos = stop
                continue
            if opcode in _DATA:
                if self._fragmented:
                    return self._pass_rest(data, pos, out)
                self._fragmented = not fin
            elif opcode == _CONTINUATION:
                if not self._fragmented:
                    return self._pass_rest(data, pos, out)
                self._fragmented = not fin
            elif opcode in _PINGS and fin and n <= _MAX_CONTROL:
                if stop > end:  # taken whole, as wsproto would (at most 131 bytes)
                    self._head = data[pos:]
                    break
                payload = data[start:stop]
                if masked:
                    payload = unmask(data[start - 4 : start], payload)
                out.append(Ping(payload) if opcode == _PING else Pong(payload))
                pos = stop
                continue
            elif opcode == _CLOSE and fin and n <= _MAX_CONTROL:
                if stop > end:  # a Close goes to wsproto whole (at most 131 bytes)
                    self._head = data[pos:]
                    break
                return self._pass_close(data, pos, start, stop, out)
            else:
                return self._pass_rest(data, pos, out)  # bad: wsproto says how
            if stop > end:  # wsproto gets the rest of this frame as it comes
                self._owed = stop - end
                stop = end
            self._to_wsproto(data[pos:stop], out)
            pos = stop
        return out

    def _to_wsproto(self, data: bytes, out: list[str | bytes | Event]) -> None:
        """Hand wsproto frames that cannot close it (fragments, data frames
        over `max_size` or cut across reads); a connection of our own is
        dropped once back at rest (its events all taken, nothing buffered)."""
        if data:
            conn = self.conn
            conn.receive_data(data)
            out.extend(conn.events())
            if self._lazy and not (self._owed or self._fragmented) and conn.state is _OPEN:
                self._conn = None

    def _pass_close(
        self, data: bytes, pos: int, start: int, stop: int, out: list[str | bytes | Event]
    ) -> Iterable[str | bytes | Event]:
        """The peer's whole Close frame is `data[pos:stop]`: from it on, all is wsproto's."""
        mask = int.from_bytes(data[start - 4 : start - 2], "big") if self._masked else 0
        code = int.from_bytes(data[start : start + 2], "big") ^ mask if stop - start >= 2 else -1
        if code not in _UNKNOWN_TO_WSPROTO:
            return self._pass_rest(data, pos, out)
        stand_in = (_STAND_IN ^ mask).to_bytes(2, "big")
        data = data[:start] + stand_in + data[start + 2 :]
        return _restore_code(self._pass_rest(data, pos, out), code)

    def _pass_rest(
        self, data: bytes, pos: int, out: list[str | bytes | Event]
    ) -> Iterable[str | bytes | Event]:
        """From `pos` on everything is wsproto's: a Close, or a violation."""
        self._through = True
        self._walk(data, pos)
        if pos < len(data):
            conn = self.conn
            conn.receive_data(data[pos:])
            return chain(out, conn.events())
        return out

    def discard(self, data: bytes) -> bool:
        """Drop `data` (a failed connection reads on only to let the peer finish),
        following its frames; whether the peer's Close has come whole."""
        self._through = True
        self._walk(data, 0)
        return self.close_received

    def _walk(self, data: bytes, pos: int) -> None:
        """Follow the frame boundaries through `data[pos:]` without decoding
        anything, noting a Close that has come whole."""
        if self._head:
            data, pos, self._head = self._head + data[pos:], 0, b""
        end = len(data)
        if self._owed:
            take = min(self._owed, end - pos)
            self._owed -= take
            pos += take
            if not self._owed and self._owed_close:
                self.close_received = True
        while pos < end:
            second = data[pos + 1] if end - pos >= 2 else 0
            n = second & 0x7F
            extended = 2 if n == 126 else 8 if n == 127 else 0
            start = pos + 2 + extended + (4 if second & 0x80 else 0)
            if end - pos < 2 or start > end:
                self._head = data[pos:]
                return
            if extended:
                n = int.from_bytes(data[pos + 2 : pos + 2 + extended], "big")
            is_close = data[pos] & 0x0F == _CLOSE
            if start + n > end:
                self._owed, self._owed_close = start + n - end, is_close
                return
            if is_close:
                self.close_received = True
            pos = start + n


def _restore_code(
    items: Iterable[str | bytes | Event], code: int
) -> Iterable[str | bytes | Event]:
    """`items` with the stand-in code of the first CloseConnection put back to `code`."""
    restored = False
    for item in items:
        if not restored and isinstance(item, CloseConnection):
            restored = True
            if item.code == _STAND_IN:
                item = CloseConnection(code, item.reason)
        yield item
