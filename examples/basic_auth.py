"""HTTP Basic auth (OCPP security profiles 1 and 2): the CSMS checks each
charge point's password in its auth hook, in constant time, and refuses
unknown ones with 401. Runs a CSMS and two charge points, then exits.

    python examples/basic_auth.py

Over the network use wss:// (profile 2): pass ``ssl_context=`` to
``server.listen()`` and to ``RPCClient``; the auth hook does not change.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import anyio

from ocpp_rpc import Accept, Call, ConnectError, Handshake, Reject, RPCClient, RPCServer


def hash_password(password: bytes, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password, salt, 100_000)


# identity -> (salt, hash): store hashes, never passwords
SALT = os.urandom(16)
PASSWORDS = {"CP001": (SALT, hash_password(b"correct horse battery", SALT))}


async def main() -> None:
    async with RPCServer(protocols=["ocpp1.6"]) as server:

        @server.auth
        async def auth(handshake: Handshake) -> Accept:
            salt, expected = PASSWORDS.get(handshake.identity, (SALT, b""))
            given = handshake.password or b""  # Basic auth whose user is the identity
            # Hash even for unknown identities and compare in constant time, so
            # that timing tells an attacker nothing about either.
            if not hmac.compare_digest(hash_password(given, salt), expected):
                raise Reject(401, "Unauthorized")
            return Accept(session={"authenticated_as": handshake.identity})

        @server.handler("Heartbeat")
        def heartbeat(call: Call) -> dict[str, str]:
            return {"currentTime": "2024-01-01T00:00:00Z"}

        listening = await server.listen()
        url = f"ws://127.0.0.1:{listening.port}/ocpp"

        async with RPCClient(url, "CP001", protocols=["ocpp1.6"],
                             password="correct horse battery") as cp:
            print("CP001 with the right password:", await cp.call("Heartbeat"))
            print("its session on the server:", server.clients["CP001"].session)

        try:
            async with RPCClient(url, "CP001", protocols=["ocpp1.6"], password="guess",
                                 reconnect=False):
                pass
        except ConnectError as exc:
            print("CP001 with a wrong password: refused, HTTP", exc.status)


if __name__ == "__main__":
    anyio.run(main)
