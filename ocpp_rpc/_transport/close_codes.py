"""Which close codes a Close frame may carry: the one rule, for the public
`close()` methods, for the Close frames the WebSocket sends and for the ones
it accepts from a peer (any other code in a peer's Close fails the connection
with 1002)."""

from __future__ import annotations


def is_sendable(code: int) -> bool:
    """Whether a Close frame may carry `code` (RFC 6455 7.4 and IANA's registry:
    1004-1006 and 1015 are reserved, 1016-2999 unassigned, below 1000 unused)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def check_close_code(code: int) -> None:
    """ValueError unless `code` may be sent in a Close frame."""
    if not is_sendable(code):
        raise ValueError(f"invalid close code {code}")
