"""The server's own listeners: their address, and an upgrade request that
arrived on one."""

from __future__ import annotations

from dataclasses import dataclass

from anyio.abc import ByteStream, SocketAttribute
from anyio.streams.tls import TLSAttribute, TLSStream

from .._wire.handshake import Handshake, make_handshake
from ..transport import Transport
from .upgrade import UpgradeRequest, reject_upgrade
from .websocket import accept_upgrade


@dataclass(frozen=True, slots=True)
class Listening:
    """A listening socket of the server."""

    host: str
    port: int


class StreamUpgrade:
    """An upgrade request read by our own HTTP/1.1 reader from a TCP/TLS stream."""

    keepalive = True

    def __init__(
        self, stream: ByteStream, request: UpgradeRequest
    ) -> None:
        self._stream = stream
        self._request = request

    def handshake(self) -> Handshake:
        request, stream = self._request, self._stream
        tls = isinstance(stream, TLSStream)  # (each `extra` builds anyio's attribute table)
        return make_handshake(
            path=request.path,
            query_string=request.query_string,
            headers=request.headers,
            protocols=request.subprotocols,
            remote_address=remote_address(stream),
            peer_certificate=stream.extra(TLSAttribute.peer_certificate, None) if tls else None,
            peer_certificate_der=(
                stream.extra(TLSAttribute.peer_certificate_binary, None) if tls else None
            ),
        )

    async def accept(self, subprotocol: str | None, *, max_message_size: int) -> Transport:
        return await accept_upgrade(
            self._stream, self._request, subprotocol=subprotocol,
            max_message_size=max_message_size,
        )

    async def reject(self, status: int, message: str) -> None:
        await reject_upgrade(self._stream, status, message)


def remote_address(stream: ByteStream) -> tuple[str, int] | None:
    try:
        remote = stream.extra(SocketAttribute.remote_address)
    except Exception:
        return None
    return (str(remote[0]), int(remote[1])) if isinstance(remote, tuple) else None
