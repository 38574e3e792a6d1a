"""Security profiles: Basic auth (1, 2), TLS (2) and mutual TLS (3), with real
certificates made by trustme (API.md: RPCClient ssl_context/password,
listen(ssl_context), Handshake.password/peer_certificate)."""

from __future__ import annotations

import base64
import hmac
import logging
import ssl
from typing import Any

import anyio
import pytest
import trustme
from harness import make_client, serving
from rawpeer import raw_client

from ocpp_rpc import (
    Call,
    ConnectError,
    Handshake,
    Reject,
    ServerClient,
)

pytestmark = pytest.mark.anyio


# -- certificates --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def other_ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA, *, client_ca: trustme.CA | None = None) -> ssl.SSLContext:
    """A server context with a certificate for 127.0.0.1 signed by `ca`; with
    `client_ca`, clients must present a certificate signed by it (profile 3)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(context)
    return context


def client_context(
    trusted: trustme.CA, certificate: trustme.LeafCert | None = None
) -> ssl.SSLContext:
    """A client context trusting `trusted`, presenting `certificate` if given."""
    context = ssl.create_default_context()
    trusted.configure_trust(context)
    if certificate is not None:
        certificate.configure_cert(context)  # load_cert_chain under the hood
    return context


def charge_point_certificate(ca: trustme.CA, common_name: str) -> trustme.LeafCert:
    return ca.issue_cert(f"{common_name.lower()}.example", common_name=common_name)


def der(certificate: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(certificate.cert_chain_pems[0].bytes().decode("ascii"))


def common_name(certificate: dict[str, Any] | None) -> str | None:
    """The README recipe: the subject's CN of `Handshake.peer_certificate`."""
    for rdn in (certificate or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


# -- TLS (profile 2) ---------------------------------------------------------------------------


async def test_wss_server_and_client_call_both_ways(ca: trustme.CA) -> None:
    with anyio.fail_after(5):
        async with serving(
            server_context(ca), path="/ocpp", protocols=["ocpp2.0.1"]
        ) as (server, url):
            accepted: list[ServerClient] = []
            server.on("client", accepted.append)
            server.handle("Heartbeat", lambda call: {"currentTime": "now"})
            client = make_client(
                url, "CP001", protocols=["ocpp2.0.1"], ssl_context=client_context(ca)
            )
            client.handle("Reset", lambda call: {"status": "Accepted"})
            async with client:
                assert await client.call("Heartbeat") == {"currentTime": "now"}
                assert await accepted[0].call("Reset", {"type": "Immediate"}) == {
                    "status": "Accepted"
                }
                handshake = accepted[0].handshake
                assert handshake.peer_certificate is None  # not asked for one
                assert handshake.peer_certificate_der is None


async def test_client_refuses_a_server_certificate_from_an_unknown_ca(
    ca: trustme.CA, other_ca: trustme.CA
) -> None:
    with anyio.fail_after(5):
        async with serving(server_context(ca), path="/ocpp") as (_server, url):
            with pytest.raises(ConnectError) as info:
                async with make_client(url, "CP001", ssl_context=client_context(other_ca)):
                    pytest.fail("trusted a certificate of an unknown CA")
            assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
            assert info.value.status is None
            async with make_client(url, "CP001", ssl_context=client_context(ca)):
                pass  # the server is unharmed


async def test_client_checks_the_server_hostname(ca: trustme.CA) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("csms.example").configure_cert(context)  # not 127.0.0.1
    with anyio.fail_after(5):
        async with serving(context, path="/ocpp") as (_, url):
            with pytest.raises(ConnectError) as info:
                async with make_client(url, "CP001", ssl_context=client_context(ca)):
                    pytest.fail("accepted a certificate for another host")
            assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)


# -- mutual TLS (profile 3) -----------------------------------------------------------------


async def test_mtls_client_certificate_is_visible_in_the_handshake(ca: trustme.CA) -> None:
    certificate = charge_point_certificate(ca, "CP001")
    seen: list[Handshake] = []
    with anyio.fail_after(5):
        async with serving(server_context(ca, client_ca=ca), path="/ocpp") as (server, url):

            @server.auth
            async def auth(handshake: Handshake) -> None:
                seen.append(handshake)
                if common_name(handshake.peer_certificate) != handshake.identity:
                    raise Reject(403, "certificate does not match the identity")

            async with make_client(url, "CP001", ssl_context=client_context(ca, certificate)):
                assert server.clients["CP001"].handshake is seen[0]
    handshake = seen[0]
    assert handshake.peer_certificate is not None
    assert common_name(handshake.peer_certificate) == "CP001"
    assert ("DNS", "cp001.example") in handshake.peer_certificate["subjectAltName"]
    assert handshake.peer_certificate_der == der(certificate)


async def test_mtls_certificate_of_another_identity_is_rejected_by_the_recipe(
    ca: trustme.CA,
) -> None:
    stolen = charge_point_certificate(ca, "CP002")
    with anyio.fail_after(5):
        async with serving(server_context(ca, client_ca=ca), path="/ocpp") as (server, url):

            @server.auth
            async def auth(handshake: Handshake) -> None:
                if common_name(handshake.peer_certificate) != handshake.identity:
                    raise Reject(403, "certificate does not match the identity")

            with pytest.raises(ConnectError) as info:
                async with make_client(url, "CP001", ssl_context=client_context(ca, stolen)):
                    pytest.fail("connected with another station's certificate")
            assert info.value.status == 403


async def test_mtls_client_without_a_certificate_is_refused(
    ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    certificate = charge_point_certificate(ca, "CP001")
    with anyio.fail_after(5), caplog.at_level(logging.INFO, logger="ocpp_rpc"):
        async with serving(server_context(ca, client_ca=ca), path="/ocpp") as (server, url):
            authed: list[str] = []

            @server.auth
            async def auth(handshake: Handshake) -> None:
                authed.append(handshake.identity)

            with pytest.raises(ConnectError):
                async with make_client(url, "anonymous", ssl_context=client_context(ca)):
                    pytest.fail("connected without a client certificate")
            # Others are still served.
            async with make_client(url, "CP001", ssl_context=client_context(ca, certificate)):
                pass
            assert authed == ["CP001"]  # the refused one never reached the auth hook
    assert any("TLS handshake" in r.getMessage() for r in caplog.records)


async def test_mtls_client_certificate_from_another_ca_is_refused(
    ca: trustme.CA, other_ca: trustme.CA
) -> None:
    forged = charge_point_certificate(other_ca, "CP001")
    good = charge_point_certificate(ca, "CP001")
    with anyio.fail_after(5):
        async with serving(server_context(ca, client_ca=ca), path="/ocpp") as (server, url):
            with pytest.raises(ConnectError):
                async with make_client(url, "CP001", ssl_context=client_context(ca, forged)):
                    pytest.fail("connected with a certificate of an untrusted CA")
            async with make_client(url, "CP001", ssl_context=client_context(ca, good)):
                assert list(server.clients) == ["CP001"]


async def test_mtls_optional_client_certificate(ca: trustme.CA) -> None:
    context = server_context(ca, client_ca=ca)
    context.verify_mode = ssl.CERT_OPTIONAL
    certificate = charge_point_certificate(ca, "CP001")
    seen: list[Handshake] = []
    with anyio.fail_after(5):
        async with serving(context, path="/ocpp") as (server, url):
            server.on("client", lambda client: seen.append(client.handshake))
            async with make_client(url, "CP001", ssl_context=client_context(ca, certificate)):
                pass
            async with make_client(url, "CP002", ssl_context=client_context(ca)):
                pass
    assert [common_name(h.peer_certificate) for h in seen] == ["CP001", None]
    assert [h.peer_certificate_der is not None for h in seen] == [True, False]


# -- Basic auth (profiles 1 and 2) ----------------------------------------------------------------

PASSWORDS = {"CP001": b"\x8f\x00s3cr:t\xff"}  # OCPP passwords are arbitrary octets


async def readme_auth(handshake: Handshake) -> None:
    """The README's profile 1/2 auth hook: a constant-time password check."""
    expected = PASSWORDS.get(handshake.identity)
    if expected is None or handshake.password is None:
        raise Reject(401, "Unauthorized")
    if not hmac.compare_digest(handshake.password, expected):
        raise Reject(401, "Unauthorized")


@pytest.mark.parametrize("tls", [False, True], ids=["profile1", "profile2"])
async def test_basic_auth_with_a_binary_password(ca: trustme.CA, tls: bool) -> None:
    options: dict[str, Any] = {"ssl_context": client_context(ca)} if tls else {}
    with anyio.fail_after(5):
        async with serving(server_context(ca) if tls else None, path="/ocpp") as (server, url):
            server.auth(readme_auth)
            async with make_client(url, "CP001", password=PASSWORDS["CP001"], **options):
                assert server.clients["CP001"].handshake.password == PASSWORDS["CP001"]
            for identity, password in (("CP001", b"\x8f\x00s3cr:t"), ("CP001", None),
                                       ("CP999", PASSWORDS["CP001"])):
                with pytest.raises(ConnectError) as info:
                    async with make_client(url, identity, password=password, **options):
                        pytest.fail("connected with a wrong password")
                assert info.value.status == 401


@pytest.mark.parametrize(
    ("identity", "password", "expected"),
    [
        ("CP:1", "pass:word", b"pass:word"),  # colons in both
        ("CP1", "::", b"::"),
        ("CP1", "", b""),
        ("Zählpunkt", "pässwörd", "pässwörd".encode()),  # str passwords are sent as UTF-8
        ("CP1", b"\xff\xfe\x00", b"\xff\xfe\x00"),
    ],
)
async def test_basic_auth_user_is_the_identity_and_colons_are_kept(
    identity: str, password: str | bytes, expected: bytes
) -> None:
    seen: list[Handshake] = []
    with anyio.fail_after(5):
        async with serving(None, path="/ocpp") as (server, url):
            server.auth(lambda handshake: _record(seen, handshake))
            async with make_client(url, identity, password=password):
                pass
    assert [(h.identity, h.password) for h in seen] == [(identity, expected)]


async def _record(seen: list[Handshake], handshake: Handshake) -> None:
    seen.append(handshake)


@pytest.mark.parametrize(
    ("authorization", "expected"),
    [
        ("Basic " + base64.b64encode(b"CP1:pw").decode(), b"pw"),
        ("basic  " + base64.b64encode(b"CP1:pw").decode(), b"pw"),  # scheme is caseless
        ("Basic " + base64.b64encode(b"CP1:a:b").decode(), b"a:b"),
        ("Basic " + base64.b64encode(b"CP2:pw").decode(), None),  # another user
        ("Basic " + base64.b64encode(b"CP1pw").decode(), None),  # no colon
        ("Basic !!!", None),
        ("Bearer " + base64.b64encode(b"CP1:pw").decode(), None),
    ],
)
async def test_basic_auth_header_parsing(authorization: str, expected: bytes | None) -> None:
    seen: list[Handshake] = []
    with anyio.fail_after(5):
        async with serving(None, path="/ocpp") as (server, url):
            server.auth(lambda handshake: _record(seen, handshake))
            headers = [("Authorization", authorization)]
            async with raw_client(url + "/CP1", headers=headers) as peer:
                assert peer.status == 101
    assert [h.password for h in seen] == [expected]


async def test_tls_failure_leaves_calls_on_other_connections_alone(
    ca: trustme.CA, other_ca: trustme.CA
) -> None:
    blocker = anyio.Event()

    async def slow(call: Call) -> str:
        await blocker.wait()
        return "done"

    with anyio.fail_after(5):
        async with serving(server_context(ca, client_ca=ca), path="/ocpp") as (server, url):
            server.handle("Slow", slow)
            good = charge_point_certificate(ca, "CP001")
            async with make_client(url, "CP001", ssl_context=client_context(ca, good)) as client:
                async with anyio.create_task_group() as tg:
                    results: list[Any] = []

                    async def call() -> None:
                        results.append(await client.call("Slow"))

                    tg.start_soon(call)
                    forged = charge_point_certificate(other_ca, "CP002")
                    with pytest.raises(ConnectError):
                        async with make_client(url, "CP002",
                                               ssl_context=client_context(ca, forged)):
                            pass
                    blocker.set()
                assert results == ["done"]
