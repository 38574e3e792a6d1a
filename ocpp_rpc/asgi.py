"""Serve an `RPCServer` inside another web server, as an ASGI 3 application.

``server.asgi_app`` (an `ASGIApp`) can be mounted in Starlette/FastAPI
(``Mount("/ocpp", app=server.asgi_app)``) or served on its own by Uvicorn,
Hypercorn (asyncio or Trio workers) or any ASGI 3 server:

- ``websocket`` scopes go through the server's limits, auth hook, subprotocol
  negotiation and `Handshake` exactly as with ``listen()``. The identity is
  the last segment of the request path, the endpoint the path before it,
  including the ``root_path`` of the mount. A refusal (`Reject`, a malformed
  identity, ``max_connections``) is answered with its HTTP status through the
  WebSocket denial-response extension where the host offers it (Uvicorn and
  Hypercorn do), else by closing before accepting, which hosts answer with 403.
  Accepted connections run as ordinary `ServerClient`s over `ASGIWebSocket`.
- ``http`` scopes get 404 (or go to ``fallback``).
- ``lifespan``: if the RPC server is not running yet, it is run for the
  application's lifetime; otherwise startup and shutdown are acknowledged.

The server's ``async with`` block must be running while connections arrive
(enter it in the host application's lifespan); otherwise upgrades are refused
with 500 (or a close with 1011 where the host lacks the denial extension).

Keep-alive pings are the host server's job (Uvicorn ``ws_ping_interval``,
Hypercorn ``websocket_ping_interval``): ASGI cannot send pings, so the RPC
server's ``ping_interval`` does not apply to these clients. TLS, header-size
limits and the handshake timeout are the host's too; ``max_connections`` and
``max_message_size`` still apply.
"""

from ._transport.asgi import ASGIApp as ASGIApp
from ._transport.asgi import ASGIWebSocket as ASGIWebSocket

__all__ = ("ASGIApp", "ASGIWebSocket")

# Documented and reported where users import them from.
ASGIApp.__module__ = ASGIWebSocket.__module__ = __name__
